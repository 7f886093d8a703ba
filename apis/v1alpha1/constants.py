"""Names on the wire: group/version/kinds, label and annotation keys, env var names.

These strings are a compatibility promise: AIBrix's controller, gateway and dashboards read the
same keys (its ``pkg/controller/constants``), so every value here is kept byte-for-byte. Do not
"tidy" one without a migration plan.
"""

from __future__ import annotations

from typing import Final

# --- group, version, kinds ---------------------------------------------------------------------

GROUP: Final = "orchestration.aibrix.ai"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "orchestration.aibrix.ai/v1alpha1"  # GROUP/VERSION, spelled out for Literal types

KIND_STORM_SERVICE: Final = "StormService"
KIND_STORM_SERVICE_LIST: Final = "StormServiceList"
KIND_ROLE_SET: Final = "RoleSet"
KIND_ROLE_SET_LIST: Final = "RoleSetList"
KIND_ROLE_SCALER: Final = "RoleScaler"
KIND_ROLE_SCALER_LIST: Final = "RoleScalerList"

PLURAL_STORM_SERVICES: Final = "stormservices"
PLURAL_ROLE_SETS: Final = "rolesets"
SINGULAR_STORM_SERVICE: Final = "stormservice"
SINGULAR_ROLE_SET: Final = "roleset"
PLURAL_ROLE_SCALERS: Final = "rolescalers"
SINGULAR_ROLE_SCALER: Final = "rolescaler"
SHORT_NAMES_STORM_SERVICE: Final = ("storm",)

# --- label / annotation keys -------------------------------------------------------------------

#: Prefix of the namespaced keys ("P" in the spec).
PREFIX: Final = "stormservice.orchestration.aibrix.ai/"

# Unprefixed labels (AIBrix chose bare keys; tools select on them, e.g. `role-name=prefill`).
LABEL_STORM_SERVICE_NAME: Final = "storm-service-name"
LABEL_STORM_SERVICE_REVISION: Final = "storm-service-revision"
LABEL_ROLESET_NAME: Final = "roleset-name"
LABEL_ROLE_NAME: Final = "role-name"
LABEL_ROLE_TEMPLATE_HASH: Final = "role-template-hash"

# Prefixed pod labels.
LABEL_ROLE_REVISION: Final = PREFIX + "role-revision"
LABEL_ROLE_REVISION_NAME: Final = PREFIX + "role-revision-name"
LABEL_ROLE_REPLICA_INDEX: Final = PREFIX + "role-replica-index"
LABEL_POD_GROUP_INDEX: Final = PREFIX + "pod-group-index"
LABEL_PODSET_NAME: Final = PREFIX + "podset-name"
#: On the entry pod (member 0) of a group of a role with an entryTemplate (Kthena's
#: `modelserving.volcano.sh/entry`), so that a Service can select the entries.
LABEL_ENTRY: Final = PREFIX + "entry"

# Annotations.
ANNOTATION_REVISION: Final = PREFIX + "revision"  # on RoleSets: the StormService revision name
ANNOTATION_ROLESET_INDEX: Final = PREFIX + "roleset-index"  # on RoleSets and pods
# Pods carry the replica index as an annotation too (AIBrix's original key; the label came later).
ANNOTATION_ROLE_REPLICA_INDEX: Final = PREFIX + "role-replica-index"
# Per-role revision on RoleSets: `<prefix><role>` e.g. ".../role-revision.decode" = "3".
# The dot is part of the prefix here; AIBrix builds the key as "%s.%s" % (prefix-without-dot, role).
ANNOTATION_ROLE_REVISION_PREFIX: Final = PREFIX + "role-revision."
ANNOTATION_ROLE_REVISION_NAME_PREFIX: Final = PREFIX + "role-revision-name."

# In-place update bookkeeping on pods.
ANNOTATION_IN_PLACE_UPDATE_TARGET_HASH: Final = PREFIX + "in-place-update-target-hash"
ANNOTATION_IN_PLACE_UPDATE_STATE: Final = PREFIX + "in-place-update-state"
ANNOTATION_IN_PLACE_UPDATE_PENDING_REASON: Final = PREFIX + "in-place-update-pending-reason"
#: Pod readiness-gate condition type used during in-place updates.
CONDITION_IN_PLACE_UPDATE_READY: Final = PREFIX + "in-place-update-ready"

# Finalizers the reference implementation put on its objects; we only ever remove them.
FINALIZER_STORM_SERVICE: Final = f"{GROUP}/stormservice-finalizer"
FINALIZER_ROLE_SET: Final = f"{GROUP}/roleset-finalizer"
FINALIZER_POD_SET: Final = f"{GROUP}/podset-finalizer"
LEGACY_FINALIZERS: Final = (FINALIZER_STORM_SERVICE, FINALIZER_ROLE_SET, FINALIZER_POD_SET)

# ControllerRevision labels (same keys as apps/v1 StatefulSet/DaemonSet history).
LABEL_CONTROLLER_REVISION_NAME: Final = "name"
LABEL_CONTROLLER_REVISION_HASH: Final = "controller.kubernetes.io/hash"

# Gang-scheduler pod-group keys, one per supported scheduler.
LABEL_COSCHEDULING_POD_GROUP: Final = "scheduling.x-k8s.io/pod-group"  # label
ANNOTATION_GODEL_POD_GROUP_NAME: Final = "godel.bytedance.com/pod-group-name"  # annotation
ANNOTATION_VOLCANO_POD_GROUP_NAME: Final = "scheduling.k8s.io/group-name"  # annotation
ANNOTATION_VOLCANO_TASK_SPEC: Final = "volcano.sh/task-spec"  # annotation


def role_revision_annotation(role: str) -> str:
    """RoleSet annotation holding the ControllerRevision number of `role`."""
    return ANNOTATION_ROLE_REVISION_PREFIX + role


def role_revision_name_annotation(role: str) -> str:
    """RoleSet annotation holding the ControllerRevision name of `role`."""
    return ANNOTATION_ROLE_REVISION_NAME_PREFIX + role


# --- environment variables injected into every container ---------------------------------------

ENV_STORM_SERVICE_NAME: Final = "STORM_SERVICE_NAME"
ENV_ROLESET_NAME: Final = "ROLESET_NAME"
ENV_ROLESET_INDEX: Final = "ROLESET_INDEX"
ENV_ROLE_NAME: Final = "ROLE_NAME"
ENV_ROLE_TEMPLATE_HASH: Final = "ROLE_TEMPLATE_HASH"
ENV_ROLE_REPLICA_INDEX: Final = "ROLE_REPLICA_INDEX"
ENV_PODSET_NAME: Final = "PODSET_NAME"
ENV_POD_GROUP_INDEX: Final = "POD_GROUP_INDEX"
ENV_POD_GROUP_SIZE: Final = "POD_GROUP_SIZE"
ENV_LEADER_ADDRESS: Final = "LEADER_ADDRESS"  # Beyond AIBrix
# Kthena's names, in every pod of a role with an entryTemplate (beyond AIBrix).
ENV_GROUP_SIZE: Final = "GROUP_SIZE"
ENV_ENTRY_ADDRESS: Final = "ENTRY_ADDRESS"
ENV_WORKER_INDEX: Final = "WORKER_INDEX"

# --- condition types and reasons -----------------------------------------------------------------

CONDITION_READY: Final = "Ready"
CONDITION_PROGRESSING: Final = "Progressing"
CONDITION_REPLICA_FAILURE: Final = "ReplicaFailure"
# Progressing follows the Deployment convention on both kinds: True while a rollout runs and
# after it completed (this reason), False only when it cannot go on.
REASON_ROLLOUT_COMPLETE: Final = "RolloutComplete"
# Progressing=False reasons of a RoleSet whose rollout cannot go on by itself; the StormService
# reports them too, naming the RoleSet.
REASON_ROLLOUT_BLOCKED: Final = "RolloutBlocked"
REASON_IN_PLACE_UPDATE_STUCK: Final = "InPlaceUpdateStuck"
# Progressing=True reason of a RoleSet (and its StormService) whose rollout went as far as a
# role's updateStrategy.partition lets it: not complete, not stalled; lowering it goes on.
REASON_PARTITION_HELD: Final = "PartitionHeld"
# ReplicaFailure reason of a RoleSet (and its StormService) whose pod template the API server
# rejects as a pod: nothing is replaced until the template changes.
REASON_INVALID_POD_TEMPLATE: Final = "InvalidPodTemplate"
# True on a RoleSet while a role's first pods wait for the roles it dependsOn (absent otherwise);
# the StormService reports it too, naming the RoleSet.
CONDITION_WAITING_FOR_DEPENDENCIES: Final = "WaitingForDependencies"
REASON_DEPENDENCIES_NOT_READY: Final = "DependenciesNotReady"
REASON_DEPENDENCY_CYCLE: Final = "DependencyCycle"
# StormService with spec.progressDeadlineSeconds: Progressing=False when nothing moved for that
# long; with spec.rollbackOnFailure, RolledBack=True (same reason) once the template was returned
# to the last revision that was fully Ready.
REASON_PROGRESS_DEADLINE_EXCEEDED: Final = "ProgressDeadlineExceeded"
CONDITION_ROLLED_BACK: Final = "RolledBack"

# --- name-length limits (see types.py for the reasoning) -----------------------------------------

#: Longest StormService name: `<ss>-roleset-` must fit generateName's 58-character base.
MAX_STORM_SERVICE_NAME_LENGTH: Final = 49
#: Longest RoleSet name: it is the value of the `roleset-name` label (63 max).
MAX_ROLE_SET_NAME_LENGTH: Final = 63
#: Longest role name: `role-revision-name.<role>` is the name part of an annotation key (63 max).
MAX_ROLE_NAME_LENGTH: Final = 44
#: Most roles in one RoleSet (bounds CEL cost; far above any real topology).
MAX_ROLES: Final = 64
