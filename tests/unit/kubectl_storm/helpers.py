"""StormService, RoleSet and ControllerRevision dicts as the API server returns them."""

from __future__ import annotations

import copy
from typing import Any

from controller.stormservice.revisions import revision_data

Obj = dict[str, Any]
UID = "ss-uid"


def role(name: str, image: str = "img:1", replicas: int = 1) -> Obj:
    return {
        "name": name,
        "replicas": replicas,
        "template": {
            "metadata": {"labels": {"component": name}},
            "spec": {"containers": [{"name": "c", "image": image}]},
        },
    }


def template(image: str = "img:1", prefill: int = 1, decode: int = 1) -> Obj:
    return {
        "metadata": {"labels": {"app": "pd"}},
        "spec": {"roles": [role("prefill", image, prefill), role("decode", image, decode)]},
    }


def cond(type_: str, status: str, reason: str, message: str = "", at: str = "2026-01-01T00:00:00Z") -> Obj:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": at}


def storm_service(
    *,
    tmpl: Obj | None = None,
    generation: int = 1,
    observed: int = 1,
    paused: bool = False,
    conditions: list[Obj] | None = None,
    current: str = "pd-aaa",
    update: str = "pd-aaa",
    resource_version: str = "42",
) -> Obj:
    return {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "StormService",
        "metadata": {
            "name": "pd",
            "namespace": "ns",
            "uid": UID,
            "generation": generation,
            "resourceVersion": resource_version,
        },
        "spec": {"replicas": 2, "paused": paused, "template": tmpl or template()},
        "status": {
            "observedGeneration": observed,
            "replicas": 2,
            "readyReplicas": 2,
            "updatedReplicas": 2,
            "currentReplicas": 2,
            "currentRevision": current,
            "updateRevision": update,
            "conditions": conditions or [],
        },
    }


def roleset(
    name: str,
    revision: str = "pd-aaa",
    ready: dict[str, int] | None = None,
    updated: dict[str, int] | None = None,
    desired: dict[str, int] | None = None,
    *,
    generation: int = 1,
    observed: int = 1,
    terminating: bool = False,
) -> Obj:
    desired = desired or {"prefill": 1, "decode": 1}
    ready = ready if ready is not None else dict(desired)
    updated = updated if updated is not None else dict(desired)
    meta: Obj = {
        "name": name,
        "generation": generation,
        "labels": {"storm-service-name": "pd", "storm-service-revision": revision},
        "ownerReferences": [{"uid": UID, "controller": True, "kind": "StormService", "name": "pd"}],
    }
    if terminating:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"roles": [{"name": n, "replicas": r} for n, r in desired.items()]},
        "status": {
            "observedGeneration": observed,
            "roles": [
                {"name": n, "readyReplicas": ready.get(n, 0), "updatedReplicas": updated.get(n, 0)}
                for n in desired
            ],
        },
    }


def revision(name: str, number: int, tmpl: Obj, created: str = "2026-01-01T00:00:00Z") -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "creationTimestamp": created,
            "labels": {"name": "pd", "controller.kubernetes.io/hash": name.rsplit("-", 1)[-1]},
            "ownerReferences": [{"uid": UID, "controller": True}],
        },
        "data": revision_data(copy.deepcopy(tmpl)),
        "revision": number,
    }
