"""The StormService controller's own metrics (on the runtime's registry)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from apis.v1alpha1.constants import CONDITION_PROGRESSING, CONDITION_READY
from controller.runtime.metrics import REGISTRY, KeyedGauge
from controller.stormservice.scale import budget_for
from controller.stormservice.status import REASON_ROLLOUT, get_condition
from controller.stormservice.view import RoleSetView, parse_timestamp, role_replicas

ROLLOUT_DURATION = Histogram(
    "stormservice_rollout_duration_seconds",
    "Time from a StormService's rollout starting (a new update revision) to every RoleSet being "
    "updated and ready",
    buckets=(5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0),
    registry=REGISTRY,
)
ROLESETS = Gauge(
    "stormservice_rolesets",
    "RoleSets of a StormService (namespace/name) by revision and readiness",
    ["stormservice", "revision", "ready"],
    registry=REGISTRY,
)

ROLLOUTS = Counter(
    "stormservice_rollouts_total",
    "StormService rollouts that ended, by result: complete (every RoleSet updated and ready), "
    "superseded (a newer revision, or a rollback, replaced the one being rolled out), deleted "
    "(the StormService was deleted during the rollout)",
    ["result"],
    registry=REGISTRY,
)
for _result in ("complete", "superseded", "deleted"):
    ROLLOUTS.labels(_result)  # exported at 0 from the start, so rate() sees the first one
ROLLOUT_STALLED = Gauge(
    "stormservice_rollout_stalled",
    "1 while a StormService's rollout cannot go on without you (Progressing=False: a RoleSet's "
    "rollout is stalled, or the API server rejects the new revision's pods), else 0",
    ["stormservice"],
    registry=REGISTRY,
)
ROLE_REPLICAS = Gauge(
    "stormservice_role_replicas",
    "Pods of a StormService's role, summed over its RoleSets, by state: desired (spec), current "
    "(live), ready, updated (of the update revision), updated_ready",
    ["stormservice", "role", "state"],
    registry=REGISTRY,
)

#: `state` label of stormservice_role_replicas -> the roleStatuses field it reports.
ROLE_STATES = {
    "current": "replicas",
    "ready": "readyReplicas",
    "updated": "updatedReplicas",
    "updated_ready": "updatedReadyReplicas",
}


class StatusGauges:
    """`stormservice_rollout_stalled` and `stormservice_role_replicas` from the status a pass has
    just computed (no other input), exact per StormService."""

    def __init__(self) -> None:
        self._stalled = KeyedGauge(ROLLOUT_STALLED)
        self._roles = KeyedGauge(ROLE_REPLICAS)

    def observe(self, key: str, spec: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        progressing = get_condition(status, CONDITION_PROGRESSING)
        stalled = progressing is not None and progressing.get("status") == "False"
        self._stalled.set(key, {(key,): 1.0 if stalled else 0.0})
        rolesets = budget_for(spec).replicas
        desired = {
            str(role["name"]): rolesets * role_replicas(role) * max(1, int(role.get("podGroupSize") or 1))
            for role in ((spec.get("template") or {}).get("spec") or {}).get("roles") or ()
            if role.get("name")
        }
        reported = {str(r["name"]): r for r in status.get("roleStatuses") or () if r.get("name")}
        values: dict[tuple[str, ...], float] = {}
        # A role of the spec that no RoleSet reports yet has no pods in any state; a role only
        # old RoleSets still have is desired nowhere.
        for role_name in desired.keys() | reported.keys():
            values[(key, role_name, "desired")] = float(desired.get(role_name, 0))
            counts = reported.get(role_name) or {}
            for state, field in ROLE_STATES.items():
                values[(key, role_name, state)] = float(counts.get(field) or 0)
        self._roles.set(key, values)

    def forget(self, key: str) -> None:
        self._stalled.forget(key)
        self._roles.forget(key)


class RoleSetGauge:
    """Keeps `stormservice_rolesets` exact: label sets that no longer occur are removed."""

    def __init__(self) -> None:
        self._series: dict[str, set[tuple[str, str]]] = {}

    def observe(self, key: str, rolesets: Iterable[RoleSetView]) -> None:
        counts = Tally((r.revision, "true" if r.ready else "false") for r in rolesets)
        for revision, ready in self._series.get(key, set()) - set(counts):
            ROLESETS.remove(key, revision, ready)
        for (revision, ready), n in counts.items():
            ROLESETS.labels(key, revision, ready).set(n)
        self._series[key] = set(counts)

    def forget(self, key: str) -> None:
        for revision, ready in self._series.pop(key, set()):
            ROLESETS.remove(key, revision, ready)


class RolloutTimer:
    """Measures rollouts and counts how they end. A rollout of a revision starts when the current
    revision differs from the update revision and ends when the StormService is Ready on it
    (complete), when another update revision replaces it (superseded, also by a rollback to the
    current revision), or with the StormService (deleted). After a controller restart the start
    is recovered from the `Progressing` condition, whose transition time marks it."""

    def __init__(self) -> None:
        self._started: dict[str, tuple[float, str]] = {}  # key -> (start, revision rolled out)

    def observe(
        self, key: str, old_status: Mapping[str, Any], new_status: Mapping[str, Any], now: float
    ) -> float | None:
        """Returns the duration of a rollout that has just completed."""
        update = str(new_status.get("updateRevision") or "")
        rolling = new_status.get("currentRevision") != update
        started = self._started.get(key)
        if started is not None and started[1] != update:
            ROLLOUTS.labels("superseded").inc()
            del self._started[key]
            if rolling:
                self._started[key] = (now, update)
            return None
        if rolling and started is None:
            self._started[key] = (_rollout_start(old_status) or now, update)
            return None
        if started is not None and _is_ready(new_status) and not rolling:
            del self._started[key]
            duration = max(0.0, now - started[0])
            ROLLOUT_DURATION.observe(duration)
            ROLLOUTS.labels("complete").inc()
            return duration
        return None

    def forget(self, key: str) -> None:
        if self._started.pop(key, None) is not None:
            ROLLOUTS.labels("deleted").inc()


def _is_ready(status: Mapping[str, Any]) -> bool:
    cond = get_condition(status, CONDITION_READY)
    return cond is not None and cond.get("status") == "True"


def _rollout_start(status: Mapping[str, Any]) -> float | None:
    cond = get_condition(status, CONDITION_PROGRESSING)
    if cond is not None and cond.get("status") == "True" and cond.get("reason") == REASON_ROLLOUT:
        return parse_timestamp(cond.get("lastTransitionTime")) or None
    return None
