"""The RoleSet reconcile: read the cache, decide with the pure functions, act, write status.

Reads only the informer caches (RoleSets, pods, PodDisruptionBudgets, CRDs), never lists the API
server. Acts only when the expectations for the RoleSet are satisfied and the cache has caught up
with the pod patches of earlier passes; always recomputes status from what it observes, and
writes it only when it changed. API errors are reported in the ReplicaFailure condition and then
raised, so the work queue backs off.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from apis.v1alpha1.intstr import resolve_fenceposts
from apis.v1alpha1.types import LENIENT, RoleSetSpec, RoleSpec
from controller.roleset import adoption, dependencies, naming, partition, templatecheck
from controller.roleset import inplace as ip
from controller.roleset import labels as L
from controller.roleset import metrics as M
from controller.roleset import podsets as podsets_
from controller.roleset import recovery as rec
from controller.roleset.instances import (
    GroupHolds,
    Instance,
    PodInfo,
    PodInfoCache,
    RoleParams,
    RoleView,
    build_view,
    pod_info,
)
from controller.roleset.podcontrol import ObjectControl
from controller.roleset.pods import PodSpecInputs, RoleSetInfo, render_pod
from controller.roleset.rollout import RoleRollout, plan_gates
from controller.roleset.scale import CreatePod, DeletePod, Progress, RolePlan, classify, plan_role, progress
from controller.roleset.scheduling import (
    SCHEDULERS,
    Scheduler,
    chosen_scheduler,
    has_affinity_term,
    pdb_object,
    pod_group_keys,
    pod_group_object,
    pod_group_spec,
    topology_term,
)
from controller.roleset.status import (
    CondSpec,
    Observations,
    RoleCounts,
    compute_status,
    condition,
    counts_only,
    status_changed,
)
from controller.runtime import dryrun
from controller.runtime.batch import slow_start_batch
from controller.runtime.client import Obj, PatchType
from controller.runtime.controllerref import ClaimError, controller_ref, is_controlled_by
from controller.runtime.errors import (
    AlreadyExists,
    ApiError,
    Conflict,
    Invalid,
    NotFound,
    ReconcileError,
    ServerError,
    is_namespace_terminating,
)
from controller.runtime.expectations import ControllerExpectations
from controller.runtime.rand import random_string
from controller.runtime.resources import (
    POD_DISRUPTION_BUDGETS,
    PODS,
    PODSETS,
    ROLESETS,
    STORMSERVICES,
    Resource,
)
from controller.runtime.revision import hash_revision_data
from controller.runtime.statusbatch import StatusBatcher
from controller.runtime.store import INDEX_CONTROLLER_UID, Store
from controller.runtime.timestamps import format_time

log = structlog.get_logger(__name__)

WARNING = "Warning"
NORMAL = "Normal"
# A pod patch whose result the cache has not shown after this long is assumed lost.
WRITE_SETTLE_SECONDS = 60.0
# How soon to look again when a PodGroup CRD has just appeared and its cache has not listed.
POD_GROUP_CACHE_WAIT = 1.0
# How long a PDB of our name held by someone else outside the cache is trusted to stay there
# (retries with backoff come sooner: they report the conflict without writing).
PDB_CONFLICT_RECHECK_SECONDS = 60.0
# Names tried for one stateless pod (27^5 random suffixes: a second clash is next to impossible).
STATELESS_NAME_ATTEMPTS = 5


class Recorder(Protocol):
    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


class SyncError(ReconcileError):
    """API errors of one pass, raised after the status was written so the queue backs off."""


@dataclass(frozen=True, slots=True)
class SyncConfig:
    burst: int = 500  # creations (and deletions) per pass, as kube-controller-manager's burstReplicas
    initial_batch: int = 1  # slow start: 1, 2, 4, ...
    inplace_deadline_seconds: float = 600.0
    # An in-place update still pending this long says why on its pod (an annotation). Sooner, the
    # reason follows every step of a quick restart (old image still running, pod not ready, ...),
    # each one a pod write that every pod watcher receives, for a state that lasts seconds.
    inplace_pending_reason_after_seconds: float = 10.0
    # Counts-only status writes at most this often per RoleSet (runtime.statusbatch); 0: at once.
    status_batch_seconds: float = 0.0
    # A pod create whose outcome is unknown (connection broken, API server timeout) is expected
    # this long: the pod informer, resumed, shows it by then if it was made.
    unknown_create_seconds: float = 30.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def template_hash(template: Mapping[str, Any], entry_template: Mapping[str, Any] | None = None) -> str:
    """The role template hash: the runtime's pinned revision hash of the raw template. With an
    entryTemplate, of both: the two are one instance revision (a change of either rolls the
    role); without one, the hash is the one it always was."""
    if entry_template is None:
        return hash_revision_data(template, None)
    return hash_revision_data({"template": template, "entryTemplate": entry_template}, None)


@dataclass(slots=True)
class RoleCtx:
    spec: RoleSpec
    position: int
    params: RoleParams
    view: RoleView
    pods: dict[str, Obj]  # name -> pod (active or not)
    inputs: PodSpecInputs
    # What the observed pods count for, as the rollout gates and status read it (once per pass).
    progress: Progress
    role_sched: tuple[Scheduler, Mapping[str, Any]] | None = None
    plan: RolePlan = field(default_factory=RolePlan)
    ineligible: dict[str, str] = field(default_factory=dict)  # instance key -> why not in place
    recovery: rec.RoleRecovery | None = None  # with a recovery grace or restart budget


class RoleSetSync:
    def __init__(
        self,
        *,
        rolesets: Store,
        pods: Store,
        pdbs: Store | None,
        served: Callable[[Resource], bool] | None,
        control: ObjectControl,
        recorder: Recorder,
        expectations: ControllerExpectations,
        config: SyncConfig | None = None,
        clock: Callable[[], datetime] = utc_now,
        pod_groups: Callable[[Scheduler], Store | None] | None = None,
        podsets: Callable[[], Store | None] | None = None,
    ) -> None:
        self.rolesets = rolesets
        self.pods = pods
        self.pdbs = pdbs
        # Whether the API server serves a kind (API discovery); None: assume it does.
        self.served = served
        # AIBrix's PodSets, once their kind is served and listed (taken over, see podsets.py).
        self.podsets = podsets or (lambda: None)
        # (RoleSet uid, PDB name) -> when a create found someone else's PDB of that name outside
        # the cache (which selects on our label); not tried again for a while, as no event will
        # tell us it went.
        self._pdb_held_outside_cache: dict[tuple[str, str], float] = {}
        self.control = control
        self.recorder = recorder
        self.expectations = expectations
        self.config = config or SyncConfig()
        self.clock = clock
        # pod uid -> (resourceVersion of our last write, monotonic time of it)
        self._written: dict[str, tuple[int, float]] = {}
        # RoleSet key -> {pod name: uid} of owned pods that left the pod cache without being
        # deleted (their roleset-name label was removed): released on the RoleSet's next pass.
        self._departed: dict[str, dict[str, str]] = {}
        # The cache of a scheduler's PodGroups (those labelled roleset-name), once listed; None
        # while its CRD is missing or the first list is under way.
        self.pod_groups: Callable[[Scheduler], Store | None] = pod_groups or (lambda _: None)
        self.template_checks = dryrun.Verdicts()
        self.gauges = M.RoleSetGauges()
        # RoleSet key -> ((uid, generation), spec model, template hash per role): see _parsed.
        self._models: dict[str, tuple[tuple[str, str], RoleSetSpec, list[str]]] = {}
        self._pod_infos = PodInfoCache()
        self.status_batch = StatusBatcher(self.config.status_batch_seconds)
        # RoleSet key -> (uid, the groupRecoveries this process last wrote): a pass on a cache
        # that has not shown that write yet must not write the older history back.
        self._recoveries_written: dict[str, tuple[str, dict[str, dict[str, list[datetime]]]]] = {}

    # --- entry point ------------------------------------------------------------------------

    def pod_departed(self, key: str, pod: Mapping[str, Any]) -> None:
        """An owned pod of RoleSet `key` left the pod cache and may still exist (see
        adoption.departed)."""
        meta = pod.get("metadata") or {}
        if meta.get("name") and meta.get("uid"):
            self._departed.setdefault(key, {})[str(meta["name"])] = str(meta["uid"])

    async def sync(self, key: str) -> float | None:
        obj = self.rolesets.get(key)
        if obj is None:
            self._models.pop(key, None)
            self._pod_infos.forget(key)
            self._recoveries_written.pop(key, None)
            self.status_batch.forget(key)
            self.expectations.delete_expectations(key)
            self._departed.pop(key, None)
            self.template_checks.forget(key)
            self.gauges.forget(key)
            return None
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            self._models.pop(key, None)
            self._pod_infos.forget(key)
            self._departed.pop(key, None)  # the garbage collector takes it from here
            self.gauges.forget(key)
            await self._remove_legacy_finalizers(obj)
            return None
        try:
            spec, hashes = self._parsed(key, obj)
        except ValueError as err:
            self.recorder.event(obj, WARNING, L.EVENT_INVALID_SPEC, str(err)[:1024])
            return None

        info = RoleSetInfo(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
        )
        obs = Observations()
        # Decided before the first await: the informer delivers events while this pass waits on
        # the API server, and a creation observed then would satisfy the expectations for a pod
        # list read earlier, which lacks that pod (a second pass would create it again).
        satisfied = self.expectations.satisfied(key)
        if await self._take_over_podsets(obj, info, obs):
            # Pods still under a PodSet are not ours yet: planning now would see their groups
            # missing and create them again. Their updates bring the next pass.
            if obs.failures:
                raise SyncError("; ".join(f"{r}: {m}" for r, m in obs.failures))
            return None
        claim = adoption.needs_claim(self.pods, key, info.namespace, info.name, info.uid)
        snapshot = (
            adoption.candidates(self.pods, key, info.uid)
            if claim
            else self.pods.by_index(INDEX_CONTROLLER_UID, info.uid)
        )
        await self._release_departed(key, obj, info, obs)
        owned = await self._claim_pods(obj, info, snapshot, obs) if claim else snapshot
        by_role: dict[str, list[Obj]] = {}
        for pod in owned:
            by_role.setdefault(L.labels_of(pod).get(L.ROLE_NAME_LABEL, ""), []).append(pod)

        rs_sched = chosen_scheduler(self._dump(spec.scheduling_strategy))
        topo = self._dump(spec.topology_policy)
        roles: list[RoleCtx] = []
        infos = self._pod_infos.refresh(key, owned)
        recoveries = rec.read_history(obj.get("status"))
        written = self._recoveries_written.get(key)
        if written is not None and written[0] == info.uid:
            recoveries = rec.merge_history(recoveries, written[1])
        now = self.clock()
        for pos, role in enumerate(spec.roles):
            roles.append(
                self._role_ctx(
                    info, role, hashes[pos], pos, by_role.get(role.name, []), rs_sched, topo, infos
                )
            )
            roles[-1].recovery = self._plan_recovery(roles[-1], recoveries.get(role.name, {}), now, infos)
        obs.dependencies = dependencies.decide([_dependency_state(r) for r in roles])
        spec_roles = {r.spec.name for r in roles}
        removed = [p for name, ps in by_role.items() if name not in spec_roles for p in ps]

        if topo:
            obs.topology_missing = self._topology_missing(roles)
        self.template_checks.keep(key, spec_roles)
        requeue: float | None = None
        acting = satisfied and not self._stale(owned)
        if acting:
            requeue = await self._act(key, obj, info, spec, roles, removed, rs_sched, obs)
        else:
            log.debug("waiting for the cache", pending=self.expectations.pending(key))
            obs.pod_group = self._stored_condition(obj, L.COND_POD_GROUP_SYNCED)
            progressing = self._stored_condition(obj, L.COND_PROGRESSING)
            if progressing is not None and progressing.reason == L.REASON_ROLLOUT_BLOCKED:
                obs.blocked.append(progressing.message)  # not re-planned in this pass
            requeue = self._inflight_requeue(roles, obs, act=False)
            # The events awaited may never come (a create that did not happen): look again when
            # the expectations expire rather than wait for an unrelated event.
            expiry = self.expectations.expires_in(key)
            if expiry is not None:
                requeue = expiry + 0.1 if requeue is None else min(requeue, expiry + 0.1)

        for ctx in roles:
            verdict = self.template_checks.get(key, ctx.spec.name, ctx.params.target_hash)
            if verdict is not None and verdict.rejection is not None:
                obs.rejected_templates.append(f"role {ctx.spec.name}: {verdict.rejection}")
        counts = [RoleCounts(r.spec.name, r.params.replicas, r.progress) for r in roles]
        for ctx in roles:
            if (h := _held_by_partition(ctx)) is not None:
                obs.held[ctx.spec.name] = partition.held_message(ctx.spec.name, h, ctx.params.replicas)
        recovery_status, recovery_wait = self._recovery_outcome(obj, roles, recoveries, now, obs, acting)
        if recovery_status:
            self._recoveries_written[key] = (info.uid, rec.read_history({"groupRecoveries": recovery_status}))
        else:
            self._recoveries_written.pop(key, None)
        if recovery_wait is not None:
            requeue = recovery_wait if requeue is None else min(requeue, recovery_wait)
        new_status = compute_status(
            counts,
            obs,
            generation=int(meta.get("generation") or 0),
            old_status=obj.get("status"),
            now=format_time(self.clock()),
        )
        if recovery_status:
            new_status["groupRecoveries"] = recovery_status
        self.gauges.observe(
            key,
            f"{info.namespace}/{info.storm_service}" if info.storm_service else "",
            new_status,
            {r.spec.name: r.view.broken_groups for r in roles if r.params.group_size > 1},
        )
        self._record_partition_held(obj, new_status)
        if status_changed(obj.get("status"), new_status):
            # A recovery's record is never held back: a restart must not forget it.
            same_recoveries = (obj.get("status") or {}).get("groupRecoveries") == new_status.get(
                "groupRecoveries"
            )
            wait = self.status_batch.hold(
                key, counts_only=same_recoveries and counts_only(obj.get("status"), new_status)
            )
            if wait is not None:
                requeue = wait if requeue is None else min(requeue, wait)
            else:
                body = dict(new_status)
                if "groupRecoveries" not in body and (obj.get("status") or {}).get("groupRecoveries"):
                    body["groupRecoveries"] = None  # a merge patch removes only what it nulls
                try:
                    await self.control.patch(
                        ROLESETS, info.namespace, info.name, {"status": body}, subresource="status"
                    )
                except NotFound:
                    return None
        if obs.failures:
            raise SyncError("; ".join(f"{r}: {m}" for r, m in obs.failures))
        return requeue

    def _record_partition_held(self, obj: Obj, new_status: Mapping[str, Any]) -> None:
        """An event when a rollout comes to rest at a partition (the condition says it from then on)."""
        new = condition(new_status, L.COND_PROGRESSING) or {}
        if new.get("reason") != L.REASON_PARTITION_HELD:
            return
        if (condition(obj.get("status"), L.COND_PROGRESSING) or {}).get("reason") != L.REASON_PARTITION_HELD:
            self.recorder.event(obj, NORMAL, L.REASON_PARTITION_HELD, str(new.get("message") or ""))

    def _parsed(self, key: str, obj: Obj) -> tuple[RoleSetSpec, list[str]]:
        """The RoleSet's spec model and its roles' template hashes, built once per generation
        (the spec changes only with it; a pass per pod event, or after each status write, would
        otherwise validate and hash the same spec again). Models are never modified by a pass."""
        meta = obj["metadata"]
        version = (str(meta.get("uid") or ""), str(meta.get("generation") or ""))
        cached = self._models.get(key)
        if cached is not None and cached[0] == version and version[1]:
            return cached[1], cached[2]
        spec = RoleSetSpec.model_validate(obj.get("spec") or {}, context={LENIENT: True})
        hashes = [template_hash(role.template, role.entry_template) for role in spec.roles]
        self._models[key] = (version, spec, hashes)
        return spec, hashes

    # --- observation --------------------------------------------------------------------------

    async def _claim_pods(
        self, obj: Obj, info: RoleSetInfo, candidates: list[Obj], obs: Observations
    ) -> list[Obj]:
        """The pods this RoleSet owns after adopting matching orphans and releasing owned pods
        that stopped matching (ReplicaSet's claim), among `candidates` (the pass's snapshot).
        Adopted pods count from this pass on; the cache check (`_stale`) then holds actions
        until the cache has seen the adoption."""

        async def get_fresh() -> Obj:
            return await self.control.get(ROLESETS, info.namespace, info.name)

        claimer = adoption.pod_claimer(
            obj,
            info.owner_ref(),
            patch=self._pod_patcher(info.namespace),
            get_fresh=get_fresh,
            on_written=self._note_write,
        )
        try:
            return await claimer.claim(candidates)
        except ClaimError as err:
            obs.failures.extend((L.EVENT_FAILED_CLAIM, str(e)) for e in err.errors)
            return err.claimed

    async def _release_departed(self, key: str, obj: Obj, info: RoleSetInfo, obs: Observations) -> None:
        """Release pods whose roleset-name label was removed, as ReplicaSets release pods that
        stop matching: they keep running, no longer ours (the garbage collector will not delete
        them with the RoleSet), and the RoleSet replaces them like any lost pod."""
        departed = self._departed.pop(key, None)
        if not departed:
            return

        async def get_pod(pod_name: str) -> Obj:
            return await self.control.get(PODS, info.namespace, pod_name)

        patch = self._pod_patcher(info.namespace)
        for name, uid in departed.items():
            try:
                if await adoption.release_departed(obj, name, uid, get_pod=get_pod, patch=patch):
                    log.info("released a pod that lost the roleset-name label", pod=name)
            except ApiError as err:
                self._departed.setdefault(key, {})[name] = uid  # again on the retry
                obs.failures.append((L.EVENT_FAILED_CLAIM, f"release pod {name}: {err}"))

    def _pod_patcher(self, namespace: str) -> adoption.PatchPod:
        async def patch(name: str, body: Obj | list[Obj], patch_type: PatchType) -> Obj:
            return await self.control.patch(PODS, namespace, name, body, patch_type=patch_type)

        return patch

    @staticmethod
    def _dump(model: Any) -> dict[str, Any] | None:
        if model is None:
            return None
        out: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
        return out

    def _role_ctx(
        self,
        info: RoleSetInfo,
        role: RoleSpec,
        h: str,
        pos: int,
        pods: list[Obj],
        rs_sched: tuple[Scheduler, Mapping[str, Any]] | None,
        topo: Mapping[str, Any] | None,
        infos: Mapping[str, PodInfo],
    ) -> RoleCtx:
        surge, unavailable = resolve_fenceposts(
            role.update_strategy.max_surge, role.update_strategy.max_unavailable, role.replicas
        )
        params = RoleParams(
            name=role.name,
            replicas=role.replicas,
            group_size=role.pod_group_size,
            stateful=role.stateful,
            target_hash=h,
            surge=surge,
            unavailable=min(unavailable, max(role.replicas, 1)),
            recreate_group=role.recovery_policy == "Recreate",
        )
        role_sched = None
        if role.pod_group_size > 1:
            role_sched = chosen_scheduler(self._dump(role.scheduling_strategy))
        sched_labels: dict[str, str] = {}
        sched_anns: dict[str, str] = {}
        if role_sched is None and rs_sched is not None:
            sched_labels, sched_anns = pod_group_keys(rs_sched[0], info.name)
        affinity = topology_term(
            topo, storm_service=info.storm_service or None, roleset=info.name, role=role.name
        )
        inputs = PodSpecInputs(
            role=role.name,
            template=role.template,
            template_hash=h,
            group_size=role.pod_group_size,
            stateful=role.stateful,
            scheduler_labels=sched_labels,
            scheduler_annotations=sched_anns,
            affinity=affinity,
            entry_template=role.entry_template,
        )
        view = build_view(params, [_info_of(infos, p) for p in pods])
        return RoleCtx(
            spec=role,
            position=pos,
            params=params,
            view=view,
            pods={p["metadata"]["name"]: p for p in pods},
            inputs=inputs,
            progress=progress(params, view),
            role_sched=role_sched,
        )

    @staticmethod
    def _plan_recovery(
        ctx: RoleCtx, history: Mapping[str, Sequence[datetime]], now: datetime, infos: Mapping[str, PodInfo]
    ) -> rec.RoleRecovery | None:
        """A grouped role with a recovery grace or restart budget: decide per group (recovery.py)
        and rebuild the view with the groups held and the members failed by it."""
        role = ctx.spec
        budget = role.restart_budget
        policy = rec.policy_of(
            role.recovery_policy == "Recreate",
            role.recovery_grace_period_seconds,
            budget.max_restarts if budget else None,
            budget.window_seconds if budget else None,
        )
        if policy is None or role.pod_group_size <= 1:
            return None
        pods = list(ctx.pods.values())
        states = [(_info_of(infos, p), *rec.member_state(p)) for p in pods]
        outcome = rec.plan_recovery(
            role.name,
            role.pod_group_size,
            role.replicas,
            ctx.params.target_hash,
            states,
            policy,
            history,
            now,
        )
        if outcome.hold or outcome.fail:
            holds = GroupHolds(frozenset(outcome.hold), frozenset(outcome.fail))
            ctx.view = build_view(ctx.params, [s[0] for s in states], holds)
            ctx.progress = progress(ctx.params, ctx.view)
        return outcome

    def _recovery_outcome(
        self,
        obj: Obj,
        roles: Sequence[RoleCtx],
        history: Mapping[str, Mapping[str, Sequence[datetime]]],
        now: datetime,
        obs: Observations,
        acted: bool,
    ) -> tuple[list[dict[str, Any]], float | None]:
        """`status.groupRecoveries` after this pass (its recoveries count only if it acted),
        exhausted budgets reported (ReplicaFailure, and a Warning event when new), and how soon
        to look again (a grace or a budget window ending)."""
        kept: dict[str, Mapping[str, Sequence[datetime]]] = {}
        wake: datetime | None = None
        stored = condition(obj.get("status"), L.COND_REPLICA_FAILURE) or {}
        for ctx in roles:
            outcome = ctx.recovery
            if outcome is None:
                continue
            if ctx.spec.restart_budget is not None:
                undone = [g for g in outcome.recorded if not (acted and _recovery_done(ctx, g, obs))]
                kept[ctx.spec.name] = outcome.unrecorded(undone) if undone else outcome.history
            obs.exhausted.extend(outcome.exhausted)
            for message in outcome.exhausted:
                if message not in str(stored.get("message") or ""):
                    self.recorder.event(obj, WARNING, L.REASON_GROUP_RESTART_BUDGET_EXHAUSTED, message)
            if outcome.wake_at is not None and (wake is None or outcome.wake_at < wake):
                wake = outcome.wake_at
        wait = None if wake is None else max(0.0, (wake - now).total_seconds()) + 1.0
        return rec.history_status(kept), wait

    def _inputs_for(
        self, info: RoleSetInfo, ctx: RoleCtx, index: int | None, group: str | None = None
    ) -> PodSpecInputs:
        """The inputs of a pod in slot `index`; `group`: the existing group a replacement member
        joins, whose names it takes."""
        if index is None:
            return ctx.inputs
        name_hash = None
        if group is not None:
            found = naming.group_hash(info.name, ctx.spec.name, group, index)
            if found is not None and found != ctx.params.target_hash:
                name_hash = found
        if ctx.role_sched is None and name_hash is None:
            return ctx.inputs
        lbls, anns = dict(ctx.inputs.scheduler_labels), dict(ctx.inputs.scheduler_annotations)
        if ctx.role_sched is not None:
            group_name = naming.group_name(
                info.name, ctx.spec.name, name_hash or ctx.params.target_hash, index
            )
            lbls, anns = pod_group_keys(ctx.role_sched[0], group_name)
        return dataclasses.replace(
            ctx.inputs, scheduler_labels=lbls, scheduler_annotations=anns, name_hash=name_hash
        )

    def _stale(self, owned: Iterable[Obj]) -> bool:
        """Whether the cache still lacks one of our own recent pod patches."""
        now = time.monotonic()
        for uid, (_, at) in list(self._written.items()):
            if now - at > WRITE_SETTLE_SECONDS:
                del self._written[uid]
        stale = False
        for pod in owned:
            meta = pod["metadata"]
            entry = self._written.get(meta.get("uid", ""))
            if entry is None:
                continue
            try:
                rv = int(meta.get("resourceVersion") or 0)
            except ValueError:
                rv = entry[0]
            if rv >= entry[0]:
                del self._written[meta["uid"]]
            else:
                stale = True
        return stale

    def _note_write(self, result: Obj) -> None:
        meta = result.get("metadata") or {}
        with contextlib.suppress(KeyError, ValueError, TypeError):
            self._written[str(meta["uid"])] = (int(meta["resourceVersion"]), time.monotonic())

    @staticmethod
    def _topology_missing(roles: Sequence[RoleCtx]) -> list[str]:
        missing: list[str] = []
        for ctx in roles:
            if ctx.inputs.affinity is None:
                continue
            key, entry = ctx.inputs.affinity
            for name, pod in ctx.pods.items():
                if pod["metadata"].get("deletionTimestamp"):
                    continue
                if not has_affinity_term(pod, key, entry):
                    missing.append(name)
        return missing

    @staticmethod
    def _stored_condition(obj: Mapping[str, Any], type_: str) -> CondSpec | None:
        c = condition(obj.get("status"), type_)
        if c is None:
            return None
        return CondSpec(type_, str(c.get("status")), str(c.get("reason") or ""), str(c.get("message") or ""))

    # --- acting ---------------------------------------------------------------------------------

    async def _act(
        self,
        key: str,
        obj: Obj,
        info: RoleSetInfo,
        spec: RoleSetSpec,
        roles: list[RoleCtx],
        removed: list[Obj],
        rs_sched: tuple[Scheduler, Mapping[str, Any]] | None,
        obs: Observations,
    ) -> float | None:
        deletes: list[tuple[str, DeletePod]] = []
        for pod in removed:
            if not pod["metadata"].get("deletionTimestamp"):
                deletes.append(
                    (L.labels_of(pod).get(L.ROLE_NAME_LABEL, ""), DeletePod(pod_info(pod), "role-removed"))
                )

        # Pods that already run the current template under another hash are relabelled, not
        # replaced; the next pass (their update events) plans with them as they now are.
        if await self._relabel_current_pods(obj, info, roles, obs):
            obs.acted = True
            return None

        # In-flight in-place updates: complete them, or report them stuck.
        await self._advance_inplace(obj, info, roles, obs)
        requeue = self._inflight_requeue(roles, obs, act=True)

        gates = plan_gates(
            spec.update_strategy,
            [
                RoleRollout(
                    name=c.spec.name,
                    position=c.position,
                    upgrade_order=c.spec.upgrade_order,
                    replicas=c.params.replicas,
                    surge=c.params.surge,
                    unavailable=c.params.unavailable,
                    updated_ready=c.progress.updated_ready,
                    # A role held by its partition does not hold the others back; nor does one
                    # waiting for its dependencies: they may be the roles it would hold back
                    # (a fix to a dependency that never got ready would never roll).
                    done=c.progress.done(c.params.replicas)
                    or _held_by_partition(c) is not None
                    or obs.dependencies.holds(c.spec.name),
                )
                for c in roles
            ],
        )
        creates: list[tuple[RoleCtx, CreatePod]] = []
        starts: list[tuple[RoleCtx, Instance]] = []
        for ctx in roles:
            if obs.dependencies.holds(ctx.spec.name):
                continue  # no pod of it until its dependencies are ready: its plan stays empty
            use_inplace = ctx.spec.update_strategy.type == "InPlaceIfPossible"
            eligible = self._eligibility(info, ctx) if use_inplace else frozenset()
            gate = dataclasses.replace(gates[ctx.spec.name], partition=_partition(ctx))
            ctx.plan = plan_role(ctx.params, ctx.view, gate, inplace=use_inplace, inplace_eligible=eligible)
            if templatecheck.acts_on_template(ctx.plan) and not await self._template_accepted(
                key, obj, info, ctx, obs
            ):
                ctx.plan = templatecheck.held(ctx.plan)
            deletes.extend((ctx.spec.name, d) for d in ctx.plan.deletes)
            creates.extend((ctx, c) for c in ctx.plan.creates)
            if ctx.plan.creates and (deps := obs.dependencies.released.get(ctx.spec.name)):
                self.recorder.event(
                    obj,
                    NORMAL,
                    dependencies.EVENT_DEPENDENCIES_READY,
                    dependencies.released_message(ctx.spec.name, deps),
                )
            starts.extend((ctx, inst) for inst in ctx.plan.inplace)
            if ctx.plan.blocked is not None:
                obs.blocked.append(f"role {ctx.spec.name}: {ctx.plan.blocked}")
            for inst in ctx.plan.fallback:
                why = ctx.ineligible.get(inst.key, "in-place update not possible")
                self.recorder.event(
                    obj,
                    NORMAL,
                    L.EVENT_INPLACE_FALLBACK,
                    f"role {ctx.spec.name}: recreating {inst.key}: {why}",
                )
                M.INPLACE_UPDATES.labels(result="fallback").inc()

        await self._delete_pods(key, obj, info, deletes[: self.config.burst], obs)
        await self._create_pods(key, obj, info, _cut_at_instance(creates, self.config.burst), obs)
        for ctx, inst in starts:
            await self._start_inplace(obj, info, ctx, inst, obs)
        if any(c.plan.creates or c.plan.deletes or c.plan.inplace for c in roles) or deletes:
            obs.acted = True

        if await self._sync_pod_groups(key, obj, info, roles, rs_sched, obs):
            # Not event-driven: an informer's first list has no event when nothing is listed.
            # Only until a freshly seen PodGroup CRD's cache has listed.
            requeue = POD_GROUP_CACHE_WAIT if requeue is None else min(requeue, POD_GROUP_CACHE_WAIT)
        await self._sync_pdbs(obj, info, roles, obs)
        return requeue

    async def _template_accepted(
        self, key: str, obj: Obj, info: RoleSetInfo, ctx: RoleCtx, obs: Observations
    ) -> bool:
        """Whether the API server accepts pods of the role's template: known, or asked now with
        a dry-run create of the first pod the plan would create (see templatecheck)."""
        role, h = ctx.spec.name, ctx.params.target_hash
        verdict = self.template_checks.get(key, role, h)
        two_templates = ctx.inputs.entry_template is not None
        if verdict is None and templatecheck.probed_by_create(ctx.plan) and not two_templates:
            return True  # _create_pods records the answer of the first create
        if verdict is None:
            first = ctx.plan.creates[0] if ctx.plan.creates else None
            index = first.index if first else None
            if first is None and ctx.params.slotted:
                index = next((d.pod.index for d in ctx.plan.deletes if d.pod.index is not None), 0)
            member = (first.member if first else 0) if ctx.params.group_size > 1 else None
            # One pod of each template: the entry's and a worker's.
            members = templatecheck.ENTRY_AND_WORKER if two_templates else (member,)
            inputs = self._inputs_for(info, ctx, index, first.group if first else None)
            try:
                for m in members:
                    pod = templatecheck.dry_run_body(render_pod(info, inputs, index, m), info.name, role)
                    await self.control.create(PODS, info.namespace, pod, dry_run=True)
                verdict = dryrun.Verdict(h, None)
            except ApiError as err:
                refused = dryrun.rejection(err)
                if refused is None:
                    # Not an answer about the template: ask again on the retry, and touch
                    # nothing for it meanwhile.
                    if not is_namespace_terminating(err):
                        obs.failures.append(
                            (L.EVENT_FAILED_CREATE, f"role {role}: dry-run pod create: {err}")
                        )
                    return False
                verdict = dryrun.Verdict(h, refused)
                self.recorder.event(
                    obj,
                    WARNING,
                    L.REASON_INVALID_POD_TEMPLATE,
                    f"role {role}: the API server rejects its pods, nothing is replaced: {refused}"[:1024],
                )
            self.template_checks.record(key, role, verdict)
        return verdict.rejection is None

    def _eligibility(self, info: RoleSetInfo, ctx: RoleCtx) -> frozenset[str]:
        eligible: set[str] = set()
        for inst in ctx.view.instances:
            if classify(ctx.params, inst) != "outdated" or inst.size != ctx.params.group_size:
                if inst.size != ctx.params.group_size:
                    ctx.ineligible[inst.key] = "podGroupSize changed"
                continue
            reason = None
            for p in inst.pods:
                pod = ctx.pods[p.name]
                desired = render_pod(info, self._inputs_for(info, ctx, p.index), p.index, p.member)
                term = ctx.inputs.affinity[1] if ctx.inputs.affinity else None
                reason = ip.inplace_diff(pod, desired, term)
                if reason:
                    break
            if reason is None:
                eligible.add(inst.key)
            else:
                ctx.ineligible[inst.key] = reason
        return frozenset(eligible)

    async def _delete_pods(
        self, key: str, obj: Obj, info: RoleSetInfo, deletes: list[tuple[str, DeletePod]], obs: Observations
    ) -> None:
        if not deletes:
            return
        keys = [f"{info.namespace}/{d.pod.name}" for _, d in deletes]
        self.expectations.expect_deletions(key, keys)

        async def one(i: int) -> None:
            role, d = deletes[i]
            try:
                await self.control.delete(PODS, info.namespace, d.pod.name, uid=d.pod.uid)
            except (NotFound, Conflict):
                self.expectations.deletion_observed(key, keys[i])
                obs.deleted.add(d.pod.uid)  # gone already (Conflict: the name holds another pod)
                return
            except ApiError as err:
                self.expectations.deletion_observed(key, keys[i])
                self.recorder.event(obj, WARNING, L.EVENT_FAILED_DELETE, f"delete pod {d.pod.name}: {err}")
                raise
            obs.deleted.add(d.pod.uid)
            M.PODS_DELETED.labels(role=role, reason=d.reason).inc()
            self.recorder.event(
                obj, NORMAL, L.EVENT_SUCCESSFUL_DELETE, f"Deleted pod: {d.pod.name} ({d.reason})"
            )

        results = await asyncio.gather(*(one(i) for i in range(len(deletes))), return_exceptions=True)
        for r in results:
            if isinstance(r, ApiError):
                obs.failures.append((L.EVENT_FAILED_DELETE, str(r)))
            elif isinstance(r, BaseException):
                raise r

    async def _create_pods(
        self,
        key: str,
        obj: Obj,
        info: RoleSetInfo,
        creates: list[tuple[RoleCtx, CreatePod]],
        obs: Observations,
    ) -> None:
        if not creates:
            return
        self.expectations.expect_creations(key, len(creates))
        # Roles whose template no dry run has checked: their creates give the answer.
        unchecked = {
            ctx.spec.name
            for ctx, _ in creates
            if self.template_checks.get(key, ctx.spec.name, ctx.params.target_hash) is None
        }
        refusals: list[ApiError] = []

        async def one(i: int) -> None:
            ctx, c = creates[i]
            inputs = self._inputs_for(info, ctx, c.index, c.group)
            stateless = c.index is None
            body = render_pod(
                info, inputs, c.index, c.member, name_suffix=random_string() if stateless else None
            )
            try:
                for attempt in range(STATELESS_NAME_ATTEMPTS):
                    try:
                        await self.control.create(PODS, info.namespace, body)
                        break
                    except AlreadyExists:
                        if not stateless or attempt == STATELESS_NAME_ATTEMPTS - 1:
                            raise
                        # A random name taken (as the API server does for generateName): another.
                        body = render_pod(info, inputs, c.index, c.member, name_suffix=random_string())
            except AlreadyExists as err:
                self.expectations.lower_expectations(key, adds=1)
                name = body["metadata"].get("name", "")
                held = self.pods.get(f"{info.namespace}/{name}")
                if held is not None and is_controlled_by(held, info.uid):
                    # Our own pod, still leaving: its deletion event brings us back.
                    return
                # Someone else's pod holds the name: no event of ours will free it.
                self.recorder.event(
                    obj, WARNING, L.EVENT_FAILED_CREATE, f"create pod {name} for role {ctx.spec.name}: {err}"
                )
                raise
            except ServerError as err:
                if err.code in (0, 504):
                    # It may have been made: expect it a while, not for the whole TTL.
                    self.expectations.expire_within(key, self.config.unknown_create_seconds)
                else:
                    self.expectations.lower_expectations(key, adds=1)
                self.recorder.event(
                    obj, WARNING, L.EVENT_FAILED_CREATE, f"create pod for role {ctx.spec.name}: {err}"
                )
                raise
            except ApiError as err:
                self.expectations.lower_expectations(key, adds=1)
                if ctx.spec.name in unchecked and self._template_refused(key, obj, ctx, err):
                    refusals.append(err)
                elif not is_namespace_terminating(err):
                    self.recorder.event(
                        obj, WARNING, L.EVENT_FAILED_CREATE, f"create pod for role {ctx.spec.name}: {err}"
                    )
                raise
            if ctx.spec.name in unchecked:
                unchecked.discard(ctx.spec.name)
                self.template_checks.record(key, ctx.spec.name, dryrun.Verdict(ctx.params.target_hash, None))
            if c.group is not None:
                obs.joined.add((ctx.spec.name, c.group, c.member))
            M.PODS_CREATED.labels(role=ctx.spec.name, reason=c.reason).inc()

        done, errors = await slow_start_batch(len(creates), one, initial=self.config.initial_batch)
        skipped = len(creates) - done - len(errors)
        if skipped > 0:
            self.expectations.lower_expectations(key, adds=skipped)
        if done:
            self.recorder.event(obj, NORMAL, L.EVENT_SUCCESSFUL_CREATE, f"Created {done} pods")
        for err in errors:
            if any(err is r for r in refusals):
                continue  # InvalidPodTemplate: nothing to retry until the template changes
            if is_namespace_terminating(err):
                # Everything in it goes soon; no create can succeed (kube-controller-manager's
                # controllers skip this quietly too).
                log.debug("not creating pods: the namespace is being deleted")
            elif isinstance(err, ApiError):
                obs.failures.append((L.EVENT_FAILED_CREATE, str(err)))
            else:
                raise err

    def _template_refused(self, key: str, obj: Obj, ctx: RoleCtx, err: ApiError) -> bool:
        """Records the API server's refusal of a role's first pod as its template's verdict, as
        a dry run's would be (see templatecheck); False when `err` says nothing about the pod."""
        refused = dryrun.rejection(err)
        if refused is None:
            return False
        role = ctx.spec.name
        if self.template_checks.get(key, role, ctx.params.target_hash) is None:
            self.template_checks.record(key, role, dryrun.Verdict(ctx.params.target_hash, refused))
            self.recorder.event(
                obj,
                WARNING,
                L.REASON_INVALID_POD_TEMPLATE,
                f"role {role}: the API server rejects its pods, nothing is replaced: {refused}"[:1024],
            )
        return True

    # --- in place -------------------------------------------------------------------------------

    async def _patch_pod(
        self, info: RoleSetInfo, name: str, patch: Obj, *, status: bool = False, obs: Observations
    ) -> bool:
        try:
            result = await self.control.patch(
                PODS,
                info.namespace,
                name,
                patch,
                patch_type="strategic",
                subresource="status" if status else None,
            )
        except NotFound:
            return False
        except ApiError as err:
            obs.failures.append((L.EVENT_FAILED_UPDATE, f"patch pod {name}: {err}"))
            return False
        self._note_write(result)
        return True

    async def _start_inplace(
        self, obj: Obj, info: RoleSetInfo, ctx: RoleCtx, inst: Instance, obs: Observations
    ) -> None:
        now = self.clock()
        h = ctx.params.target_hash
        for p in inst.pods:
            pod = ctx.pods[p.name]
            desired = render_pod(info, self._inputs_for(info, ctx, p.index), p.index, p.member)
            if ip.has_inplace_gate(pod) and not await self._patch_pod(
                info, p.name, ip.gate_status_patch("False", now), status=True, obs=obs
            ):
                return
            if not await self._patch_pod(info, p.name, ip.start_patch(pod, desired, h, now), obs=obs):
                M.INPLACE_UPDATES.labels(result="failed").inc()
                return
            images = ", ".join(f"{n}={i}" for n, i in ip.container_images(desired.get("spec") or {}).items())
            self.recorder.event(
                obj,
                NORMAL,
                L.EVENT_INPLACE_STARTED,
                f"pod {p.name}: updating images in place to {images} ({h})",
            )
            M.INPLACE_UPDATES.labels(result="started").inc()

    def _inflight(self, ctx: RoleCtx) -> Iterable[tuple[PodInfo, Obj]]:
        for inst in ctx.view.instances:
            for p in inst.pods:
                if p.inplace_target == ctx.params.target_hash:
                    yield p, ctx.pods[p.name]

    def _pending_reason_wait(
        self, pod: Mapping[str, Any], check: ip.InPlaceCheck, now: datetime
    ) -> float | None:
        """Seconds until the pod's pending-reason annotation is to be written (0: now), or None
        when it shows the reason already. Once a reason is shown it is kept true at once."""
        shown = L.annotations_of(pod).get(L.INPLACE_PENDING_REASON_ANNOTATION)
        if shown == check.reason:
            return None
        if shown is not None or check.started is None:
            return 0.0
        elapsed = (now - check.started).total_seconds()
        return max(0.0, self.config.inplace_pending_reason_after_seconds - elapsed)

    def _inflight_requeue(self, roles: Sequence[RoleCtx], obs: Observations, *, act: bool) -> float | None:
        """Seconds until the earliest in-flight in-place update reaches its deadline, or is due
        to say why it is pending (timers, not polling: completion itself arrives as a pod
        event); records stuck ones."""
        deadline = self.config.inplace_deadline_seconds
        now = self.clock()
        soonest: float | None = None
        for ctx in roles:
            for p, pod in self._inflight(ctx):
                check = ip.check_completion(pod)
                if check.done or check.started is None:
                    continue
                elapsed = (now - check.started).total_seconds()
                if elapsed >= deadline:
                    if p.name not in obs.stuck:
                        obs.stuck.append(p.name)
                else:
                    remaining = deadline - elapsed + 1.0
                    reason_wait = self._pending_reason_wait(pod, check, now)
                    if reason_wait:  # None: shown; 0: written by this pass
                        remaining = min(remaining, reason_wait + 0.1)
                    soonest = remaining if soonest is None else min(soonest, remaining)
        return soonest

    def _runs_desired(self, info: RoleSetInfo, ctx: RoleCtx, p: PodInfo) -> str | None:
        """None when the pod is, content for content, the pod this role would create in its
        slot now (images included); else the first difference."""
        pod = ctx.pods[p.name]
        desired = render_pod(info, self._inputs_for(info, ctx, p.index), p.index, p.member)
        term = ctx.inputs.affinity[1] if ctx.inputs.affinity else None
        reason = ip.inplace_diff(pod, desired, term)
        if reason is None and ip.container_images(pod.get("spec") or {}) != ip.container_images(
            desired.get("spec") or {}
        ):
            reason = "container images changed"
        return reason

    async def _relabel_current_pods(
        self, obj: Obj, info: RoleSetInfo, roles: Sequence[RoleCtx], obs: Observations
    ) -> bool:
        """Instances whose hash label is not the template's but whose pods run exactly what the
        template asks for get the template's hash and revision labels, in place. This is how
        pods made by AIBrix's controller (another hash function: Go's spew of the template) or
        under an older hash scheme are taken over without a restart: by content, not by hash."""
        relabelled = False
        for ctx in roles:
            revision = info.annotations.get(L.role_revision_annotation(ctx.spec.name))
            revision_name = info.annotations.get(L.role_revision_name_annotation(ctx.spec.name))
            for inst in ctx.view.instances:
                if (
                    classify(ctx.params, inst) != "outdated"
                    or inst.size != ctx.params.group_size
                    or inst.inplace_target is not None
                    or not inst.hash
                ):
                    continue
                if any(self._runs_desired(info, ctx, p) is not None for p in inst.pods):
                    continue
                patch = ip.complete_patch(ctx.params.target_hash, revision, revision_name)
                if ctx.params.group_size > 1:
                    # AIBrix's pods lack it; ours read the group size from it.
                    patch["metadata"]["annotations"][L.POD_GROUP_SIZE_ANNOTATION] = str(ctx.params.group_size)
                for p in inst.pods:
                    if await self._patch_pod(info, p.name, patch, obs=obs):
                        relabelled = True
                log.info(
                    "instance runs the current template under another hash: relabelled",
                    role=ctx.spec.name,
                    instance=inst.key,
                    old_hash=inst.hash,
                    hash=ctx.params.target_hash,
                )
        return relabelled

    async def _advance_inplace(
        self, obj: Obj, info: RoleSetInfo, roles: Sequence[RoleCtx], obs: Observations
    ) -> None:
        now = self.clock()
        for ctx in roles:
            revision = info.annotations.get(L.role_revision_annotation(ctx.spec.name))
            revision_name = info.annotations.get(L.role_revision_name_annotation(ctx.spec.name))
            for name, pod in ctx.pods.items():
                if pod["metadata"].get("deletionTimestamp"):
                    continue
                target = L.annotations_of(pod).get(L.INPLACE_TARGET_HASH_ANNOTATION)
                gate = ip.has_inplace_gate(pod)
                if not target:
                    # A pod with the in-place gate is never Ready until someone sets it: that is us.
                    if gate and ip.pod_condition(pod, L.INPLACE_READY_CONDITION) != "True":
                        await self._patch_pod(
                            info, name, ip.gate_status_patch("True", now), status=True, obs=obs
                        )
                    continue
                if target != ctx.params.target_hash:
                    continue  # outdated again: the planner re-targets it
                check = ip.check_completion(pod)
                if not check.done:
                    if self._pending_reason_wait(pod, check, now) == 0.0:
                        await self._patch_pod(
                            info,
                            name,
                            {
                                "metadata": {
                                    "annotations": {L.INPLACE_PENDING_REASON_ANNOTATION: check.reason}
                                }
                            },
                            obs=obs,
                        )
                    started = check.started
                    overdue = started is not None and (
                        (now - started).total_seconds() >= self.config.inplace_deadline_seconds
                    )
                    reported = (condition(obj.get("status"), L.COND_PROGRESSING) or {}).get(
                        "reason"
                    ) == L.REASON_INPLACE_STUCK
                    if overdue and not reported:
                        # Once, when it becomes stuck; the condition carries it from then on.
                        self.recorder.event(
                            obj,
                            WARNING,
                            L.EVENT_INPLACE_STUCK,
                            f"pod {name}: in-place update to {target} not complete after "
                            f"{int(self.config.inplace_deadline_seconds)}s ({check.reason} {check.detail})".strip(),
                        )
                        M.INPLACE_UPDATES.labels(result="stuck").inc()
                    continue
                if (
                    gate
                    and ip.pod_condition(pod, L.INPLACE_READY_CONDITION) != "True"
                    and not await self._patch_pod(
                        info, name, ip.gate_status_patch("True", now), status=True, obs=obs
                    )
                ):
                    continue
                if await self._patch_pod(
                    info, name, ip.complete_patch(target, revision, revision_name), obs=obs
                ):
                    self.recorder.event(
                        obj,
                        NORMAL,
                        L.EVENT_INPLACE_COMPLETED,
                        f"pod {name}: in-place update to {target} complete",
                    )
                    M.INPLACE_UPDATES.labels(result="completed").inc()

    # --- PodGroups, PDBs, finalizers ------------------------------------------------------------------

    async def _sync_pod_groups(
        self,
        key: str,
        obj: Obj,
        info: RoleSetInfo,
        roles: Sequence[RoleCtx],
        rs_sched: tuple[Scheduler, Mapping[str, Any]] | None,
        obs: Observations,
    ) -> bool:
        """Create, update and delete this RoleSet's PodGroups. True when it had to wait for a
        PodGroup cache that has not listed yet."""
        desired: dict[str, tuple[Scheduler, Obj]] = {}
        if rs_sched is not None:
            total = sum(c.params.replicas * c.params.group_size for c in roles if c.role_sched is None)
            desired[info.name] = (rs_sched[0], pod_group_spec(rs_sched[0], rs_sched[1], max(total, 1)))
        for ctx in roles:
            if ctx.role_sched is None:
                continue
            sched, strategy = ctx.role_sched
            spec = pod_group_spec(sched, strategy, ctx.params.group_size)
            names = {
                naming.group_name(info.name, ctx.spec.name, ctx.params.target_hash, i)
                for i in range(ctx.params.replicas)
            }
            names |= {inst.key for inst in ctx.view.instances if inst.size > 1}
            for name in names:
                desired[name] = (sched, spec)
        # What exists is read from the cluster (the PodGroup caches), not remembered: PodGroups
        # of groups that are gone are found after a restart too, and under any scheduler.
        stores = {s.strategy_key: self.pod_groups(s) for s in SCHEDULERS.values()}
        existing: dict[str, tuple[Scheduler, Obj]] = {}
        for sched in SCHEDULERS.values():
            store = stores[sched.strategy_key]
            for pg in store.by_index(INDEX_CONTROLLER_UID, info.uid) if store is not None else ():
                existing[f"{sched.strategy_key}/{pg['metadata']['name']}"] = (sched, pg)
        if not desired and not existing:
            return False
        missing = sorted(
            {
                s.crd_name
                for s, _ in desired.values()
                if self.served is not None and not self.served(s.resource)
            }
        )
        if missing:
            prev = condition(obj.get("status"), L.COND_POD_GROUP_SYNCED)
            msg = f"CRD {', '.join(missing)} not installed: pods are created without gang scheduling"
            if prev is None or prev.get("reason") != "PodGroupCRDMissing":
                self.recorder.event(obj, WARNING, L.EVENT_POD_GROUP_CRD_MISSING, msg)
            obs.pod_group = CondSpec(L.COND_POD_GROUP_SYNCED, "False", "PodGroupCRDMissing", msg)
            return False
        if any(stores[s.strategy_key] is None for s, _ in desired.values()):
            # The CRD is new and its PodGroups are not listed yet; the list brings us back.
            obs.pod_group = self._stored_condition(obj, L.COND_POD_GROUP_SYNCED)
            return True
        owner = info.owner_ref()
        errors: list[str] = []
        for name, (sched, spec) in sorted(desired.items()):
            store = stores[sched.strategy_key]
            assert store is not None
            current = store.get(f"{info.namespace}/{name}")
            try:
                if current is None:
                    body = pod_group_object(
                        sched,
                        name=name,
                        namespace=info.namespace,
                        roleset=info.name,
                        owner_ref=owner,
                        spec=spec,
                    )
                    try:
                        await self.control.create(sched.resource, info.namespace, body)
                    except AlreadyExists:
                        # Ours and not cached yet, ours without the label the cache selects on
                        # (label it, so the cache sees it from now on), or someone else's.
                        found = await self.control.get(sched.resource, info.namespace, name)
                        if not is_controlled_by(found, info.uid):
                            errors.append(f"PodGroup {name} exists and is not controlled by this RoleSet")
                            continue
                        if L.labels_of(found).get(L.ROLESET_NAME_LABEL) != info.name:
                            await self.control.patch(
                                sched.resource,
                                info.namespace,
                                name,
                                {"metadata": {"labels": {L.ROLESET_NAME_LABEL: info.name}}, "spec": spec},
                            )
                elif not is_controlled_by(current, info.uid):
                    errors.append(f"PodGroup {name} exists and is not controlled by this RoleSet")
                elif not _spec_has(current.get("spec") or {}, spec):
                    await self.control.patch(sched.resource, info.namespace, name, {"spec": spec})
            except ApiError as err:
                if not is_namespace_terminating(err):
                    errors.append(f"PodGroup {name}: {err}")
        wanted = {f"{s.strategy_key}/{name}" for name, (s, _) in desired.items()}
        for ref, (sched, pg) in sorted(existing.items()):
            if ref in wanted:
                continue
            name = pg["metadata"]["name"]
            try:
                await self.control.delete(sched.resource, info.namespace, name, uid=pg["metadata"].get("uid"))
            except (NotFound, Conflict):
                pass
            except ApiError as err:
                errors.append(f"PodGroup {name}: {err}")
        if errors:
            obs.pod_group = CondSpec(
                L.COND_POD_GROUP_SYNCED, "False", "PodGroupSyncFailed", "; ".join(errors[:3])
            )
            obs.failures.append(("PodGroupSyncFailed", errors[0]))
        elif desired:
            kinds = sorted({s.resource.group for s, _ in desired.values()})
            obs.pod_group = CondSpec(
                L.COND_POD_GROUP_SYNCED,
                "True",
                "PodGroupSynced",
                f"{len(desired)} PodGroups ({', '.join(kinds)})",
            )
        return False

    async def _sync_pdbs(
        self, obj: Obj, info: RoleSetInfo, roles: Sequence[RoleCtx], obs: Observations
    ) -> None:
        """Create, repair or delete the per-role PDBs. A conflict is a failure: the sync fails
        and is retried with backoff, which also looks again at a PDB outside the cache."""
        if self.pdbs is None:
            return
        existing = {p["metadata"]["name"]: p for p in self.pdbs.by_index(INDEX_CONTROLLER_UID, info.uid)}
        desired: dict[str, Obj] = {}
        # A StormService's RoleSets get one PDB per role for the whole service from the
        # StormService controller; a per-RoleSet PDB as well would put each pod under two
        # budgets, and the eviction API refuses to evict such pods at all.
        owned_by_storm_service = (controller_ref(obj) or {}).get("kind") == STORMSERVICES.kind
        for ctx in () if owned_by_storm_service else roles:
            tol = ctx.spec.disruption_tolerance
            if tol is None or tol.max_unavailable is None:
                continue
            body = pdb_object(
                roleset=info.name,
                namespace=info.namespace,
                role=ctx.spec.name,
                max_unavailable=tol.max_unavailable,
                instances=ctx.spec.replicas,
                group_size=ctx.params.group_size,
                owner_ref=info.owner_ref(),
            )
            desired[body["metadata"]["name"]] = body
        for name, body in sorted(desired.items()):
            current = existing.get(name)
            try:
                if current is None:
                    other = self.pdbs.get(f"{info.namespace}/{name}")
                    if other is not None:
                        obs.failures.append(
                            (
                                "PodDisruptionBudgetConflict",
                                f"PodDisruptionBudget {name} is owned by another object",
                            )
                        )
                        continue
                    held_since = self._pdb_held_outside_cache.get((info.uid, name))
                    if (
                        held_since is not None
                        and time.monotonic() - held_since < PDB_CONFLICT_RECHECK_SECONDS
                    ):
                        obs.failures.append(
                            (
                                "PodDisruptionBudgetConflict",
                                f"PodDisruptionBudget {name} is owned by another object",
                            )
                        )
                        continue
                    self._pdb_held_outside_cache.pop((info.uid, name), None)
                    try:
                        await self.control.create(POD_DISRUPTION_BUDGETS, info.namespace, body)
                    except AlreadyExists:
                        # Not in the cache, which selects on our label: ours with its labels
                        # removed gets them back (and so enters the cache); anyone else's is a
                        # conflict.
                        held = await self.control.get(POD_DISRUPTION_BUDGETS, info.namespace, name)
                        if (controller_ref(held) or {}).get("uid") != info.uid:
                            self._pdb_held_outside_cache[(info.uid, name)] = time.monotonic()
                            obs.failures.append(
                                (
                                    "PodDisruptionBudgetConflict",
                                    f"PodDisruptionBudget {name} is owned by another object",
                                )
                            )
                            continue
                        await self.control.patch(
                            POD_DISRUPTION_BUDGETS,
                            info.namespace,
                            name,
                            {"metadata": {"labels": body["metadata"]["labels"]}},
                        )
                elif {k: (current.get("spec") or {}).get(k) for k in ("minAvailable", "selector")} != body[
                    "spec"
                ]:
                    await self.control.patch(
                        POD_DISRUPTION_BUDGETS,
                        info.namespace,
                        name,
                        {
                            "spec": {
                                "minAvailable": body["spec"]["minAvailable"],
                                "maxUnavailable": None,
                                "selector": body["spec"]["selector"],
                            }
                        },
                    )
            except NotFound:
                continue  # deleted in between: the next pass creates it
            except ApiError as err:
                if not is_namespace_terminating(err):
                    obs.failures.append(("FailedPodDisruptionBudget", f"PodDisruptionBudget {name}: {err}"))
        for name, current in sorted(existing.items()):
            if name in desired:
                continue
            try:
                await self.control.delete(
                    POD_DISRUPTION_BUDGETS, info.namespace, name, uid=current["metadata"].get("uid")
                )
            except (NotFound, Conflict):
                pass
            except ApiError as err:
                obs.failures.append(("FailedPodDisruptionBudget", f"PodDisruptionBudget {name}: {err}"))

    async def _take_over_podsets(self, obj: Obj, info: RoleSetInfo, obs: Observations) -> bool:
        """Re-parents the pods of the AIBrix PodSets this RoleSet controls, then removes the
        PodSets (see podsets.py). True while any remains."""
        store = self.podsets()
        if store is None:
            return False
        podsets = store.by_index(INDEX_CONTROLLER_UID, info.uid)
        if not podsets:
            return False
        ref = info.owner_ref()
        for podset in podsets:
            meta = podset["metadata"]
            name, uid = str(meta["name"]), str(meta.get("uid") or "")
            members = [
                p
                for p in self.pods.by_index(INDEX_CONTROLLER_UID, uid)
                if not p["metadata"].get("deletionTimestamp")
            ]
            for pod in members:
                patch = podsets_.reparent_patch(pod, uid, ref)
                if patch is not None and await self._patch_pod_json(info, pod, patch, obs):
                    log.info("adopted a pod from an AIBrix PodSet", pod=pod["metadata"]["name"], podset=name)
            try:
                fin = podsets_.finalizer_patch(podset)
                if fin is not None:
                    await self.control.patch(PODSETS, info.namespace, name, fin, patch_type="json")
                if not meta.get("deletionTimestamp"):
                    await self.control.delete(PODSETS, info.namespace, name, uid=uid, orphan=True)
                    self.recorder.event(
                        obj, NORMAL, L.EVENT_PODSET_TAKEN_OVER,
                        f"Took over AIBrix PodSet {name}: {len(members)} pods adopted, PodSet removed",
                    )  # fmt: skip
            except (NotFound, Conflict, Invalid):
                continue  # gone, or changed under us: the next pass sees it as it is
            except ApiError as err:
                obs.failures.append((L.EVENT_FAILED_UPDATE, f"take over PodSet {name}: {err}"))
        return True

    async def _patch_pod_json(self, info: RoleSetInfo, pod: Obj, patch: list[Obj], obs: Observations) -> bool:
        name = pod["metadata"]["name"]
        try:
            result = await self.control.patch(PODS, info.namespace, name, patch, patch_type="json")
        except (NotFound, Conflict, Invalid):
            return False  # gone, re-created, or claimed by someone else meanwhile
        except ApiError as err:
            obs.failures.append((L.EVENT_FAILED_UPDATE, f"patch pod {name}: {err}"))
            return False
        self._note_write(result)
        return True

    async def _remove_legacy_finalizers(self, obj: Obj) -> None:
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        keep = [f for f in finalizers if f not in L.LEGACY_FINALIZERS]
        if keep == finalizers:
            return
        try:
            await self.control.patch(
                ROLESETS,
                meta["namespace"],
                meta["name"],
                {"metadata": {"finalizers": keep or None, "resourceVersion": meta.get("resourceVersion")}},
            )
        except NotFound:
            return


def _info_of(infos: Mapping[str, PodInfo], pod: Mapping[str, Any]) -> PodInfo:
    """The pass's PodInfo of `pod` (PodInfoCache), or one made now for a pod it lacks."""
    return infos.get(pod["metadata"].get("uid") or "") or pod_info(pod)


def _partition(ctx: RoleCtx) -> int:
    return ctx.spec.update_strategy.partition or 0


def _held_by_partition(ctx: RoleCtx) -> partition.Hold | None:
    """The role's outdated instances split by its partition into kept and still to update, when
    its rollout rests at the partition (`partition.held`); None otherwise. A role without a
    partition (nearly every pass) is None at once, with no instance classified."""
    if not _partition(ctx):
        return None
    outdated = [i for i in ctx.view.instances if classify(ctx.params, i) == "outdated"]
    h = partition.hold(ctx.params, [*outdated, *ctx.view.unslotted], _partition(ctx))
    p = ctx.progress
    return h if partition.held(h, ctx.params.replicas, p.live, p.updated_ready) else None


def _recovery_done(ctx: RoleCtx, group: str, obs: Observations) -> bool:
    """Whether this pass carried out every write its plan made for the recovery of `group` (a
    write that failed, or was left for a later pass by the burst, is asked for again then, and
    the recovery is counted then)."""
    deletes = [d for d in ctx.plan.deletes if d.pod.group == group]
    creates = [c for c in ctx.plan.creates if c.group == group]
    return (
        bool(deletes or creates)
        and all(d.pod.uid in obs.deleted for d in deletes)
        and all((ctx.spec.name, group, c.member) in obs.joined for c in creates)
    )


def _dependency_state(ctx: RoleCtx) -> dependencies.RoleState:
    """Ready counted as the role's status counts it; any pod of the role means it has started."""
    ready = ctx.progress.ready
    return dependencies.RoleState(
        ctx.spec.name, tuple(ctx.spec.depends_on), ctx.params.replicas, ready, bool(ctx.pods)
    )


def _spec_has(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether `current` already has every field of `wanted` (fields the server or the scheduler
    added are not ours to remove, and must not cause a write on every pass)."""
    return all(current.get(k) == v for k, v in wanted.items())


def _cut_at_instance(creates: list[tuple[RoleCtx, CreatePod]], burst: int) -> list[tuple[RoleCtx, CreatePod]]:
    """At most `burst` creations, but never part of a new group: a group is created as a unit."""
    if len(creates) <= burst:
        return creates
    out = creates[:burst]
    last_ctx, last = out[-1]
    for ctx, c in creates[burst:]:
        if ctx is last_ctx and c.index == last.index and c.member is not None and c.reason == last.reason:
            out.append((ctx, c))
        else:
            break
    return out
