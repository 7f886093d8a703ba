"""`undo`, `pause`, `resume`, `restart`, `scale`: each a patch built by a pure function.

Patches that write what was computed from the object just read carry a JSON-patch `test` of
its resourceVersion (or of the role's name), so an edit made in between fails the write instead
of being overwritten or applied to the wrong role.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.kubectl_storm.errors import EXIT_OK, CliError
from controller.kubectl_storm.history import find_revision
from controller.kubectl_storm.lookup import Target, get_storm_service, object_ref, owned_revisions
from controller.runtime.errors import Invalid
from controller.runtime.resources import STORMSERVICES
from controller.runtime.timestamps import now_rfc3339
from controller.stormservice.revisions import (
    choose_update_revision,
    revision_content,
    revision_data,
    revision_number,
    template_of,
    with_unversioned_fields,
)

Obj = dict[str, Any]
JsonPatch = list[Obj]

#: The annotation `kubectl rollout restart` sets on a Deployment's pod template.
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"


def _resource_version_test(storm_service: Mapping[str, Any]) -> Obj:
    return {
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": storm_service["metadata"]["resourceVersion"],
    }


def _roles(storm_service: Mapping[str, Any]) -> list[Obj]:
    return list(
        (((storm_service.get("spec") or {}).get("template") or {}).get("spec") or {}).get("roles") or ()
    )


# --- undo ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UndoPlan:
    revision: int
    #: None: the template already matches that revision.
    patch: JsonPatch | None


def undo_plan(
    storm_service: Mapping[str, Any], revisions: Sequence[Obj], to_revision: int | None
) -> UndoPlan:
    """The patch writing revision `to_revision` (default: the one before the revision of the
    present template) back to spec.template. What revisions do not record (role replicas,
    scaling, Services, dependencies, policies, partitions) stays as it is."""
    name = storm_service["metadata"]["name"]
    if not revisions:
        raise CliError(f'error: no rollout history found for stormservice "{name}"')
    template = (storm_service.get("spec") or {}).get("template") or {}
    choice = choose_update_revision(revisions, revision_data(template))
    present = choice.revision if choice.action != "create" else None
    if to_revision is not None and to_revision != 0:
        target = find_revision(revisions, to_revision)
    else:
        below = [r for r in revisions if present is None or revision_number(r) < revision_number(present)]
        if not below:
            raise CliError(
                f'error: no revision of stormservice "{name}" before the present one to roll back to'
            )
        target = below[-1]
    number = revision_number(target)
    restored = with_unversioned_fields(template_of(target), template)
    if revision_content(revision_data(restored)) == revision_content(revision_data(template)):
        return UndoPlan(number, None)
    return UndoPlan(
        number,
        [
            _resource_version_test(storm_service),
            {"op": "replace", "path": "/spec/template", "value": restored},
        ],
    )


# --- pause / resume --------------------------------------------------------------------------------


def pause_patch(storm_service: Mapping[str, Any], paused: bool) -> Obj | None:
    """Merge patch of spec.paused; None when it already has that value."""
    if bool((storm_service.get("spec") or {}).get("paused")) == paused:
        return None
    return {"spec": {"paused": paused}}


# --- restart -------------------------------------------------------------------------------------


def restart_patch(storm_service: Mapping[str, Any], restarted_at: str) -> JsonPatch:
    """`restartedAt` on every role's pod template, as `kubectl rollout restart` does on a
    Deployment's: a new template, hence a new revision, rolled out by the update strategy. The
    role names are tested so that a concurrent reorder fails the write."""
    name = storm_service["metadata"]["name"]
    if (storm_service.get("spec") or {}).get("paused"):
        raise CliError(
            f'error: cannot restart paused stormservice "{name}" (run `kubectl storm resume {name}` first)'
        )
    roles = _roles(storm_service)
    if not roles:
        raise CliError(f'error: stormservice "{name}" has no roles to restart')
    ops: JsonPatch = [_resource_version_test(storm_service)]
    for i, role in enumerate(roles):
        base = f"/spec/template/spec/roles/{i}"
        ops.append({"op": "test", "path": f"{base}/name", "value": role.get("name")})
        # The entry pods of a role with an entryTemplate are made from it: annotated too.
        for field in ("template", "entryTemplate"):
            if field != "template" and role.get(field) is None:
                continue
            metadata = copy.deepcopy(dict((role.get(field) or {}).get("metadata") or {}))
            metadata["annotations"] = {
                **(metadata.get("annotations") or {}),
                RESTARTED_AT_ANNOTATION: restarted_at,
            }
            ops.append({"op": "add", "path": f"{base}/{field}/metadata", "value": metadata})
    return ops


# --- scale ---------------------------------------------------------------------------------------


def scale_patch(storm_service: Mapping[str, Any], role: str, replicas: int) -> JsonPatch | None:
    """JSON patch of one role's replicas, guarded by a test of the role's name at that index;
    None when it already has that many."""
    name = storm_service["metadata"]["name"]
    if replicas < 0:
        raise CliError(f"error: --replicas must be 0 or more, not {replicas}")
    roles = _roles(storm_service)
    for i, r in enumerate(roles):
        if r.get("name") == role:
            if r.get("scaling") == "External":
                # The controller would set it back to what the role's RoleScaler asks for.
                raise CliError(
                    f'error: role "{role}" of stormservice "{name}" is scaled through its RoleScaler: '
                    f"kubectl scale rolescaler/{name}-{role} --replicas={replicas}"
                )
            if r.get("replicas") == replicas:
                return None
            base = f"/spec/template/spec/roles/{i}"
            return [
                {"op": "test", "path": f"{base}/name", "value": role},
                {"op": "add", "path": f"{base}/replicas", "value": replicas},
            ]
    have = ", ".join(str(r.get("name")) for r in roles) or "none"
    raise CliError(f'error: stormservice "{name}" has no role "{role}" (roles: {have})')


# --- running them ------------------------------------------------------------------------------


async def json_patch(t: Target, patch: JsonPatch, read: Mapping[str, Any]) -> None:
    """Apply `patch`, built from `read`. A `test` op that fails gets a bare 422 from the API
    server (no causes, a generic message); when the object has changed since `read`, say so."""
    try:
        await t.client.patch(STORMSERVICES, t.namespace, t.name, patch, patch_type="json")
    except Invalid as err:
        if err.causes:
            raise
        now = await get_storm_service(t)
        if now["metadata"].get("resourceVersion") == read["metadata"].get("resourceVersion"):
            raise
        raise CliError(
            f'error: stormservice "{t.name}" was changed while this command ran; nothing was written, try again'
        ) from err


async def undo(t: Target, to_revision: int | None) -> int:
    ss = await get_storm_service(t)
    plan = undo_plan(ss, await owned_revisions(t, ss), to_revision)
    if plan.patch is None:
        print(
            f"{object_ref(t.name)} skipped rollback (current template already matches revision {plan.revision})"
        )
        return EXIT_OK
    await json_patch(t, plan.patch, ss)
    print(f"{object_ref(t.name)} rolled back")
    return EXIT_OK


async def set_paused(t: Target, paused: bool) -> int:
    ss = await get_storm_service(t)
    patch = pause_patch(ss, paused)
    word = "paused" if paused else "resumed"
    if patch is None:
        print(f"{object_ref(t.name)} already {word}")
        return EXIT_OK
    await t.client.patch(STORMSERVICES, t.namespace, t.name, patch, patch_type="merge")
    print(f"{object_ref(t.name)} {word}")
    return EXIT_OK


async def restart(t: Target) -> int:
    ss = await get_storm_service(t)
    await json_patch(t, restart_patch(ss, now_rfc3339()), ss)
    print(f"{object_ref(t.name)} restarted")
    return EXIT_OK


async def scale(t: Target, role: str, replicas: int) -> int:
    ss = await get_storm_service(t)
    patch = scale_patch(ss, role, replicas)
    if patch is not None:
        await json_patch(t, patch, ss)
    print(f"{object_ref(t.name)} scaled")
    return EXIT_OK
