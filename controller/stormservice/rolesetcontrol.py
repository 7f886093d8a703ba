"""Side effects on RoleSets, behind a small interface: the API server in production, a recorder in
unit tests."""

from __future__ import annotations

import contextlib
import copy
import itertools
from typing import Any, Protocol

from controller.runtime.client import KubeClient, Obj, PatchType, PropagationPolicy
from controller.runtime.errors import NotFound
from controller.runtime.resources import PODS, ROLESETS

#: A deleted RoleSet stays (terminating) until the garbage collector has removed its pods, so it
#: keeps counting against maxSurge while its pods still hold their resources.
DELETE_PROPAGATION: PropagationPolicy = "Foreground"


class RoleSetControl(Protocol):
    async def create(self, roleset: Obj) -> Obj: ...

    async def patch(
        self, roleset: Obj, patch: dict[str, Any] | list[dict[str, Any]], patch_type: PatchType
    ) -> Obj:
        """Patch the RoleSet (addressed by `roleset`'s namespace and name)."""
        ...

    async def delete(self, roleset: Obj) -> None:
        """Delete, only if it is still the object we saw (uid); one already gone is no error."""
        ...

    async def dry_run_pod(self, namespace: str, pod: Obj) -> None:
        """Have the API server validate and admit `pod` without storing it (dryRun=All); raises
        what a real create would (Invalid for a pod it refuses)."""
        ...


class KubeRoleSetControl:
    def __init__(self, client: KubeClient) -> None:
        self._client = client

    async def create(self, roleset: Obj) -> Obj:
        return await self._client.create(ROLESETS, roleset["metadata"]["namespace"], roleset)

    async def patch(
        self, roleset: Obj, patch: dict[str, Any] | list[dict[str, Any]], patch_type: PatchType
    ) -> Obj:
        meta = roleset["metadata"]
        return await self._client.patch(
            ROLESETS, meta["namespace"], meta["name"], patch, patch_type=patch_type
        )

    async def delete(self, roleset: Obj) -> None:
        meta = roleset["metadata"]
        with contextlib.suppress(NotFound):
            await self._client.delete(
                ROLESETS,
                meta["namespace"],
                meta["name"],
                uid_precondition=meta.get("uid"),
                propagation_policy=DELETE_PROPAGATION,
            )

    async def dry_run_pod(self, namespace: str, pod: Obj) -> None:
        await self._client.create(PODS, namespace, pod, dry_run=True)


class FakeRoleSetControl:
    """Records what a sync asked for. `actions` holds (verb, name) — the generateName for a
    create; `inject_error(verb, err)` makes the next call of that verb raise."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, str]] = []
        self.created: list[Obj] = []
        self.patches: list[tuple[str, Any, PatchType]] = []
        self._errors: dict[str, list[Exception]] = {}
        self._serial = itertools.count()

    def inject_error(self, verb: str, err: Exception) -> None:
        self._errors.setdefault(verb, []).append(err)

    def _maybe_fail(self, verb: str) -> None:
        pending = self._errors.get(verb)
        if pending:
            raise pending.pop(0)

    async def create(self, roleset: Obj) -> Obj:
        self.actions.append(("create", roleset["metadata"].get("generateName", "")))
        self._maybe_fail("create")
        body = copy.deepcopy(roleset)
        n = next(self._serial)
        body["metadata"]["name"] = f"{body['metadata'].get('generateName', '')}{n:05d}"
        body["metadata"]["uid"] = f"rs-uid-{n}"
        self.created.append(body)
        return body

    async def patch(
        self, roleset: Obj, patch: dict[str, Any] | list[dict[str, Any]], patch_type: PatchType
    ) -> Obj:
        name = roleset["metadata"]["name"]
        self.actions.append(("patch", name))
        self._maybe_fail("patch")
        self.patches.append((name, copy.deepcopy(patch), patch_type))
        after = copy.deepcopy(roleset)
        meta = after.setdefault("metadata", {})
        meta["resourceVersion"] = f"{meta.get('resourceVersion', '')}+{next(self._serial)}"
        return after

    async def delete(self, roleset: Obj) -> None:
        self.actions.append(("delete", roleset["metadata"]["name"]))
        self._maybe_fail("delete")

    async def dry_run_pod(self, namespace: str, pod: Obj) -> None:
        self.actions.append(("dry-run-pod", pod["metadata"].get("generateName", "")))
        self._maybe_fail("dry-run-pod")
