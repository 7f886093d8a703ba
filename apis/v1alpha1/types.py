"""StormService and RoleSet as pydantic v2 models, wire-compatible with AIBrix.

Conventions:

* Python attributes are snake_case; the wire (JSON/YAML) is camelCase through
  ``alias_generator=to_camel``. Either name is accepted on input.
  ``to_wire(obj)`` (= ``model_dump(mode="json", by_alias=True, exclude_none=True)``) and
  ``from_wire(Cls, data)`` (= ``model_validate``) round-trip.
* Types are strict, like the API server: an int field does not take "3" or true.
* A JSON ``null`` means "unset" (as Go's decoder treats it), so it takes the default.
* Unknown fields: ``ObjectMeta`` and template metadata keep them (managedFields, selfLink, …)
  and write them back; elsewhere they are ignored, as Go clients do (the CRD schema prunes them
  on the server anyway).
* Timestamps stay RFC 3339 strings, exactly as the server sent them.
* ``RoleSpec.template`` is the raw PodTemplateSpec dict, kept verbatim: the controllers patch
  and hash dicts, and the CRD schema (the real PodTemplateSpec schema) validates it.
* The CRD schema is generated from these models (``apis/crdgen/schema.py``): field docstrings
  are the descriptions, defaults other than Go's zero values are published, and the markers of
  ``markers.py`` (bounds, CEL rules, x-kubernetes-* keywords) sit on the fields they concern.
* The admission rules of the CRD (see ``rules.py``) are checked here too, with the same
  messages. Objects read from a server that predate a rule (for example created under AIBrix's
  CRD) can be parsed with ``from_wire(..., lenient=True)``, which checks structure and types only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Annotated, Any, ClassVar, Final, Literal, TypeGuard, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel

from apis.v1alpha1 import defaults as d
from apis.v1alpha1 import rules as r
from apis.v1alpha1.constants import (
    API_VERSION,
    KIND_ROLE_SCALER,
    KIND_ROLE_SET,
    KIND_STORM_SERVICE,
    MAX_ROLE_NAME_LENGTH,
    MAX_ROLE_SET_NAME_LENGTH,
    MAX_ROLES,
    MAX_STORM_SERVICE_NAME_LENGTH,
)
from apis.v1alpha1.intstr import is_valid_int_or_percent
from apis.v1alpha1.markers import (
    DATE_TIME,
    INT64,
    Bounds,
    CoreSchema,
    DefaultEmpty,
    ListType,
    MapType,
    Marker,
    Nullable,
    Required,
)
from apis.v1alpha1.markers import LENIENT as LENIENT  # the controllers parse leniently with it
from apis.v1alpha1.markers import is_lenient as _lenient

#: Bounds (maxItems, maxLength, maxProperties) exist for the API server's CEL cost estimate: a
#: rule over a list is charged for the largest list the schema allows, and an unbounded one makes
#: the CRD unacceptable. Each bound is far above real use and within what Kubernetes itself
#: allows (label values <= 63, label keys <= 317).
MAX_SELECTOR_TERMS: Final = 64  # matchLabels entries, matchExpressions, values per expression
MAX_INT_OR_PERCENT_LENGTH: Final = 8  # "100000%": more than anyone writes


def _drop_nulls(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if v is not None}
    return data


class WireModel(BaseModel):
    """Base of every API model: camelCase on the wire, strict types, null = unset."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        strict=True,
        extra="ignore",
        use_attribute_docstrings=True,
        # A model's validator is built at its first validation, not at import: the controller
        # validates only a few top-level kinds, and every nested model's own validator (each a
        # copy of everything below it) would otherwise be built too: 2.2 MiB of the idle
        # controller's RSS (59.9 -> 57.7 MiB, measured).
        defer_build=True,
    )

    #: Markers of this model's own object node in the CRD schema (CEL rules over several fields).
    crd_markers: ClassVar[tuple[Marker, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _null_means_unset(cls, data: Any) -> Any:
        return _drop_nulls(data)

    @model_serializer(mode="wrap")
    def _omit_empty(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        # Wire form (exclude_none) follows Go's omitempty for our own list/map fields, so that
        # e.g. a merge patch built from metadata never sends "finalizers": [] and wipes them.
        # Raw dicts (pod templates) are left exactly as they are.
        data = handler(self)
        if info.exclude_none and isinstance(data, dict):
            for name, field in type(self).model_fields.items():
                if field.default_factory in (list, dict):
                    key = (field.alias or name) if info.by_alias else name
                    if key in data and data[key] in ({}, []):
                        del data[key]
        return data


class ExtensibleWireModel(WireModel):
    """A model that keeps fields it does not know and writes them back (Kubernetes metadata)."""

    model_config = ConfigDict(extra="allow")


# --- int-or-string -------------------------------------------------------------------------------


def _check_int_or_percent(value: int | str, info: ValidationInfo) -> int | str:
    if not _lenient(info) and not is_valid_int_or_percent(value):
        raise ValueError(r.MSG_INT_OR_PERCENT)
    return value


#: An int >= 0 or a percent string "N%" (maxSurge, maxUnavailable).
IntOrString = Annotated[
    int | str,
    Bounds(max_length=MAX_INT_OR_PERCENT_LENGTH),
    r.CEL_INT_OR_PERCENT,
    AfterValidator(_check_int_or_percent),
]
#: A resource quantity as written in YAML: 4, "500m", "16Gi".
Quantity = Annotated[int | str, CoreSchema("io.k8s.apimachinery.pkg.api.resource.Quantity")]
#: An RFC 3339 timestamp, kept as the string the server sent.
Time = Annotated[str, DATE_TIME]
LabelValue = Annotated[str, Bounds(max_length=r.MAX_LABEL_VALUE_LENGTH)]
LabelKey = Annotated[str, Bounds(max_length=r.MAX_LABEL_KEY_LENGTH)]


# --- metadata --------------------------------------------------------------------------------------


class OwnerReference(WireModel):
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(ExtensibleWireModel):
    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    owner_references: list[OwnerReference] = Field(default_factory=list)
    finalizers: list[str] = Field(default_factory=list)

    def controller_owner(self) -> OwnerReference | None:
        """The owner reference with controller=true, if any."""
        for ref in self.owner_references:
            if ref.controller:
                return ref
        return None


class TemplateMeta(ExtensibleWireModel):
    """Metadata of an embedded template. Only labels and annotations are used; name, namespace
    and finalizers are admitted as AIBrix's schema admits them, kept but ignored."""

    # Go clients send null in every embedded template (see apis/crdgen/openapi.py).
    creation_timestamp: Annotated[Time, Nullable()] | None = None
    name: str | None = None
    namespace: str | None = None
    labels: dict[str, LabelValue] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: Annotated[list[str], ListType("set")] = Field(default_factory=list)


# --- label selector --------------------------------------------------------------------------------


class LabelSelectorRequirement(WireModel):
    crd_markers: ClassVar[tuple[Marker, ...]] = (r.CEL_SELECTOR_REQUIREMENT_VALUES,)

    key: LabelKey
    """The label key that the selector applies to."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """In, NotIn, Exists or DoesNotExist."""
    values: Annotated[list[LabelValue], Bounds(max_items=MAX_SELECTOR_TERMS), ListType("atomic")] = Field(
        default_factory=list
    )
    """Values for In and NotIn; empty for Exists and DoesNotExist."""

    @model_validator(mode="after")
    def _values_fit_operator(self, info: ValidationInfo) -> LabelSelectorRequirement:
        if _lenient(info):
            return self
        needs_values = self.operator in ("In", "NotIn")
        if needs_values != bool(self.values):
            raise ValueError(r.MSG_SELECTOR_REQUIREMENT_VALUES)
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        return not present  # DoesNotExist


class LabelSelector(WireModel):
    crd_markers: ClassVar[tuple[Marker, ...]] = (MapType("atomic"), r.CEL_SELECTOR_NOT_EMPTY)

    match_labels: Annotated[dict[str, LabelValue], Bounds(max_properties=MAX_SELECTOR_TERMS)] = Field(
        default_factory=dict
    )
    """Labels a RoleSet must have (all of them)."""
    match_expressions: Annotated[
        list[LabelSelectorRequirement], Bounds(max_items=MAX_SELECTOR_TERMS), ListType("atomic")
    ] = Field(default_factory=list)
    """Label requirements a RoleSet must satisfy (all of them)."""

    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: dict[str, str]) -> bool:
        """Kubernetes semantics: every requirement holds; an empty selector matches everything."""
        for key, value in self.match_labels.items():
            if labels.get(key) != value:
                return False
        return all(req.matches(labels) for req in self.match_expressions)

    def to_selector_string(self) -> str:
        """The string form of ``metav1.LabelSelectorAsSelector(sel).String()``.

        Requirements sorted by key (stable: matchLabels first), values sorted, e.g.
        ``app=x,tier in (a,b),!legacy``. An empty selector gives "".
        """
        parts: list[tuple[str, str]] = []
        for key, value in self.match_labels.items():
            parts.append((key, f"{key}={value}"))
        for req in self.match_expressions:
            vals = ",".join(sorted(set(req.values)))
            if req.operator == "In":
                text = f"{req.key} in ({vals})"
            elif req.operator == "NotIn":
                text = f"{req.key} notin ({vals})"
            elif req.operator == "Exists":
                text = req.key
            else:
                text = f"!{req.key}"
            parts.append((req.key, text))
        parts.sort(key=lambda p: p[0])
        return ",".join(text for _, text in parts)


# --- shared pieces ---------------------------------------------------------------------------------


class DisruptionTolerance(WireModel):
    max_unavailable: IntOrString | None = None


class RoleDisruptionTolerance(DisruptionTolerance):
    max_unavailable: IntOrString | None = None
    """How many instances of this role may be unavailable through voluntary disruptions
    (evictions): an integer counts role instances (a pod group counts once), a percent counts
    pods. Becomes a PodDisruptionBudget per role."""


class StormServiceDisruptionTolerance(DisruptionTolerance):
    max_unavailable: IntOrString | None = None
    """How many instances of each role, across all RoleSets, may be unavailable through
    voluntary disruptions (evictions): an integer counts role instances (a pod group counts
    once), a percent counts pods. Becomes a PodDisruptionBudget per role."""


class GodelAffinityTerm(WireModel):
    topology_key: str | None = None


class GodelSortRule(WireModel):
    dimension: str | None = None
    order: str
    resource: str


class GodelPodGroupAffinity(WireModel):
    node_selector: Annotated[dict[str, Any], CoreSchema("io.k8s.api.core.v1.NodeSelector")] | None = None
    preferred: list[GodelAffinityTerm] | None = None
    required: list[GodelAffinityTerm] | None = None
    sort_rules: list[GodelSortRule] | None = None


class GodelPodGroupAntiAffinity(WireModel):
    preferred: list[GodelAffinityTerm] | None = None
    required: list[GodelAffinityTerm] | None = None


class GodelAffinity(WireModel):
    pod_group_affinity: GodelPodGroupAffinity | None = None
    pod_group_anti_affinity: GodelPodGroupAntiAffinity | None = None


class GodelSchedulingStrategySpec(WireModel):
    """godel-scheduler PodGroup settings."""

    min_member: int | None = None
    """Pods that must be schedulable together."""
    priority_class_name: str | None = None
    schedule_timeout_seconds: int | None = None
    application: str | None = None
    affinity: GodelAffinity | None = None
    """godel PodGroup affinity rules."""


class CoschedulingSchedulingStrategySpec(WireModel):
    """scheduler-plugins (coscheduling) PodGroup settings."""

    min_member: Annotated[int, Bounds(minimum=1)] | None = None
    """Pods that must be schedulable together."""
    min_resources: dict[str, Quantity] | None = None
    """Resources the group needs to start."""
    schedule_timeout_seconds: int | None = None


class VolcanoSchedulingStrategySpec(WireModel):
    """Volcano PodGroup settings."""

    min_member: int | None = None
    """Pods that must be schedulable together."""
    min_task_member: dict[str, int] | None = None
    """Minimum pods per task."""
    queue: str | None = None
    priority_class_name: str | None = None
    min_resources: dict[str, Quantity] | None = None
    """Resources the group needs to start."""


class SchedulingStrategy(WireModel):
    """Gang scheduling through a PodGroup; at most one scheduler may be chosen."""

    crd_markers: ClassVar[tuple[Marker, ...]] = (r.CEL_ONE_SCHEDULING_STRATEGY,)

    godel_scheduling_strategy: GodelSchedulingStrategySpec | None = None
    """Gang scheduling with godel-scheduler's PodGroup."""
    coscheduling_scheduling_strategy: CoschedulingSchedulingStrategySpec | None = None
    """Gang scheduling with the scheduler-plugins coscheduling PodGroup."""
    volcano_scheduling_strategy: VolcanoSchedulingStrategySpec | None = None
    """Gang scheduling with Volcano's PodGroup."""

    @model_validator(mode="after")
    def _at_most_one(self, info: ValidationInfo) -> SchedulingStrategy:
        if _lenient(info):
            return self
        chosen = [
            s
            for s in (
                self.godel_scheduling_strategy,
                self.coscheduling_scheduling_strategy,
                self.volcano_scheduling_strategy,
            )
            if s is not None
        ]
        if len(chosen) > 1:
            raise ValueError(r.MSG_ONE_SCHEDULING_STRATEGY)
        return self

    def scheduler(self) -> Literal["godel", "coscheduling", "volcano"] | None:
        if self.godel_scheduling_strategy is not None:
            return "godel"
        if self.coscheduling_scheduling_strategy is not None:
            return "coscheduling"
        if self.volcano_scheduling_strategy is not None:
            return "volcano"
        return None


class TopologyPolicy(WireModel):
    """Co-locates pods on one topology domain (rendered as pod affinity on new pods)."""

    scope: Literal["StormService", "RoleSet", "Role"]
    """Which pods share one topology domain: all of the StormService, each RoleSet, or each role."""
    mode: Literal["Preferred", "Required"] = d.DEFAULT_TOPOLOGY_MODE
    """Preferred (weight-100 pod affinity) or Required."""
    key: Annotated[
        str,
        Bounds(
            min_length=1,
            max_length=r.MAX_LABEL_KEY_LENGTH,
            pattern=r.LABEL_KEY_PATTERN,
            message=r.MSG_TOPOLOGY_KEY,
        ),
    ]
    """Node label key of the topology domain, e.g. kubernetes.io/hostname."""


class Condition(WireModel):
    type: str
    """Ready, Progressing or ReplicaFailure."""
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: Time | None = None
    last_update_time: Time | None = None
    # AIBrix writes this too; kept so its objects round-trip.
    last_update_micro_time: Time | None = None


class RoleStatus(WireModel):
    name: str = ""
    replicas: Annotated[int, Required()] = 0
    ready_replicas: int = 0
    not_ready_replicas: int = 0
    updated_replicas: int = 0
    updated_ready_replicas: int = 0


# --- RoleSet ---------------------------------------------------------------------------------------


class RoleUpdateStrategy(WireModel):
    type: Literal["Recreate", "InPlaceIfPossible"] = d.DEFAULT_ROLE_UPDATE_STRATEGY
    """Recreate, or InPlaceIfPossible (patch container images in place when only images changed)."""
    max_surge: IntOrString | None = None
    """Instances above replicas during a rollout."""
    max_unavailable: IntOrString | None = None
    """Instances that may be unavailable during a rollout."""
    partition: Annotated[int, Bounds(minimum=0, message=r.MSG_PARTITION_MIN)] | None = None
    """Canary: instances kept on the old template during a rollout (StatefulSet's partition).
    Stateful or grouped roles update ordinals >= partition and keep those below; other roles
    keep their `partition` oldest outdated instances. Lower it to go on; 0 or unset: roll all.
    Not part of a revision. In a StormService, only with updateStrategy.type InPlaceUpdate."""


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_pod_template(template: Mapping[str, Any], no_containers: str) -> None:
    """A pod template needs spec.containers with one container at least (`no_containers` says
    which template lacks them), then passes `_check_pod_spec`."""
    spec = template.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list) or not spec["containers"]:
        raise ValueError(no_containers)
    _check_pod_spec(spec)


def _check_pod_spec(spec: dict[str, Any]) -> None:
    """What the CRD checks in a role's pod spec (rules.POD_TEMPLATE_KEYWORDS,
    the list-map keys of containers, CEL_NO_EPHEMERAL_CONTAINERS), in the models' words. The
    shape of the rest is the CRD schema's business."""
    for field in ("containers", "initContainers"):
        containers = spec.get(field)
        if not isinstance(containers, list):
            continue
        names: set[str] = set()
        for i, ctr in enumerate(containers):
            if not isinstance(ctr, dict):
                continue
            at = f"spec.{field}[{i}]"
            name = ctr.get("name")
            if isinstance(name, str):
                if len(name) > r.MAX_CONTAINER_NAME_LENGTH or not r.DNS1123_LABEL_RE.fullmatch(name):
                    raise ValueError(f"{r.MSG_CONTAINER_NAME_DNS} ({at}.name: {name!r})")
                if name in names:
                    raise ValueError(f"{r.MSG_CONTAINER_NAMES_UNIQUE} ({at}.name: {name!r})")
                names.add(name)
            ports = ctr.get("ports")
            for j, port in enumerate(ports if isinstance(ports, list) else []):
                if not isinstance(port, dict):
                    continue
                number, host = port.get("containerPort"), port.get("hostPort")
                if _is_int(number) and not r.MIN_PORT <= number <= r.MAX_PORT:
                    raise ValueError(
                        f"{r.MSG_CONTAINER_PORT_RANGE} ({at}.ports[{j}].containerPort: {number})"
                    )
                if _is_int(host) and not 0 <= host <= r.MAX_PORT:
                    raise ValueError(f"{r.MSG_HOST_PORT_RANGE} ({at}.ports[{j}].hostPort: {host})")
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                handler = ctr.get(probe)
                grpc = handler.get("grpc") if isinstance(handler, dict) else None
                number = grpc.get("port") if isinstance(grpc, dict) else None
                if _is_int(number) and not r.MIN_PORT <= number <= r.MAX_PORT:
                    raise ValueError(f"{r.MSG_GRPC_PORT_RANGE} ({at}.{probe}.grpc.port: {number})")
    policy = spec.get("restartPolicy")
    if policy is not None and policy not in r.POD_RESTART_POLICIES:
        raise ValueError(f"{r.MSG_RESTART_POLICY} (spec.restartPolicy: {policy!r})")
    if spec.get("ephemeralContainers"):
        raise ValueError(r.MSG_NO_EPHEMERAL_CONTAINERS)


#: A role's pod template: core/v1 PodTemplateSpec, with what pod validation refuses as keywords.
RoleTemplate = Annotated[
    dict[str, Any],
    CoreSchema(
        "io.k8s.api.core.v1.PodTemplateSpec",
        keywords=r.POD_TEMPLATE_KEYWORDS,
        required=("spec",),
        property_rules={"spec": (r.CEL_NO_EPHEMERAL_CONTAINERS,)},
    ),
]


#: A ratio of instance counts as a decimal string ("1.5"): exact, where a float would not be, and
#: read as users say it ("decode at 1.5x prefill"), where a percentage (150) reads as a count.
Ratio = Annotated[str, Bounds(max_length=8, pattern=r.RATIO_PATTERN, message=r.MSG_RATIO)]


def parse_ratio(value: str) -> Fraction:
    """The exact value of a Ratio string."""
    return Fraction(value)


class RoleScalingBand(WireModel):
    """Keeps this role's instances between minRatio and maxRatio times those of another role."""

    crd_markers: ClassVar[tuple[Marker, ...]] = (r.CEL_SCALING_BAND_BOUNDS,)

    follows: LabelValue
    """The role this one follows (e.g. decode follows prefill); it must have no band itself."""
    min_ratio: Ratio | None = None
    """At least this many instances per instance of the followed role, rounded up, e.g. "1.5"."""
    max_ratio: Ratio | None = None
    """At most this many instances per instance of the followed role, rounded down, e.g. "3"."""

    @model_validator(mode="after")
    def _bounds(self, info: ValidationInfo) -> RoleScalingBand:
        if _lenient(info):
            return self
        if self.min_ratio is None and self.max_ratio is None:
            raise ValueError(r.MSG_SCALING_BAND_BOUNDS)
        if (
            self.min_ratio is not None
            and self.max_ratio is not None
            and parse_ratio(self.min_ratio) > parse_ratio(self.max_ratio)
        ):
            raise ValueError(r.MSG_SCALING_BAND_BOUNDS)
        return self


#: A Service's targetPort: a container port number, or a container port name (IANA_SVC_NAME).
TargetPort = Annotated[
    int | str,
    Bounds(minimum=r.MIN_PORT, maximum=r.MAX_PORT, max_length=15, message=r.MSG_SERVICE_TARGET_PORT),
]


class RoleServicePort(WireModel):
    """A port of a role's Service (the core/v1 ServicePort fields a role's Service takes)."""

    name: (
        Annotated[
            str,
            Bounds(max_length=63, pattern=r.DNS1123_LABEL_PATTERN, message=r.MSG_SERVICE_PORT_NAME),
        ]
        | None
    ) = None
    """Port name; required, and unique, when the Service has more than one port."""
    port: Annotated[int, Bounds(minimum=r.MIN_PORT, maximum=r.MAX_PORT, message=r.MSG_SERVICE_PORT_RANGE)]
    """The port the Service serves."""
    target_port: TargetPort | None = None
    """The pods' port, by number or by container port name (a name follows the port through a
    rollout that renumbers it); defaults to port."""
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    """TCP, UDP or SCTP."""
    app_protocol: Annotated[str, Bounds(max_length=253)] | None = None
    """The application protocol (e.g. http, kubernetes.io/h2c), as on a ServicePort."""
    node_port: (
        Annotated[int, Bounds(minimum=r.MIN_PORT, maximum=r.MAX_PORT, message=r.MSG_SERVICE_NODE_PORT_RANGE)]
        | None
    ) = None
    """The port on every node (type NodePort or LoadBalancer); the API server picks one when unset."""


class RoleService(WireModel):
    """The Service of one role (RoleSpec.service)."""

    crd_markers: ClassVar[tuple[Marker, ...]] = (
        r.CEL_SERVICE_PORT_NAMES,
        r.CEL_SERVICE_PORTS_UNIQUE,
        r.CEL_SERVICE_NODE_PORT_TYPE,
    )

    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "Headless"] = "ClusterIP"
    """ClusterIP, NodePort or LoadBalancer as core/v1 Service types; Headless is a ClusterIP
    Service with clusterIP None (DNS names every pod, no virtual IP). A change between Headless
    and another type deletes and recreates the Service (clusterIP is immutable)."""
    ports: Annotated[list[RoleServicePort], Bounds(max_items=r.MAX_SERVICE_PORTS), ListType("atomic")] = (
        Field(default_factory=list)
    )
    """The Service's ports. When empty: every containerPort of the role template's containers,
    with its name (else <protocol>-<port>) and protocol, targeting the port by name if it has one."""
    labels: dict[str, LabelValue] = Field(default_factory=dict)
    """Extra labels of the Service."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations of the Service (e.g. for a cloud load balancer)."""
    publish_not_ready_addresses: bool = False
    """Publish the addresses of pods that are not ready yet (e.g. for peer discovery)."""

    @model_validator(mode="after")
    def _ports(self, info: ValidationInfo) -> RoleService:
        if _lenient(info):
            return self
        if len(self.ports) > 1:
            names = [p.name for p in self.ports]
            if None in names or len(set(names)) != len(names):
                raise ValueError(r.MSG_SERVICE_PORT_NAMES)
        if len({(p.port, p.protocol) for p in self.ports}) != len(self.ports):
            raise ValueError(r.MSG_SERVICE_PORTS_UNIQUE)
        if self.type not in ("NodePort", "LoadBalancer") and any(p.node_port is not None for p in self.ports):
            raise ValueError(r.MSG_SERVICE_NODE_PORT_TYPE)
        return self


def dependency_cycle(depends_on: Mapping[str, Sequence[str]]) -> list[str]:
    """The roles on a dependency cycle or waiting for one, sorted; [] when there is none.
    Kahn's algorithm, as CEL_DEPENDS_ON_ACYCLIC; names that are no key are no dependency."""
    left = {name: [d for d in deps if d in depends_on] for name, deps in depends_on.items()}
    while True:
        free = [name for name, deps in left.items() if not any(d in left for d in deps)]
        if not free:
            return sorted(left)
        for name in free:
            del left[name]


class RestartBudget(WireModel):
    """How often one pod group may be recovered (recreated, or a member replaced) within a
    sliding window; beyond that the group is reported and left as it is."""

    max_restarts: Annotated[int, Bounds(minimum=1, message=r.MSG_RESTART_BUDGET_MAX_RESTARTS_MIN)]
    """Recoveries of one group allowed within windowSeconds."""
    window_seconds: Annotated[int, Bounds(minimum=1, message=r.MSG_RESTART_BUDGET_WINDOW_MIN)]
    """The sliding window, in seconds, over which recoveries are counted."""


class RoleSpec(WireModel):
    crd_markers: ClassVar[tuple[Marker, ...]] = (
        r.CEL_ROLE_NAME_DNS,
        r.CEL_ROLE_NAME_LENGTH,
        r.CEL_SCALING_BAND_NEEDS_EXTERNAL,
        r.CEL_DEPENDS_ON_SELF,
        r.CEL_ENTRY_TEMPLATE_NEEDS_GROUP,
        r.CEL_GROUP_RECOVERY_NEEDS_GROUPS,
    )

    name: LabelValue
    """Role name, e.g. prefill, decode, router."""
    replicas: Annotated[int, Bounds(minimum=0, message=r.MSG_REPLICAS_MIN)] = d.DEFAULT_ROLE_REPLICAS
    """Instances of this role."""
    upgrade_order: (
        Annotated[int, Bounds(minimum=r.MIN_UPGRADE_ORDER, message=r.MSG_UPGRADE_ORDER_MIN)] | None
    ) = None
    """Lower rolls first under the Sequential strategy; unset rolls after all set ones."""
    pod_group_size: Annotated[
        int,
        Bounds(
            minimum=r.MIN_POD_GROUP_SIZE, maximum=r.MAX_POD_GROUP_SIZE, message=r.MSG_POD_GROUP_SIZE_RANGE
        ),
    ] = d.DEFAULT_POD_GROUP_SIZE
    """Pods per instance; more than 1 makes each instance a group (one leader, the rest workers)."""
    update_strategy: Annotated[RoleUpdateStrategy, DefaultEmpty()] = Field(default_factory=RoleUpdateStrategy)
    """How this role's instances are replaced when its template changes."""
    stateful: bool = False
    """Instance i is a fixed slot with a stable name and index."""
    # The raw PodTemplateSpec ({"metadata": {...}, "spec": {...}}), verbatim.
    template: RoleTemplate
    """The pod template of this role (core/v1 PodTemplateSpec)."""
    disruption_tolerance: RoleDisruptionTolerance | None = None
    """Disruption budget."""
    scheduling_strategy: SchedulingStrategy | None = None
    # `recoveryPolicy` on the wire, as the spec and AIBrix's PodSet name it (AIBrix's RoleSpec
    # has no such field).
    recovery_policy: Literal["ReplaceUnhealthy", "Recreate"] = d.DEFAULT_RECOVERY_POLICY
    """ReplaceUnhealthy replaces a failed pod of a group; Recreate recreates the whole group."""
    recovery_grace_period_seconds: (
        Annotated[int, Bounds(minimum=0, message=r.MSG_RECOVERY_GRACE_MIN)] | None
    ) = None
    """Pod groups only: how long a member whose container restarted may stay not Ready before
    the group is recovered by recoveryPolicy (Kthena's restartGracePeriodSeconds). A deleted or
    Failed member cannot come back and is recovered at once. Unset: not-Ready members are left
    to the kubelet, as without this field."""
    restart_budget: RestartBudget | None = None
    """Pod groups only: at most maxRestarts recoveries of one group within windowSeconds; then
    the group is left as it is and reported (ReplicaFailure GroupRestartBudgetExhausted) until
    the window frees a recovery or the spec changes."""
    scaling: Literal["External"] | None = None
    """External: replicas are set through the role's RoleScaler (<stormservice>-<role>, with a
    scale subresource for kubectl scale, HPA or KEDA). Pooled mode (spec.replicas: 1) only."""
    scaling_band: RoleScalingBand | None = None
    """Keeps the role within a ratio of another role's instances; needs scaling: External."""
    service: RoleService | None = None
    """A Service selecting exactly this role's pods in every RoleSet of the StormService (labels
    storm-service-name and role-name), named <stormservice>-<role> (shortened to fit 63
    characters) through every rollout, owned by the StormService. Changing it restarts no pod.
    Ignored on a RoleSet that no StormService controls."""
    depends_on: Annotated[
        list[LabelValue],
        Bounds(max_items=MAX_ROLES - 1),
        ListType("atomic"),
        r.CEL_DEPENDS_ON_UNIQUE,
    ] = Field(default_factory=list)
    """Roles of the same RoleSet whose instances must all be ready before this role's pods are
    first created (e.g. a router after prefill and decode). Only the start waits: a role that
    has pods is never stopped, held or deleted for a dependency. Changing it restarts nothing."""
    entry_template: RoleTemplate | None = None
    """The pod template of member 0 of each pod group (the entry, or leader), when it differs
    from the workers' (core/v1 PodTemplateSpec); needs podGroupSize > 1. Its pods get the label
    stormservice.orchestration.aibrix.ai/entry: "true", and every pod of the role the env vars
    GROUP_SIZE, ENTRY_ADDRESS and WORKER_INDEX."""

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> RoleSpec:
        if _lenient(info):
            return self
        if self.name in self.depends_on:
            raise ValueError(f"{r.MSG_DEPENDS_ON_SELF} (role {self.name})")
        if len(set(self.depends_on)) != len(self.depends_on):
            raise ValueError(f"{r.MSG_DEPENDS_ON_UNIQUE} (role {self.name})")
        if self.entry_template is not None:
            if self.pod_group_size <= 1:
                raise ValueError(r.MSG_ENTRY_TEMPLATE_NEEDS_GROUP)
            _check_pod_template(self.entry_template, r.MSG_ENTRY_TEMPLATE_CONTAINERS)
        if self.scaling_band is not None and self.scaling != "External":
            raise ValueError(r.MSG_SCALING_BAND_NEEDS_EXTERNAL)
        if self.pod_group_size <= 1 and (
            self.recovery_grace_period_seconds is not None or self.restart_budget is not None
        ):
            raise ValueError(r.MSG_GROUP_RECOVERY_NEEDS_GROUPS)
        if not r.DNS1123_LABEL_RE.fullmatch(self.name):
            raise ValueError(f"{r.MSG_ROLE_NAME_DNS} (got {self.name!r})")
        if len(self.name) > MAX_ROLE_NAME_LENGTH:
            raise ValueError(f"{r.MSG_ROLE_NAME_LENGTH} (got {len(self.name)})")
        _check_pod_template(self.template, r.MSG_ROLE_TEMPLATE_CONTAINERS)
        return self

    @property
    def template_metadata(self) -> dict[str, Any]:
        meta = self.template.get("metadata")
        return meta if isinstance(meta, dict) else {}

    @property
    def template_spec(self) -> dict[str, Any]:
        spec = self.template.get("spec")
        return spec if isinstance(spec, dict) else {}


class RoleSetSpec(WireModel):
    roles: Annotated[
        list[RoleSpec],
        Bounds(max_items=MAX_ROLES, message=f"at most {MAX_ROLES} roles are allowed"),
        r.CEL_ROLE_NAMES_UNIQUE,
        r.CEL_SCALING_BAND_FOLLOWS,
        r.CEL_DEPENDS_ON_KNOWN,
        r.CEL_DEPENDS_ON_ACYCLIC,
    ] = Field(default_factory=list)
    """The roles of the RoleSet; names are unique."""
    update_strategy: Literal["Sequential", "Parallel", "Interleave"] = d.DEFAULT_ROLE_SET_UPDATE_STRATEGY
    """How roles are rolled: Sequential (by upgradeOrder), Parallel, or Interleave."""
    scheduling_strategy: SchedulingStrategy | None = None
    topology_policy: TopologyPolicy | None = None

    @model_validator(mode="after")
    def _unique_role_names(self, info: ValidationInfo) -> RoleSetSpec:
        if _lenient(info):
            return self
        names = [role.name for role in self.roles]
        if len(set(names)) != len(names):
            dups = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"{r.MSG_ROLE_NAMES_UNIQUE} (duplicated: {', '.join(dups)})")
        for role in self.roles:
            if role.scaling_band is None:
                continue
            leader = self.role(role.scaling_band.follows)
            if leader is None or leader is role or leader.scaling_band is not None:
                raise ValueError(f"{r.MSG_SCALING_BAND_FOLLOWS} (role {role.name})")
        for role in self.roles:
            unknown = [d for d in role.depends_on if self.role(d) is None]
            if unknown:
                raise ValueError(f"{r.MSG_DEPENDS_ON_KNOWN} (role {role.name}: {', '.join(unknown)})")
        cyclic = dependency_cycle({role.name: role.depends_on for role in self.roles})
        if cyclic:
            raise ValueError(f"{r.MSG_DEPENDS_ON_CYCLE} (roles {', '.join(cyclic)})")
        return self

    def role(self, name: str) -> RoleSpec | None:
        for role in self.roles:
            if role.name == name:
                return role
        return None


class GroupRecoveries(WireModel):
    """When one pod group was recovered, for its role's restartBudget."""

    group: str
    """The group (its podset-name label value)."""
    role: str = ""
    """The role of the group."""
    times: Annotated[list[Time], ListType("atomic")] = Field(default_factory=list)
    """When each recovery within the budget's window started, oldest first."""


class RoleSetStatus(WireModel):
    # Beyond AIBrix: lets the StormService ignore a RoleSet status that is older than its spec.
    observed_generation: Annotated[int, INT64] = 0
    """The generation this status was computed for."""
    roles: list[RoleStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    # Beyond AIBrix: kept in the status so that a restarted controller still knows them.
    group_recoveries: Annotated[list[GroupRecoveries], ListType("map", ("group",))] | None = None
    """Recent recoveries of pod groups whose role has a restartBudget."""


class RoleSet(WireModel):
    """RoleSet is one instance of a StormService: a set of roles (prefill, decode, ...) and their pods."""

    crd_markers: ClassVar[tuple[Marker, ...]] = (r.CEL_ROLE_SET_NAME_LENGTH, r.CEL_ROLE_SET_NAME_DNS)

    api_version: Literal["orchestration.aibrix.ai/v1alpha1"] = API_VERSION
    kind: Literal["RoleSet"] = KIND_ROLE_SET
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: Annotated[RoleSetSpec, Required()] = Field(default_factory=RoleSetSpec)
    """Desired state of the RoleSet."""
    status: RoleSetStatus | None = None

    @model_validator(mode="after")
    def _name_rules(self, info: ValidationInfo) -> RoleSet:
        name = self.metadata.name
        if _lenient(info) or name is None:
            return self
        if len(name) > MAX_ROLE_SET_NAME_LENGTH:
            raise ValueError(r.MSG_ROLE_SET_NAME_LENGTH)
        if not r.DNS1123_LABEL_RE.fullmatch(name):
            raise ValueError(r.MSG_ROLE_SET_NAME_DNS)
        return self


# --- StormService ----------------------------------------------------------------------------------


class StormServiceUpdateStrategy(WireModel):
    type: Literal["RollingUpdate", "InPlaceUpdate"] = d.DEFAULT_STORM_SERVICE_UPDATE_STRATEGY
    """RollingUpdate replaces RoleSets; InPlaceUpdate rewrites them."""
    max_surge: IntOrString | None = None
    """RoleSets above replicas during a rollout."""
    max_unavailable: IntOrString | None = None
    """RoleSets that may be unavailable during a rollout."""


class RoleSetTemplateSpec(WireModel):
    metadata: TemplateMeta = Field(default_factory=TemplateMeta)
    """Labels and annotations copied onto each RoleSet."""
    spec: RoleSetSpec = Field(default_factory=RoleSetSpec)
    """The RoleSet spec."""


class StormServiceSpec(WireModel):
    crd_markers: ClassVar[tuple[Marker, ...]] = (
        r.CEL_SELECTOR_MATCHES_TEMPLATE,
        r.CEL_EXTERNAL_SCALING_POOLED,
        r.CEL_PARTITION_NEEDS_IN_PLACE_UPDATE,
        r.CEL_ROLLBACK_NEEDS_DEADLINE,
    )

    replicas: Annotated[int, Bounds(minimum=0, message=r.MSG_REPLICAS_MIN)] = d.DEFAULT_STORM_SERVICE_REPLICAS
    """Number of RoleSets."""
    selector: LabelSelector
    """Selects the RoleSets of this StormService; must match spec.template.metadata.labels."""
    stateful: bool = False
    """Accepted for compatibility; no effect."""
    template: RoleSetTemplateSpec
    """Template of the RoleSets."""
    update_strategy: Annotated[StormServiceUpdateStrategy, DefaultEmpty()] = Field(
        default_factory=StormServiceUpdateStrategy
    )
    """How RoleSets are replaced when the template changes."""
    revision_history_limit: Annotated[int, Bounds(minimum=0, message=r.MSG_REVISION_HISTORY_LIMIT_MIN)] = (
        d.DEFAULT_REVISION_HISTORY_LIMIT
    )
    """ControllerRevisions kept beyond the live ones."""
    paused: bool = False
    """Stops rollouts; scaling goes on."""
    disruption_tolerance: StormServiceDisruptionTolerance | None = None
    """Disruption budget."""
    # AIBrix's explicit deployment mode (when unset it is inferred from replicas); accepted, unused.
    mode: Literal["Replica", "Pooled"] | None = None
    """Replica or Pooled; inferred from replicas when unset (accepted for AIBrix manifests)."""
    progress_deadline_seconds: Annotated[int, Bounds(minimum=0)] | None = None
    """Seconds a rollout or scale may go without progress (no RoleSet or pod newly updated or
    ready) before Progressing becomes False with reason ProgressDeadlineExceeded. Absent or 0:
    no deadline. A paused StormService never times out."""
    rollback_on_failure: bool = False
    """When the progress deadline is exceeded, write the template of the last revision that was
    fully Ready back into spec.template (as kubectl rollout undo), once. Requires
    progressDeadlineSeconds."""

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> StormServiceSpec:
        if _lenient(info):
            return self
        if self.selector.is_empty():
            raise ValueError(r.MSG_SELECTOR_EMPTY)
        if not self.selector.matches(self.template.metadata.labels):
            raise ValueError(r.MSG_SELECTOR_MISMATCH)
        if self.replicas != 1 and any(role.scaling == "External" for role in self.template.spec.roles):
            raise ValueError(r.MSG_EXTERNAL_SCALING_POOLED)
        if self.update_strategy.type != "InPlaceUpdate" and any(
            role.update_strategy.partition for role in self.template.spec.roles
        ):
            raise ValueError(r.MSG_PARTITION_NEEDS_IN_PLACE_UPDATE)
        if self.rollback_on_failure and not self.progress_deadline_seconds:
            raise ValueError(r.MSG_ROLLBACK_NEEDS_DEADLINE)
        return self

    @property
    def resolved_mode(self) -> Literal["Replica", "Pooled"]:
        """AIBrix's rule: explicit mode wins, else Replica when replicas > 1, else Pooled."""
        if self.mode is not None:
            return self.mode
        return "Replica" if self.replicas > 1 else "Pooled"


class StormServiceStatus(WireModel):
    observed_generation: Annotated[int, INT64] = 0
    replicas: int = 0
    """RoleSets, including terminating ones."""
    ready_replicas: int = 0
    not_ready_replicas: int = 0
    current_replicas: int = 0
    """RoleSets at currentRevision."""
    updated_replicas: int = 0
    """RoleSets at updateRevision."""
    updated_ready_replicas: int = 0
    current_revision: str | None = None
    update_revision: str | None = None
    collision_count: int | None = None
    scaling_target_selector: str | None = None
    """Label selector of the RoleSets, for the scale subresource."""
    last_ready_revision: str | None = None
    """With progressDeadlineSeconds: the last revision that was fully Ready, the one
    rollbackOnFailure returns to."""
    conditions: list[Condition] = Field(default_factory=list)
    role_statuses: list[RoleStatus] = Field(default_factory=list)
    """Per role, pods summed over all RoleSets."""


class StormService(WireModel):
    """StormService runs a disaggregated inference service as replicas of a RoleSet."""

    crd_markers: ClassVar[tuple[Marker, ...]] = (
        r.CEL_STORM_SERVICE_NAME_LENGTH,
        r.CEL_STORM_SERVICE_NAME_DNS,
    )

    api_version: Literal["orchestration.aibrix.ai/v1alpha1"] = API_VERSION
    kind: Literal["StormService"] = KIND_STORM_SERVICE
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: StormServiceSpec
    """Desired state of the StormService."""
    status: StormServiceStatus | None = None

    @model_validator(mode="after")
    def _name_rules(self, info: ValidationInfo) -> StormService:
        name = self.metadata.name
        if _lenient(info) or name is None:
            return self
        if len(name) > MAX_STORM_SERVICE_NAME_LENGTH:
            raise ValueError(r.MSG_STORM_SERVICE_NAME_LENGTH)
        if not r.DNS1035_LABEL_RE.fullmatch(name):
            raise ValueError(r.MSG_STORM_SERVICE_NAME_DNS)
        return self


# --- RoleScaler ------------------------------------------------------------------------------------


class RoleScalerSpec(WireModel):
    replicas: Annotated[int, Bounds(minimum=0, message=r.MSG_REPLICAS_MIN)] = 0
    """Instances the role should have (the scale subresource's spec.replicas)."""
    storm_service_name: Annotated[LabelValue, r.CEL_IMMUTABLE]
    """The StormService whose role this scales."""
    role_name: Annotated[LabelValue, r.CEL_IMMUTABLE]
    """The role it scales (its scaling is External)."""


class RoleScalerStatus(WireModel):
    observed_generation: Annotated[int, INT64] = 0
    replicas: int = 0
    """Instances the role has now, in its RoleSet (the scale subresource's status.replicas)."""
    desired_replicas: int | None = None
    """Instances the controller applies: spec.replicas, moved into the role's scalingBand."""
    selector: str | None = None
    """Label selector of exactly this role's pods (the scale subresource's selector, for HPA)."""
    conditions: list[Condition] = Field(default_factory=list)
    """Clamped: True when spec.replicas lies outside the role's scalingBand."""


class RoleScaler(WireModel):
    """RoleScaler is the scale target of one role of a pooled StormService (scaling: External):
    kubectl scale, a HorizontalPodAutoscaler or KEDA set spec.replicas through its scale
    subresource. The controller creates and deletes it; its name is <stormservice>-<role>."""

    api_version: Literal["orchestration.aibrix.ai/v1alpha1"] = API_VERSION
    kind: Literal["RoleScaler"] = KIND_ROLE_SCALER
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: RoleScalerSpec
    """Desired instances of the role."""
    status: RoleScalerStatus | None = None


# --- wire helpers ----------------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


def to_wire(model: BaseModel, *, exclude_unset: bool = False) -> dict[str, Any]:
    """The JSON-ready camelCase dict for `model` (None fields left out)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=exclude_unset)


def from_wire(cls: type[M], data: dict[str, Any], *, lenient: bool = False) -> M:
    """Parse a camelCase dict (from the API server or a manifest).

    Raises pydantic.ValidationError. With `lenient=True` only structure and types are checked,
    not the admission rules, for objects that an older CRD let through.
    """
    return cls.model_validate(data, context={LENIENT: True} if lenient else None)
