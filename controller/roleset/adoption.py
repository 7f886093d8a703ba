"""Which pods a RoleSet owns: adoption of orphans and release of pods that stopped matching, with
the runtime's ControllerRefManager (ReplicaSet's rules).

A pod matches a RoleSet when it carries the RoleSet's `roleset-name` label (the RoleSet has no
selector field; that label is what every tool reads). Candidates come from the pod cache only:
pods we control (controller-uid index) and pods labelled with the RoleSet's name (the index
below). Pods controlled by anyone else are never touched. The cache holds only pods with the
label, so a pod whose label is removed leaves it; such a pod is read once by name and released
(`release_departed`).

Writes carry a `metadata.uid` precondition, so a patch aimed at a pod deleted and re-created under
the same name fails instead of claiming the new one. Adoption is client-go's strategic merge
patch: ownerReferences merge by uid, so an adoption racing another controller's ends with two
controller references, which the API server rejects (a JSON patch `add` of the whole list, as a
cache that still shows an orphan would send, would replace the other controller's reference).
Release is a JSON patch that tests the uid and the reference at the index it removes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from controller.roleset import labels as L
from controller.runtime.client import Obj, PatchType
from controller.runtime.controllerref import (
    ControllerRefManager,
    adopt_patch,
    being_deleted,
    controller_ref,
    recheck_deletion_timestamp,
    release_patch,
)
from controller.runtime.errors import Conflict, Invalid, NotFound
from controller.runtime.store import INDEX_CONTROLLER_UID, Store

INDEX_ROLESET_LABEL = "roleset-label"

PatchPod = Callable[[str, Obj | list[Obj], PatchType], Awaitable[Obj]]


def roleset_label_index(obj: Obj) -> list[str]:
    """ "namespace/<roleset-name label>": the RoleSet a pod's labels point at."""
    meta = obj.get("metadata") or {}
    value = (meta.get("labels") or {}).get(L.ROLESET_NAME_LABEL)
    return [f"{meta.get('namespace') or ''}/{value}"] if value else []


def matches(pod: Mapping[str, Any], namespace: str, name: str) -> bool:
    md = L.meta(pod)
    return md.get("namespace") == namespace and (md.get("labels") or {}).get(L.ROLESET_NAME_LABEL) == name


def needs_claim(pods: Store, key: str, namespace: str, name: str, uid: str) -> bool:
    """Whether a claim pass would write anything: an adoptable orphan, or an owned pod that no
    longer matches. The common case (neither) costs two index lookups and no API call."""
    for pod in pods.by_index(INDEX_ROLESET_LABEL, key):
        if controller_ref(pod) is None and not being_deleted(pod):
            return True
    return any(not matches(p, namespace, name) for p in pods.by_index(INDEX_CONTROLLER_UID, uid))


def candidates(pods: Store, key: str, uid: str) -> list[Obj]:
    """Owned pods, then pods labelled for this RoleSet, each once, in cache order."""
    seen: set[str] = set()
    out: list[Obj] = []
    for pod in (*pods.by_index(INDEX_CONTROLLER_UID, uid), *pods.by_index(INDEX_ROLESET_LABEL, key)):
        pod_uid = str(L.meta(pod).get("uid") or L.meta(pod).get("name"))
        if pod_uid not in seen:
            seen.add(pod_uid)
            out.append(pod)
    return out


def pod_claimer(
    roleset: Mapping[str, Any],
    owner_ref: Mapping[str, Any],
    *,
    patch: PatchPod,
    get_fresh: Callable[[], Awaitable[Obj]],
    on_written: Callable[[Obj], None],
) -> ControllerRefManager:
    """A one-pass ControllerRefManager for the pods of `roleset`. `patch(name, body, type)`
    patches a pod; `get_fresh` reads the RoleSet from the API server (before the first
    adoption only); `on_written` sees every adopted pod as the server returned it."""
    meta = roleset["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]

    async def adopt(pod: Obj) -> None:
        body, patch_type = adopt_patch(pod, owner_ref, strategic=True)
        on_written(await patch(pod["metadata"]["name"], body, patch_type))

    async def release(pod: Obj) -> None:
        await release_pod(pod, uid, patch)

    return ControllerRefManager(
        roleset,
        match=lambda pod: matches(pod, namespace, name),
        adopt=adopt,
        release=release,
        can_adopt=recheck_deletion_timestamp(get_fresh, uid),
    )


async def release_pod(pod: Obj, owner_uid: str, patch: PatchPod) -> bool:
    """Remove `owner_uid`'s reference from `pod` (a JSON patch testing the pod's uid and the
    reference it removes). False when there was nothing to release: the pod is gone, replaced,
    or no longer refers to the owner."""
    built = release_patch(pod, owner_uid, strategic=False)
    if built is None:
        return False
    ops, patch_type = built
    try:
        await patch(pod["metadata"]["name"], ops, patch_type)
    except (NotFound, Invalid, Conflict):
        # Gone, replaced, or no longer ours (the `test` failed): nothing to release.
        return False
    return True


def departed(pod: Mapping[str, Any]) -> bool:
    """Whether a pod the pod cache just dropped may still exist: the cache holds only pods with
    a roleset-name label, and the API server reports a pod that lost the label as deleted, with
    its last matching content. A pod really deleted carries a deletionTimestamp by then (the API
    server sets one even for a forced deletion)."""
    return not being_deleted(pod)


async def release_departed(
    roleset: Mapping[str, Any],
    pod_name: str,
    pod_uid: str,
    *,
    get_pod: Callable[[str], Awaitable[Obj]],
    patch: PatchPod,
) -> bool:
    """ReplicaSet's release of a pod that stopped matching, for a pod the cache can no longer
    show: read it, and release it when it is the same pod, still ours, alive and still without
    our label. True when released."""
    meta = roleset["metadata"]
    try:
        pod = await get_pod(pod_name)
    except NotFound:
        return False
    ref = controller_ref(pod)
    if (
        L.meta(pod).get("uid") != pod_uid
        or being_deleted(pod)
        or ref is None
        or ref.get("uid") != meta["uid"]
        or matches(pod, meta["namespace"], meta["name"])
    ):
        return False
    return await release_pod(pod, meta["uid"], patch)
