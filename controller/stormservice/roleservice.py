"""Per-role Services (`RoleSpec.service`): what each should look like, and what to do to get there.

A role with `service` gets a Service named `<stormservice>-<role>` (shortened like the PDBs'
names), owned by the StormService, selecting `storm-service-name=<ss>,role-name=<role>`: that
role's pods in every RoleSet, whatever their revision. The name and the selector never change
across rollouts, so the Service's endpoints go from the old RoleSet's pods to the new one's as
they become ready, never through empty.

- `type` ClusterIP, NodePort, LoadBalancer as in core/v1; Headless is ClusterIP with
  `clusterIP: None`. clusterIP is immutable, so a change between Headless and another type
  deletes the Service, and the next pass creates it again; other type changes are patches.
- `ports` as given, else derived from the role template: every containerPort of its
  containers (a port number and protocol listed once), named as the container port is, else
  `<protocol>-<port>`, targeting the port by name when it has one (so a rollout that
  renumbers a named port keeps routing to old and new pods alike). A Service other than
  Headless needs a port: a role with none, given or derived, gets no Service (an existing one
  is left as it is) and the condition says so. Ports follow the StormService's template (the
  update revision), not the pods of an unfinished rollout.
- `labels` and `annotations` are set on the Service; the keys last applied are recorded in
  ANNOTATION_APPLIED_METADATA, so a key removed from the spec is removed from the Service
  while keys someone else added stay.
- The Service is patched with what we set only: a NodePort the API server picked is kept.
- A Service of that name the StormService does not control is never touched: ServiceConflict.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from apis.v1alpha1 import constants as c
from controller.runtime.controllerref import is_controlled_by, new_controller_ref
from controller.stormservice.naming import role_service_name

Obj = dict[str, Any]

HEADLESS = "Headless"
CONDITION_ROLE_SERVICES = "RoleServicesSynced"
REASON_SYNCED = "RoleServicesSynced"
REASON_CONFLICT = "ServiceConflict"
REASON_NO_PORTS = "NoServicePorts"
REASON_FAILED = "ServiceSyncFailed"
#: On a role's Service: the keys of `service.labels` and `service.annotations` last applied.
ANNOTATION_APPLIED_METADATA = c.PREFIX + "applied-service-metadata"

_PORT_FIELDS = ("name", "port", "targetPort", "protocol", "appProtocol", "nodePort")


def role_selector(storm_service: str, role: str) -> dict[str, str]:
    return {c.LABEL_STORM_SERVICE_NAME: storm_service, c.LABEL_ROLE_NAME: role}


def template_ports(template: Mapping[str, Any]) -> list[Obj]:
    """The ServicePorts of every containerPort of a pod template's containers (see the module doc)."""
    out: list[Obj] = []
    seen: set[tuple[int, str]] = set()
    names: set[str] = set()
    for ctr in (template.get("spec") or {}).get("containers") or ():
        for port in (ctr.get("ports") if isinstance(ctr, Mapping) else None) or ():
            number = port.get("containerPort")
            if not isinstance(number, int) or isinstance(number, bool):
                continue
            protocol = str(port.get("protocol") or "TCP")
            if (number, protocol) in seen:
                continue
            own = str(port.get("name") or "")
            # A name another container already used resolves to that container's port.
            unique = bool(own) and own not in names
            name = own if unique else f"{protocol.lower()}-{number}"
            if name in names:
                continue
            seen.add((number, protocol))
            names.add(name)
            out.append(
                {"name": name, "port": number, "targetPort": own if unique else number, "protocol": protocol}
            )
    return out


def _normal_port(port: Mapping[str, Any]) -> Obj:
    """A ServicePort as the API server stores it: protocol and targetPort defaulted."""
    out: Obj = {k: port[k] for k in _PORT_FIELDS if port.get(k) not in (None, "")}
    out.setdefault("protocol", "TCP")
    out.setdefault("targetPort", out["port"])
    return out


def service_ports(role: Mapping[str, Any]) -> list[Obj]:
    """The ports of a role's Service: `service.ports`, else those of its template."""
    given = (role.get("service") or {}).get("ports") or ()
    ports = list(given) if given else template_ports(role.get("template") or {})
    return [_normal_port(p) for p in ports]


def is_headless(service: Mapping[str, Any]) -> bool:
    return (service.get("spec") or {}).get("clusterIP") == "None"


@dataclass(frozen=True, slots=True)
class DesiredRoleService:
    """The Service a role asks for; `body` is None when it has no port to serve (`problem`)."""

    role: str
    name: str
    type: str
    body: Obj | None
    problem: str | None = None


def _roles_with_service(storm_service: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    spec = storm_service.get("spec") or {}
    for role in ((spec.get("template") or {}).get("spec") or {}).get("roles") or ():
        if isinstance(role, Mapping) and role.get("name") and isinstance(role.get("service"), Mapping):
            yield role


def role_service_names(storm_service: Mapping[str, Any]) -> set[str]:
    """Names of the Services the StormService's roles ask for."""
    name = storm_service["metadata"]["name"]
    return {role_service_name(name, str(role["name"])) for role in _roles_with_service(storm_service)}


def desired_role_services(storm_service: Mapping[str, Any]) -> dict[str, DesiredRoleService]:
    """The Services the StormService's roles ask for, by name."""
    meta = storm_service["metadata"]
    out: dict[str, DesiredRoleService] = {}
    for role in _roles_with_service(storm_service):
        role_name = str(role["name"])
        service = role["service"]
        type_ = str(service.get("type") or "ClusterIP")
        name = role_service_name(meta["name"], role_name)
        ports = service_ports(role)
        if not ports and type_ != HEADLESS:
            problem = (
                f"role {role_name}: a {type_} Service needs a port, and neither service.ports nor "
                "the role's containers give one"
            )
            out[name] = DesiredRoleService(role_name, name, type_, None, problem)
            continue
        selector = role_selector(meta["name"], role_name)
        user_labels = dict(service.get("labels") or {})
        user_annotations = dict(service.get("annotations") or {})
        annotations = dict(user_annotations)
        if user_labels or user_annotations:
            applied = {"annotations": sorted(user_annotations), "labels": sorted(user_labels)}
            annotations[ANNOTATION_APPLIED_METADATA] = json.dumps(applied, separators=(",", ":"))
        spec: Obj = {"type": "ClusterIP" if type_ == HEADLESS else type_, "selector": selector}
        if type_ == HEADLESS:
            spec["clusterIP"] = "None"
        if ports:
            spec["ports"] = ports
        if service.get("publishNotReadyAddresses"):
            spec["publishNotReadyAddresses"] = True
        metadata: Obj = {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {**user_labels, **selector},
            "ownerReferences": [new_controller_ref(storm_service, c.API_VERSION, c.KIND_STORM_SERVICE)],
        }
        if annotations:
            metadata["annotations"] = annotations
        body = {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}
        out[name] = DesiredRoleService(role_name, name, type_, body)
    return out


def _applied_keys(annotations: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(label keys, annotation keys) that ANNOTATION_APPLIED_METADATA says we applied."""
    try:
        applied = json.loads(str(annotations.get(ANNOTATION_APPLIED_METADATA) or "{}"))
    except ValueError:
        return set(), set()
    if not isinstance(applied, dict):
        return set(), set()
    return set(applied.get("labels") or ()), set(applied.get("annotations") or ())


def _map_patch(have: Mapping[str, Any], want: Mapping[str, Any], dropped: Iterable[str]) -> Obj:
    """Merge patch of a string map: `want`'s entries that differ, and `dropped` keys removed."""
    patch: Obj = {k: v for k, v in want.items() if have.get(k) != v}
    patch.update({k: None for k in dropped if k in have and k not in want})
    return patch


def _comparable_ports(have: Iterable[Mapping[str, Any]], want: list[Obj]) -> list[Obj]:
    """`have` as `want` would read it: a nodePort the API server picked counts only where we
    ask for a particular one."""
    out = []
    for i, port in enumerate(have):
        normal = _normal_port(port)
        if i >= len(want) or "nodePort" not in want[i]:
            normal.pop("nodePort", None)
        out.append(normal)
    return out


def role_service_patch(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> Obj | None:
    """Merge patch bringing `existing` to `desired` in what we set, or None when nothing differs.
    A change between Headless and another type cannot be patched (see `plan_role_services`)."""
    have_meta = existing.get("metadata") or {}
    want_meta = desired["metadata"]
    have_labels = have_meta.get("labels") or {}
    have_annotations = have_meta.get("annotations") or {}
    applied_labels, applied_annotations = _applied_keys(have_annotations)
    metadata: Obj = {}
    labels = _map_patch(have_labels, want_meta["labels"], applied_labels)
    if labels:
        metadata["labels"] = labels
    annotations = _map_patch(
        have_annotations,
        want_meta.get("annotations") or {},
        applied_annotations | {ANNOTATION_APPLIED_METADATA},
    )
    if annotations:
        metadata["annotations"] = annotations

    have = existing.get("spec") or {}
    want = desired["spec"]
    spec: Obj = {}
    if (have.get("type") or "ClusterIP") != want["type"]:
        spec["type"] = want["type"]
    if have.get("selector") != want["selector"]:
        # A merge patch merges maps: remove every selector key we do not want.
        spec["selector"] = {**dict.fromkeys(have.get("selector") or {}), **want["selector"]}
    want_ports = want.get("ports") or []
    if _comparable_ports(have.get("ports") or (), want_ports) != want_ports:
        spec["ports"] = want_ports or None
    if bool(have.get("publishNotReadyAddresses")) != bool(want.get("publishNotReadyAddresses")):
        spec["publishNotReadyAddresses"] = bool(want.get("publishNotReadyAddresses"))

    body: Obj = {}
    if metadata:
        body["metadata"] = metadata
    if spec:
        body["spec"] = spec
    return body or None


def is_role_service(service: Mapping[str, Any], storm_service: Mapping[str, Any]) -> bool:
    """One of the StormService's role Services (not its headless Service, which it also owns)."""
    meta = service.get("metadata") or {}
    ss_meta = storm_service["metadata"]
    return (
        is_controlled_by(service, ss_meta["uid"])
        and meta.get("namespace") == ss_meta["namespace"]
        and meta.get("name") != ss_meta["name"]
        and c.LABEL_ROLE_NAME in (meta.get("labels") or {})
    )


@dataclass(frozen=True, slots=True)
class RoleServiceAction:
    """`create` (`body` is the object), `patch` (`body` is the merge patch), `recreate` (delete
    `existing`: Headless to another type or back; the next pass creates it), `delete`
    (`existing`, no role asks for it), `conflict` (`existing` is someone else's), `no-ports`
    (`message` says which role; an `existing` Service of ours is left as it is)."""

    action: Literal["create", "patch", "recreate", "delete", "conflict", "no-ports"]
    name: str
    role: str = ""
    body: Obj | None = None
    existing: Obj | None = None
    message: str = ""


def plan_role_services(
    storm_service: Mapping[str, Any],
    desired: Mapping[str, DesiredRoleService],
    owned: Iterable[Obj],
    lookup: Callable[[str], Obj | None],
) -> list[RoleServiceAction]:
    """What to do about the StormService's role Services. `desired` is
    `desired_role_services(storm_service)`, `owned` are its role Services in the cache
    (`is_role_service`), `lookup(name)` is the cached Service of that name in its namespace, if
    any. A Service being deleted is waited for: its deletion event brings the next pass."""
    uid = storm_service["metadata"]["uid"]
    actions: list[RoleServiceAction] = []
    for name, want in sorted(desired.items()):
        existing = lookup(name)
        if existing is not None and (existing.get("metadata") or {}).get("deletionTimestamp"):
            continue
        if existing is not None and not is_controlled_by(existing, uid):
            actions.append(RoleServiceAction("conflict", name, want.role, existing=existing))
        elif want.body is None:
            actions.append(
                RoleServiceAction("no-ports", name, want.role, existing=existing, message=want.problem or "")
            )
        elif existing is None:
            actions.append(RoleServiceAction("create", name, want.role, body=want.body))
        elif is_headless(existing) != (want.type == HEADLESS):
            actions.append(RoleServiceAction("recreate", name, want.role, body=want.body, existing=existing))
        elif (patch := role_service_patch(existing, want.body)) is not None:
            actions.append(RoleServiceAction("patch", name, want.role, body=patch, existing=existing))
    for service in sorted(owned, key=lambda s: str(s["metadata"]["name"])):
        meta = service["metadata"]
        if meta["name"] not in desired and not meta.get("deletionTimestamp"):
            role = str((meta.get("labels") or {}).get(c.LABEL_ROLE_NAME) or "")
            actions.append(RoleServiceAction("delete", meta["name"], role, existing=service))
    return actions


def services_condition(
    desired: Mapping[str, DesiredRoleService],
    *,
    conflicts: Iterable[str],
    no_ports: Iterable[str],
    failed: str | None,
    leftovers: bool,
) -> tuple[str, str, str] | None:
    """(status, reason, message) of the RoleServicesSynced condition; None (no condition) when
    no role asks for a Service and none of ours is left to delete: a StormService that never
    used the field shows nothing new."""
    if not desired and not leftovers:
        return None
    if failed is not None:
        return "False", REASON_FAILED, failed
    conflicts = sorted(conflicts)
    if conflicts:
        return (
            "False",
            REASON_CONFLICT,
            f"Services not controlled by this StormService, left alone: {', '.join(conflicts)}",
        )
    problems = sorted(no_ports)
    if problems:
        return "False", REASON_NO_PORTS, "; ".join(problems)
    if not desired:
        return "True", REASON_SYNCED, "no role asks for a Service"
    listed = ", ".join(f"{name} ({want.type})" for name, want in sorted(desired.items()))
    return "True", REASON_SYNCED, f"Services: {listed}"
