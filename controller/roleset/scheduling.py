"""Pure construction of scheduling objects: topology affinity terms, scheduler PodGroups and the
pod keys that point at them, and per-role PodDisruptionBudgets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apis.v1alpha1.intstr import pdb_min_available
from controller.roleset import labels as L
from controller.roleset.naming import object_name
from controller.runtime.resources import Resource

Obj = dict[str, Any]

COSCHEDULING = "coschedulingSchedulingStrategy"
GODEL = "godelSchedulingStrategy"
VOLCANO = "volcanoSchedulingStrategy"


@dataclass(frozen=True, slots=True)
class Scheduler:
    strategy_key: str
    resource: Resource
    label_keys: tuple[str, ...]
    annotation_keys: tuple[str, ...]

    @property
    def crd_name(self) -> str:
        return f"{self.resource.plural}.{self.resource.group}"


SCHEDULERS: dict[str, Scheduler] = {
    COSCHEDULING: Scheduler(
        COSCHEDULING,
        Resource("scheduling.x-k8s.io", "v1alpha1", "podgroups", "PodGroup"),
        (L.COSCHEDULING_POD_GROUP_LABEL,),
        (),
    ),
    GODEL: Scheduler(
        GODEL,
        Resource("scheduling.godel.kubewharf.io", "v1alpha1", "podgroups", "PodGroup"),
        (L.GODEL_POD_GROUP_ANNOTATION,),
        (L.GODEL_POD_GROUP_ANNOTATION,),
    ),
    VOLCANO: Scheduler(
        VOLCANO,
        Resource("scheduling.volcano.sh", "v1beta1", "podgroups", "PodGroup"),
        (L.VOLCANO_POD_GROUP_ANNOTATION,),
        (L.VOLCANO_POD_GROUP_ANNOTATION,),
    ),
}


def chosen_scheduler(strategy: Mapping[str, Any] | None) -> tuple[Scheduler, Mapping[str, Any]] | None:
    """The scheduler a schedulingStrategy names (at most one is allowed by the schema)."""
    if not strategy:
        return None
    for key, sched in SCHEDULERS.items():
        value = strategy.get(key)
        if isinstance(value, Mapping):
            return sched, value
    return None


def pod_group_keys(sched: Scheduler, group: str) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) that put a pod into PodGroup `group`."""
    return {k: group for k in sched.label_keys}, {k: group for k in sched.annotation_keys}


def pod_group_spec(sched: Scheduler, strategy: Mapping[str, Any], default_min_member: int) -> Obj:
    if sched.strategy_key == VOLCANO:
        spec: Obj = {
            k: strategy[k]
            for k in ("minMember", "minTaskMember", "queue", "priorityClassName", "minResources")
            if strategy.get(k) is not None
        }
    else:
        spec = {k: v for k, v in strategy.items() if v is not None}
    spec.setdefault("minMember", default_min_member)
    return spec


def pod_group_object(
    sched: Scheduler,
    *,
    name: str,
    namespace: str,
    roleset: str,
    owner_ref: Mapping[str, Any],
    spec: Obj,
    extra_labels: Mapping[str, str] | None = None,
) -> Obj:
    lbls = {L.ROLESET_NAME_LABEL: roleset, **(extra_labels or {})}
    return {
        "apiVersion": sched.resource.api_version,
        "kind": sched.resource.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": lbls,
            "ownerReferences": [dict(owner_ref)],
        },
        "spec": spec,
    }


# ---------------------------------------------------------------------------------------------
# Topology


REQUIRED_AFFINITY = "requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED_AFFINITY = "preferredDuringSchedulingIgnoredDuringExecution"
PREFERRED_WEIGHT = 100

#: The label sets a topology term of ours selects by, over every scope and every version of this
#: controller: Role scope selected {roleset-name, role-name} before it followed AIBrix.
_TOPOLOGY_SELECTOR_KEYS = frozenset(
    {
        frozenset({L.STORM_SERVICE_NAME_LABEL}),
        frozenset({L.ROLESET_NAME_LABEL}),
        frozenset({L.STORM_SERVICE_NAME_LABEL, L.ROLE_NAME_LABEL}),
        frozenset({L.ROLESET_NAME_LABEL, L.ROLE_NAME_LABEL}),
    }
)


def topology_term(
    policy: Mapping[str, Any] | None, *, storm_service: str | None, roleset: str, role: str
) -> tuple[str, Obj] | None:
    """(affinity list key, list entry) for a topologyPolicy, or None when there is none.

    Scope Role keeps a role's pods together across every RoleSet of the StormService, as AIBrix
    does ({storm-service-name, role-name}); a RoleSet that no StormService made has only its own
    pods ({roleset-name, role-name}). Scope StormService without a StormService falls back to
    the RoleSet."""
    if not policy:
        return None
    scope = policy.get("scope") or "RoleSet"
    if scope == "StormService" and storm_service:
        selector = {L.STORM_SERVICE_NAME_LABEL: storm_service}
    elif scope == "Role" and storm_service:
        selector = {L.STORM_SERVICE_NAME_LABEL: storm_service, L.ROLE_NAME_LABEL: role}
    elif scope == "Role":
        selector = {L.ROLESET_NAME_LABEL: roleset, L.ROLE_NAME_LABEL: role}
    else:
        selector = {L.ROLESET_NAME_LABEL: roleset}
    term: Obj = {
        "labelSelector": {"matchLabels": selector},
        "topologyKey": policy.get("key") or "kubernetes.io/hostname",
    }
    if (policy.get("mode") or "Preferred") == "Required":
        return REQUIRED_AFFINITY, term
    return PREFERRED_AFFINITY, {"weight": PREFERRED_WEIGHT, "podAffinityTerm": term}


def is_topology_entry(key: str, entry: Any, pod_labels: Mapping[str, str]) -> bool:
    """Whether `entry` of the pod affinity list `key` has the shape of a term this controller
    adds for a topologyPolicy (any scope, mode or key, including the Role-scope selector of
    earlier versions) that selects the pod's own group (`pod_labels`, the pod's labels).

    Topology terms go on new pods only, so a pod made under an earlier policy, or by an earlier
    version of the controller, carries a term the current template does not have; that alone is
    no reason to recreate it."""
    if key == PREFERRED_AFFINITY:
        if not isinstance(entry, Mapping) or set(entry) != {"weight", "podAffinityTerm"}:
            return False
        if entry["weight"] != PREFERRED_WEIGHT:
            return False
        term = entry["podAffinityTerm"]
    elif key == REQUIRED_AFFINITY:
        term = entry
    else:
        return False
    if not isinstance(term, Mapping) or set(term) != {"labelSelector", "topologyKey"}:
        return False
    selector = term["labelSelector"]
    if not isinstance(selector, Mapping) or set(selector) != {"matchLabels"}:
        return False
    match = selector["matchLabels"]
    if not isinstance(match, Mapping) or frozenset(match) not in _TOPOLOGY_SELECTOR_KEYS:
        return False
    return all(pod_labels.get(k) == v for k, v in match.items())


def add_affinity_term(spec: Obj, key: str, entry: Obj) -> None:
    affinity = spec.setdefault("affinity", {})
    pod_affinity = affinity.setdefault("podAffinity", {})
    terms = pod_affinity.setdefault(key, [])
    if entry not in terms:
        terms.append(entry)


def has_affinity_term(pod: Mapping[str, Any], key: str, entry: Mapping[str, Any]) -> bool:
    terms = ((pod.get("spec") or {}).get("affinity") or {}).get("podAffinity", {}).get(key) or ()
    return any(t == entry for t in terms)


# ---------------------------------------------------------------------------------------------
# PodDisruptionBudget


def pdb_name(roleset: str, role: str) -> str:
    return object_name(roleset, role)


def pdb_object(
    *,
    roleset: str,
    namespace: str,
    role: str,
    max_unavailable: int | str,
    instances: int,
    group_size: int,
    owner_ref: Mapping[str, Any],
) -> Obj:
    """One role's PDB, as an integer minAvailable: tolerating N instances lets at most N pods go,
    since one missing member breaks a group (see `pdb_min_available`)."""
    selector = {L.ROLESET_NAME_LABEL: roleset, L.ROLE_NAME_LABEL: role}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": pdb_name(roleset, role),
            "namespace": namespace,
            "labels": dict(selector),
            "ownerReferences": [dict(owner_ref)],
        },
        "spec": {
            "minAvailable": pdb_min_available(max_unavailable, instances=instances, group_size=group_size),
            "selector": {"matchLabels": selector},
        },
    }
