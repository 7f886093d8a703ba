"""InPlaceUpdate: rewrite outdated RoleSets to the update revision; their controller rolls the pods.

A rewritten RoleSet keeps its name, uid and `roleset-index`; its labels, annotations and spec
become what a new RoleSet of the update revision would get. The RoleSet controller then moves
its pods to the new role templates with each role's own update strategy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from apis.v1alpha1 import constants as c
from controller.stormservice.scale import live
from controller.stormservice.view import RoleSetView

Obj = dict[str, Any]


def to_rewrite(rolesets: Sequence[RoleSetView], update_revision: str) -> list[RoleSetView]:
    """Live RoleSets of another revision, in name order (stable across passes)."""
    return sorted((r for r in live(rolesets) if r.revision != update_revision), key=lambda r: r.name)


def merge_patch(old: Any, new: Any) -> Any:
    """RFC 7386 merge patch turning `old` into `new` (None for a removed key; lists whole)."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch


def rewrite_patch(current: Obj, target: Obj) -> dict[str, Any] | None:
    """Merge patch that gives `current` the labels, annotations and spec of `target` (a rendered
    RoleSet), keeping `current`'s `roleset-index`. It carries `current`'s resourceVersion: a stale
    cache makes the API server refuse it (409) instead of merging against the wrong base. None
    when nothing differs."""
    meta = current.get("metadata", {})
    labels = dict(target["metadata"].get("labels") or {})
    annotations = dict(target["metadata"].get("annotations") or {})
    index = (meta.get("annotations") or {}).get(c.ANNOTATION_ROLESET_INDEX)
    if index is not None:
        annotations[c.ANNOTATION_ROLESET_INDEX] = index
    else:
        annotations.pop(c.ANNOTATION_ROLESET_INDEX, None)
    patch: dict[str, Any] = {}
    meta_patch: dict[str, Any] = {}
    if (meta.get("labels") or {}) != labels:
        meta_patch["labels"] = merge_patch(meta.get("labels") or {}, labels)
    if (meta.get("annotations") or {}) != annotations:
        meta_patch["annotations"] = merge_patch(meta.get("annotations") or {}, annotations)
    spec = target.get("spec") or {}
    if (current.get("spec") or {}) != spec:
        patch["spec"] = merge_patch(current.get("spec") or {}, spec)
    if not meta_patch and not patch:
        return None
    meta_patch["resourceVersion"] = meta.get("resourceVersion")
    patch["metadata"] = meta_patch
    return patch
