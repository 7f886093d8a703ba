"""RoleScalerSync against a fake control: which RoleScalers are created, deleted and written,
what goes into the StormService's template, and what is reported."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from controller.runtime.errors import AlreadyExists
from controller.runtime.store import Store
from controller.stormservice.rolescaler import RoleScalerSync, desired_scaler

Obj = dict[str, Any]
UID = "ss-uid"


def storm_service(*roles: Obj, replicas: int = 1) -> Obj:
    return {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "StormService",
        "metadata": {"name": "llama", "namespace": "ns", "uid": UID, "resourceVersion": "1"},
        "spec": {"replicas": replicas, "template": {"spec": {"roles": list(roles)}}},
    }


def role(name: str, replicas: int, **extra: Any) -> Obj:
    return {"name": name, "replicas": replicas, **extra}


def roleset(**instances: int) -> Obj:
    return {
        "metadata": {"name": "llama-roleset-abcde"},
        "status": {"roles": [{"name": n, "replicas": i} for n, i in instances.items()]},
    }


class FakeControl:
    def __init__(self, held: set[str] | None = None, existing: Mapping[str, Obj] | None = None) -> None:
        self.created: list[Obj] = []
        self.deleted: list[str] = []
        self.statuses: dict[str, Obj] = {}
        self.patches: list[list[Obj]] = []
        self.held = held or set()
        self.existing = dict(existing or {})

    async def create(self, body: Obj) -> Obj:
        if body["metadata"]["name"] in self.held or body["metadata"]["name"] in self.existing:
            raise AlreadyExists(409, "AlreadyExists", "exists")
        out = copy.deepcopy(body)
        out["metadata"]["uid"] = f"uid-{body['metadata']['name']}"
        self.created.append(out)
        return out

    async def get(self, namespace: str, name: str) -> Obj:
        if name in self.existing:
            return self.existing[name]
        return {"metadata": {"name": name, "namespace": namespace, "ownerReferences": []}}

    async def delete(self, obj: Mapping[str, Any]) -> None:
        self.deleted.append(obj["metadata"]["name"])

    async def patch_status(self, obj: Mapping[str, Any], status: Obj) -> None:
        self.statuses[obj["metadata"]["name"]] = status

    async def patch_storm_service(self, obj: Mapping[str, Any], ops: list[Obj]) -> Obj:
        self.patches.append(ops)
        return {**obj, "metadata": {**obj["metadata"], "resourceVersion": "2"}}


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, str]] = []

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.seen.append((str(obj.get("kind")), type_, reason, message))

    def reasons(self) -> list[str]:
        return [r for _, _, r, _ in self.seen]


def cached_scaler(ss: Obj, r: Obj, replicas: int, status: Obj | None = None) -> Obj:
    obj = desired_scaler(ss, r)
    obj["metadata"].update(uid=f"uid-{obj['metadata']['name']}", generation=1, resourceVersion="5")
    obj["spec"]["replicas"] = replicas
    if status is not None:
        obj["status"] = status
    return obj


async def test_creates_a_role_scaler_per_external_role_from_the_template_replicas() -> None:
    ss = storm_service(role("prefill", 2, scaling="External"), role("router", 1))
    control, events = FakeControl(), Events()
    patched = await RoleScalerSync(Store(), control, events).sync(ss, [roleset(prefill=2, router=1)])
    assert patched is None
    (created,) = control.created
    assert created["metadata"]["name"] == "llama-prefill"
    assert created["spec"] == {"replicas": 2, "stormServiceName": "llama", "roleName": "prefill"}
    assert created["metadata"]["labels"] == {"storm-service-name": "llama", "role-name": "prefill"}
    owner = created["metadata"]["ownerReferences"][0]
    assert (owner["uid"], owner["controller"]) == (UID, True)
    status = control.statuses["llama-prefill"]
    assert status["replicas"] == 2 and status["selector"] == "storm-service-name=llama,role-name=prefill"
    assert "conditions" not in status  # no band, no Clamped condition
    assert events.reasons() == ["CreatedRoleScaler"]


async def test_a_scaled_role_scaler_writes_the_template_and_a_band_clamps() -> None:
    band = {"follows": "prefill", "minRatio": "1.5", "maxRatio": "3"}
    prefill, decode = (
        role("prefill", 2, scaling="External"),
        role("decode", 4, scaling="External", scalingBand=band),
    )
    ss = storm_service(prefill, decode)
    store = Store()
    store.add(cached_scaler(ss, prefill, 2))
    store.add(cached_scaler(ss, decode, 9))
    control, events = FakeControl(), Events()
    patched = await RoleScalerSync(store, control, events).sync(ss, [roleset(prefill=2, decode=4)])
    assert patched is not None and patched["metadata"]["resourceVersion"] == "2"
    assert control.patches == [
        [
            {"op": "test", "path": "/spec/template/spec/roles/1/name", "value": "decode"},
            {"op": "add", "path": "/spec/template/spec/roles/1/replicas", "value": 6},
        ]
    ]
    status = control.statuses["llama-decode"]
    assert (status["replicas"], status["desiredReplicas"]) == (4, 6)
    (clamped,) = status["conditions"]
    assert (clamped["type"], clamped["status"], clamped["reason"]) == ("Clamped", "True", "OutsideRatioBand")
    assert ("RoleScaler", "Normal", "OutsideRatioBand") in [s[:3] for s in events.seen]
    assert control.created == [] and control.deleted == []


async def test_an_unchanged_status_is_not_written_and_reports_nothing() -> None:
    prefill = role("prefill", 2, scaling="External")
    ss = storm_service(prefill)
    status = {
        "observedGeneration": 1,
        "replicas": 2,
        "desiredReplicas": 2,
        "selector": "storm-service-name=llama,role-name=prefill",
    }
    store = Store()
    store.add(cached_scaler(ss, prefill, 2, status))
    control, events = FakeControl(), Events()
    assert await RoleScalerSync(store, control, events).sync(ss, [roleset(prefill=2)]) is None
    assert control.statuses == {} and control.patches == [] and events.seen == []


async def test_opting_out_deletes_the_role_scaler() -> None:
    prefill = role("prefill", 2, scaling="External")
    ss = storm_service(role("prefill", 2))
    store = Store()
    store.add(cached_scaler(storm_service(prefill), prefill, 3))
    control, events = FakeControl(), Events()
    assert await RoleScalerSync(store, control, events).sync(ss, []) is None
    assert control.deleted == ["llama-prefill"]
    assert control.patches == []  # the role keeps its replicas
    assert events.reasons() == ["DeletedRoleScaler"]


async def test_no_role_scalers_outside_pooled_mode() -> None:
    ss = storm_service(role("prefill", 2, scaling="External"), replicas=2)
    control = FakeControl()
    assert await RoleScalerSync(Store(), control, Events()).sync(ss, []) is None
    assert control.created == []


async def test_a_role_scaler_held_by_someone_else_is_reported_once() -> None:
    ss = storm_service(role("prefill", 2, scaling="External"))
    control, events = FakeControl(held={"llama-prefill"}), Events()
    sync = RoleScalerSync(Store(), control, events)
    await sync.sync(ss, [])
    await sync.sync(ss, [])
    assert events.reasons() == ["RoleScalerConflict"]
    assert control.statuses == {}


async def test_our_own_role_scaler_not_yet_in_the_cache_is_no_conflict() -> None:
    prefill = role("prefill", 2, scaling="External")
    ss = storm_service(prefill)
    ours = cached_scaler(ss, prefill, 2)
    control, events = FakeControl(existing={"llama-prefill": ours}), Events()
    await RoleScalerSync(Store(), control, events).sync(ss, [roleset(prefill=2)])
    assert "RoleScalerConflict" not in events.reasons()
    assert "llama-prefill" in control.statuses
