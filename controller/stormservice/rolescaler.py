"""The RoleScalers of a StormService: one per role with `scaling: External`, named
`<stormservice>-<role>` (stable across rollouts: an HPA never loses its target), controlled by
the StormService, deleted when the role opts out or goes away.

Each pass: create missing RoleScalers (from the template's replicas), delete those no role asks
for, apply what they ask for (`scalerplan.plan_roles`) to the StormService's template, and write
their status: the role's current instances, the selector of its pods, the Clamped condition.
The write to the template is the only write to the StormService's spec this controller makes;
revisions leave role replicas out, so it starts no rollout, and `_scale_roles` carries it to the
RoleSet in place, which adds or removes that role's instances and touches no other pod.

A RoleScaler of that name that the StormService does not control (a user's, or a previous
StormService's being deleted) is reported once and left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from apis.v1alpha1 import constants as c
from controller.runtime.client import KubeClient, Obj
from controller.runtime.controllerref import is_controlled_by, new_controller_ref
from controller.runtime.errors import AlreadyExists, Conflict, NotFound
from controller.runtime.resources import ROLE_SCALERS, STORMSERVICES
from controller.runtime.store import INDEX_CONTROLLER_UID, Store
from controller.runtime.timestamps import now_rfc3339
from controller.stormservice.scalerplan import (
    CONDITION_CLAMPED,
    RoleDecision,
    clamped_condition,
    current_instances,
    external_roles,
    plan_roles,
    role_selector,
    template_replicas_patch,
)
from controller.stormservice.status import set_condition
from controller.stormservice.view import role_replicas

EVENT_ROLE_SCALER_CREATED = "CreatedRoleScaler"
EVENT_ROLE_SCALER_DELETED = "DeletedRoleScaler"
EVENT_ROLE_SCALER_CONFLICT = "RoleScalerConflict"
EVENT_SCALED_ROLE = "ScaledRole"
EVENT_OUTSIDE_RATIO_BAND = "OutsideRatioBand"


class ScalerRecorder(Protocol):
    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


class RoleScalerControl(Protocol):
    """The writes: create, delete (guarded by uid), status patch, and the StormService patch."""

    async def create(self, body: Obj) -> Obj: ...
    async def get(self, namespace: str, name: str) -> Obj: ...
    async def delete(self, obj: Mapping[str, Any]) -> None: ...
    async def patch_status(self, obj: Mapping[str, Any], status: Obj) -> None: ...
    async def patch_storm_service(self, obj: Mapping[str, Any], ops: list[Obj]) -> Obj: ...


class KubeRoleScalerControl:
    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def create(self, body: Obj) -> Obj:
        return await self.client.create(ROLE_SCALERS, body["metadata"]["namespace"], body)

    async def get(self, namespace: str, name: str) -> Obj:
        return await self.client.get(ROLE_SCALERS, namespace, name)

    async def delete(self, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        await self.client.delete(ROLE_SCALERS, meta["namespace"], meta["name"], uid_precondition=meta["uid"])

    async def patch_status(self, obj: Mapping[str, Any], status: Obj) -> None:
        meta = obj["metadata"]
        await self.client.patch(
            ROLE_SCALERS,
            meta["namespace"],
            meta["name"],
            {"status": status},
            patch_type="merge",
            subresource="status",
        )

    async def patch_storm_service(self, obj: Mapping[str, Any], ops: list[Obj]) -> Obj:
        meta = obj["metadata"]
        return await self.client.patch(STORMSERVICES, meta["namespace"], meta["name"], ops, patch_type="json")


def scaler_name(storm_service: str, role: str) -> str:
    return f"{storm_service}-{role}"


def desired_scaler(storm_service: Mapping[str, Any], role: Mapping[str, Any]) -> Obj:
    meta = storm_service["metadata"]
    name = str(role.get("name"))
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND_ROLE_SCALER,
        "metadata": {
            "name": scaler_name(meta["name"], name),
            "namespace": meta["namespace"],
            "labels": {c.LABEL_STORM_SERVICE_NAME: meta["name"], c.LABEL_ROLE_NAME: name},
            "ownerReferences": [new_controller_ref(storm_service, c.API_VERSION, c.KIND_STORM_SERVICE)],
        },
        "spec": {"replicas": role_replicas(role), "stormServiceName": meta["name"], "roleName": name},
    }


def scaler_status(
    scaler: Mapping[str, Any],
    decision: RoleDecision,
    storm_service: str,
    rolesets: Sequence[Mapping[str, Any]],
    now: str,
) -> Obj:
    """The status `scaler` should have (conditions other than Clamped are kept)."""
    old = scaler.get("status") or {}
    conditions = [dict(cond) for cond in old.get("conditions") or () if cond.get("type") != CONDITION_CLAMPED]
    clamped = clamped_condition(decision)
    if clamped is not None:
        conditions = set_condition(old.get("conditions") or (), CONDITION_CLAMPED, *clamped, now)
    status: Obj = {
        "observedGeneration": int((scaler.get("metadata") or {}).get("generation") or 0),
        "replicas": current_instances(rolesets, decision.role),
        "desiredReplicas": decision.desired,
        "selector": role_selector(storm_service, decision.role),
    }
    if conditions:
        status["conditions"] = conditions
    return status


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for cond in status.get("conditions") or ():
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def _status_differs(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    keys = set(old) | set(new)
    return any(old.get(k) != new.get(k) for k in keys if k != "conditions") or [
        dict(x) for x in old.get("conditions") or ()
    ] != list(new.get("conditions") or ())


@dataclass
class RoleScalerSync:
    store: Store
    control: RoleScalerControl
    recorder: ScalerRecorder
    #: "<namespace>/<name>" of RoleScalers held by someone else, reported once each.
    _conflicts: set[str] = field(default_factory=set)

    def owned(self, storm_service: Mapping[str, Any]) -> list[Obj]:
        meta = storm_service["metadata"]
        return [
            s
            for s in self.store.by_index(INDEX_CONTROLLER_UID, meta["uid"])
            if (s.get("metadata") or {}).get("namespace") == meta["namespace"]
        ]

    def forget(self, key: str) -> None:
        prefix = key + "-"
        self._conflicts = {k for k in self._conflicts if not k.startswith(prefix)}

    async def sync(self, storm_service: Obj, rolesets: Sequence[Mapping[str, Any]]) -> Obj | None:
        """One pass (see the module doc). Returns the StormService as patched when its template
        was written, else None. API errors propagate."""
        meta = storm_service["metadata"]
        spec = storm_service.get("spec") or {}
        wanted = {str(role.get("name")): role for _, role in external_roles(spec)}
        by_role: dict[str, Obj] = {}
        for scaler in self.owned(storm_service):
            scaled_role = str((scaler.get("spec") or {}).get("roleName") or "")
            expected = scaler_name(meta["name"], scaled_role)
            if scaled_role in wanted and scaler["metadata"]["name"] == expected:
                by_role[scaled_role] = scaler
                continue
            if (scaler.get("metadata") or {}).get("deletionTimestamp"):
                continue
            with contextlib.suppress(NotFound, Conflict):
                await self.control.delete(scaler)
                self.recorder.event(
                    storm_service,
                    "Normal",
                    EVENT_ROLE_SCALER_DELETED,
                    f"Deleted RoleScaler {scaler['metadata']['name']}: role {scaled_role} is not scaled externally",
                )
        for role_name, role in wanted.items():
            if role_name in by_role:
                continue
            body = desired_scaler(storm_service, role)
            key = f"{meta['namespace']}/{body['metadata']['name']}"
            cached = self.store.get(key)
            if cached is not None and not is_controlled_by(cached, meta["uid"]):
                self._report_conflict(storm_service, key)
                continue
            try:
                by_role[role_name] = await self.control.create(body)
            except AlreadyExists:
                # Ours, created by an earlier pass and not in the cache yet; or someone else's.
                with contextlib.suppress(NotFound):
                    existing = await self.control.get(meta["namespace"], body["metadata"]["name"])
                    if is_controlled_by(existing, meta["uid"]):
                        by_role[role_name] = existing
                        continue
                self._report_conflict(storm_service, key)
                continue
            self._conflicts.discard(key)
            self.recorder.event(
                storm_service,
                "Normal",
                EVENT_ROLE_SCALER_CREATED,
                f"Created RoleScaler {body['metadata']['name']} for role {role_name}",
            )

        requests = {
            role: int((s.get("spec") or {}).get("replicas") or 0)
            for role, s in by_role.items()
            if not (s.get("metadata") or {}).get("deletionTimestamp")
        }
        decisions = plan_roles(spec, requests)
        patched: Obj | None = None
        ops = template_replicas_patch(spec, decisions)
        if ops:
            patched = await self.control.patch_storm_service(storm_service, ops)
            scaled = ", ".join(f"{t['value']}={a['value']}" for t, a in zip(ops[::2], ops[1::2], strict=True))
            self.recorder.event(
                storm_service, "Normal", EVENT_SCALED_ROLE, f"Applied RoleScaler replicas to roles: {scaled}"
            )

        now = now_rfc3339()
        for decision in decisions:
            target = by_role.get(decision.role)
            if target is None:
                continue
            old = target.get("status") or {}
            new = scaler_status(target, decision, meta["name"], rolesets, now)
            if not _status_differs(old, new):
                continue
            with contextlib.suppress(NotFound):
                await self.control.patch_status(target, new)
            was, now_cond = _condition(old, CONDITION_CLAMPED), _condition(new, CONDITION_CLAMPED)
            if now_cond.get("status") == "True" and (
                was.get("status") != "True" or was.get("message") != now_cond.get("message")
            ):
                # A cached item of a list has no kind: the Event needs it for its involvedObject.
                involved = {**target, "apiVersion": c.API_VERSION, "kind": c.KIND_ROLE_SCALER}
                self.recorder.event(
                    involved, "Normal", EVENT_OUTSIDE_RATIO_BAND, str(now_cond.get("message"))
                )
        return patched

    def _report_conflict(self, storm_service: Obj, key: str) -> None:
        if key in self._conflicts:
            return
        self._conflicts.add(key)
        self.recorder.event(
            storm_service,
            "Warning",
            EVENT_ROLE_SCALER_CONFLICT,
            f"RoleScaler {key.split('/', 1)[1]} exists and is not controlled by this StormService; "
            "its role is not scaled until it is removed",
        )
