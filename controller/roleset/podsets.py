"""Taking over AIBrix's PodSets.

AIBrix's controller puts a PodSet between a RoleSet and the pods of each group of a
`podGroupSize > 1` role: the pods are controlled by the PodSet, the PodSet by the RoleSet, and
the PodSet carries AIBrix's finalizer. This controller has no such level: a group is its pods.
To take over without restarting anything, a RoleSet
1. re-parents each pod of its PodSets to itself (the controller reference is replaced, tested
   against the pod's uid and the PodSet's reference, so a pod re-created meanwhile or claimed by
   someone else is left alone);
2. removes AIBrix's finalizer from the PodSet (nothing of AIBrix's runs to remove it);
3. deletes the now empty PodSet with orphan propagation (a pod re-parented a moment ago that the
   garbage collector's graph still shows under the PodSet must not be deleted with it).
PodSets exist only where AIBrix's CRD is installed; elsewhere there is nothing to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.runtime.client import Obj

PODSET_FINALIZER = "orchestration.aibrix.ai/podset-finalizer"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def reparent_patch(
    pod: Mapping[str, Any], podset_uid: str, roleset_ref: Mapping[str, Any]
) -> list[Obj] | None:
    """A JSON patch that replaces the pod's controller reference to the PodSet `podset_uid` by
    `roleset_ref`; None when the pod is not controlled by that PodSet."""
    refs = _meta(pod).get("ownerReferences") or []
    for i, ref in enumerate(refs):
        if ref.get("uid") == podset_uid and ref.get("controller"):
            return [
                {"op": "test", "path": "/metadata/uid", "value": _meta(pod).get("uid")},
                {"op": "test", "path": f"/metadata/ownerReferences/{i}/uid", "value": podset_uid},
                {"op": "replace", "path": f"/metadata/ownerReferences/{i}", "value": dict(roleset_ref)},
            ]
    return None


def finalizer_patch(podset: Mapping[str, Any]) -> list[Obj] | None:
    """A JSON patch that removes AIBrix's finalizer (tested in place); None when absent."""
    finalizers = list(_meta(podset).get("finalizers") or [])
    if PODSET_FINALIZER not in finalizers:
        return None
    i = finalizers.index(PODSET_FINALIZER)
    return [
        {"op": "test", "path": "/metadata/uid", "value": _meta(podset).get("uid")},
        {"op": "test", "path": f"/metadata/finalizers/{i}", "value": PODSET_FINALIZER},
        {"op": "remove", "path": f"/metadata/finalizers/{i}"},
    ]
