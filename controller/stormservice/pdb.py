"""PodDisruptionBudgets of a StormService (**Beyond**: the reference ignores disruptionTolerance).

One PDB per role, over that role's pods in every RoleSet of the StormService: draining nodes
must not take more instances of a role down at once than the service tolerates, wherever they run.
The tolerance is the role's own `disruptionTolerance.maxUnavailable`, else the StormService's
`spec.disruptionTolerance.maxUnavailable`, in role instances (a percent of them, rounded up). An
instance of a grouped role (`podGroupSize` > 1) is broken as soon as one of its pods is gone, so
tolerating N instances lets at most N pods go, whatever the group size; a tolerance covering
every instance protects nothing. A role with neither value has no PDB.

The PDB states it as an integer `minAvailable` (desired pods of the role minus the tolerance),
not as `maxUnavailable`. For `maxUnavailable` (and a percent `minAvailable`) the disruption
controller needs the desired pod count, which it reads from the scale subresource of each pod's
controller; the pods' controller is a RoleSet, which has none (and one RoleSet holds several
roles, so no single scale could say how many pods one role wants). Such a PDB ends in
`DisruptionAllowed=False, reason SyncFailed` with `disruptionsAllowed: 0`, which blocks every
eviction (a node drain hangs). An integer `minAvailable` needs no scale: the disruption
controller counts the pods it selects. Desired pods are `replicas x role replicas x
podGroupSize`, what a Deployment's scale would report (surge pods not counted), so the PDB is
rewritten when either replica count changes (see `apis.v1alpha1.intstr.pdb_min_available`).

Split with the RoleSet controller: it makes per-RoleSet, per-role PDBs only for RoleSets that no
StormService controls, and this controller makes these for the RoleSets it does control, so a
pod never matches two PDBs (the eviction API refuses to evict a pod that more than one PDB
covers).

A PDB of the name we want that this StormService does not control (a user's, another
controller's, an orphan) is reported and left alone: adopting it by name would take over an
object that someone else may still be managing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from apis.v1alpha1 import constants as c
from apis.v1alpha1.intstr import pdb_min_available
from controller.runtime.controllerref import is_controlled_by, new_controller_ref
from controller.stormservice.naming import pdb_name

Obj = dict[str, Any]


def min_available(value: int | str, *, replicas: int, role_replicas: int, group_size: int) -> int | None:
    """The PDB's minAvailable for a tolerance of `value` over every RoleSet's instances of the
    role (see the module docstring); None for a value admission would have refused."""
    try:
        return pdb_min_available(
            value, instances=max(0, replicas) * max(0, role_replicas), group_size=group_size
        )
    except ValueError:
        return None


def _max_unavailable(tolerance: Any) -> int | str | None:
    if not isinstance(tolerance, Mapping):
        return None
    value = tolerance.get("maxUnavailable")
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return value


def pdb_selector(storm_service: str, role: str) -> dict[str, str]:
    return {c.LABEL_STORM_SERVICE_NAME: storm_service, c.LABEL_ROLE_NAME: role}


def desired_pdbs(storm_service: Mapping[str, Any]) -> dict[str, Obj]:
    """The PDBs the StormService's spec asks for, by name."""
    meta = storm_service["metadata"]
    spec = storm_service.get("spec") or {}
    default = _max_unavailable(spec.get("disruptionTolerance"))
    replicas = int(spec["replicas"]) if spec.get("replicas") is not None else 1
    roles = ((spec.get("template") or {}).get("spec") or {}).get("roles") or ()
    out: dict[str, Obj] = {}
    for role in roles:
        name = role.get("name")
        if not name:
            continue
        own = _max_unavailable(role.get("disruptionTolerance"))
        value = own if own is not None else default
        if value is None:
            continue
        floor = min_available(
            value,
            replicas=replicas,
            role_replicas=int(role["replicas"]) if role.get("replicas") is not None else 1,
            group_size=int(role.get("podGroupSize") or 1),
        )
        if floor is None:
            continue
        selector = pdb_selector(meta["name"], name)
        body: Obj = {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {
                "name": pdb_name(meta["name"], name),
                "namespace": meta["namespace"],
                "labels": dict(selector),
                "ownerReferences": [new_controller_ref(storm_service, c.API_VERSION, c.KIND_STORM_SERVICE)],
            },
            "spec": {
                "minAvailable": floor,
                "selector": {"matchLabels": dict(selector)},
            },
        }
        out[body["metadata"]["name"]] = body
    return out


def pdb_patch(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> Obj | None:
    """Merge patch bringing `existing` to `desired`, or None when nothing we set differs. Fields
    we do not set are left alone, except `maxUnavailable` (a PDB cannot have both) and selector
    terms we do not want (a merge patch merges maps, so they are removed explicitly)."""
    patch: Obj = {}
    have_labels = (existing.get("metadata") or {}).get("labels") or {}
    labels = {k: v for k, v in desired["metadata"]["labels"].items() if have_labels.get(k) != v}
    if labels:
        patch["metadata"] = {"labels": labels}
    have = existing.get("spec") or {}
    want = desired["spec"]
    spec: Obj = {}
    if have.get("minAvailable") != want["minAvailable"]:
        spec["minAvailable"] = want["minAvailable"]
    if have.get("maxUnavailable") is not None:
        spec["maxUnavailable"] = None
    if have.get("selector") != want["selector"]:
        have_selector = have.get("selector") or {}
        selector: Obj = {
            "matchLabels": {
                **dict.fromkeys(have_selector.get("matchLabels") or {}),
                **want["selector"]["matchLabels"],
            }
        }
        if "matchExpressions" in have_selector:
            selector["matchExpressions"] = None
        spec["selector"] = selector
    if spec:
        patch["spec"] = spec
    return patch or None


@dataclass(frozen=True, slots=True)
class PdbAction:
    """`create` (`body` is the object), `patch` (`body` is the merge patch, `existing` the cached
    object), `delete` (`existing`), `conflict` (`existing` is someone else's PDB of our name)."""

    action: Literal["create", "patch", "delete", "conflict"]
    name: str
    body: Obj | None = None
    existing: Obj | None = None


def plan_pdbs(
    storm_service: Mapping[str, Any],
    owned: Iterable[Obj],
    lookup: Callable[[str], Obj | None],
) -> list[PdbAction]:
    """What to do about the StormService's PDBs. `owned` are the PDBs it controls (from the
    cache), `lookup(name)` is the cached PDB of that name in its namespace, if any. Objects being
    deleted are waited for: their deletion event brings the next pass."""
    uid = storm_service["metadata"]["uid"]
    desired = desired_pdbs(storm_service)
    actions: list[PdbAction] = []
    for name, body in sorted(desired.items()):
        existing = lookup(name)
        if existing is None:
            actions.append(PdbAction("create", name, body=body))
        elif (existing.get("metadata") or {}).get("deletionTimestamp"):
            continue
        elif not is_controlled_by(existing, uid):
            actions.append(PdbAction("conflict", name, existing=existing))
        elif (patch := pdb_patch(existing, body)) is not None:
            actions.append(PdbAction("patch", name, body=patch, existing=existing))
    for pdb in sorted(owned, key=lambda p: str(p["metadata"]["name"])):
        meta = pdb["metadata"]
        if meta["name"] not in desired and not meta.get("deletionTimestamp"):
            actions.append(PdbAction("delete", meta["name"], existing=pdb))
    return actions
