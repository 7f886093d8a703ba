"""Label, annotation, env and condition keys the RoleSet controller reads and writes.

The wire keys (spec section 5) come from `apis.v1alpha1.constants`; this module adds the
RoleSet controller's own vocabulary (event reasons, condition reasons, PodGroup descriptors)
and small readers over slim pod dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apis.v1alpha1 import constants as C

PREFIX = C.PREFIX

# Labels (exact keys: gateways and dashboards read them).
ROLESET_NAME_LABEL = C.LABEL_ROLESET_NAME
ROLE_NAME_LABEL = C.LABEL_ROLE_NAME
ROLE_TEMPLATE_HASH_LABEL = C.LABEL_ROLE_TEMPLATE_HASH
STORM_SERVICE_NAME_LABEL = C.LABEL_STORM_SERVICE_NAME
ROLE_REVISION_LABEL = C.LABEL_ROLE_REVISION
ROLE_REVISION_NAME_LABEL = C.LABEL_ROLE_REVISION_NAME
ROLE_REPLICA_INDEX_LABEL = C.LABEL_ROLE_REPLICA_INDEX
POD_GROUP_INDEX_LABEL = C.LABEL_POD_GROUP_INDEX
PODSET_NAME_LABEL = C.LABEL_PODSET_NAME
ENTRY_LABEL = C.LABEL_ENTRY

# Annotations.
ROLESET_INDEX_ANNOTATION = C.ANNOTATION_ROLESET_INDEX
ROLE_REPLICA_INDEX_ANNOTATION = C.ANNOTATION_ROLE_REPLICA_INDEX
INPLACE_TARGET_HASH_ANNOTATION = C.ANNOTATION_IN_PLACE_UPDATE_TARGET_HASH
INPLACE_STATE_ANNOTATION = C.ANNOTATION_IN_PLACE_UPDATE_STATE
INPLACE_PENDING_REASON_ANNOTATION = C.ANNOTATION_IN_PLACE_UPDATE_PENDING_REASON
# Beyond: the group size an instance was created with, so a podGroupSize change is detected
# without parsing container env.
POD_GROUP_SIZE_ANNOTATION = PREFIX + "pod-group-size"

# Pod condition / readiness gate toggled during an in-place update.
INPLACE_READY_CONDITION = C.CONDITION_IN_PLACE_UPDATE_READY

# Scheduler pod-group keys.
COSCHEDULING_POD_GROUP_LABEL = C.LABEL_COSCHEDULING_POD_GROUP
GODEL_POD_GROUP_ANNOTATION = C.ANNOTATION_GODEL_POD_GROUP_NAME
VOLCANO_POD_GROUP_ANNOTATION = C.ANNOTATION_VOLCANO_POD_GROUP_NAME

# Environment variables.
ENV_STORM_SERVICE_NAME = C.ENV_STORM_SERVICE_NAME
ENV_ROLESET_NAME = C.ENV_ROLESET_NAME
ENV_ROLESET_INDEX = C.ENV_ROLESET_INDEX
ENV_ROLE_NAME = C.ENV_ROLE_NAME
ENV_ROLE_TEMPLATE_HASH = C.ENV_ROLE_TEMPLATE_HASH
ENV_ROLE_REPLICA_INDEX = C.ENV_ROLE_REPLICA_INDEX
ENV_PODSET_NAME = C.ENV_PODSET_NAME
ENV_POD_GROUP_INDEX = C.ENV_POD_GROUP_INDEX
ENV_POD_GROUP_SIZE = C.ENV_POD_GROUP_SIZE
ENV_LEADER_ADDRESS = C.ENV_LEADER_ADDRESS
ENV_GROUP_SIZE = C.ENV_GROUP_SIZE
ENV_ENTRY_ADDRESS = C.ENV_ENTRY_ADDRESS
ENV_WORKER_INDEX = C.ENV_WORKER_INDEX

# Finalizers the reference implementation put on RoleSets and PodSets; removed on deletion.
LEGACY_FINALIZERS = (C.FINALIZER_ROLE_SET, C.FINALIZER_POD_SET)

# Events.
EVENT_PODSET_TAKEN_OVER = "PodSetTakenOver"
EVENT_INPLACE_STARTED = "InPlaceUpdateStarted"
EVENT_INPLACE_COMPLETED = "InPlaceUpdateCompleted"
EVENT_INPLACE_FALLBACK = "InPlaceFallback"
EVENT_INPLACE_STUCK = C.REASON_IN_PLACE_UPDATE_STUCK
EVENT_SUCCESSFUL_CREATE = "SuccessfulCreate"
EVENT_SUCCESSFUL_DELETE = "SuccessfulDelete"
EVENT_FAILED_CREATE = "FailedCreate"
EVENT_FAILED_DELETE = "FailedDelete"
EVENT_FAILED_UPDATE = "FailedUpdate"
EVENT_FAILED_CLAIM = "FailedClaim"
EVENT_POD_GROUP_CRD_MISSING = "PodGroupCRDMissing"
EVENT_POD_GROUP_SYNCED = "PodGroupSynced"
EVENT_INVALID_SPEC = "InvalidSpec"

# Condition types and reasons.
COND_READY = C.CONDITION_READY
COND_PROGRESSING = C.CONDITION_PROGRESSING
REASON_ROLLOUT_BLOCKED = C.REASON_ROLLOUT_BLOCKED  # a role cannot roll on within its budget
REASON_INPLACE_STUCK = C.REASON_IN_PLACE_UPDATE_STUCK
REASON_ROLLOUT_COMPLETE = C.REASON_ROLLOUT_COMPLETE
REASON_PARTITION_HELD = C.REASON_PARTITION_HELD  # Progressing=True: a role's partition holds the rest
REASON_INVALID_POD_TEMPLATE = C.REASON_INVALID_POD_TEMPLATE  # ReplicaFailure, and its event
COND_REPLICA_FAILURE = C.CONDITION_REPLICA_FAILURE
COND_POD_GROUP_SYNCED = "PodGroupSynced"
COND_TOPOLOGY_POLICY_APPLIED = "TopologyPolicyApplied"
# ReplicaFailure, and its Warning event: a group used up its role's restartBudget.
REASON_GROUP_RESTART_BUDGET_EXHAUSTED = "GroupRestartBudgetExhausted"


role_revision_annotation = C.role_revision_annotation
role_revision_name_annotation = C.role_revision_name_annotation


# Called several times per pod and pass: cached objects are dicts (slim.FrozenDict), and an
# isinstance against dict costs a fraction of one against the Mapping ABC.


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, (dict, Mapping)) else {}


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    v = meta(obj).get("labels")
    return v if isinstance(v, (dict, Mapping)) else {}


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    v = meta(obj).get("annotations")
    return v if isinstance(v, (dict, Mapping)) else {}


def parse_index(value: str | None) -> int | None:
    """A non-negative decimal index, or None when absent or malformed."""
    if value is None or not value.isdigit() or (len(value) > 1 and value[0] == "0"):
        return None
    return int(value)
