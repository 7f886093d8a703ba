"""Carries out `roleservice.plan_role_services` for one StormService pass, and says how it went
(the RoleServicesSynced condition; see `roleservice.py` for what the Services are).

Reads only the cache, which holds Services with the `storm-service-name` label. A Service of a
wanted name outside it (someone else's without that label) is found when our create is refused
as AlreadyExists; its removal brings no event, so the caller looks again later (`recheck`).
An API error is reported in the condition and returned, not raised: the rest of the pass (the
RoleSets) goes on, as it does for PodDisruptionBudgets.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from controller.runtime.client import KubeClient, Obj
from controller.runtime.controllerref import is_controlled_by
from controller.runtime.errors import AlreadyExists, ApiError, Conflict, NotFound, is_namespace_terminating
from controller.runtime.resources import SERVICES
from controller.runtime.store import INDEX_CONTROLLER_UID, Store
from controller.stormservice.roleservice import (
    CONDITION_ROLE_SERVICES,
    HEADLESS,
    REASON_CONFLICT,
    REASON_FAILED,
    REASON_NO_PORTS,
    RoleServiceAction,
    desired_role_services,
    is_headless,
    is_role_service,
    plan_role_services,
    role_service_patch,
    services_condition,
)
from controller.stormservice.status import remove_condition, set_condition

EVENT_CREATED = "CreatedService"
EVENT_UPDATED = "UpdatedService"
EVENT_DELETED = "DeletedService"
EVENT_RECREATING = "RecreatingService"
EVENT_CONFLICT = REASON_CONFLICT
EVENT_NO_PORTS = REASON_NO_PORTS
EVENT_FAILED = REASON_FAILED

#: How long a name found held outside the cache is taken as still held without asking again.
HELD_RECHECK_SECONDS = 60.0


class Recorder(Protocol):
    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


class Fence(Protocol):
    def wrote(self, before: Mapping[str, Any], after: Mapping[str, Any]) -> None: ...
    def is_stale(self, obj: Mapping[str, Any]) -> bool: ...


@dataclass(frozen=True, slots=True)
class RoleServiceOutcome:
    """`condition`: (status, reason, message), None for no condition; `recheck`: a wanted name
    is held outside the cache; `error`: the first API error of the pass."""

    condition: tuple[str, str, str] | None
    recheck: bool = False
    error: ApiError | None = None

    def apply(self, status: Obj, now: str) -> Obj:
        """`status` with the RoleServicesSynced condition set, or removed."""
        conditions = status.get("conditions") or []
        if self.condition is None:
            conditions = remove_condition(conditions, CONDITION_ROLE_SERVICES)
        else:
            conditions = set_condition(conditions, CONDITION_ROLE_SERVICES, *self.condition, now)
        return {**status, "conditions": conditions}


def _type_of(service: Mapping[str, Any]) -> str:
    return HEADLESS if is_headless(service) else str((service.get("spec") or {}).get("type") or "ClusterIP")


class RoleServiceSync:
    def __init__(self, client: KubeClient, store: Store, recorder: Recorder, fence: Fence) -> None:
        self.client = client
        self.store = store
        self.recorder = recorder
        self.fence = fence
        #: StormService key -> names reported (conflict or no port), each once per appearance.
        self._reported: dict[str, set[str]] = {}
        #: (StormService key, name) -> when a create found it held by someone else, uncached.
        self._held: dict[tuple[str, str], float] = {}

    def forget(self, key: str) -> None:
        self._reported.pop(key, None)
        for held in [h for h in self._held if h[0] == key]:
            del self._held[held]

    def owned(self, storm_service: Mapping[str, Any]) -> list[Obj]:
        return [
            s
            for s in self.store.by_index(INDEX_CONTROLLER_UID, storm_service["metadata"]["uid"])
            if is_role_service(s, storm_service)
        ]

    async def sync(self, key: str, storm_service: Obj) -> RoleServiceOutcome:
        ns = storm_service["metadata"]["namespace"]
        owned = self.owned(storm_service)
        desired = desired_role_services(storm_service)
        actions = plan_role_services(
            storm_service, desired, owned, lambda name: self.store.get(f"{ns}/{name}")
        )
        conflicts: set[str] = set()
        no_ports: dict[str, str] = {}
        deleted: set[str] = set()
        uncached = False
        first: ApiError | None = None
        for action in actions:
            if action.existing is not None and self.fence.is_stale(action.existing):
                continue  # our last patch is not in the cache yet: its event brings the next pass
            if action.action == "conflict":
                conflicts.add(action.name)
                continue
            if action.action == "no-ports":
                no_ports[action.name] = action.message
                continue
            try:
                if not await self._apply(key, storm_service, action):
                    conflicts.add(action.name)
                    uncached = True
                elif action.action == "delete":
                    deleted.add(action.name)
            except ApiError as err:
                if is_namespace_terminating(err):
                    continue  # everything in it goes soon
                self.recorder.event(
                    storm_service, "Warning", EVENT_FAILED, f"Error syncing Service {action.name}: {err}"
                )
                first = first or err
        self._report(key, storm_service, conflicts, no_ports)
        leftovers = any(s["metadata"]["name"] not in desired.keys() | deleted for s in owned)
        failed = None if first is None else f"{first}"[:1024]
        condition = services_condition(
            desired, conflicts=conflicts, no_ports=no_ports.values(), failed=failed, leftovers=leftovers
        )
        return RoleServiceOutcome(condition, recheck=uncached, error=first)

    def _report(self, key: str, storm_service: Obj, conflicts: set[str], no_ports: Mapping[str, str]) -> None:
        reported = self._reported.get(key, set())
        for name in sorted(conflicts - reported):
            self.recorder.event(
                storm_service,
                "Warning",
                EVENT_CONFLICT,
                f"Service {name} exists and is not controlled by this StormService; left alone, so "
                "that role has no Service of ours until it is removed",
            )
        for name in sorted(no_ports.keys() - reported):
            self.recorder.event(storm_service, "Warning", EVENT_NO_PORTS, no_ports[name])
        now = conflicts | no_ports.keys()
        if now:
            self._reported[key] = now
        else:
            self._reported.pop(key, None)

    def _known_held(self, key: str, name: str) -> bool:
        since = self._held.get((key, name))
        if since is None:
            return False
        if time.monotonic() - since < HELD_RECHECK_SECONDS:
            return True
        del self._held[(key, name)]
        return False

    async def _apply(self, key: str, storm_service: Obj, action: RoleServiceAction) -> bool:
        """Carries out `action`; False when it found that name held, outside the cache, by a
        Service the StormService does not control."""
        ns = storm_service["metadata"]["namespace"]
        if action.action == "create":
            if self._known_held(key, action.name):
                return False
            body = action.body
            assert body is not None
            try:
                await self.client.create(SERVICES, ns, body)
            except AlreadyExists:
                # Not in the cache: it lacks our label. Ours gets it back (and so enters the
                # cache); anyone else's is a conflict.
                try:
                    existing = await self.client.get(SERVICES, ns, action.name)
                except NotFound:
                    return True  # deleted in between: the next pass creates it
                if not is_controlled_by(existing, storm_service["metadata"]["uid"]):
                    self._held[(key, action.name)] = time.monotonic()
                    return False
                if is_headless(existing) == is_headless(body):
                    patch = role_service_patch(existing, body)
                    if patch is not None:
                        await self.client.patch(SERVICES, ns, action.name, patch, patch_type="merge")
                    return True
                action = RoleServiceAction("recreate", action.name, action.role, body, existing)
            else:
                self._held.pop((key, action.name), None)
                self.recorder.event(
                    storm_service,
                    "Normal",
                    EVENT_CREATED,
                    f"Created {_type_of(body)} Service {action.name} for role {action.role}",
                )
                return True
        if action.action == "patch":
            assert action.body is not None and action.existing is not None
            try:
                after = await self.client.patch(SERVICES, ns, action.name, action.body, patch_type="merge")
            except NotFound:
                return True
            self.fence.wrote(action.existing, after)
            self.recorder.event(
                storm_service, "Normal", EVENT_UPDATED, f"Updated Service {action.name} of role {action.role}"
            )
        elif action.action in ("recreate", "delete"):
            assert action.existing is not None
            try:
                await self.client.delete(
                    SERVICES, ns, action.name, uid_precondition=action.existing["metadata"].get("uid")
                )
            except (NotFound, Conflict):
                return True  # already gone, or replaced by an object that is not the one we saw
            if action.action == "delete":
                message = f"Deleted Service {action.name}: role {action.role} no longer asks for one"
                self.recorder.event(storm_service, "Normal", EVENT_DELETED, message)
            else:
                assert action.body is not None
                message = (
                    f"Deleted Service {action.name} ({_type_of(action.existing)}) to create it again as "
                    f"{_type_of(action.body)}: clusterIP cannot change in place"
                )
                self.recorder.event(storm_service, "Normal", EVENT_RECREATING, message)
        return True
