"""What an integration test reads of one StormService (and writes to it) through kubectl, while
its controller runs: the same reads, the same waits, in every test file."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.cluster import ControllerProcess, Kubectl, wait_until

Obj = dict[str, Any]


class StormServiceReads:
    """Reads of StormService `name` in `namespace`, of its RoleSets, pods, revisions and the
    namespace's events; `wait` fails at once if the controller exits."""

    #: How long `wait` waits unless told: generous, the machine is shared and loaded.
    wait_timeout: float = 240.0

    def __init__(self, kubectl: Kubectl, namespace: str, name: str, controller: ControllerProcess) -> None:
        self.kubectl, self.namespace, self.name, self.controller = kubectl, namespace, name, controller

    def get(self, *args: str) -> Any:
        return self.kubectl.get_json(*args, "-n", self.namespace)

    def storm(self) -> Obj:
        obj: Obj = self.get("stormservice", self.name)
        return obj

    def rolesets(self) -> list[Obj]:
        items: list[Obj] = self.get("rolesets", "-l", f"storm-service-name={self.name}")["items"]
        return items

    def pods(self, role: str | None = None) -> list[Obj]:
        """The pods not being deleted, of one role or all."""
        selector = f"storm-service-name={self.name}" + (f",role-name={role}" if role else "")
        items: list[Obj] = self.get("pods", "-l", selector)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def revisions(self) -> list[str]:
        """The ControllerRevisions' names, sorted."""
        items = self.get("controllerrevisions", "-l", f"name={self.name}")["items"]
        return sorted(r["metadata"]["name"] for r in items)

    def events(self, reason: str) -> list[Obj]:
        """Events of that reason in the namespace, on any object."""
        items: list[Obj] = self.get("events", "--field-selector", f"reason={reason}")["items"]
        return items

    def patch(self, ops: list[Obj]) -> None:
        """A JSON patch of the StormService."""
        self.kubectl(
            "patch", "stormservice", self.name, "-n", self.namespace, "--type=json", "-p", json.dumps(ops)
        )

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float | None = None) -> None:
        def check() -> bool:
            assert self.controller.alive(), "the controller exited:\n" + self.controller.log_text()[-3000:]
            return bool(predicate())

        wait_until(check, self.wait_timeout if timeout is None else timeout, what, interval=0.5)
