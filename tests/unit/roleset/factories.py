"""Slim pod dicts for the RoleSet decision-function tests."""

from __future__ import annotations

from typing import Any

from controller.roleset import labels as L
from controller.roleset.instances import PodInfo, RoleParams, pod_info


def mkpod(
    name: str,
    *,
    hash_: str = "new",
    ready: bool = True,
    phase: str = "Running",
    index: int | str | None = None,
    group: str | None = None,
    member: int | None = None,
    size: int | None = None,
    created: str = "2024-01-01T00:00:00Z",
    deleting: bool = False,
    target: str | None = None,
    role: str = "worker",
) -> dict[str, Any]:
    labels = {L.ROLE_TEMPLATE_HASH_LABEL: hash_, L.ROLE_NAME_LABEL: role, L.ROLESET_NAME_LABEL: "rs"}
    annotations: dict[str, str] = {}
    if index is not None:
        annotations[L.ROLE_REPLICA_INDEX_ANNOTATION] = str(index)
        labels[L.ROLE_REPLICA_INDEX_LABEL] = str(index)
    if group is not None:
        labels[L.PODSET_NAME_LABEL] = group
        labels[L.POD_GROUP_INDEX_LABEL] = str(member)
        annotations[L.POD_GROUP_SIZE_ANNOTATION] = str(size)
    if target is not None:
        annotations[L.INPLACE_TARGET_HASH_ANNOTATION] = target
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "ns",
        "uid": f"uid-{name}",
        "labels": labels,
        "annotations": annotations,
        "creationTimestamp": created,
    }
    if deleting:
        meta["deletionTimestamp"] = "2024-01-02T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "main", "image": "img:1"}]},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def info(name: str, **kw: Any) -> PodInfo:
    return pod_info(mkpod(name, **kw))


def params(
    replicas: int = 3,
    *,
    group_size: int = 1,
    stateful: bool = False,
    surge: int = 0,
    unavailable: int = 1,
    recreate: bool = False,
    hash_: str = "new",
) -> RoleParams:
    return RoleParams(
        name="worker",
        replicas=replicas,
        group_size=group_size,
        stateful=stateful,
        target_hash=hash_,
        surge=surge,
        unavailable=unavailable,
        recreate_group=recreate,
    )


def group(
    index: int,
    size: int,
    *,
    hash_: str = "new",
    ready: bool = True,
    created: str = "2024-01-01T00:00:00Z",
    members: list[int] | None = None,
    **kw: Any,
) -> list[PodInfo]:
    key = f"rs-worker-{hash_}-{index}"
    return [
        info(
            f"{key}-{m}",
            hash_=hash_,
            ready=ready,
            index=index,
            group=key,
            member=m,
            size=size,
            created=created,
            **kw,
        )
        for m in (members if members is not None else range(size))
    ]
