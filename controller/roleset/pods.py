"""Pure pod construction from a role template: names, labels, annotations, env, hostname,
subdomain, scheduler keys, topology affinity and the controller owner reference."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.roleset import labels as L
from controller.roleset import naming
from controller.roleset.scheduling import add_affinity_term

Obj = dict[str, Any]

ROLESET_API_VERSION = "orchestration.aibrix.ai/v1alpha1"
ROLESET_KIND = "RoleSet"


@dataclass(frozen=True, slots=True)
class RoleSetInfo:
    name: str
    namespace: str
    uid: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def storm_service(self) -> str:
        return self.labels.get(L.STORM_SERVICE_NAME_LABEL, "")

    @property
    def index(self) -> str:
        return self.annotations.get(L.ROLESET_INDEX_ANNOTATION, "")

    def owner_ref(self) -> Obj:
        return {
            "apiVersion": ROLESET_API_VERSION,
            "kind": ROLESET_KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True, slots=True)
class PodSpecInputs:
    """Everything about a role a pod is built from, beyond its slot."""

    role: str
    template: Mapping[str, Any]
    template_hash: str
    group_size: int = 1
    stateful: bool = False
    # Scheduler keys: (labels, annotations); for role-level PodGroups the group name is filled
    # in per group, so the callable form is resolved by the caller into these dicts.
    scheduler_labels: Mapping[str, str] = field(default_factory=dict)
    scheduler_annotations: Mapping[str, str] = field(default_factory=dict)
    affinity: tuple[str, Obj] | None = None
    # The hash pod and group names carry, when it is not `template_hash`: a member replaced in a
    # group that was updated in place keeps the group's names.
    name_hash: str | None = None
    # The role's entryTemplate: member 0 of each group is made from it (see template_for).
    entry_template: Mapping[str, Any] | None = None

    @property
    def names_hash(self) -> str:
        return self.name_hash or self.template_hash


def pod_name(rs: RoleSetInfo, spec: PodSpecInputs, index: int | None, member: int | None) -> str | None:
    """The fixed name of a stateful or grouped pod; None for stateless pods (generateName)."""
    if member is not None and index is not None:
        return naming.member_pod_name(rs.name, spec.role, spec.names_hash, index, member)
    if index is not None:
        return naming.stateful_pod_name(rs.name, spec.role, spec.names_hash, index)
    return None


def is_entry(spec: PodSpecInputs, index: int | None, member: int | None) -> bool:
    """Whether the pod in this slot is the entry pod of a role with an entryTemplate."""
    return spec.entry_template is not None and index is not None and member == 0


def template_for(spec: PodSpecInputs, index: int | None, member: int | None) -> Mapping[str, Any]:
    """The template the pod in this slot is made from: the entryTemplate for member 0 of a group
    when the role has one, else the role's template."""
    if is_entry(spec, index, member):
        assert spec.entry_template is not None
        return spec.entry_template
    return spec.template


def leader_address(rs: RoleSetInfo, leader: str) -> str:
    """DNS name of the group leader through the StormService's headless Service; resolves in any
    cluster domain through the pod's DNS search path."""
    if rs.storm_service:
        return f"{leader}.{rs.storm_service}.{rs.namespace}.svc"
    return leader


def builtin_env(rs: RoleSetInfo, spec: PodSpecInputs, index: int | None, member: int | None) -> list[Obj]:
    env: list[Obj] = [
        {"name": L.ENV_STORM_SERVICE_NAME, "value": rs.storm_service},
        {"name": L.ENV_ROLESET_NAME, "value": rs.name},
        {"name": L.ENV_ROLESET_INDEX, "value": rs.index},
        {"name": L.ENV_ROLE_NAME, "value": spec.role},
        {"name": L.ENV_ROLE_TEMPLATE_HASH, "value": spec.template_hash},
    ]
    if index is not None:
        env.append({"name": L.ENV_ROLE_REPLICA_INDEX, "value": str(index)})
    if member is not None and index is not None:
        group = naming.group_name(rs.name, spec.role, spec.names_hash, index)
        leader = naming.member_pod_name(rs.name, spec.role, spec.names_hash, index, 0)
        env += [
            {"name": L.ENV_PODSET_NAME, "value": group},
            {"name": L.ENV_POD_GROUP_INDEX, "value": str(member)},
            {"name": L.ENV_POD_GROUP_SIZE, "value": str(spec.group_size)},
            {"name": L.ENV_LEADER_ADDRESS, "value": leader_address(rs, leader)},
        ]
        if spec.entry_template is not None:
            # Kthena's names for the same facts, for engines written against Kthena; only with an
            # entryTemplate, so that AIBrix's pods stay exactly as they were.
            env += [
                {"name": L.ENV_GROUP_SIZE, "value": str(spec.group_size)},
                {"name": L.ENV_ENTRY_ADDRESS, "value": leader_address(rs, leader)},
                {"name": L.ENV_WORKER_INDEX, "value": str(member)},
            ]
    return env


def inject_env(container: Obj, env: list[Obj]) -> None:
    """Built-ins first (user variables may refer to them with $(VAR)); a user variable of the
    same name is dropped."""
    names = {e["name"] for e in env}
    container["env"] = [dict(e) for e in env] + [
        e for e in container.get("env") or () if e.get("name") not in names
    ]


def render_pod(
    rs: RoleSetInfo,
    spec: PodSpecInputs,
    index: int | None = None,
    member: int | None = None,
    *,
    name_suffix: str | None = None,
) -> Obj:
    """The pod the controller creates for slot `index` (member `member` of a group), or a
    stateless pod when index is None, named `<rs>-<role>-<name_suffix>` (generateName without a
    suffix)."""
    template = copy.deepcopy(dict(template_for(spec, index, member)))
    tmeta = template.get("metadata") or {}
    pod_spec: Obj = template.get("spec") or {}
    lbls: dict[str, str] = dict(tmeta.get("labels") or {})
    anns: dict[str, str] = dict(tmeta.get("annotations") or {})

    lbls[L.ROLESET_NAME_LABEL] = rs.name
    lbls[L.ROLE_NAME_LABEL] = spec.role
    lbls[L.ROLE_TEMPLATE_HASH_LABEL] = spec.template_hash
    lbls[L.STORM_SERVICE_NAME_LABEL] = rs.storm_service
    revision = rs.annotations.get(L.role_revision_annotation(spec.role))
    if revision is not None:
        lbls[L.ROLE_REVISION_LABEL] = revision
    revision_name = rs.annotations.get(L.role_revision_name_annotation(spec.role))
    if revision_name is not None:
        lbls[L.ROLE_REVISION_NAME_LABEL] = revision_name
    anns[L.ROLESET_INDEX_ANNOTATION] = rs.index
    if index is not None:
        lbls[L.ROLE_REPLICA_INDEX_LABEL] = str(index)
        anns[L.ROLE_REPLICA_INDEX_ANNOTATION] = str(index)
    if member is not None and index is not None:
        lbls[L.POD_GROUP_INDEX_LABEL] = str(member)
        lbls[L.PODSET_NAME_LABEL] = naming.group_name(rs.name, spec.role, spec.names_hash, index)
        anns[L.POD_GROUP_SIZE_ANNOTATION] = str(spec.group_size)
        if is_entry(spec, index, member):
            lbls[L.ENTRY_LABEL] = "true"
    lbls.update(spec.scheduler_labels)
    anns.update(spec.scheduler_annotations)

    metadata: Obj = {"namespace": rs.namespace, "labels": lbls, "annotations": anns}
    name = pod_name(rs, spec, index, member)
    if name is None and name_suffix is not None:
        name = naming.stateless_pod_name(rs.name, spec.role, name_suffix)
    if name is not None:
        metadata["name"] = name
        pod_spec["hostname"] = name
    else:
        metadata["generateName"] = naming.generate_name(rs.name, spec.role)
    if rs.storm_service:
        pod_spec["subdomain"] = rs.storm_service
    metadata["ownerReferences"] = [rs.owner_ref()]

    if spec.affinity is not None:
        add_affinity_term(pod_spec, *spec.affinity)

    env = builtin_env(rs, spec, index, member)
    # Init containers too: native sidecars (restartPolicy: Always) run beside the engine and
    # need to know their role and group as much as it does.
    for container in (*(pod_spec.get("initContainers") or ()), *(pod_spec.get("containers") or ())):
        inject_env(container, env)

    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}
