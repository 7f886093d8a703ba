"""StormService revisions: one ControllerRevision per distinct RoleSet template.

A revision records `spec.template` with every role's `replicas` removed. Role replicas are a
scaling dimension (an autoscaler moves them), not a version: changing them must not start a
rollout that replaces whole RoleSets, so they are left out of the data and out of the hash, and
applied to existing RoleSets in place (`role_replica_patch`). For the same reason a role's
`scaling` and `scalingBand` (who sets its replicas, see `rolescaler.py`) are left out too:
opting a role in or out of external scaling restarts nothing. A role's
`updateStrategy.partition` (how far a rollout goes) is left out as well, and set on existing
RoleSets in place (`partition.role_partition_patch`). A role's `service` (its Service, see
`roleservice.py`) does not change what a pod runs either, and is left out as well. So is
`dependsOn`, which only orders the first creation of a role's pods in a new RoleSet (see
roleset/dependencies.py).

The data layout is the reference's: `{"spec": {"template": {..., "$patch": "replace"}}}`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from apis import podfields
from apis.v1alpha1.defaults import (
    DEFAULT_POD_GROUP_SIZE,
    DEFAULT_RECOVERY_POLICY,
    DEFAULT_ROLE_UPDATE_STRATEGY,
)
from controller.runtime.revision import canonical_json, next_revision_number, sort_revisions
from controller.stormservice.labels import RoleRevision
from controller.stormservice.view import role_replicas

Obj = dict[str, Any]

PATCH_DIRECTIVE = "$patch"
#: Role fields that are about scaling, the role's Service, the order of its first pods or the
#: recovery of its pod groups (rolepolicy.py), not about what the pods run: not part of a revision.
NOT_VERSIONED_ROLE_FIELDS = (
    "replicas",
    "scaling",
    "scalingBand",
    "service",
    "dependsOn",
    "recoveryGracePeriodSeconds",
    "restartBudget",
)
#: Fields of a role's updateStrategy that say how far a rollout goes, not what the pods run:
#: not part of a revision either (a changed partition goes on, or holds, the same rollout).
NOT_VERSIONED_ROLE_UPDATE_STRATEGY_FIELDS = ("partition",)


def revision_template(template: Mapping[str, Any]) -> Obj:
    """The versioned part of `spec.template`: a deep copy without role replicas."""
    out: Obj = copy.deepcopy(dict(template))
    spec = out.get("spec")
    if isinstance(spec, dict):
        for role in spec.get("roles") or ():
            if isinstance(role, dict):
                for key in NOT_VERSIONED_ROLE_FIELDS:
                    role.pop(key, None)
                strategy = role.get("updateStrategy")
                if isinstance(strategy, dict):
                    for key in NOT_VERSIONED_ROLE_UPDATE_STRATEGY_FIELDS:
                        strategy.pop(key, None)
    return out


def revision_data(template: Mapping[str, Any]) -> Obj:
    """ControllerRevision `data` for a StormService template."""
    return {"spec": {"template": {**revision_template(template), PATCH_DIRECTIVE: "replace"}}}


def template_of(revision: Mapping[str, Any]) -> Obj:
    """The template a ControllerRevision records (role replicas absent)."""
    data = revision.get("data") or {}
    template = dict((data.get("spec") or {}).get("template") or {})
    template.pop(PATCH_DIRECTIVE, None)
    return copy.deepcopy(template)


def revision_number(revision: Mapping[str, Any]) -> int:
    return int(revision.get("revision") or 0)


def revision_name(revision: Mapping[str, Any]) -> str:
    return str(revision["metadata"]["name"])


def replicas_by_role(rolesets: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Role replicas the RoleSets have (the first one naming a role wins): the `fallback` of
    `with_unversioned_fields` for roles the StormService's template no longer names."""
    out: dict[str, int] = {}
    for rs in rolesets:
        for role in (rs.get("spec") or {}).get("roles") or ():
            if role.get("name") and role.get("replicas") is not None:
                out.setdefault(role["name"], int(role["replicas"]))
    return out


def with_unversioned_fields(
    template: Mapping[str, Any], desired: Mapping[str, Any], fallback: Mapping[str, int] | None = None
) -> Obj:
    """`template` (from a revision) with every role field a revision does not record taken from
    the role of that name in `desired` (the StormService's template): NOT_VERSIONED_ROLE_FIELDS
    and the partition. Every place that turns a revision back into a template (a RoleSet of the
    current revision, `kubectl storm rollout undo`, the automatic rollback) goes through here, so
    none of them drops a role's Service, scaling, partition or policies.

    Replicas: from `desired`, else from `fallback`, else the default of 1. `dependsOn` keeps only
    the names the template has roles for (a role the revision lacks is no dependency there). A
    role `desired` no longer has keeps what it has."""
    out: Obj = copy.deepcopy(dict(template))
    current = {
        r.get("name"): r for r in ((desired.get("spec") or {}).get("roles") or ()) if isinstance(r, Mapping)
    }
    roles = (out.get("spec") or {}).get("roles") or ()
    names = {r.get("name") for r in roles}
    for role in roles:
        name = role.get("name")
        now = current.get(name)
        if now is None:
            role["replicas"] = fallback[name] if fallback and name in fallback else role.get("replicas", 1)
            continue
        role["replicas"] = role_replicas(now)
        for key in NOT_VERSIONED_ROLE_FIELDS:
            if key == "replicas":
                continue
            value = now.get(key)
            if key == "dependsOn" and value:
                value = [d for d in value if d in names] or None
            if value is None:
                role.pop(key, None)
            else:
                role[key] = copy.deepcopy(value)
        wanted_strategy = now.get("updateStrategy")
        if not isinstance(wanted_strategy, Mapping):
            wanted_strategy = {}
        for key in NOT_VERSIONED_ROLE_UPDATE_STRATEGY_FIELDS:
            value = wanted_strategy.get(key)
            strategy = role.get("updateStrategy")
            if value is None:
                if isinstance(strategy, dict):
                    strategy.pop(key, None)
            elif isinstance(strategy, dict):
                strategy[key] = value
            else:
                role["updateStrategy"] = {key: value}
    return out


# --- choosing the update revision ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpdateRevisionChoice:
    """`reuse`: the newest revision already records the template. `rollback`: an older revision
    records it; renumber it to `number` (no new revision). `create`: none does."""

    action: Literal["reuse", "rollback", "create"]
    revision: Obj | None = None
    number: int = 0


def _meaningful(value: Any) -> Any:
    """`value` without what Go's encoding/json writes for unset fields: nulls (a template's
    `creationTimestamp: null`), empty objects and empty lists (`resources: {}`,
    `disruptionTolerance: {}`). None of them means anything to the API server."""
    if isinstance(value, dict):
        out = {k: _meaningful(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        return [_meaningful(v) for v in value]
    return value


def _comparable(value: Any) -> Any:
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}"  # a quantity, by value ("1" == 1 == "1000m")
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def revision_content(data: Mapping[str, Any]) -> bytes:
    """What a revision's data means, comparable across writers: AIBrix's controller records the
    template as Go serialized it (role replicas, empty fields, quantities as strings); we record
    it as the API server returned it, without replicas (see revision_template). Equal content is
    the same revision, whoever wrote it and whatever its hash says: that is how AIBrix's
    revisions are taken over."""
    template = revision_template((data.get("spec") or {}).get("template") or {})
    for role in (template.get("spec") or {}).get("roles") or ():
        if not isinstance(role, dict):
            continue
        # What our CRD defaults when the template is stored; AIBrix's CRD does not, and its
        # revisions record the template without them.
        role.setdefault("podGroupSize", DEFAULT_POD_GROUP_SIZE)
        role.setdefault("recoveryPolicy", DEFAULT_RECOVERY_POLICY)
        strategy = role.get("updateStrategy")
        if strategy is None or strategy == {}:
            role["updateStrategy"] = {"type": DEFAULT_ROLE_UPDATE_STRATEGY}
        elif isinstance(strategy, dict):
            strategy.setdefault("type", DEFAULT_ROLE_UPDATE_STRATEGY)
        for field in ("template", "entryTemplate"):
            pod_template = role.get(field)
            if isinstance(pod_template, dict) and isinstance(pod_template.get("spec"), dict):
                pod_template["spec"] = podfields.normalize(pod_template["spec"], "PodSpec")
    return canonical_json(_comparable(_meaningful(template)))


def content_of(revision: Mapping[str, Any]) -> bytes:
    return revision_content(revision.get("data") or {})


def choose_update_revision(
    revisions: Sequence[Obj],
    data: Mapping[str, Any] | None,
    *,
    wanted: bytes | None = None,
    content: Callable[[Mapping[str, Any]], bytes] = content_of,
) -> UpdateRevisionChoice:
    """StatefulSet's rule, with revisions compared by content (`revision_content`). `revisions`
    in history order (`sort_revisions`); `wanted`: the content of `data` when already known,
    `content`: a revision's content (see ContentMemo)."""
    if wanted is None:
        assert data is not None
        wanted = revision_content(data)
    equal = [r for r in revisions if content(r) == wanted]
    if not equal:
        return UpdateRevisionChoice("create", number=next_revision_number(revisions))
    newest_equal = equal[-1]
    if newest_equal is revisions[-1]:
        return UpdateRevisionChoice("reuse", newest_equal, revision_number(newest_equal))
    return UpdateRevisionChoice("rollback", newest_equal, next_revision_number(revisions))


def choose_current_revision(revisions: Sequence[Obj], status_current: str | None, update: Obj) -> Obj:
    """The revision named by `status.currentRevision`, else (new history) the update revision."""
    for r in revisions:
        if status_current and revision_name(r) == status_current:
            return r
    return update


def history_to_delete(revisions: Sequence[Obj], live: set[str], limit: int) -> list[Obj]:
    """The oldest revisions no RoleSet uses (and neither current nor update), beyond `limit`."""
    history = [r for r in revisions if revision_name(r) not in live]
    excess = len(history) - max(0, limit)
    return history[:excess] if excess > 0 else []


# --- per-role revisions ------------------------------------------------------------------------------


def _roles(template: Mapping[str, Any]) -> dict[str, Obj]:
    roles = (template.get("spec") or {}).get("roles") or ()
    return {str(r.get("name")): r for r in roles if isinstance(r, dict)}


def role_revisions(revisions: Sequence[Obj], target: Obj) -> dict[str, RoleRevision]:
    """For each role of the `target` revision, the revision in which the role took its present
    form: walking history back from `target` while the role (replicas aside) is unchanged. Pods
    carry it as `role-revision` labels, so a role untouched by a rollout keeps its value. (The
    reference compared against `status.currentRevision` only, so the value of an untouched role
    changed with every rollout.)"""
    number, name = revision_number(target), revision_name(target)
    ordered = sort_revisions(
        [r for r in revisions if revision_number(r) < number and revision_name(r) != name]
    )
    ordered.append(target)
    templates = [_roles(template_of(r)) for r in ordered]
    out: dict[str, RoleRevision] = {}
    last = len(ordered) - 1
    for name, role in templates[last].items():
        i = last
        while i > 0 and templates[i - 1].get(name) == role:
            i -= 1
        out[name] = RoleRevision(revision_number(ordered[i]), revision_name(ordered[i]))
    return out


class ContentMemo:
    """`revision_content` remembered per object version: a StormService's template by (uid,
    generation), a ControllerRevision by (uid, resourceVersion). Normalizing and serializing a
    template is the costliest part of a StormService pass, and its answer changes only with a
    new version. Bounded: the oldest entries go first."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._contents: dict[tuple[str, str], bytes] = {}

    def _remember(self, key: tuple[str, str], compute: Callable[[], bytes]) -> bytes:
        content = self._contents.get(key)
        if content is None:
            content = compute()
            if len(self._contents) >= self._size:
                del self._contents[next(iter(self._contents))]
            self._contents[key] = content
        return content

    def of_revision(self, revision: Mapping[str, Any]) -> bytes:
        meta = revision.get("metadata") or {}
        uid, rv = meta.get("uid"), meta.get("resourceVersion")
        if not uid or not rv:
            return content_of(revision)
        return self._remember((str(uid), f"rv:{rv}"), lambda: content_of(revision))

    def of_template(self, stormservice: Mapping[str, Any]) -> bytes:
        meta = stormservice.get("metadata") or {}
        template = (stormservice.get("spec") or {}).get("template") or {}
        uid, generation = meta.get("uid"), meta.get("generation")
        if not uid or not generation:
            return revision_content(revision_data(template))
        return self._remember(
            (str(uid), f"generation:{generation}"), lambda: revision_content(revision_data(template))
        )
