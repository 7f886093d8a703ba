"""The RoleSet controller's own metrics, on the runtime's registry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge

from apis.v1alpha1.constants import CONDITION_PROGRESSING
from controller.runtime.metrics import REGISTRY, KeyedGauge

PODS_CREATED = Counter(
    "stormservice_roleset_pods_created_total",
    "Pods created by the RoleSet controller, by role and reason (scale-up, missing, rollout, ...).",
    ["role", "reason"],
    registry=REGISTRY,
)
PODS_DELETED = Counter(
    "stormservice_roleset_pods_deleted_total",
    "Pods deleted by the RoleSet controller, by role and reason (scale-down, terminated, rollout, ...).",
    ["role", "reason"],
    registry=REGISTRY,
)
INPLACE_RESULTS = ("started", "completed", "fallback", "stuck", "failed")
INPLACE_UPDATES = Counter(
    "stormservice_inplace_updates_total",
    "In-place pod updates by result: started, completed, fallback (recreated instead), stuck, failed.",
    ["result"],
    registry=REGISTRY,
)
for _result in INPLACE_RESULTS:
    INPLACE_UPDATES.labels(_result)  # exported at 0 from the start, so rate() sees the first one

ROLLOUT_STALLED = Gauge(
    "stormservice_roleset_rollout_stalled",
    "1 while a RoleSet's rollout cannot go on without you (Progressing=False: RolloutBlocked or "
    "InPlaceUpdateStuck), else 0; stormservice is empty for a RoleSet of no StormService",
    ["stormservice", "roleset"],
    registry=REGISTRY,
)
BROKEN_GROUPS = Gauge(
    "stormservice_roleset_broken_groups",
    "Pod groups (roles with podGroupSize > 1) with a missing, failed or bad member, by RoleSet "
    "and role; briefly non-zero while a group is being created or replaced",
    ["stormservice", "roleset", "role"],
    registry=REGISTRY,
)


class RoleSetGauges:
    """The RoleSet gauges from what a pass observed, exact per RoleSet (`namespace/name`)."""

    def __init__(self) -> None:
        self._stalled = KeyedGauge(ROLLOUT_STALLED)
        self._broken = KeyedGauge(BROKEN_GROUPS)

    def observe(
        self, key: str, storm_service: str, status: Mapping[str, Any], broken_groups: Mapping[str, int]
    ) -> None:
        """`storm_service`: namespace/name or ""; `broken_groups`: role -> broken groups, for the
        roles that have groups."""
        stalled = any(
            c.get("type") == CONDITION_PROGRESSING and c.get("status") == "False"
            for c in status.get("conditions") or ()
        )
        self._stalled.set(key, {(storm_service, key): 1.0 if stalled else 0.0})
        self._broken.set(key, {(storm_service, key, role): float(n) for role, n in broken_groups.items()})

    def forget(self, key: str) -> None:
        self._stalled.forget(key)
        self._broken.forget(key)
