"""Validation rules shared by the CRD (CEL `x-kubernetes-validations`) and the pydantic models.

Each rule has one user-facing message. The CRD generator emits the CEL form, the models raise
the same text, so a user sees the same sentence from `kubectl apply` and from our own tooling,
and tests elsewhere can assert on these constants.

Name-length limits, and why (63 is the Kubernetes limit for a label value, a DNS label and the
name part of a label/annotation key):

* StormService name <= 49 and a DNS-1035 label. RoleSets are created with
  generateName `<ss>-roleset-`; the API server appends 5 random characters and truncates the
  base to 58 (63 - 5) if it is longer. 58 - len("-roleset-") = 49 keeps every RoleSet name
  intact and <= 63, so it is a valid `roleset-name` label value. The name also names the
  headless Service (DNS-1035: starts with a letter, no dots) and is every pod's
  `spec.subdomain`, and `<ss>-<hash>` ControllerRevision names (hash <= 10 chars) fit too.
* RoleSet name <= 63 and a DNS-1123 label (no dots): it is the `roleset-name` label value, the
  PodGroup name, and the prefix of pod names, which are also pod host names (DNS labels).
* Role name <= 44 and a DNS-1123 label: the RoleSet annotation key
  `stormservice.orchestration.aibrix.ai/role-revision-name.<role>` has the name part
  `role-revision-name.<role>`, which must be <= 63; 63 - len("role-revision-name.") = 44.
  Pod and pod-group names `<rs>-<role>-<hash>-<i>[-<k>]` can still exceed 63; the controllers
  shorten them keeping the tail (`-<hash>-<i>-<k>` is at most 25 characters with int32 indices
  and podGroupSize <= 100), so no limit on inputs can or needs to make them fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from apis.v1alpha1.constants import (
    MAX_ROLE_NAME_LENGTH,
    MAX_ROLE_SET_NAME_LENGTH,
    MAX_ROLES,
    MAX_STORM_SERVICE_NAME_LENGTH,
)
from apis.v1alpha1.intstr import PERCENT_PATTERN

DNS1123_LABEL_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1035_LABEL_PATTERN: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
#: A Kubernetes label key: optional DNS-subdomain prefix and "/", then a name (AIBrix's pattern).
LABEL_KEY_PATTERN: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
MAX_LABEL_KEY_LENGTH: Final = 317  # 253 prefix + "/" + 63 name
MAX_LABEL_VALUE_LENGTH: Final = 63

DNS1123_LABEL_RE: Final = re.compile(DNS1123_LABEL_PATTERN)
DNS1035_LABEL_RE: Final = re.compile(DNS1035_LABEL_PATTERN)
LABEL_KEY_RE: Final = re.compile(LABEL_KEY_PATTERN)

# --- messages --------------------------------------------------------------------------------------

MSG_STORM_SERVICE_NAME_LENGTH: Final = (
    f"StormService name must be at most {MAX_STORM_SERVICE_NAME_LENGTH} characters, so that RoleSet "
    "names (<name>-roleset-<5 random characters>) fit in 63"
)
MSG_STORM_SERVICE_NAME_DNS: Final = (
    "StormService name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a "
    "letter and ending with a letter or digit), because it also names the headless Service"
)
MSG_ROLE_SET_NAME_LENGTH: Final = (
    f"RoleSet name must be at most {MAX_ROLE_SET_NAME_LENGTH} characters, because it is the value "
    "of the roleset-name pod label"
)
MSG_ROLE_SET_NAME_DNS: Final = (
    "RoleSet name must be a DNS-1123 label (lowercase letters, digits and '-', no dots), because "
    "it prefixes pod host names"
)
MSG_ROLE_NAME_DNS: Final = (
    "role name must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending "
    "with a letter or digit"
)
MSG_ROLE_NAME_LENGTH: Final = (
    f"role name must be at most {MAX_ROLE_NAME_LENGTH} characters, because it is part of the "
    "annotation key stormservice.orchestration.aibrix.ai/role-revision-name.<role>"
)
MSG_ROLE_NAMES_UNIQUE: Final = "role names must be unique"
MSG_INT_OR_PERCENT: Final = 'must be a non-negative integer or a percentage such as "25%"'
MSG_ONE_SCHEDULING_STRATEGY: Final = (
    "at most one of godelSchedulingStrategy, coschedulingSchedulingStrategy and "
    "volcanoSchedulingStrategy may be set"
)
MSG_SELECTOR_EMPTY: Final = "selector must not be empty: set matchLabels or matchExpressions"
MSG_SELECTOR_MISMATCH: Final = (
    "selector does not match template labels: every selector.matchLabels entry and "
    "selector.matchExpressions requirement must hold for template.metadata.labels"
)
MSG_SELECTOR_REQUIREMENT_VALUES: Final = (
    "values must be non-empty when operator is In or NotIn, and empty when operator is Exists or DoesNotExist"
)
MSG_EXTERNAL_SCALING_POOLED: Final = (
    "scaling: External is allowed only in pooled mode (spec.replicas: 1): a RoleScaler scales "
    "one role inside the one RoleSet"
)
MSG_ROLLBACK_NEEDS_DEADLINE: Final = (
    "rollbackOnFailure requires progressDeadlineSeconds > 0: a rollout is rolled back when it "
    "makes no progress for that long"
)
MSG_SCALING_BAND_NEEDS_EXTERNAL: Final = (
    "scalingBand requires scaling: External (the band bounds what the role's RoleScaler asks for)"
)
MSG_SCALING_BAND_FOLLOWS: Final = (
    "scalingBand.follows must name another role of the same RoleSet, one without a scalingBand of its own"
)
MSG_SCALING_BAND_BOUNDS: Final = "scalingBand needs minRatio, maxRatio or both, with minRatio <= maxRatio"
MSG_PARTITION_MIN: Final = "partition must be greater than or equal to 0"
MSG_PARTITION_NEEDS_IN_PLACE_UPDATE: Final = (
    "a role's updateStrategy.partition needs the StormService's updateStrategy.type InPlaceUpdate: "
    "RollingUpdate replaces whole RoleSets, so no instance could be kept on the old revision"
)
MSG_RATIO: Final = 'a ratio is a decimal string with at most 3 decimals, such as "1.5" or "3"'
MSG_IMMUTABLE: Final = "is immutable"
MSG_DEPENDS_ON_SELF: Final = "dependsOn must not name the role itself"
MSG_DEPENDS_ON_UNIQUE: Final = "dependsOn must not name a role twice"
MSG_DEPENDS_ON_KNOWN: Final = "dependsOn must name roles of the same RoleSet"
MSG_DEPENDS_ON_CYCLE: Final = (
    "dependsOn must not form a cycle: a role would wait, through the roles it depends on, for itself"
)

# Per-role Services (RoleSpec.service).
MAX_SERVICE_PORTS: Final = 64
MSG_SERVICE_PORT_NAMES: Final = (
    "service ports need a name each, unique among them, when there are more than one"
)
MSG_SERVICE_PORTS_UNIQUE: Final = "service ports must differ in port or protocol"
MSG_SERVICE_NODE_PORT_TYPE: Final = "nodePort is allowed only with service type NodePort or LoadBalancer"
MSG_SERVICE_PORT_RANGE: Final = "port must be between 1 and 65535"
MSG_SERVICE_NODE_PORT_RANGE: Final = "nodePort must be between 1 and 65535"
MSG_SERVICE_TARGET_PORT: Final = (
    "targetPort must be a port number between 1 and 65535 or a container port name (at most 15 characters)"
)
MSG_SERVICE_PORT_NAME: Final = (
    "service port name must be a DNS-1123 label: at most 63 lowercase letters, digits and '-'"
)
MSG_GROUP_RECOVERY_NEEDS_GROUPS: Final = (
    "recoveryGracePeriodSeconds and restartBudget apply to pod groups: they need podGroupSize > 1"
)
MSG_RECOVERY_GRACE_MIN: Final = "recoveryGracePeriodSeconds must be 0 or more"
MSG_RESTART_BUDGET_MAX_RESTARTS_MIN: Final = "restartBudget.maxRestarts must be 1 or more"
MSG_RESTART_BUDGET_WINDOW_MIN: Final = "restartBudget.windowSeconds must be 1 or more"

# Entry and worker templates (RoleSpec.entryTemplate).
MSG_ENTRY_TEMPLATE_NEEDS_GROUP: Final = (
    "entryTemplate requires podGroupSize > 1: it is the template of member 0 of each pod group, "
    "the other members are made from template"
)

#: A ratio of instance counts: a decimal string, so that the API holds no float (exact "1.5").
RATIO_PATTERN: Final = r"^(0|[1-9][0-9]{0,3})(\.[0-9]{1,3})?$"
RATIO_RE: Final = re.compile(RATIO_PATTERN)

# Bounds checked by plain OpenAPI keywords (minimum/maximum); the models say it in these words.
MSG_REPLICAS_MIN: Final = "replicas must be greater than or equal to 0"
MSG_POD_GROUP_SIZE_RANGE: Final = "podGroupSize must be between 1 and 100"
MSG_UPGRADE_ORDER_MIN: Final = "upgradeOrder must be greater than or equal to 1"
MSG_REVISION_HISTORY_LIMIT_MIN: Final = "revisionHistoryLimit must be greater than or equal to 0"
MSG_TOPOLOGY_KEY: Final = "topologyPolicy.key must be a label key such as kubernetes.io/hostname"
MSG_ROLE_TEMPLATE_CONTAINERS: Final = "role template must have spec.containers with at least one container"
MSG_ENTRY_TEMPLATE_CONTAINERS: Final = "entryTemplate must have spec.containers with at least one container"

# Checks the API server makes on every pod, made on role templates at admission so that a
# template no pod can be made of is refused before a rollout starts. Plain OpenAPI keywords on
# the embedded core/v1 schema (POD_TEMPLATE_KEYWORDS below): the API server
# words those errors itself, the models say it in these words.
MAX_CONTAINER_NAME_LENGTH: Final = 63
MIN_PORT: Final = 1
MAX_PORT: Final = 65535
POD_RESTART_POLICIES: Final = ("Always", "OnFailure", "Never", "")
MSG_CONTAINER_NAME_DNS: Final = (
    "container name must be a DNS-1123 label: at most 63 lowercase letters, digits and '-', "
    "starting and ending with a letter or digit"
)
MSG_CONTAINER_NAMES_UNIQUE: Final = (
    "container names must be unique within containers and within initContainers"
)
MSG_CONTAINER_PORT_RANGE: Final = "containerPort must be between 1 and 65535"
MSG_HOST_PORT_RANGE: Final = "hostPort must be between 1 and 65535, or 0 for none"
MSG_GRPC_PORT_RANGE: Final = "grpc probe port must be between 1 and 65535"
MSG_RESTART_POLICY: Final = "restartPolicy must be Always, OnFailure or Never"
# A CEL rule: its message is what the API server says.
MSG_NO_EPHEMERAL_CONTAINERS: Final = (
    "ephemeral containers are not allowed in a pod template (the API server refuses them on pod "
    "create; add one to a running pod with kubectl debug)"
)

#: The same checks as OpenAPI keywords on the core/v1 definitions a role template embeds, keyed by
#: (definition, property). Keywords cost nothing in the CEL budget; the same checks as CEL rules
#: would sit under the pod spec's lists, which have no maxItems (and may not get one: a pod may
#: have any number of containers). Keyed by definition, so containers and initContainers (both
#: Container) get the same. Nothing the API server accepts after its own defaulting is refused:
#: "" restartPolicy becomes Always, hostPort 0 is no host port.
POD_TEMPLATE_KEYWORDS: Final[dict[tuple[str, str], dict[str, Any]]] = {
    ("io.k8s.api.core.v1.Container", "name"): {
        "maxLength": MAX_CONTAINER_NAME_LENGTH,
        "pattern": DNS1123_LABEL_PATTERN,
    },
    ("io.k8s.api.core.v1.ContainerPort", "containerPort"): {"minimum": MIN_PORT, "maximum": MAX_PORT},
    ("io.k8s.api.core.v1.ContainerPort", "hostPort"): {"minimum": 0, "maximum": MAX_PORT},
    ("io.k8s.api.core.v1.GRPCAction", "port"): {"minimum": MIN_PORT, "maximum": MAX_PORT},
    ("io.k8s.api.core.v1.PodSpec", "restartPolicy"): {"enum": list(POD_RESTART_POLICIES)},
}

MIN_POD_GROUP_SIZE: Final = 1
MAX_POD_GROUP_SIZE: Final = 100
MIN_UPGRADE_ORDER: Final = 1


@dataclass(frozen=True, slots=True)
class CelRule:
    """One ``x-kubernetes-validations`` entry; put it on a field (``Annotated[T, rule]``) or a
    model (``crd_markers``) and the CRD generator emits it on that node."""

    rule: str
    message: str
    #: Where the API server reports the error, relative to the node carrying the rule.
    field_path: str | None = None
    #: A CEL expression giving the message (the API server falls back to `message` if it fails).
    message_expression: str | None = None
    #: FieldValueInvalid (default), FieldValueForbidden, FieldValueRequired or FieldValueDuplicate.
    reason: str | None = None

    def as_schema(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.message_expression:
            out["messageExpression"] = self.message_expression
        if self.reason:
            out["reason"] = self.reason
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


# --- CEL rules -------------------------------------------------------------------------------------

CEL_INT_OR_PERCENT: Final = CelRule(
    f"type(self) == int ? self >= 0 : (type(self) == string && self.matches('{PERCENT_PATTERN}'))",
    MSG_INT_OR_PERCENT,
)

# At the root (only there can a rule see metadata.name); reported at metadata.name.
CEL_STORM_SERVICE_NAME_LENGTH: Final = CelRule(
    f"self.metadata.name.size() <= {MAX_STORM_SERVICE_NAME_LENGTH}",
    MSG_STORM_SERVICE_NAME_LENGTH,
    ".metadata.name",
)
CEL_STORM_SERVICE_NAME_DNS: Final = CelRule(
    f"self.metadata.name.matches('{DNS1035_LABEL_PATTERN}')", MSG_STORM_SERVICE_NAME_DNS, ".metadata.name"
)
CEL_ROLE_SET_NAME_LENGTH: Final = CelRule(
    f"self.metadata.name.size() <= {MAX_ROLE_SET_NAME_LENGTH}", MSG_ROLE_SET_NAME_LENGTH, ".metadata.name"
)
CEL_ROLE_SET_NAME_DNS: Final = CelRule(
    f"self.metadata.name.matches('{DNS1123_LABEL_PATTERN}')", MSG_ROLE_SET_NAME_DNS, ".metadata.name"
)

# On a role object.
CEL_ROLE_NAME_DNS: Final = CelRule(
    f"self.name.matches('{DNS1123_LABEL_PATTERN}')", MSG_ROLE_NAME_DNS, ".name"
)
CEL_ROLE_NAME_LENGTH: Final = CelRule(
    f"self.name.size() <= {MAX_ROLE_NAME_LENGTH}", MSG_ROLE_NAME_LENGTH, ".name"
)

# On the roles array.
CEL_ROLE_NAMES_UNIQUE: Final = CelRule(
    "self.all(r, self.exists_one(o, o.name == r.name))", MSG_ROLE_NAMES_UNIQUE
)

# On a schedulingStrategy object.
CEL_ONE_SCHEDULING_STRATEGY: Final = CelRule(
    "(has(self.godelSchedulingStrategy) ? 1 : 0) + (has(self.coschedulingSchedulingStrategy) ? 1 : 0)"
    " + (has(self.volcanoSchedulingStrategy) ? 1 : 0) <= 1",
    MSG_ONE_SCHEDULING_STRATEGY,
)

# On a label selector object.
CEL_SELECTOR_NOT_EMPTY: Final = CelRule(
    "(has(self.matchLabels) && size(self.matchLabels) > 0)"
    " || (has(self.matchExpressions) && size(self.matchExpressions) > 0)",
    MSG_SELECTOR_EMPTY,
)

# On a label selector requirement object.
CEL_SELECTOR_REQUIREMENT_VALUES: Final = CelRule(
    "self.operator == 'In' || self.operator == 'NotIn'"
    " ? (has(self.values) && size(self.values) > 0)"
    " : (!has(self.values) || size(self.values) == 0)",
    MSG_SELECTOR_REQUIREMENT_VALUES,
    ".values",
)

# On a role's pod spec. Only size(): a rule that iterated over a list of the pod spec would be
# charged for the longest list a request can hold, and none of them is bounded.
CEL_NO_EPHEMERAL_CONTAINERS: Final = CelRule(
    "!has(self.ephemeralContainers) || size(self.ephemeralContainers) == 0",
    MSG_NO_EPHEMERAL_CONTAINERS,
    ".ephemeralContainers",
)

# On StormService.spec: the selector must select the RoleSets the template stamps out.
_TL = "self.template.metadata.labels"
_HAS_TL = "(has(self.template.metadata) && has(self.template.metadata.labels))"
CEL_SELECTOR_MATCHES_TEMPLATE: Final = CelRule(
    "(!has(self.selector.matchLabels) || self.selector.matchLabels.all(k, "
    f"{_HAS_TL} && k in {_TL} && {_TL}[k] == self.selector.matchLabels[k]))"
    " && (!has(self.selector.matchExpressions) || self.selector.matchExpressions.all(e, "
    f"e.operator == 'In' ? ({_HAS_TL} && e.key in {_TL} && has(e.values) && {_TL}[e.key] in e.values)"
    f" : e.operator == 'NotIn' ? (!{_HAS_TL} || !(e.key in {_TL}) || !has(e.values)"
    f" || !({_TL}[e.key] in e.values))"
    f" : e.operator == 'Exists' ? ({_HAS_TL} && e.key in {_TL})"
    f" : e.operator == 'DoesNotExist' ? (!{_HAS_TL} || !(e.key in {_TL}))"
    " : false))",
    MSG_SELECTOR_MISMATCH,
    ".template.metadata.labels",  # where apps/v1 reports it for Deployments
)

# On StormService.spec: a RoleScaler scales a role of the one RoleSet of pooled mode.
CEL_EXTERNAL_SCALING_POOLED: Final = CelRule(
    "(has(self.replicas) ? self.replicas : 1) == 1"
    " || !has(self.template.spec) || !has(self.template.spec.roles)"
    " || self.template.spec.roles.all(r, !has(r.scaling) || r.scaling != 'External')",
    MSG_EXTERNAL_SCALING_POOLED,
    ".replicas",
)
# On StormService.spec: a role partition holds instances inside a RoleSet rewritten in place.
CEL_PARTITION_NEEDS_IN_PLACE_UPDATE: Final = CelRule(
    "(has(self.updateStrategy) && has(self.updateStrategy.type)"
    " && self.updateStrategy.type == 'InPlaceUpdate')"
    " || !has(self.template.spec) || !has(self.template.spec.roles)"
    " || self.template.spec.roles.all(r, !has(r.updateStrategy)"
    " || !has(r.updateStrategy.partition) || r.updateStrategy.partition == 0)",
    MSG_PARTITION_NEEDS_IN_PLACE_UPDATE,
    ".updateStrategy.type",
)
# On StormService.spec.
CEL_ROLLBACK_NEEDS_DEADLINE: Final = CelRule(
    "!has(self.rollbackOnFailure) || !self.rollbackOnFailure"
    " || (has(self.progressDeadlineSeconds) && self.progressDeadlineSeconds > 0)",
    MSG_ROLLBACK_NEEDS_DEADLINE,
    ".rollbackOnFailure",
)
# On a role object.
CEL_SCALING_BAND_NEEDS_EXTERNAL: Final = CelRule(
    "!has(self.scalingBand) || (has(self.scaling) && self.scaling == 'External')",
    MSG_SCALING_BAND_NEEDS_EXTERNAL,
    ".scalingBand",
)
# On the roles array: no chains, so a band is always applied to a role that no band moves.
CEL_SCALING_BAND_FOLLOWS: Final = CelRule(
    "self.all(r, !has(r.scalingBand) || (r.scalingBand.follows != r.name"
    " && self.exists(l, l.name == r.scalingBand.follows && !has(l.scalingBand))))",
    MSG_SCALING_BAND_FOLLOWS,
)
# On a scalingBand object.
CEL_SCALING_BAND_BOUNDS: Final = CelRule(
    "(has(self.minRatio) || has(self.maxRatio)) && (!has(self.minRatio) || !has(self.maxRatio)"
    " || double(self.minRatio) <= double(self.maxRatio))",
    MSG_SCALING_BAND_BOUNDS,
)
# On a role's service object (the protocol has a published default, so it is always set).
CEL_SERVICE_PORT_NAMES: Final = CelRule(
    "!has(self.ports) || size(self.ports) <= 1"
    " || self.ports.all(p, has(p.name) && self.ports.exists_one(o, has(o.name) && o.name == p.name))",
    MSG_SERVICE_PORT_NAMES,
    ".ports",
)
CEL_SERVICE_PORTS_UNIQUE: Final = CelRule(
    "!has(self.ports) || self.ports.all(p, self.ports.exists_one(o, o.port == p.port"
    " && (has(o.protocol) ? o.protocol : 'TCP') == (has(p.protocol) ? p.protocol : 'TCP')))",
    MSG_SERVICE_PORTS_UNIQUE,
    ".ports",
)
CEL_SERVICE_NODE_PORT_TYPE: Final = CelRule(
    "(has(self.type) && (self.type == 'NodePort' || self.type == 'LoadBalancer'))"
    " || !has(self.ports) || self.ports.all(p, !has(p.nodePort))",
    MSG_SERVICE_NODE_PORT_TYPE,
    ".ports",
)
# On a role object: the grace and the budget are about recovering a group's members.
CEL_GROUP_RECOVERY_NEEDS_GROUPS: Final = CelRule(
    "(!has(self.recoveryGracePeriodSeconds) && !has(self.restartBudget))"
    " || (has(self.podGroupSize) && self.podGroupSize > 1)",
    MSG_GROUP_RECOVERY_NEEDS_GROUPS,
    ".podGroupSize",
)
CEL_IMMUTABLE: Final = CelRule("self == oldSelf", MSG_IMMUTABLE)
# On a role object. podGroupSize is defaulted (1) before rules run; has() for objects stored
# before that default existed.
CEL_ENTRY_TEMPLATE_NEEDS_GROUP: Final = CelRule(
    "!has(self.entryTemplate) || (has(self.podGroupSize) && self.podGroupSize > 1)",
    MSG_ENTRY_TEMPLATE_NEEDS_GROUP,
    ".entryTemplate",
)

# On a role object.
CEL_DEPENDS_ON_SELF: Final = CelRule(
    "!has(self.dependsOn) || !(self.name in self.dependsOn)", MSG_DEPENDS_ON_SELF, ".dependsOn"
)
# On a dependsOn list (atomic, so that this message, not a generic "Duplicate value", is given).
CEL_DEPENDS_ON_UNIQUE: Final = CelRule("self.all(d, self.exists_one(e, e == d))", MSG_DEPENDS_ON_UNIQUE)
# On the roles array.
CEL_DEPENDS_ON_KNOWN: Final = CelRule(
    "self.all(r, !has(r.dependsOn) || r.dependsOn.all(d, self.exists(o, o.name == d)))",
    MSG_DEPENDS_ON_KNOWN,
)


def _depends_on_acyclic_rule(rounds: int) -> str:
    """Kahn's algorithm unrolled: each round keeps only the roles (name -> dependsOn) that still
    depend on a kept role. A role on a cycle, or waiting for one, is never dropped; every other
    role is dropped by round (length of its longest dependency chain + 1) <= number of roles.
    CEL has no loops, and CRDs have no cel.bind: `[x].all(m, ...)` binds m to x. Maps make each
    membership test O(1), which keeps the worst case (64 roles) within the CEL cost budget.
    Guarded by unique names (the map of a list with duplicated names cannot be built; another
    rule reports duplicates), and first by the presence of any dependsOn: the API server
    evaluates every rule on every write, status writes included, and the unrolled rounds cost
    ~6 ms of its CPU per write even when nothing depends on anything (CEL's || stops at the
    first true operand)."""
    body = f"m{rounds}.size() == 0"
    for k in range(rounds, 0, -1):
        body = (
            f"[m{k - 1}.transformMapEntry(n, ds, ds.exists(d, d in m{k - 1}), {{n: ds}})].all(m{k}, {body})"
        )
    start = "self.transformMapEntry(i, r, {r.name: (has(r.dependsOn) ? r.dependsOn : [])})"
    unique = "self.all(r, self.exists_one(o, o.name == r.name))"
    return f"!self.exists(r, has(r.dependsOn)) || !({unique}) || [{start}].all(m0, {body})"


# On the roles array.
CEL_DEPENDS_ON_ACYCLIC: Final = CelRule(_depends_on_acyclic_rule(MAX_ROLES), MSG_DEPENDS_ON_CYCLE)

ALL_CEL_RULES: Final = (
    CEL_DEPENDS_ON_SELF,
    CEL_DEPENDS_ON_UNIQUE,
    CEL_DEPENDS_ON_KNOWN,
    CEL_DEPENDS_ON_ACYCLIC,
    CEL_ENTRY_TEMPLATE_NEEDS_GROUP,
    CEL_EXTERNAL_SCALING_POOLED,
    CEL_PARTITION_NEEDS_IN_PLACE_UPDATE,
    CEL_ROLLBACK_NEEDS_DEADLINE,
    CEL_SCALING_BAND_NEEDS_EXTERNAL,
    CEL_SCALING_BAND_FOLLOWS,
    CEL_SCALING_BAND_BOUNDS,
    CEL_SERVICE_PORT_NAMES,
    CEL_SERVICE_PORTS_UNIQUE,
    CEL_SERVICE_NODE_PORT_TYPE,
    CEL_GROUP_RECOVERY_NEEDS_GROUPS,
    CEL_IMMUTABLE,
    CEL_INT_OR_PERCENT,
    CEL_STORM_SERVICE_NAME_LENGTH,
    CEL_STORM_SERVICE_NAME_DNS,
    CEL_ROLE_SET_NAME_LENGTH,
    CEL_ROLE_SET_NAME_DNS,
    CEL_ROLE_NAME_DNS,
    CEL_ROLE_NAME_LENGTH,
    CEL_ROLE_NAMES_UNIQUE,
    CEL_ONE_SCHEDULING_STRATEGY,
    CEL_SELECTOR_NOT_EMPTY,
    CEL_SELECTOR_REQUIREMENT_VALUES,
    CEL_SELECTOR_MATCHES_TEMPLATE,
    CEL_NO_EPHEMERAL_CONTAINERS,
)
