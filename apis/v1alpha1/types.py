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
* The admission rules of the CRD (see ``rules.py``) are checked here too, with the same
  messages. Objects read from a server that predate a rule (for example created under AIBrix's
  CRD) can be parsed with ``from_wire(..., lenient=True)``, which checks structure and types only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeGuard, TypeVar

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
    KIND_ROLE_SET,
    KIND_STORM_SERVICE,
    MAX_ROLE_NAME_LENGTH,
    MAX_ROLE_SET_NAME_LENGTH,
    MAX_ROLES,
    MAX_STORM_SERVICE_NAME_LENGTH,
)
from apis.v1alpha1.intstr import is_valid_int_or_percent

#: Validation context key: when true, only structure and types are checked, not admission rules.
LENIENT: str = "stormservice.lenient"


def _lenient(info: ValidationInfo) -> bool:
    ctx = info.context
    return bool(ctx and isinstance(ctx, dict) and ctx.get(LENIENT))


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
    )

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
IntOrString = Annotated[int | str, AfterValidator(_check_int_or_percent)]
#: A resource quantity as written in YAML: 4, "500m", "16Gi".
Quantity = int | str


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
    """Metadata of an embedded template. Only labels and annotations are used; AIBrix's schema
    also admits name, namespace and finalizers, which are kept but ignored."""

    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


# --- label selector --------------------------------------------------------------------------------


class LabelSelectorRequirement(WireModel):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

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
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)

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


class GodelSchedulingStrategySpec(WireModel):
    """godel-scheduler PodGroup settings."""

    min_member: int | None = None
    priority_class_name: str | None = None
    schedule_timeout_seconds: int | None = None
    application: str | None = None
    #: godel's PodGroup affinity (podGroupAffinity / podGroupAntiAffinity), kept as a dict.
    affinity: dict[str, Any] | None = None


class CoschedulingSchedulingStrategySpec(WireModel):
    """scheduler-plugins (coscheduling) PodGroup settings."""

    min_member: Annotated[int, Field(ge=1)] | None = None
    min_resources: dict[str, Quantity] | None = None
    schedule_timeout_seconds: int | None = None


class VolcanoSchedulingStrategySpec(WireModel):
    """Volcano PodGroup settings."""

    min_member: int | None = None
    min_task_member: dict[str, int] | None = None
    queue: str | None = None
    priority_class_name: str | None = None
    min_resources: dict[str, Quantity] | None = None


class SchedulingStrategy(WireModel):
    """Gang scheduling through one scheduler's PodGroup; at most one may be set."""

    godel_scheduling_strategy: GodelSchedulingStrategySpec | None = None
    coscheduling_scheduling_strategy: CoschedulingSchedulingStrategySpec | None = None
    volcano_scheduling_strategy: VolcanoSchedulingStrategySpec | None = None

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
    """Co-locate pods on one topology domain (rendered as pod affinity)."""

    scope: Literal["StormService", "RoleSet", "Role"]
    mode: Literal["Preferred", "Required"] = d.DEFAULT_TOPOLOGY_MODE
    key: str

    @model_validator(mode="after")
    def _key_is_label_key(self, info: ValidationInfo) -> TopologyPolicy:
        if _lenient(info):
            return self
        if len(self.key) > r.MAX_LABEL_KEY_LENGTH or not r.LABEL_KEY_RE.fullmatch(self.key):
            raise ValueError(r.MSG_TOPOLOGY_KEY)
        return self


class Condition(WireModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    last_update_time: str | None = None
    #: AIBrix writes this too; kept so its objects round-trip.
    last_update_micro_time: str | None = None


class RoleStatus(WireModel):
    name: str = ""
    replicas: int = 0
    ready_replicas: int = 0
    not_ready_replicas: int = 0
    updated_replicas: int = 0
    updated_ready_replicas: int = 0


# --- RoleSet ---------------------------------------------------------------------------------------


class RoleUpdateStrategy(WireModel):
    type: Literal["Recreate", "InPlaceIfPossible"] = d.DEFAULT_ROLE_UPDATE_STRATEGY
    max_surge: IntOrString | None = None
    max_unavailable: IntOrString | None = None


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_pod_spec(spec: dict[str, Any]) -> None:
    """What the CRD checks in a role's pod spec (POD_TEMPLATE_KEYWORDS in apis/crdgen/schema.py,
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


class RoleSpec(WireModel):
    name: str
    replicas: int = d.DEFAULT_ROLE_REPLICAS
    upgrade_order: int | None = None
    pod_group_size: int = d.DEFAULT_POD_GROUP_SIZE
    update_strategy: RoleUpdateStrategy = Field(default_factory=RoleUpdateStrategy)
    stateful: bool = False
    #: The raw PodTemplateSpec ({"metadata": {...}, "spec": {...}}), verbatim.
    template: dict[str, Any]
    disruption_tolerance: DisruptionTolerance | None = None
    scheduling_strategy: SchedulingStrategy | None = None
    #: `recoveryPolicy` on the wire, as the spec and AIBrix's PodSet name it (AIBrix's RoleSpec
    #: has no such field).
    recovery_policy: Literal["ReplaceUnhealthy", "Recreate"] = d.DEFAULT_RECOVERY_POLICY

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> RoleSpec:
        if _lenient(info):
            return self
        if not r.DNS1123_LABEL_RE.fullmatch(self.name):
            raise ValueError(f"{r.MSG_ROLE_NAME_DNS} (got {self.name!r})")
        if len(self.name) > MAX_ROLE_NAME_LENGTH:
            raise ValueError(f"{r.MSG_ROLE_NAME_LENGTH} (got {len(self.name)})")
        if self.replicas < 0:
            raise ValueError(r.MSG_REPLICAS_MIN)
        if not r.MIN_POD_GROUP_SIZE <= self.pod_group_size <= r.MAX_POD_GROUP_SIZE:
            raise ValueError(r.MSG_POD_GROUP_SIZE_RANGE)
        if self.upgrade_order is not None and self.upgrade_order < r.MIN_UPGRADE_ORDER:
            raise ValueError(r.MSG_UPGRADE_ORDER_MIN)
        spec = self.template.get("spec")
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("containers"), list)
            or not spec["containers"]
        ):
            raise ValueError(r.MSG_ROLE_TEMPLATE_CONTAINERS)
        _check_pod_spec(spec)
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
    roles: list[RoleSpec] = Field(default_factory=list)
    update_strategy: Literal["Sequential", "Parallel", "Interleave"] = d.DEFAULT_ROLE_SET_UPDATE_STRATEGY
    scheduling_strategy: SchedulingStrategy | None = None
    topology_policy: TopologyPolicy | None = None

    @model_validator(mode="after")
    def _unique_role_names(self, info: ValidationInfo) -> RoleSetSpec:
        if _lenient(info):
            return self
        if len(self.roles) > MAX_ROLES:
            raise ValueError(f"at most {MAX_ROLES} roles are allowed")
        names = [role.name for role in self.roles]
        if len(set(names)) != len(names):
            dups = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"{r.MSG_ROLE_NAMES_UNIQUE} (duplicated: {', '.join(dups)})")
        return self

    def role(self, name: str) -> RoleSpec | None:
        for role in self.roles:
            if role.name == name:
                return role
        return None


class RoleSetStatus(WireModel):
    #: Beyond AIBrix: lets the StormService ignore a RoleSet status that is older than its spec.
    observed_generation: int = 0
    roles: list[RoleStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)


class RoleSet(WireModel):
    api_version: Literal["orchestration.aibrix.ai/v1alpha1"] = API_VERSION
    kind: Literal["RoleSet"] = KIND_ROLE_SET
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: RoleSetSpec = Field(default_factory=RoleSetSpec)
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
    max_surge: IntOrString | None = None
    max_unavailable: IntOrString | None = None


class RoleSetTemplateSpec(WireModel):
    metadata: TemplateMeta = Field(default_factory=TemplateMeta)
    spec: RoleSetSpec = Field(default_factory=RoleSetSpec)


class StormServiceSpec(WireModel):
    replicas: int = d.DEFAULT_STORM_SERVICE_REPLICAS
    selector: LabelSelector
    stateful: bool = False
    template: RoleSetTemplateSpec
    update_strategy: StormServiceUpdateStrategy = Field(default_factory=StormServiceUpdateStrategy)
    revision_history_limit: int = d.DEFAULT_REVISION_HISTORY_LIMIT
    paused: bool = False
    disruption_tolerance: DisruptionTolerance | None = None
    #: AIBrix's explicit deployment mode (when unset it is inferred from replicas); accepted, unused.
    mode: Literal["Replica", "Pooled"] | None = None
    #: Accepted for AIBrix manifests; unused by this controller.
    progress_deadline_seconds: int | None = None

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> StormServiceSpec:
        if _lenient(info):
            return self
        if self.replicas < 0:
            raise ValueError(r.MSG_REPLICAS_MIN)
        if self.revision_history_limit < 0:
            raise ValueError(r.MSG_REVISION_HISTORY_LIMIT_MIN)
        if self.selector.is_empty():
            raise ValueError(r.MSG_SELECTOR_EMPTY)
        if not self.selector.matches(self.template.metadata.labels):
            raise ValueError(r.MSG_SELECTOR_MISMATCH)
        return self

    @property
    def resolved_mode(self) -> Literal["Replica", "Pooled"]:
        """AIBrix's rule: explicit mode wins, else Replica when replicas > 1, else Pooled."""
        if self.mode is not None:
            return self.mode
        return "Replica" if self.replicas > 1 else "Pooled"


class StormServiceStatus(WireModel):
    observed_generation: int = 0
    replicas: int = 0
    ready_replicas: int = 0
    not_ready_replicas: int = 0
    current_replicas: int = 0
    updated_replicas: int = 0
    updated_ready_replicas: int = 0
    current_revision: str | None = None
    update_revision: str | None = None
    collision_count: int | None = None
    scaling_target_selector: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    role_statuses: list[RoleStatus] = Field(default_factory=list)


class StormService(WireModel):
    api_version: Literal["orchestration.aibrix.ai/v1alpha1"] = API_VERSION
    kind: Literal["StormService"] = KIND_STORM_SERVICE
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: StormServiceSpec
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
