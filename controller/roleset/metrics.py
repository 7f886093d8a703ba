"""The RoleSet controller's own metrics, on the runtime's registry."""

from __future__ import annotations

from prometheus_client import Counter

from controller.runtime.metrics import REGISTRY

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
INPLACE_UPDATES = Counter(
    "stormservice_inplace_updates_total",
    "In-place pod updates by result: started, completed, fallback (recreated instead), stuck, failed.",
    ["result"],
    registry=REGISTRY,
)
