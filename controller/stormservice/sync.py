"""The StormService reconcile: read the cache, decide (pure functions), act, write status.

Order of one pass:
1. the StormService is gone or being deleted: forget it / remove the reference's finalizer (the
   garbage collector does the rest);
2. claim RoleSets and ControllerRevisions (ours by controller reference; orphans that carry our
   name label and match the selector are adopted; nothing is ever released, so a selector change
   cannot orphan RoleSets);
3. find or create the update revision (rollback renumbers an old one);
4. repair the headless Service, the per-role PodDisruptionBudgets (`pdb.py`) and the per-role
   Services (`roleservicesync.py`);
5. only when the cache has seen our earlier writes (expectations, write fence): apply role
   replicas in place, then scale, or roll out (RollingUpdate / InPlaceUpdate) when not paused
   and no scaling was needed;
6. status, recomputed from the cache, written only when it changed, with a ReplicaFailure
   condition when a write of this pass failed;
7. truncate the revision history.
An API error is returned to the work queue (raised) after the status is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from apis.v1alpha1 import constants as c
from apis.v1alpha1.defaults import DEFAULT_REVISION_HISTORY_LIMIT
from apis.v1alpha1.types import LENIENT, LabelSelector
from controller.runtime import dryrun
from controller.runtime.batch import slow_start_batch
from controller.runtime.client import KubeClient, Obj, PatchType, object_key
from controller.runtime.controllerref import (
    ClaimError,
    ControllerRefManager,
    controller_ref,
    is_controlled_by,
    recheck_deletion_timestamp,
)
from controller.runtime.errors import (
    AlreadyExists,
    ApiError,
    Conflict,
    NotFound,
    is_namespace_terminating,
)
from controller.runtime.expectations import ControllerExpectations
from controller.runtime.resources import (
    CONTROLLER_REVISIONS,
    POD_DISRUPTION_BUDGETS,
    ROLESETS,
    SERVICES,
    STORMSERVICES,
    Resource,
)
from controller.runtime.revision import RevisionHistory, new_revision, sort_revisions
from controller.runtime.statusbatch import StatusBatcher
from controller.runtime.store import INDEX_CONTROLLER_UID, Store
from controller.runtime.timestamps import now_rfc3339
from controller.stormservice import progress
from controller.stormservice.inplace import rewrite_patch
from controller.stormservice.labels import render_roleset
from controller.stormservice.metrics import RoleSetGauge, RolloutTimer, StatusGauges
from controller.stormservice.naming import lowest_free_indexes
from controller.stormservice.partition import role_partition_patch
from controller.stormservice.pdb import PdbAction, pdb_patch, plan_pdbs
from controller.stormservice.plan import plan_pass
from controller.stormservice.revisions import (
    ContentMemo,
    choose_current_revision,
    choose_update_revision,
    history_to_delete,
    replicas_by_role,
    revision_data,
    revision_name,
    role_revisions,
    template_of,
    with_unversioned_fields,
)
from controller.stormservice.rolepolicy import role_policy_patch
from controller.stormservice.rolescaler import RoleScalerSync
from controller.stormservice.roleservicesync import RoleServiceSync
from controller.stormservice.rolesetcontrol import RoleSetControl
from controller.stormservice.rollback import KubeRollbackControl, RollbackControl, roll_back
from controller.stormservice.scale import budget_for, role_replica_patch
from controller.stormservice.service import desired_service, plan_service
from controller.stormservice.status import (
    REASON_RECONCILE_FAILED,
    Failure,
    advance_current_revision,
    compute_status,
    counts_only,
    get_condition,
    set_condition,
    status_patch,
)
from controller.stormservice.view import RoleSetView, view_of

log = structlog.get_logger(__name__)

#: RoleSets without a controller, by "<namespace>/<storm-service-name label>": adoption candidates.
INDEX_ORPHAN_BY_STORM_SERVICE = "stormservice-orphan"

# Event reasons.
EVENT_CREATED = "SuccessfulCreate"
EVENT_DELETED = "SuccessfulDelete"
EVENT_UPDATED = "SuccessfulUpdate"
EVENT_SCALED_ROLES = "ScaledRoles"
EVENT_SCALING = "ScalingRoleSets"
EVENT_FAILED_CREATE = "FailedCreate"
EVENT_FAILED_DELETE = "FailedDelete"
EVENT_FAILED_UPDATE = "FailedUpdate"
EVENT_ROLLOUT_STARTED = "RolloutStarted"
EVENT_ROLLOUT_COMPLETED = "RolloutCompleted"
EVENT_SERVICE_CREATED = "HeadlessServiceCreated"
EVENT_SERVICE_REPAIRED = "HeadlessServiceRepaired"
EVENT_SERVICE_CONFLICT = "HeadlessServiceConflict"
EVENT_SELECTOR_MISMATCH = "SelectorMismatch"
EVENT_LEGACY_FINALIZER = "RemovedLegacyFinalizer"
EVENT_PDB_CREATED = "CreatedPodDisruptionBudget"
EVENT_PDB_UPDATED = "UpdatedPodDisruptionBudget"
EVENT_PDB_DELETED = "DeletedPodDisruptionBudget"
EVENT_PDB_CONFLICT = "PodDisruptionBudgetConflict"
EVENT_PDB_FAILED = "FailedPodDisruptionBudget"

NORMAL, WARNING = "Normal", "Warning"

#: While the cache has not shown our own writes, the event that shows them wakes the sync; this
#: is the fallback in case that event was lost (a relist can compress it away).
WAIT_FOR_CACHE_REQUEUE_SECONDS = 30.0
# A Service or PDB of our name that someone else holds and that lacks our label is not in the
# cache (which selects on it), so its removal brings no event: look again this often.
UNCACHED_CONFLICT_RECHECK_SECONDS = 60.0


def orphan_index(obj: Obj) -> list[str]:
    meta = obj.get("metadata", {})
    name = (meta.get("labels") or {}).get(c.LABEL_STORM_SERVICE_NAME)
    if not name or controller_ref(obj) is not None:
        return []
    return [f"{meta.get('namespace') or ''}/{name}"]


class Recorder(Protocol):
    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


class ReconcileFailure(Exception):
    """An API write of this pass failed: `reason` goes to the ReplicaFailure condition, `cause`
    back to the work queue."""

    def __init__(self, reason: str, cause: ApiError) -> None:
        super().__init__(f"{reason}: {cause}")
        self.reason = reason
        self.cause = cause


class WriteFence:
    """Objects this controller has patched whose new version the cache has not shown yet.

    Creations and deletions are covered by expectations; updates are not. Acting on the old
    version of a RoleSet we just rewrote would rewrite it again from a stale base (the API server
    refuses: 409) or patch role replicas again. Keyed by uid, holding the resourceVersion we
    wrote over: while the cache still shows that version, the StormService waits for the event.
    """

    def __init__(self) -> None:
        self._superseded: dict[str, str] = {}

    def wrote(self, before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
        old_rv = before.get("metadata", {}).get("resourceVersion")
        new_rv = after.get("metadata", {}).get("resourceVersion")
        uid = before.get("metadata", {}).get("uid")
        if uid and old_rv and new_rv != old_rv:  # a no-op patch changes nothing: nothing to wait for
            self._superseded[uid] = old_rv

    def is_stale(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata", {})
        uid = meta.get("uid")
        old_rv = self._superseded.get(uid) if uid else None
        if old_rv is None:
            return False
        if meta.get("resourceVersion") == old_rv:
            return True
        del self._superseded[uid]
        return False

    def forget(self, uid: str) -> None:
        self._superseded.pop(uid, None)

    def __len__(self) -> int:
        return len(self._superseded)


def legacy_finalizer_patch(obj: Mapping[str, Any]) -> Obj | None:
    """Merge patch removing the reference's finalizer from a StormService being deleted (the
    reference is not running to remove it, so it would keep the object forever). The
    resourceVersion makes a concurrent change of the list fail the patch instead of being lost."""
    meta = obj.get("metadata", {})
    finalizers = list(meta.get("finalizers") or ())
    if not meta.get("deletionTimestamp") or not any(f in c.LEGACY_FINALIZERS for f in finalizers):
        return None
    keep = [f for f in finalizers if f not in c.LEGACY_FINALIZERS]
    return {"metadata": {"finalizers": keep or None, "resourceVersion": meta.get("resourceVersion")}}


def history_names(revisions: Iterable[Obj]) -> set[str]:
    return {revision_name(r) for r in revisions}


def min_wait(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _raise_first(errors: list[BaseException], reason: str) -> None:
    """Raise for a failed slow-start batch: an error that is not the API server's (a bug) goes
    first, unwrapped; otherwise the first API error, as a ReconcileFailure with `reason`."""
    if not errors:
        return
    first = next((e for e in errors if not isinstance(e, ApiError)), errors[0])
    if isinstance(first, ApiError):
        raise ReconcileFailure(reason, first) from first
    raise first


@dataclass
class Revisions:
    all: list[Obj]
    current: Obj
    update: Obj
    collision_count: int
    rolled_back: bool = False


class StormServiceSync:
    def __init__(
        self,
        *,
        client: KubeClient,
        stormservices: Store,
        rolesets: Store,
        services: Store,
        pdbs: Store,
        history: RevisionHistory,
        control: RoleSetControl,
        recorder: Recorder,
        expectations: ControllerExpectations,
        clock: Callable[[], float] = time.time,
        scalers: RoleScalerSync | None = None,
        status_batch: StatusBatcher | None = None,
        rollbacks: RollbackControl | None = None,
    ) -> None:
        self.client = client
        self.rollbacks = rollbacks or KubeRollbackControl(client)
        # Off unless given: counts-only status writes at once.
        self.status_batch = status_batch or StatusBatcher(0.0)
        self.stormservices = stormservices
        self.rolesets = rolesets
        self.services = services
        self.pdbs = pdbs
        self.history = history
        self.control = control
        self.recorder = recorder
        self.expectations = expectations
        self.fence = WriteFence()
        self.gauge = RoleSetGauge()
        self.timer = RolloutTimer()
        self.status_gauges = StatusGauges()
        self.clock = clock
        self.scalers = scalers
        self.role_services = RoleServiceSync(client, services, recorder, self.fence)
        self._service_conflicts: set[str] = set()
        #: StormService key -> names of PDBs in the way, reported once per appearance.
        self._pdb_conflicts: dict[str, set[str]] = {}
        #: Whether the API server accepts pods of a StormService's revision (subject "").
        self._template_verdicts = dryrun.Verdicts()
        self._contents = ContentMemo()
        #: (StormService key, kind, name) -> when a create found someone else's object of that
        #: name outside the cache; not tried again until UNCACHED_CONFLICT_RECHECK_SECONDS later.
        self._held_outside_cache: dict[tuple[str, str, str], float] = {}

    # --- entry -----------------------------------------------------------------------------------

    async def sync(self, key: str) -> float | None:
        obj = self.stormservices.get(key)
        if obj is None:
            self.forget(key)
            return None
        if obj.get("metadata", {}).get("deletionTimestamp"):
            await self._finalize(obj)
            return None
        return await self._reconcile(key, obj)

    def forget(self, key: str) -> None:
        self.expectations.delete_expectations(key)
        self.status_batch.forget(key)
        self.gauge.forget(key)
        self.timer.forget(key)
        self.status_gauges.forget(key)
        self._service_conflicts.discard(key)
        self._pdb_conflicts.pop(key, None)
        self._template_verdicts.forget(key)
        if self.scalers is not None:
            self.scalers.forget(key)
        self.role_services.forget(key)
        for held in [h for h in self._held_outside_cache if h[0] == key]:
            del self._held_outside_cache[held]

    def _known_held(self, key: str, kind: str, name: str) -> bool:
        """Whether a recent create found `name` held by someone else, outside the cache."""
        since = self._held_outside_cache.get((key, kind, name))
        if since is None:
            return False
        if time.monotonic() - since < UNCACHED_CONFLICT_RECHECK_SECONDS:
            return True
        del self._held_outside_cache[(key, kind, name)]
        return False

    def _held(self, key: str, kind: str, name: str) -> None:
        self._held_outside_cache[(key, kind, name)] = time.monotonic()

    # --- deletion ----------------------------------------------------------------------------------

    async def _finalize(self, obj: Obj) -> None:
        """Owner references and the garbage collector remove everything; only the reference's
        finalizer on the StormService needs help. (RoleSets being deleted are their own
        controller's: it removes the reference's RoleSet finalizer.)"""
        patch = legacy_finalizer_patch(obj)
        if patch is not None:
            meta = obj["metadata"]
            await self.client.patch(STORMSERVICES, meta["namespace"], meta["name"], patch, patch_type="merge")
            self.recorder.event(
                obj, NORMAL, EVENT_LEGACY_FINALIZER, f"removed finalizer {c.FINALIZER_STORM_SERVICE}"
            )

    # --- claims --------------------------------------------------------------------------------------

    def _owned_rolesets(self, obj: Obj) -> list[Obj]:
        meta = obj["metadata"]
        return [
            rs
            for rs in self.rolesets.by_index(INDEX_CONTROLLER_UID, meta["uid"])
            if rs.get("metadata", {}).get("namespace") == meta["namespace"]
        ]

    async def _adopt(self, obj: Obj, resource: Resource, orphans: list[Obj]) -> list[Obj]:
        """Adopt orphans (already filtered to ours by label); the owner is re-read from the API
        server first, so that a deleted and re-created StormService does not take them."""
        if not orphans:
            return []
        meta = obj["metadata"]

        async def fresh() -> Obj:
            return await self.client.get(STORMSERVICES, meta["namespace"], meta["name"])

        manager = ControllerRefManager.for_resource(
            self.client,
            resource,
            obj,
            api_version=c.API_VERSION,
            kind=c.KIND_STORM_SERVICE,
            match=lambda _: True,
            can_adopt=recheck_deletion_timestamp(fresh, meta["uid"]),
        )
        return await manager.claim(orphans)

    async def _claim_rolesets(self, obj: Obj, selector: LabelSelector) -> list[Obj]:
        meta = obj["metadata"]
        owned = self._owned_rolesets(obj)
        orphans = [
            rs
            for rs in self.rolesets.by_index(
                INDEX_ORPHAN_BY_STORM_SERVICE, f"{meta['namespace']}/{meta['name']}"
            )
            if selector.matches(rs.get("metadata", {}).get("labels") or {})
        ]
        return owned + await self._adopt(obj, ROLESETS, orphans)

    async def _claim_revisions(self, obj: Obj) -> list[Obj]:
        meta = obj["metadata"]
        uid, name = meta["uid"], meta["name"]

        def ours(rev: Obj) -> bool:
            return (
                is_controlled_by(rev, uid)
                or (rev.get("metadata", {}).get("labels") or {}).get(c.LABEL_CONTROLLER_REVISION_NAME) == name
            )

        candidates = self.history.list_revisions(obj, match=ours)
        owned = [r for r in candidates if is_controlled_by(r, uid)]
        orphans = [r for r in candidates if controller_ref(r) is None]
        return owned + await self._adopt(obj, CONTROLLER_REVISIONS, orphans)

    # --- revisions ---------------------------------------------------------------------------------

    async def _sync_revisions(self, obj: Obj, revisions: list[Obj]) -> Revisions:
        meta = obj["metadata"]
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        collision_count = int(status.get("collisionCount") or 0)
        history = sort_revisions(revisions)
        choice = choose_update_revision(
            history, None, wanted=self._contents.of_template(obj), content=self._contents.of_revision
        )
        rolled_back = False
        if choice.action == "reuse":
            assert choice.revision is not None
            update = choice.revision
        elif choice.action == "rollback":
            assert choice.revision is not None
            update = await self.history.update_revision(choice.revision, choice.number)
            history = [update if revision_name(r) == revision_name(update) else r for r in history]
            rolled_back = True
        else:
            candidate = new_revision(
                obj,
                c.API_VERSION,
                c.KIND_STORM_SERVICE,
                meta["name"],
                revision_data(spec.get("template") or {}),
                choice.number,
                collision_count,
                labels={c.LABEL_CONTROLLER_REVISION_NAME: meta["name"]},
            )
            update, collision_count = await self.history.create_revision(candidate, collision_count)
            history.append(update)
        current = choose_current_revision(history, status.get("currentRevision"), update)
        return Revisions(sort_revisions(history), current, update, collision_count, rolled_back)

    async def _truncate_history(self, obj: Obj, revs: Revisions, views: list[RoleSetView]) -> None:
        limit = (obj.get("spec") or {}).get("revisionHistoryLimit")
        live = {revision_name(revs.current), revision_name(revs.update)} | {v.revision for v in views}
        # The revision an automatic rollback would return to.
        live |= {str((obj.get("status") or {}).get("lastReadyRevision") or revision_name(revs.current))}
        for rev in history_to_delete(
            revs.all, live, DEFAULT_REVISION_HISTORY_LIMIT if limit is None else int(limit)
        ):
            await self.history.delete_revision(rev)

    # --- headless Service ---------------------------------------------------------------------------

    async def _sync_service(self, key: str, obj: Obj) -> bool:
        """Create or repair the headless Service. Returns True when a Service of that name
        exists outside our cache (the cache holds only Services with our label) and belongs to
        someone else: its removal brings no event, so the caller checks again later."""
        meta = obj["metadata"]
        existing = self.services.get(f"{meta['namespace']}/{meta['name']}")
        action = plan_service(obj, existing)
        if action.action == "create" and self._known_held(key, SERVICES.kind, meta["name"]):
            return True
        try:
            if action.action == "create":
                try:
                    await self.client.create(SERVICES, meta["namespace"], desired_service(obj))
                except AlreadyExists:
                    # Not in the cache: it lacks our label (made by hand, by another tool, or by
                    # an AIBrix controller, which sets none). Ours gets its labels back (and so
                    # enters the cache); anyone else's is a conflict.
                    existing = await self.client.get(SERVICES, meta["namespace"], meta["name"])
                    action = plan_service(obj, existing)
                else:
                    self.recorder.event(
                        obj, NORMAL, EVENT_SERVICE_CREATED, f"Created headless Service {meta['name']}"
                    )
            if action.action != "conflict":
                self._service_conflicts.discard(key)
            if action.action == "patch":
                assert action.patch is not None
                await self.client.patch(
                    SERVICES, meta["namespace"], meta["name"], action.patch, patch_type="merge"
                )
                self.recorder.event(
                    obj, NORMAL, EVENT_SERVICE_REPAIRED, f"Repaired headless Service {meta['name']}"
                )
            elif action.action == "recreate":
                assert existing is not None
                # clusterIP is immutable: delete, and create it again when the deletion is seen.
                await self.client.delete(
                    SERVICES,
                    meta["namespace"],
                    meta["name"],
                    uid_precondition=existing["metadata"].get("uid"),
                )
                self.recorder.event(
                    obj,
                    NORMAL,
                    EVENT_SERVICE_REPAIRED,
                    f"Deleted Service {meta['name']} to recreate it headless",
                )
            elif action.action == "conflict" and key not in self._service_conflicts:
                self._service_conflicts.add(key)
                self.recorder.event(
                    obj,
                    WARNING,
                    EVENT_SERVICE_CONFLICT,
                    f"Service {meta['name']} exists and is not controlled by this StormService; pods will not "
                    "get DNS names until it is removed",
                )
        except NotFound:
            return False
        except ApiError as err:
            raise ReconcileFailure("FailedServiceSync", err) from err
        if action.action == "conflict" and self.services.get(f"{meta['namespace']}/{meta['name']}") is None:
            self._held(key, SERVICES.kind, meta["name"])
            return True
        return False

    # --- PodDisruptionBudgets ----------------------------------------------------------------------

    async def _sync_pdbs(self, key: str, obj: Obj) -> tuple[Failure | None, bool]:
        """Create, patch or delete the role PDBs (reading the cache only). Returns a Failure for a
        PDB someone else holds (nothing to retry: its deletion event brings the next pass), and
        whether such a PDB is outside the cache (no event will come: check again later); raises
        ReconcileFailure for the first API error, after trying every PDB."""
        meta = obj["metadata"]
        ns = meta["namespace"]
        owned = [
            p
            for p in self.pdbs.by_index(INDEX_CONTROLLER_UID, meta["uid"])
            if p["metadata"].get("namespace") == ns
        ]
        actions = plan_pdbs(obj, owned, lambda name: self.pdbs.get(f"{ns}/{name}"))
        conflicts = {a.name for a in actions if a.action == "conflict"}
        uncached: set[str] = set()
        first: ApiError | None = None
        for action in actions:
            if action.existing is not None and self.fence.is_stale(action.existing):
                continue  # our last patch is not in the cache yet: its event brings the next pass
            try:
                if action.action == "create" and self._known_held(key, "PodDisruptionBudget", action.name):
                    uncached.add(action.name)
                elif not await self._apply_pdb(obj, action):
                    self._held(key, "PodDisruptionBudget", action.name)
                    uncached.add(action.name)
            except ApiError as err:
                self.recorder.event(
                    obj, WARNING, EVENT_PDB_FAILED, f"Error syncing PodDisruptionBudget {action.name}: {err}"
                )
                first = first or err
        conflicts |= uncached
        reported = self._pdb_conflicts.get(key, set())
        for name in sorted(conflicts - reported):
            self.recorder.event(
                obj,
                WARNING,
                EVENT_PDB_CONFLICT,
                f"PodDisruptionBudget {name} exists and is not controlled by this StormService; "
                "left alone, so that role has no budget of ours until it is removed",
            )
        if conflicts:
            self._pdb_conflicts[key] = conflicts
        else:
            self._pdb_conflicts.pop(key, None)
        if first is not None:
            raise ReconcileFailure(EVENT_PDB_FAILED, first)
        if conflicts:
            failure = Failure(
                EVENT_PDB_CONFLICT,
                f"PodDisruptionBudgets not controlled by this StormService: {', '.join(sorted(conflicts))}",
            )
            return failure, bool(uncached)
        return None, False

    async def _apply_pdb(self, obj: Obj, action: PdbAction) -> bool:
        """Carries out `action`; False when it found a PDB of that name outside the cache that
        someone else controls."""
        ns = obj["metadata"]["namespace"]
        if action.action == "create":
            assert action.body is not None
            try:
                await self.client.create(POD_DISRUPTION_BUDGETS, ns, action.body)
            except AlreadyExists:
                # Not in the cache: it lacks our labels. Ours gets them back (and so enters the
                # cache); anyone else's is a conflict.
                try:
                    existing = await self.client.get(POD_DISRUPTION_BUDGETS, ns, action.name)
                except NotFound:
                    return True  # deleted in between: the next pass creates it
                if not is_controlled_by(existing, obj["metadata"]["uid"]):
                    return False
                patch = pdb_patch(existing, action.body)
                if patch is not None:
                    await self.client.patch(
                        POD_DISRUPTION_BUDGETS, ns, action.name, patch, patch_type="merge"
                    )
                return True
            spec = action.body["spec"]
            self.recorder.event(
                obj,
                NORMAL,
                EVENT_PDB_CREATED,
                f"Created PodDisruptionBudget {action.name} (minAvailable {spec['minAvailable']})",
            )
        elif action.action == "patch":
            assert action.body is not None and action.existing is not None
            try:
                after = await self.client.patch(
                    POD_DISRUPTION_BUDGETS, ns, action.name, action.body, patch_type="merge"
                )
            except NotFound:
                return True
            self.fence.wrote(action.existing, after)
            self.recorder.event(
                obj,
                NORMAL,
                EVENT_PDB_UPDATED,
                f"Updated PodDisruptionBudget {action.name} (minAvailable "
                f"{(after.get('spec') or {}).get('minAvailable')})",
            )
        elif action.action == "delete":
            assert action.existing is not None
            try:
                await self.client.delete(
                    POD_DISRUPTION_BUDGETS,
                    ns,
                    action.name,
                    uid_precondition=action.existing["metadata"].get("uid"),
                )
            except (NotFound, Conflict):
                return True  # already gone, or replaced by an object that is not the one we saw
            self.recorder.event(
                obj,
                NORMAL,
                EVENT_PDB_DELETED,
                f"Deleted PodDisruptionBudget {action.name}: no longer requested",
            )
        return True

    # --- the pass -------------------------------------------------------------------------------------

    async def _reconcile(self, key: str, obj: Obj) -> float | None:
        spec = obj.get("spec") or {}
        template = spec.get("template") or {}
        selector = LabelSelector.model_validate(spec.get("selector") or {}, context={LENIENT: True})

        # Checked before the cache is read: the awaits below let the informer deliver events, and
        # a creation observed then satisfies the expectations without being in `owned`.
        satisfied = self.expectations.satisfied(key)
        try:
            owned = await self._claim_rolesets(obj, selector)
            revs = await self._sync_revisions(obj, await self._claim_revisions(obj))
        except (ApiError, ClaimError) as err:
            if is_namespace_terminating(err):
                return None  # everything in it goes soon; no create can succeed
            # Nothing to compute a status from yet; still say why (a new StormService would
            # otherwise have no conditions at all), then back off.
            await self._report_unreconciled(obj, err)
            raise
        update_name, current_name = revision_name(revs.update), revision_name(revs.current)
        views = [view_of(rs) for rs in owned]

        failure: Failure | None = None
        error: ApiError | None = None
        requeue: float | None = None
        try:
            if await self._sync_service(key, obj):
                requeue = UNCACHED_CONFLICT_RECHECK_SECONDS
            stale = [v.name for v in views if self.fence.is_stale(v.obj)]
            if not satisfied or stale:
                log.debug("waiting for the cache", pending=self.expectations.pending(key), stale=stale)
                requeue = min(requeue or WAIT_FOR_CACHE_REQUEUE_SECONDS, WAIT_FOR_CACHE_REQUEUE_SECONDS)
            elif not selector.matches(dict((template.get("metadata") or {}).get("labels") or {})):
                failure = Failure(
                    EVENT_SELECTOR_MISMATCH, "spec.selector does not match spec.template.metadata.labels"
                )
                self.recorder.event(obj, WARNING, EVENT_SELECTOR_MISMATCH, failure.message)
            elif not await self._sync_role_scalers(obj, owned):
                await self._manage(key, obj, views, revs)
        except ReconcileFailure as f:
            if not is_namespace_terminating(f.cause):  # else: everything in it goes soon
                failure, error = Failure(f.reason, str(f.cause)), f.cause
        # Apart from the rest, so that a PDB problem (say, no RBAC for PDBs) never stalls RoleSets.
        try:
            pdb_conflict, pdb_uncached = await self._sync_pdbs(key, obj)
            if pdb_uncached:
                requeue = min(requeue or UNCACHED_CONFLICT_RECHECK_SECONDS, UNCACHED_CONFLICT_RECHECK_SECONDS)
        except ReconcileFailure as f:
            pdb_conflict = None if is_namespace_terminating(f.cause) else Failure(f.reason, str(f.cause))
            error = error or (None if pdb_conflict is None else f.cause)
        failure = failure or pdb_conflict
        # Apart from the rest too: the RoleServicesSynced condition reports it.
        role_services = await self.role_services.sync(key, obj)
        if role_services.recheck:
            requeue = min(requeue or UNCACHED_CONFLICT_RECHECK_SECONDS, UNCACHED_CONFLICT_RECHECK_SECONDS)
        error = error or role_services.error

        old_status = obj.get("status") or {}
        if old_status.get("updateRevision") and old_status.get("updateRevision") != update_name:
            how = " (rollback)" if revs.rolled_back else ""
            self.recorder.event(
                obj, NORMAL, EVENT_ROLLOUT_STARTED, f"Rolling out revision {update_name}{how}"
            )
        current_name = advance_current_revision(views, current_name, update_name)
        status = compute_status(
            obj,
            views,
            current_revision=current_name,
            update_revision=update_name,
            collision_count=revs.collision_count,
            failure=failure,
            rejected_template=self.rejected_template(key, update_name),
        )
        status = role_services.apply(status, now_rfc3339())
        deadline = progress.apply(
            obj, status, now=self.clock(), revisions=history_names(revs.all), want=budget_for(spec).replicas
        )
        status, wait = deadline.status, deadline.requeue_after
        if deadline.rollback_to is None:
            wait = min_wait(wait, await self._write_status(obj, status, batch_key=key))
        else:
            target = next(r for r in revs.all if revision_name(r) == deadline.rollback_to)
            of_target = [v.obj for v in views if v.revision == deadline.rollback_to]
            await roll_back(self.rollbacks, self.recorder, obj, status, target, of_target)
        if wait is not None:
            requeue = wait if requeue is None else min(requeue, wait)
        self.gauge.observe(key, views)
        self.status_gauges.observe(key, spec, status)
        duration = self.timer.observe(key, old_status, status, self.clock())
        if duration is not None:
            self.recorder.event(
                obj, NORMAL, EVENT_ROLLOUT_COMPLETED, f"Revision {update_name} rolled out in {duration:.0f}s"
            )
        await self._truncate_history(obj, revs, views)
        if error is not None:
            raise error
        return requeue

    async def _sync_role_scalers(self, obj: Obj, owned: list[Obj]) -> bool:
        """The RoleScalers of External roles (`rolescaler.py`). True when their replicas were
        written into the template: the rest of the pass waits for the StormService's update
        event, which brings the new template (applied to the RoleSet in place)."""
        if self.scalers is None:
            return False
        if self.fence.is_stale(obj):
            return True  # our template write is not in the cache yet; its event comes
        try:
            patched = await self.scalers.sync(obj, owned)
        except ApiError as err:
            self.recorder.event(obj, WARNING, EVENT_FAILED_UPDATE, f"Error syncing RoleScalers: {err}")
            raise ReconcileFailure(EVENT_FAILED_UPDATE, err) from err
        if patched is None:
            return False
        self.fence.wrote(obj, patched)
        return True

    async def _report_unreconciled(self, obj: Obj, err: Exception) -> None:
        """ReplicaFailure=True with the error, and Ready=False if Ready was never written; every
        other field stays as the last successful pass left it."""
        old_status = obj.get("status") or {}
        message = str(err) or type(err).__name__
        now = now_rfc3339()
        conditions = list(old_status.get("conditions") or ())
        if get_condition(old_status, c.CONDITION_READY) is None:
            conditions = set_condition(
                conditions, c.CONDITION_READY, "False", REASON_RECONCILE_FAILED, message, now
            )
        conditions = set_condition(
            conditions, c.CONDITION_REPLICA_FAILURE, "True", REASON_RECONCILE_FAILED, message, now
        )
        status = {**old_status, "conditions": conditions}
        if status == old_status:
            return
        self.recorder.event(obj, WARNING, REASON_RECONCILE_FAILED, message)
        try:
            await self._write_status(obj, status)
        except ApiError as status_err:
            log.warning("could not report the failure in status", error=str(status_err))

    async def _write_status(
        self, obj: Obj, status: Mapping[str, Any], *, batch_key: str | None = None
    ) -> float | None:
        """Write `status` through the status subresource, only when it differs from the cached one.
        With `batch_key`, a change of counts only may be held back: returns the seconds until it
        may be written (see runtime.statusbatch)."""
        patch = status_patch(obj.get("status") or {}, status)
        if patch is None:
            return None
        if batch_key is not None:
            wait = self.status_batch.hold(batch_key, counts_only=counts_only(obj.get("status"), status))
            if wait is not None:
                return wait
        meta = obj["metadata"]
        # NotFound: deleted during the pass; its deletion event ends it.
        with contextlib.suppress(NotFound):
            await self.client.patch(
                STORMSERVICES,
                meta["namespace"],
                meta["name"],
                patch,
                patch_type="merge",
                subresource="status",
            )
        return None

    async def _manage(self, key: str, obj: Obj, views: list[RoleSetView], revs: Revisions) -> None:
        spec = obj.get("spec") or {}
        template = spec.get("template") or {}
        update_name = revision_name(revs.update)

        if (
            await self._scale_roles(obj, views, template)
            or await self._set_in_place(
                obj, views, template, role_partition_patch, "setting the partitions of"
            )
            or await self._set_in_place(obj, views, template, role_policy_patch, "setting role policies of")
        ):
            # The patched RoleSets have new versions the cache has not shown: decide the rest
            # (which may rewrite or delete them) once it has.
            return

        strategy = (spec.get("updateStrategy") or {}).get("type") or "RollingUpdate"
        budget = budget_for(spec)
        plan = plan_pass(views, budget, update_name, paused=bool(spec.get("paused")), strategy=strategy)
        if plan.phase == "none":
            return
        uses_update = plan.phase == "rollout" or plan.changes.create_updated > 0 or bool(plan.rewrite)
        if uses_update and not await self._revision_accepted(key, obj, update_name, template):
            if plan.phase == "rollout":
                return  # the RoleSets of the old revision stay as they are
            plan = dataclasses.replace(
                plan, changes=dataclasses.replace(plan.changes, create_updated=0), rewrite=()
            )
            if plan.changes.empty:
                return
        if plan.phase == "scale":
            live = sum(1 for v in views if not v.terminating)
            direction = "up" if plan.changes.create_updated + plan.changes.create_current else "down"
            message = f"Scaling {direction} from {live} to {budget.replicas} RoleSets"
            self.recorder.event(obj, NORMAL, EVENT_SCALING, message)
        await self._delete(key, obj, plan.changes.delete)
        to_create = plan.changes.create_updated + plan.changes.create_current
        if to_create:
            indexes = lowest_free_indexes((v.index for v in views), to_create)
            bodies = [
                render_roleset(obj, template, update_name, role_revisions(revs.all, revs.update), i)
                for i in indexes[: plan.changes.create_updated]
            ]
            if plan.changes.create_current:
                current_template = self._current_template(revs.current, template, views)
                current_roles = role_revisions(revs.all, revs.current)
                bodies += [
                    render_roleset(obj, current_template, revision_name(revs.current), current_roles, i)
                    for i in indexes[plan.changes.create_updated :]
                ]
            await self._create(key, obj, bodies)
        if plan.rewrite:
            target = render_roleset(obj, template, update_name, role_revisions(revs.all, revs.update), None)
            await self._rewrite(obj, plan.rewrite, target)

    async def _revision_accepted(
        self, key: str, obj: Obj, revision: str, template: Mapping[str, Any]
    ) -> bool:
        """Whether the API server accepts pods of every role template of `revision`, asked once
        per revision with a dry-run pod create: the CRD admits templates the API server refuses
        as pods, and a rollout to one would replace RoleSets with ones that can run nothing."""
        known = self._template_verdicts.get(key, "", revision)
        if known is not None:
            return known.rejection is None
        meta = obj["metadata"]
        rejection: str | None = None
        pod_templates = [
            (role, field)
            for role in (template.get("spec") or {}).get("roles") or ()
            for field in ("template", "entryTemplate")
            if field == "template" or role.get(field) is not None
        ]
        for role, field in pod_templates:
            tmeta = (role.get(field) or {}).get("metadata") or {}
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "generateName": f"{meta['name']}-{role.get('name', '')}-"[:58],
                    "namespace": meta["namespace"],
                    "labels": dict(tmeta.get("labels") or {}),
                    "annotations": dict(tmeta.get("annotations") or {}),
                },
                "spec": (role.get(field) or {}).get("spec") or {},
            }
            try:
                await self.control.dry_run_pod(meta["namespace"], pod)
            except ApiError as err:
                refused = dryrun.rejection(err)
                if refused is None:
                    # Not an answer about the template: ask again on the retry, change nothing now.
                    raise ReconcileFailure(EVENT_FAILED_CREATE, err) from err
                where = "" if field == "template" else f" {field}"
                rejection = f"role {role.get('name')}{where}: {refused}"
                break
        self._template_verdicts.record(key, "", dryrun.Verdict(revision, rejection))
        if rejection is not None:
            self.recorder.event(
                obj,
                WARNING,
                c.REASON_INVALID_POD_TEMPLATE,
                f"revision {revision} is not rolled out: the API server rejects its pods: {rejection}"[:1024],
            )
        return rejection is None

    def rejected_template(self, key: str, revision: str) -> str | None:
        known = self._template_verdicts.get(key, "", revision)
        return None if known is None else known.rejection

    @staticmethod
    def _current_template(current: Obj, desired: Mapping[str, Any], views: list[RoleSetView]) -> Obj:
        """The current revision's template, with role replicas and the other unversioned role
        fields from the StormService (a role it no longer has keeps the replicas an existing
        RoleSet of that revision has)."""
        fallback = replicas_by_role([v.obj for v in views if v.revision == revision_name(current)])
        return with_unversioned_fields(template_of(current), desired, fallback)

    # --- writes -------------------------------------------------------------------------------------

    async def _scale_roles(self, obj: Obj, views: list[RoleSetView], template: Mapping[str, Any]) -> bool:
        """A role's replicas changed in the StormService: set them on every live RoleSet. The
        RoleSet controller adds or removes instances of that role; no other pod is touched.
        Returns whether anything was patched."""
        patched = False
        for v in views:
            if v.terminating:
                continue
            ops = role_replica_patch(v.obj, template)
            if not ops:
                continue
            if not await self._patch_roleset(obj, v, ops, "json", "scaling roles of"):
                continue
            patched = True
            scaled = ", ".join(
                f"{test['value']}={add['value']}" for test, add in zip(ops[::2], ops[1::2], strict=True)
            )
            self.recorder.event(
                obj, NORMAL, EVENT_SCALED_ROLES, f"Scaled roles of RoleSet {v.name}: {scaled}"
            )
        return patched

    async def _set_in_place(
        self,
        obj: Obj,
        views: list[RoleSetView],
        template: Mapping[str, Any],
        patch_of: Callable[[Mapping[str, Any], Mapping[str, Any]], list[Obj]],
        what: str,
    ) -> bool:
        """Role fields that are not versioned and not replicas (a role's partition: it holds or
        releases instances of the rollout under way; its recovery grace and restart budget,
        rolepolicy.py) changed in the StormService: `patch_of` sets them on every live RoleSet in
        place, no revision, no rewrite. Returns whether anything was patched."""
        patched = False
        for v in views:
            ops = [] if v.terminating else patch_of(v.obj, template)
            if ops and await self._patch_roleset(obj, v, ops, "json", what):
                patched = True
        return patched

    async def _create(self, key: str, obj: Obj, bodies: list[Obj]) -> None:
        self.expectations.expect_creations(key, len(bodies))

        async def create(i: int) -> None:
            body = bodies[i]
            try:
                created = await self.control.create(body)
            except ApiError as err:
                if not is_namespace_terminating(err):
                    self.recorder.event(obj, WARNING, EVENT_FAILED_CREATE, f"Error creating RoleSet: {err}")
                raise
            rev = body["metadata"]["labels"].get(c.LABEL_STORM_SERVICE_REVISION)
            self.recorder.event(
                obj, NORMAL, EVENT_CREATED, f"Created RoleSet {created['metadata']['name']} (revision {rev})"
            )

        done, errors = await slow_start_batch(len(bodies), create)
        if done < len(bodies):
            # Creations that failed or were never attempted will never be observed.
            self.expectations.lower_expectations(key, adds=len(bodies) - done)
        _raise_first(errors, EVENT_FAILED_CREATE)

    async def _delete(self, key: str, obj: Obj, doomed: Iterable[RoleSetView]) -> None:
        # The RoleSets were read before this pass's awaits; one the cache no longer holds has had
        # its deletion event handled already, so expecting its deletion would wait for an event
        # that never comes (and hold the StormService until the expectations expire).
        doomed = [v for v in doomed if self._still_cached(v)]
        if not doomed:
            return
        keys = [object_key(v.obj) for v in doomed]
        self.expectations.expect_deletions(key, keys)
        deleted: set[str] = set()

        async def delete(i: int) -> None:
            v = doomed[i]
            try:
                await self.control.delete(v.obj)
            except ApiError as err:
                self.recorder.event(
                    obj, WARNING, EVENT_FAILED_DELETE, f"Error deleting RoleSet {v.name}: {err}"
                )
                raise
            deleted.add(keys[i])
            self.recorder.event(
                obj, NORMAL, EVENT_DELETED, f"Deleted RoleSet {v.name} (revision {v.revision})"
            )

        _, errors = await slow_start_batch(len(doomed), delete)
        if errors:
            # Deletions that failed or were not attempted will never be observed.
            self.expectations.lower_expectations(
                key, object_keys_deleted=[k for k in keys if k not in deleted]
            )
        _raise_first(errors, EVENT_FAILED_DELETE)

    def _still_cached(self, view: RoleSetView) -> bool:
        cached = self.rolesets.get(object_key(view.obj))
        return cached is not None and cached.get("metadata", {}).get("uid") == view.uid

    async def _patch_roleset(
        self, obj: Obj, v: RoleSetView, patch: Obj | list[Obj], patch_type: PatchType, doing: str
    ) -> bool:
        """Patch one of our RoleSets and fence the write; False when it is already gone. An API
        error is reported on the StormService and ends the pass (the work queue backs off)."""
        try:
            after = await self.control.patch(v.obj, patch, patch_type)
        except NotFound:
            return False
        except ApiError as err:
            self.recorder.event(obj, WARNING, EVENT_FAILED_UPDATE, f"Error {doing} RoleSet {v.name}: {err}")
            raise ReconcileFailure(EVENT_FAILED_UPDATE, err) from err
        self.fence.wrote(v.obj, after)
        return True

    async def _rewrite(self, obj: Obj, rolesets: Iterable[RoleSetView], target: Obj) -> None:
        for v in rolesets:
            patch = rewrite_patch(v.obj, target)
            if patch is None:
                continue
            if not await self._patch_roleset(obj, v, patch, "merge", "updating"):
                continue
            self.recorder.event(
                obj,
                NORMAL,
                EVENT_UPDATED,
                f"Updated RoleSet {v.name} in place from revision {v.revision} to {target['metadata']['labels'][c.LABEL_STORM_SERVICE_REVISION]}",
            )
