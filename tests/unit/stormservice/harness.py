"""The StormService controller over a FakeClient with real informers, plus a stand-in for the
RoleSet controller (it only writes RoleSet status) and for the garbage collector."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping
from typing import Any

from controller.runtime.client import Obj
from controller.runtime.fake import FakeClient
from controller.runtime.informer import InformerFactory
from controller.runtime.resources import (
    CONTROLLER_REVISIONS,
    POD_DISRUPTION_BUDGETS,
    ROLESETS,
    SERVICES,
    STORMSERVICES,
    Resource,
)
from controller.stormservice.controller import StormServiceController
from controller.stormservice.rolesetcontrol import RoleSetControl

NS = "ns"
API = "orchestration.aibrix.ai/v1alpha1"
P = "stormservice.orchestration.aibrix.ai/"
WATCHED = (STORMSERVICES, ROLESETS, CONTROLLER_REVISIONS, SERVICES, POD_DISRUPTION_BUDGETS)


def role(name: str, image: str, replicas: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "replicas": replicas,
        "podGroupSize": 1,
        "template": {"spec": {"containers": [{"name": name, "image": image}]}},
        **extra,
    }


def storm(
    name: str = "llm",
    *,
    replicas: int = 3,
    image: str = "v1",
    prefill: int = 2,
    decode: int = 1,
    strategy: dict[str, Any] | None = None,
    paused: bool = False,
    history_limit: int | None = None,
) -> Obj:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}, "annotations": {"team": "infra"}},
            "spec": {
                "roles": [
                    role("prefill", f"prefill:{image}", prefill),
                    role("decode", f"decode:{image}", decode),
                ]
            },
        },
        "updateStrategy": strategy or {"type": "RollingUpdate"},
        "paused": paused,
    }
    if history_limit is not None:
        spec["revisionHistoryLimit"] = history_limit
    return {
        "apiVersion": API,
        "kind": "StormService",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


class ListRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []  # (object name, type, reason, message)

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((obj.get("metadata", {}).get("name", ""), type_, reason, message))

    def reasons(self) -> list[str]:
        return [e[2] for e in self.events]


class Env:
    def __init__(self, client: FakeClient | None = None, control: RoleSetControl | None = None) -> None:
        self.client = client or FakeClient()
        self.factory = InformerFactory(self.client)
        self.recorder = ListRecorder()
        self.ctrl = StormServiceController(
            client=self.client, informers=self.factory, recorder=self.recorder, control=control
        )

    async def __aenter__(self) -> Env:
        self.factory.start()
        assert await self.factory.wait_for_sync(5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.factory.stop()

    # --- cache ---------------------------------------------------------------------------------------

    def _behind(self) -> list[str]:
        behind = []
        for res in WATCHED:
            store = self.factory.informer(res).store
            want = {
                (o["metadata"]["namespace"], o["metadata"]["name"]): o["metadata"]["resourceVersion"]
                for o in self.client.objects(res)
            }
            have = {
                (o["metadata"]["namespace"], o["metadata"]["name"]): o["metadata"]["resourceVersion"]
                for o in store.list()
            }
            if want != have:
                behind.append(res.plural)
        return behind

    async def settle(self) -> None:
        """Wait until every informer shows what the fake API server holds."""
        for _ in range(2000):
            if not self._behind():
                return
            await asyncio.sleep(0.001)
        raise AssertionError(f"informers did not catch up: {self._behind()}")

    # --- driving -------------------------------------------------------------------------------------

    async def sync(self, name: str = "llm", *, settle: bool = True) -> float | None:
        if settle:
            await self.settle()
        result = await self.ctrl.sync(f"{NS}/{name}")
        if settle:
            await self.settle()
        return result

    def seed(self, resource: Resource, obj: Obj) -> Obj:
        return self.client.seed(resource, obj)

    def ss(self, name: str = "llm") -> Obj:
        obj = self.client.get_object(STORMSERVICES, NS, name)
        assert obj is not None
        return obj

    def status(self, name: str = "llm") -> dict[str, Any]:
        return self.ss(name).get("status") or {}

    def condition(self, type_: str, name: str = "llm") -> dict[str, Any] | None:
        return next((c for c in self.status(name).get("conditions") or () if c["type"] == type_), None)

    async def edit(self, mutate: Callable[[Obj], None], name: str = "llm") -> Obj:
        """A user edit of the spec (the generation bumps); not recorded among the actions."""
        obj = self.ss(name)
        mutate(obj["spec"])
        n = len(self.client.actions)
        updated = await self.client.replace(STORMSERVICES, NS, name, obj)
        del self.client.actions[n:]
        del self.client.requests[n:]
        return updated

    def rolesets(self, *, live_only: bool = False) -> list[Obj]:
        out = self.client.objects(ROLESETS, NS)
        return [r for r in out if not (live_only and r["metadata"].get("deletionTimestamp"))]

    def revisions(self) -> list[Obj]:
        return sorted(self.client.objects(CONTROLLER_REVISIONS, NS), key=lambda r: r["revision"])

    # --- the RoleSet controller, played by the test ---------------------------------------------------

    def report(self, roleset: Obj, *, ready: bool = True, updated: bool = True) -> None:
        """Write the status the RoleSet controller would: every role at its replicas."""
        roles = []
        for r in roleset["spec"].get("roles") or ():
            n = int(r.get("replicas", 1))
            roles.append(
                {
                    "name": r["name"],
                    "replicas": n,
                    "readyReplicas": n if ready else 0,
                    "notReadyReplicas": 0 if ready else n,
                    "updatedReplicas": n if updated else 0,
                    "updatedReadyReplicas": n if ready and updated else 0,
                }
            )
        status = {"observedGeneration": roleset["metadata"]["generation"], "roles": roles}
        self.client.set_status(ROLESETS, NS, roleset["metadata"]["name"], status)

    def all_ready(self) -> None:
        for rs in self.rolesets(live_only=True):
            self.report(rs)

    def copy(self, obj: Obj) -> Obj:
        return copy.deepcopy(obj)
