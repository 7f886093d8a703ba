"""The StormService controller's own metrics (on the runtime's registry)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Gauge, Histogram

from apis.v1alpha1.constants import CONDITION_PROGRESSING, CONDITION_READY
from controller.runtime.metrics import REGISTRY
from controller.stormservice.status import REASON_ROLLOUT, get_condition
from controller.stormservice.view import RoleSetView, parse_timestamp

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
    """Measures rollouts. A rollout starts when the current revision differs from the update
    revision and ends when the StormService is Ready. After a controller restart the start is
    recovered from the `Progressing` condition, whose transition time marks it."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    def observe(
        self, key: str, old_status: Mapping[str, Any], new_status: Mapping[str, Any], now: float
    ) -> float | None:
        """Returns the duration of a rollout that has just completed."""
        rolling = new_status.get("currentRevision") != new_status.get("updateRevision")
        if rolling and key not in self._started:
            self._started[key] = _rollout_start(old_status) or now
            return None
        if key in self._started and _is_ready(new_status) and not rolling:
            duration = max(0.0, now - self._started.pop(key))
            ROLLOUT_DURATION.observe(duration)
            return duration
        return None

    def forget(self, key: str) -> None:
        self._started.pop(key, None)


def _is_ready(status: Mapping[str, Any]) -> bool:
    cond = get_condition(status, CONDITION_READY)
    return cond is not None and cond.get("status") == "True"


def _rollout_start(status: Mapping[str, Any]) -> float | None:
    cond = get_condition(status, CONDITION_PROGRESSING)
    if cond is not None and cond.get("status") == "True" and cond.get("reason") == REASON_ROLLOUT:
        return parse_timestamp(cond.get("lastTransitionTime")) or None
    return None
