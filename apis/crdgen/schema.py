"""The CustomResourceDefinitions of StormService and RoleSet, as Python data.

Hand-written schema for our own fields (wire names as in AIBrix), the real PodTemplateSpec
schema (``apis/openapi/podtemplatespec-v*.json``) under every role template, CRD `default:`s
taken from ``defaults.py`` (the models use the same constants) and CEL rules from ``rules.py``
(the models raise the same messages).

Bounds (maxItems, maxLength, maxProperties) exist for the API server's CEL cost estimate: a rule
over a list is charged for the largest list the schema allows, and an unbounded one makes the
CRD unacceptable. Each bound is far above real use and within what Kubernetes itself allows
(label values <= 63, label keys <= 317).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any, Final

from apis.crdgen.openapi import inline
from apis.v1alpha1 import constants as c
from apis.v1alpha1 import defaults as d
from apis.v1alpha1 import rules as r

Schema = dict[str, Any]

#: The Kubernetes minor whose PodTemplateSpec schema the CRDs embed.
KUBERNETES_SCHEMA_VERSION: Final = "1.34"
PODTEMPLATESPEC_RESOURCE: Final = f"podtemplatespec-v{KUBERNETES_SCHEMA_VERSION}.json"

MAX_SELECTOR_TERMS: Final = 64  # matchLabels entries, matchExpressions, values per expression
MAX_INT_OR_PERCENT_LENGTH: Final = 8  # "100000%": more than anyone writes


@cache
def _podtemplate_bundle() -> dict[str, Any]:
    text = resources.files("apis").joinpath("openapi", PODTEMPLATESPEC_RESOURCE).read_text()
    bundle: dict[str, Any] = json.loads(text)
    return bundle


#: Part of what pod validation (k8s.io/kubernetes pkg/apis/core/validation) refuses in every pod
#: the controllers would create, as plain OpenAPI keywords on the embedded core/v1 definitions:
#: a role template of which no pod can be made is refused at admission, instead of failing every
#: pod create of its rollout with 422. Keywords cost nothing in the CEL budget; the same checks
#: as CEL rules would sit under the pod spec's lists, which have no maxItems (and may not get
#: one: a pod may have any number of containers). Keyed by definition, so containers and
#: initContainers (both Container) get the same. Nothing the API server accepts after its own
#: defaulting is refused: "" restartPolicy becomes Always, hostPort 0 is no host port.
POD_TEMPLATE_KEYWORDS: Final[dict[tuple[str, str], Schema]] = {
    ("io.k8s.api.core.v1.Container", "name"): {
        "maxLength": r.MAX_CONTAINER_NAME_LENGTH,
        "pattern": r.DNS1123_LABEL_PATTERN,
    },
    ("io.k8s.api.core.v1.ContainerPort", "containerPort"): {"minimum": r.MIN_PORT, "maximum": r.MAX_PORT},
    ("io.k8s.api.core.v1.ContainerPort", "hostPort"): {"minimum": 0, "maximum": r.MAX_PORT},
    ("io.k8s.api.core.v1.GRPCAction", "port"): {"minimum": r.MIN_PORT, "maximum": r.MAX_PORT},
    ("io.k8s.api.core.v1.PodSpec", "restartPolicy"): {"enum": list(r.POD_RESTART_POLICIES)},
}


@cache
def _role_template_bundle() -> dict[str, Any]:
    bundle = copy.deepcopy(_podtemplate_bundle())
    for (definition, prop), keywords in POD_TEMPLATE_KEYWORDS.items():
        # A KeyError here means a Kubernetes bump renamed the field: look again at what it checks.
        node: Schema = bundle["definitions"][definition]["properties"][prop]
        assert not set(node) & set(keywords), f"{definition}.{prop} already has {sorted(node)}"
        node.update(copy.deepcopy(keywords))
    return bundle


def pod_template_spec_schema() -> Schema:
    """The core/v1 PodTemplateSpec schema with POD_TEMPLATE_KEYWORDS (a fresh copy)."""
    return inline(_role_template_bundle())


def core_definition(name: str) -> Schema:
    """One expanded core/v1 definition from the same bundle, e.g. "io.k8s.api.core.v1.NodeSelector"."""
    return inline(_podtemplate_bundle(), name)


def podtemplate_source() -> str:
    return str(_podtemplate_bundle().get("source", ""))


# --- small builders --------------------------------------------------------------------------------


def _s(description: str | None = None, *, ext: Schema | None = None, **kw: Any) -> Schema:
    """A schema node; `ext` carries the x-kubernetes-* keys (not valid Python identifiers)."""
    out: Schema = dict(kw)
    if ext:
        out.update(ext)
    if description:
        out["description"] = description
    return out


def _string(description: str | None = None, **kw: Any) -> Schema:
    return _s(description, type="string", **kw)


def _bool(description: str | None = None) -> Schema:
    return _s(description, type="boolean")


def _int32(description: str | None = None, **kw: Any) -> Schema:
    return _s(description, type="integer", format="int32", **kw)


def _int64(description: str | None = None, **kw: Any) -> Schema:
    return _s(description, type="integer", format="int64", **kw)


def _time(description: str | None = None) -> Schema:
    return _s(description, type="string", format="date-time")


def _object(
    properties: Schema, description: str | None = None, *, ext: Schema | None = None, **kw: Any
) -> Schema:
    return _s(description, ext=ext, type="object", properties=properties, **kw)


def _string_map(*, max_value_length: int | None = None, description: str | None = None, **kw: Any) -> Schema:
    value: Schema = {"type": "string"}
    if max_value_length is not None:
        value["maxLength"] = max_value_length
    return _s(description, type="object", additionalProperties=value, **kw)


def int_or_percent(description: str) -> Schema:
    return _s(
        description,
        anyOf=[{"type": "integer"}, {"type": "string"}],
        maxLength=MAX_INT_OR_PERCENT_LENGTH,
        ext={
            "x-kubernetes-int-or-string": True,
            "x-kubernetes-validations": [r.CEL_INT_OR_PERCENT.as_schema()],
        },
    )


def _quantity_map(description: str) -> Schema:
    quantity = copy.deepcopy(core_definition("io.k8s.apimachinery.pkg.api.resource.Quantity"))
    return _s(description, type="object", additionalProperties=quantity)


def label_selector() -> Schema:
    requirement = _object(
        {
            "key": _string("The label key that the selector applies to.", maxLength=r.MAX_LABEL_KEY_LENGTH),
            "operator": _string(
                "In, NotIn, Exists or DoesNotExist.", enum=["In", "NotIn", "Exists", "DoesNotExist"]
            ),
            "values": _s(
                "Values for In and NotIn; empty for Exists and DoesNotExist.",
                type="array",
                maxItems=MAX_SELECTOR_TERMS,
                items={"type": "string", "maxLength": r.MAX_LABEL_VALUE_LENGTH},
                ext={"x-kubernetes-list-type": "atomic"},
            ),
        },
        required=["key", "operator"],
        ext={"x-kubernetes-validations": [r.CEL_SELECTOR_REQUIREMENT_VALUES.as_schema()]},
    )
    return _object(
        {
            "matchLabels": _string_map(
                max_value_length=r.MAX_LABEL_VALUE_LENGTH,
                maxProperties=MAX_SELECTOR_TERMS,
                description="Labels a RoleSet must have (all of them).",
            ),
            "matchExpressions": _s(
                "Label requirements a RoleSet must satisfy (all of them).",
                type="array",
                maxItems=MAX_SELECTOR_TERMS,
                items=requirement,
                ext={"x-kubernetes-list-type": "atomic"},
            ),
        },
        "Selects the RoleSets of this StormService; must match spec.template.metadata.labels.",
        ext={
            "x-kubernetes-map-type": "atomic",
            "x-kubernetes-validations": [r.CEL_SELECTOR_NOT_EMPTY.as_schema()],
        },
    )


def template_metadata(description: str) -> Schema:
    """Metadata of an embedded template: the reduction controller-gen applies, plus
    creationTimestamp, which Go clients send as null (see apis/crdgen/openapi.py)."""
    return _object(
        {
            "creationTimestamp": {"type": "string", "format": "date-time", "nullable": True},
            "name": {"type": "string"},
            "namespace": {"type": "string"},
            "labels": _string_map(max_value_length=r.MAX_LABEL_VALUE_LENGTH),
            "annotations": _string_map(),
            "finalizers": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
        },
        description,
    )


def disruption_tolerance(unit: str) -> Schema:
    return _object(
        {
            "maxUnavailable": int_or_percent(
                f"How many {unit} may be unavailable through voluntary disruptions (evictions): "
                "an integer counts role instances (a pod group counts once), a percent counts pods. "
                "Becomes a PodDisruptionBudget per role."
            )
        },
        "Disruption budget.",
    )


# --- scheduling ------------------------------------------------------------------------------------


def _godel_affinity() -> Schema:
    term = _object({"topologyKey": _string()})
    terms = {"type": "array", "items": term}
    return _object(
        {
            "podGroupAffinity": _object(
                {
                    "nodeSelector": core_definition("io.k8s.api.core.v1.NodeSelector"),
                    "preferred": copy.deepcopy(terms),
                    "required": copy.deepcopy(terms),
                    "sortRules": {
                        "type": "array",
                        "items": _object(
                            {"dimension": _string(), "order": _string(), "resource": _string()},
                            required=["order", "resource"],
                        ),
                    },
                }
            ),
            "podGroupAntiAffinity": _object(
                {"preferred": copy.deepcopy(terms), "required": copy.deepcopy(terms)}
            ),
        },
        "godel PodGroup affinity rules.",
    )


def scheduling_strategy() -> Schema:
    return _object(
        {
            "godelSchedulingStrategy": _object(
                {
                    "minMember": _int32("Pods that must be schedulable together."),
                    "priorityClassName": _string(),
                    "scheduleTimeoutSeconds": _int32(),
                    "application": _string(),
                    "affinity": _godel_affinity(),
                },
                "Gang scheduling with godel-scheduler's PodGroup.",
            ),
            "coschedulingSchedulingStrategy": _object(
                {
                    "minMember": _int32("Pods that must be schedulable together.", minimum=1),
                    "minResources": _quantity_map("Resources the group needs to start."),
                    "scheduleTimeoutSeconds": _int32(),
                },
                "Gang scheduling with the scheduler-plugins coscheduling PodGroup.",
            ),
            "volcanoSchedulingStrategy": _object(
                {
                    "minMember": _int32("Pods that must be schedulable together."),
                    "minTaskMember": _s(
                        "Minimum pods per task.",
                        type="object",
                        additionalProperties={"type": "integer", "format": "int32"},
                    ),
                    "queue": _string(),
                    "priorityClassName": _string(),
                    "minResources": _quantity_map("Resources the group needs to start."),
                },
                "Gang scheduling with Volcano's PodGroup.",
            ),
        },
        "Gang scheduling through a PodGroup; at most one scheduler may be chosen.",
        ext={"x-kubernetes-validations": [r.CEL_ONE_SCHEDULING_STRATEGY.as_schema()]},
    )


def topology_policy() -> Schema:
    return _object(
        {
            "scope": _string(
                "Which pods share one topology domain: all of the StormService, each RoleSet, or each role.",
                enum=["StormService", "RoleSet", "Role"],
            ),
            "mode": _string(
                "Preferred (weight-100 pod affinity) or Required.",
                enum=["Preferred", "Required"],
                default=d.DEFAULT_TOPOLOGY_MODE,
            ),
            "key": _string(
                "Node label key of the topology domain, e.g. kubernetes.io/hostname.",
                minLength=1,
                maxLength=r.MAX_LABEL_KEY_LENGTH,
                pattern=r.LABEL_KEY_PATTERN,
            ),
        },
        "Co-locates pods on one topology domain (rendered as pod affinity on new pods).",
        required=["scope", "key"],
    )


# --- RoleSet spec ----------------------------------------------------------------------------------


def role() -> Schema:
    template = pod_template_spec_schema()
    template["description"] = "The pod template of this role (core/v1 PodTemplateSpec)."
    template["required"] = ["spec"]
    template["properties"]["spec"]["x-kubernetes-validations"] = [r.CEL_NO_EPHEMERAL_CONTAINERS.as_schema()]
    return _object(
        {
            "name": _string("Role name, e.g. prefill, decode, router.", maxLength=r.MAX_LABEL_VALUE_LENGTH),
            "replicas": _int32("Instances of this role.", minimum=0, default=d.DEFAULT_ROLE_REPLICAS),
            "upgradeOrder": _int32(
                "Lower rolls first under the Sequential strategy; unset rolls after all set ones.",
                minimum=r.MIN_UPGRADE_ORDER,
            ),
            "podGroupSize": _int32(
                "Pods per instance; more than 1 makes each instance a group (one leader, the rest workers).",
                minimum=r.MIN_POD_GROUP_SIZE,
                maximum=r.MAX_POD_GROUP_SIZE,
                default=d.DEFAULT_POD_GROUP_SIZE,
            ),
            "updateStrategy": _object(
                {
                    "type": _string(
                        "Recreate, or InPlaceIfPossible (patch container images in place when only images changed).",
                        enum=["Recreate", "InPlaceIfPossible"],
                        default=d.DEFAULT_ROLE_UPDATE_STRATEGY,
                    ),
                    "maxSurge": int_or_percent("Instances above replicas during a rollout."),
                    "maxUnavailable": int_or_percent("Instances that may be unavailable during a rollout."),
                },
                "How this role's instances are replaced when its template changes.",
                default={},
            ),
            "stateful": _bool("Instance i is a fixed slot with a stable name and index."),
            "template": template,
            "disruptionTolerance": disruption_tolerance("instances of this role"),
            "recoveryPolicy": _string(
                "ReplaceUnhealthy replaces a failed pod of a group; Recreate recreates the whole group.",
                enum=["ReplaceUnhealthy", "Recreate"],
                default=d.DEFAULT_RECOVERY_POLICY,
            ),
            "schedulingStrategy": scheduling_strategy(),
        },
        required=["name", "template"],
        ext={
            "x-kubernetes-validations": [r.CEL_ROLE_NAME_DNS.as_schema(), r.CEL_ROLE_NAME_LENGTH.as_schema()]
        },
    )


def role_set_spec(description: str) -> Schema:
    return _object(
        {
            "roles": _s(
                "The roles of the RoleSet; names are unique.",
                type="array",
                maxItems=c.MAX_ROLES,
                items=role(),
                ext={"x-kubernetes-validations": [r.CEL_ROLE_NAMES_UNIQUE.as_schema()]},
            ),
            "updateStrategy": _string(
                "How roles are rolled: Sequential (by upgradeOrder), Parallel, or Interleave.",
                enum=["Sequential", "Parallel", "Interleave"],
                default=d.DEFAULT_ROLE_SET_UPDATE_STRATEGY,
            ),
            "schedulingStrategy": scheduling_strategy(),
            "topologyPolicy": topology_policy(),
        },
        description,
    )


# --- status ----------------------------------------------------------------------------------------


def condition() -> Schema:
    return _object(
        {
            "type": _string("Ready, Progressing or ReplicaFailure."),
            "status": _string(enum=["True", "False", "Unknown"]),
            "reason": _string(),
            "message": _string(),
            "lastTransitionTime": _time(),
            "lastUpdateTime": _time(),
            "lastUpdateMicroTime": _time(),
        },
        required=["type", "status"],
    )


def role_status() -> Schema:
    return _object(
        {
            "name": _string(),
            "replicas": _int32(),
            "readyReplicas": _int32(),
            "notReadyReplicas": _int32(),
            "updatedReplicas": _int32(),
            "updatedReadyReplicas": _int32(),
        },
        required=["replicas"],
    )


def _conditions() -> Schema:
    return {"type": "array", "items": condition()}


def storm_service_status() -> Schema:
    return _object(
        {
            "observedGeneration": _int64(),
            "replicas": _int32("RoleSets, including terminating ones."),
            "readyReplicas": _int32(),
            "notReadyReplicas": _int32(),
            "currentReplicas": _int32("RoleSets at currentRevision."),
            "updatedReplicas": _int32("RoleSets at updateRevision."),
            "updatedReadyReplicas": _int32(),
            "currentRevision": _string(),
            "updateRevision": _string(),
            "collisionCount": _int32(),
            "scalingTargetSelector": _string("Label selector of the RoleSets, for the scale subresource."),
            "conditions": _conditions(),
            "roleStatuses": _s("Per role, pods summed over all RoleSets.", type="array", items=role_status()),
        }
    )


def role_set_status() -> Schema:
    return _object(
        {
            "observedGeneration": _int64("The generation this status was computed for."),
            "roles": {"type": "array", "items": role_status()},
            "conditions": _conditions(),
        }
    )


# --- top level -------------------------------------------------------------------------------------


def storm_service_spec() -> Schema:
    return _object(
        {
            "replicas": _int32("Number of RoleSets.", minimum=0, default=d.DEFAULT_STORM_SERVICE_REPLICAS),
            "mode": _string(
                "Replica or Pooled; inferred from replicas when unset (accepted for AIBrix manifests).",
                enum=["Replica", "Pooled"],
            ),
            "selector": label_selector(),
            "stateful": _bool("Accepted for compatibility; no effect."),
            "template": _object(
                {
                    "metadata": template_metadata("Labels and annotations copied onto each RoleSet."),
                    "spec": role_set_spec("The RoleSet spec."),
                },
                "Template of the RoleSets.",
            ),
            "updateStrategy": _object(
                {
                    "type": _string(
                        "RollingUpdate replaces RoleSets; InPlaceUpdate rewrites them.",
                        enum=["RollingUpdate", "InPlaceUpdate"],
                        default=d.DEFAULT_STORM_SERVICE_UPDATE_STRATEGY,
                    ),
                    "maxSurge": int_or_percent("RoleSets above replicas during a rollout."),
                    "maxUnavailable": int_or_percent("RoleSets that may be unavailable during a rollout."),
                },
                "How RoleSets are replaced when the template changes.",
                default={},
            ),
            "revisionHistoryLimit": _int32(
                "ControllerRevisions kept beyond the live ones.",
                minimum=0,
                default=d.DEFAULT_REVISION_HISTORY_LIMIT,
            ),
            "paused": _bool("Stops rollouts; scaling goes on."),
            "progressDeadlineSeconds": _int32("Accepted for AIBrix manifests; unused.", minimum=0),
            "disruptionTolerance": disruption_tolerance("instances of each role, across all RoleSets,"),
        },
        "Desired state of the StormService.",
        required=["selector", "template"],
        ext={"x-kubernetes-validations": [r.CEL_SELECTOR_MATCHES_TEMPLATE.as_schema()]},
    )


def _root(spec: Schema, status: Schema, rules: list[r.CelRule], description: str) -> Schema:
    return _object(
        {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            # Only name (and generateName) may be declared here; declaring name lets the
            # root rules report their errors at metadata.name.
            "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
            "spec": spec,
            "status": status,
        },
        description,
        required=["spec"],
        ext={"x-kubernetes-validations": [rule.as_schema() for rule in rules]},
    )


def _crd(
    *,
    kind: str,
    list_kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    schema: Schema,
    columns: list[Schema],
    subresources: Schema,
) -> dict[str, Any]:
    names: Schema = {"kind": kind, "listKind": list_kind, "plural": plural, "singular": singular}
    if short_names:
        names["shortNames"] = short_names
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{c.GROUP}"},
        "spec": {
            "group": c.GROUP,
            "names": names,
            "scope": "Namespaced",
            "versions": [
                {
                    "name": c.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


_AGE: Final = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def storm_service_crd() -> dict[str, Any]:
    return _crd(
        kind=c.KIND_STORM_SERVICE,
        list_kind=c.KIND_STORM_SERVICE_LIST,
        plural=c.PLURAL_STORM_SERVICES,
        singular=c.SINGULAR_STORM_SERVICE,
        short_names=list(c.SHORT_NAMES_STORM_SERVICE),
        schema=_root(
            storm_service_spec(),
            storm_service_status(),
            [r.CEL_STORM_SERVICE_NAME_LENGTH, r.CEL_STORM_SERVICE_NAME_DNS],
            "StormService runs a disaggregated inference service as replicas of a RoleSet.",
        ),
        columns=[
            {
                "name": "Replicas",
                "type": "integer",
                "jsonPath": ".spec.replicas",
                "description": "Desired RoleSets",
            },
            {
                "name": "Ready",
                "type": "integer",
                "jsonPath": ".status.readyReplicas",
                "description": "Ready RoleSets",
            },
            {
                "name": "Updated",
                "type": "integer",
                "jsonPath": ".status.updatedReplicas",
                "description": "RoleSets at the latest revision",
            },
            {
                "name": "Paused",
                "type": "boolean",
                "jsonPath": ".spec.paused",
                "description": "Rollouts paused",
            },
            dict(_AGE),
        ],
        subresources={
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.scalingTargetSelector",
            },
        },
    )


def role_set_crd() -> dict[str, Any]:
    return _crd(
        kind=c.KIND_ROLE_SET,
        list_kind=c.KIND_ROLE_SET_LIST,
        plural=c.PLURAL_ROLE_SETS,
        singular=c.SINGULAR_ROLE_SET,
        short_names=[],  # "rs" is ReplicaSet's
        schema=_root(
            role_set_spec("Desired state of the RoleSet."),
            role_set_status(),
            [r.CEL_ROLE_SET_NAME_LENGTH, r.CEL_ROLE_SET_NAME_DNS],
            "RoleSet is one instance of a StormService: a set of roles (prefill, decode, ...) and their pods.",
        ),
        columns=[
            {
                "name": "Ready",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                "description": "Whether every role is ready",
            },
            dict(_AGE),
        ],
        subresources={"status": {}},
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """File name (under manifests/crds) -> CRD object."""
    return {
        f"{c.GROUP}_{c.PLURAL_STORM_SERVICES}.yaml": storm_service_crd(),
        f"{c.GROUP}_{c.PLURAL_ROLE_SETS}.yaml": role_set_crd(),
    }
