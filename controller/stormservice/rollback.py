"""The automatic rollback's writes (`progress.py` decides), behind a small interface: the API
server in production, a recorder in unit tests.

The StormService's spec is its user's; the controller writes `spec.template` here only, and
only conditionally: the status (Progressing=False ProgressDeadlineExceeded, RolledBack=True) is
written first, on the resourceVersion the pass read, then the template on the resourceVersion
that status write returned. A user's edit made meanwhile wins (the API server answers 409 and
the template is not written); a pass that read a StormService older than our own writes fails
the first precondition, so one timed-out rollout is rolled back once, with one event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import structlog

from apis.v1alpha1 import constants as c
from controller.runtime.client import KubeClient, Obj
from controller.runtime.errors import Conflict, NotFound
from controller.runtime.resources import STORMSERVICES
from controller.stormservice.revisions import (
    replicas_by_role,
    revision_name,
    template_of,
    with_unversioned_fields,
)
from controller.stormservice.status import status_patch

log = structlog.get_logger(__name__)

EVENT_ROLLED_BACK = "RolledBack"


class RollbackControl(Protocol):
    async def patch_status(self, storm_service: Mapping[str, Any], patch: Obj) -> Obj:
        """Merge-patch the status subresource (with metadata.resourceVersion in `patch`: only if
        the StormService is still at that version, Conflict otherwise); returns the StormService
        as written."""
        ...

    async def replace_template(
        self, storm_service: Mapping[str, Any], resource_version: str, template: Obj
    ) -> Obj:
        """Replace spec.template, only if the StormService is still at `resource_version`
        (Conflict otherwise)."""
        ...


class KubeRollbackControl:
    def __init__(self, client: KubeClient) -> None:
        self._client = client

    async def patch_status(self, storm_service: Mapping[str, Any], patch: Obj) -> Obj:
        meta = storm_service["metadata"]
        return await self._client.patch(
            STORMSERVICES, meta["namespace"], meta["name"], patch, patch_type="merge", subresource="status"
        )

    async def replace_template(
        self, storm_service: Mapping[str, Any], resource_version: str, template: Obj
    ) -> Obj:
        meta = storm_service["metadata"]
        # A resourceVersion in the patched object makes the API server refuse it (409) unless it
        # is the stored one: the same precondition as an update's.
        ops: list[Obj] = [
            {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "replace", "path": "/spec/template", "value": template},
        ]
        return await self._client.patch(
            STORMSERVICES, meta["namespace"], meta["name"], ops, patch_type="json"
        )


class Recorder(Protocol):
    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


async def roll_back(
    control: RollbackControl,
    recorder: Recorder,
    storm_service: Mapping[str, Any],
    status: Obj,
    target: Obj,
    target_rolesets: Sequence[Mapping[str, Any]],
) -> Obj | None:
    """Write `status` (which says RolledBack), then the template of revision `target`. Returns
    the StormService as patched, or None when it changed or went away in between (its event
    brings the next pass)."""
    meta = storm_service["metadata"]
    spec = storm_service.get("spec") or {}
    # Conditional on the version read: a pass reading a StormService older than our last writes
    # (or than a user's edit) changes nothing.
    patch = status_patch(storm_service.get("status") or {}, status) or {"status": {}}
    patch["metadata"] = {"resourceVersion": meta.get("resourceVersion")}
    try:
        written = await control.patch_status(storm_service, patch)
        resource_version = str((written.get("metadata") or {}).get("resourceVersion") or "")
        # As `kubectl rollout undo`: the revision's template, with what revisions do not record
        # (role replicas, scaling, Services, ...) kept from the StormService's template.
        template = with_unversioned_fields(
            template_of(target), spec.get("template") or {}, replicas_by_role(target_rolesets)
        )
        patched = await control.replace_template(storm_service, resource_version, template)
    except (Conflict, NotFound) as err:
        log.info("not rolled back: the StormService changed", stormservice=meta.get("name"), error=str(err))
        return None
    message = next(
        (
            x.get("message")
            for x in status.get("conditions") or ()
            if x.get("type") == c.CONDITION_ROLLED_BACK
        ),
        f"rolled back to revision {revision_name(target)}",
    )
    recorder.event(storm_service, "Warning", EVENT_ROLLED_BACK, str(message))
    log.info("rolled back", stormservice=meta.get("name"), to=revision_name(target))
    return patched
