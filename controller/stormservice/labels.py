"""Labels and annotations of the RoleSets a StormService creates, and how to read them back."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apis.v1alpha1 import constants as c
from controller.runtime.controllerref import new_controller_ref
from controller.stormservice.naming import roleset_generate_name

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RoleRevision:
    """The ControllerRevision in which a role's template last changed."""

    number: int
    name: str


def roleset_revision(obj: Mapping[str, Any]) -> str:
    """The StormService revision a RoleSet was made from: the label, else the annotation (both
    are written; the reference read them in this order)."""
    meta = obj.get("metadata", {})
    value = (meta.get("labels") or {}).get(c.LABEL_STORM_SERVICE_REVISION)
    if value:
        return str(value)
    return str((meta.get("annotations") or {}).get(c.ANNOTATION_REVISION) or "")


def roleset_index(obj: Mapping[str, Any]) -> int | None:
    raw = (obj.get("metadata", {}).get("annotations") or {}).get(c.ANNOTATION_ROLESET_INDEX)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def roleset_labels(template: Mapping[str, Any], storm_service: str, revision: str) -> dict[str, str]:
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels[c.LABEL_STORM_SERVICE_NAME] = storm_service
    labels[c.LABEL_STORM_SERVICE_REVISION] = revision
    return labels


def roleset_annotations(
    template: Mapping[str, Any], revision: str, index: int | None, role_revisions: Mapping[str, RoleRevision]
) -> dict[str, str]:
    annotations = dict((template.get("metadata") or {}).get("annotations") or {})
    annotations[c.ANNOTATION_REVISION] = revision
    if index is not None:
        annotations[c.ANNOTATION_ROLESET_INDEX] = str(index)
    for role, rr in role_revisions.items():
        annotations[c.role_revision_annotation(role)] = str(rr.number)
        annotations[c.role_revision_name_annotation(role)] = rr.name
    return annotations


def render_roleset(
    storm_service: Mapping[str, Any],
    template: Mapping[str, Any],
    revision: str,
    role_revisions: Mapping[str, RoleRevision],
    index: int | None,
) -> Obj:
    """A new RoleSet of `storm_service` from `template` (`{"metadata": ..., "spec": ...}`)."""
    meta = storm_service["metadata"]
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND_ROLE_SET,
        "metadata": {
            "generateName": roleset_generate_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": roleset_labels(template, meta["name"], revision),
            "annotations": roleset_annotations(template, revision, index, role_revisions),
            "ownerReferences": [new_controller_ref(storm_service, c.API_VERSION, c.KIND_STORM_SERVICE)],
        },
        "spec": roleset_spec(template),
    }


#: Role fields only the StormService acts on (`rolescaler.py`, `roleservice.py`); a RoleSet has
#: no use for them.
STORM_SERVICE_ONLY_ROLE_FIELDS = ("scaling", "scalingBand", "service")


def roleset_spec(template: Mapping[str, Any]) -> Obj:
    """The spec of a RoleSet made from `template`."""
    spec: Obj = copy.deepcopy(dict(template.get("spec") or {}))
    for role in spec.get("roles") or ():
        if isinstance(role, dict):
            for key in STORM_SERVICE_ONLY_ROLE_FIELDS:
                role.pop(key, None)
    return spec


def controller_revision_labels(storm_service: str, hash_: str) -> dict[str, str]:
    return {c.LABEL_CONTROLLER_REVISION_NAME: storm_service, c.LABEL_CONTROLLER_REVISION_HASH: hash_}


def scaling_target_selector(storm_service: str) -> str:
    """Selects every pod of the StormService (an HPA averages its metrics over them)."""
    return f"{c.LABEL_STORM_SERVICE_NAME}={storm_service}"
