"""The CRD schema is generated from the models: a field added to a model is in the schema with its
description, default, bounds and rules, and the model checks the same bounds."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import pytest
from pydantic import Field, ValidationError

from apis.crdgen import schema as gen
from apis.v1alpha1 import rules as r
from apis.v1alpha1.markers import (
    INT64,
    Bounds,
    CoreSchema,
    DefaultEmpty,
    EmbeddedResource,
    ListType,
    MapType,
    Nullable,
    PreserveUnknownFields,
    Required,
)
from apis.v1alpha1.rules import CelRule
from apis.v1alpha1.types import RoleSpec, WireModel, from_wire

WARMUP_RULE = CelRule(
    "self <= 600 || self % 60 == 0",
    "warmupSeconds above 600 must be whole minutes",
    # string(self) would do, but the API server prices a string it cannot bound as 3 MB long.
    message_expression="self > 1800 ? 'a warm-up over 30 minutes is whole minutes'"
    " : 'a warm-up over 10 minutes is whole minutes'",
    reason="FieldValueInvalid",
)
WARMUP_NEEDS_REPLICAS = CelRule(
    "self.warmupSeconds == 0 || self.replicas > 0",
    "a warm-up needs replicas",
    field_path=".warmupSeconds",
)


class WarmRoleSpec(RoleSpec):
    """A role with one field more, as a feature would add it: one declaration, nothing else."""

    crd_markers = (*RoleSpec.crd_markers, WARMUP_NEEDS_REPLICAS)

    warmup_seconds: Annotated[int, Bounds(minimum=0, maximum=3600), WARMUP_RULE] = 30
    """Seconds a new pod warms up
    before it counts as ready."""


def test_a_new_field_is_in_the_schema_with_everything_said_about_it() -> None:
    node = gen.model_schema(WarmRoleSpec)
    assert node["properties"]["warmupSeconds"] == {
        "type": "integer",
        "format": "int32",
        "minimum": 0,
        "maximum": 3600,
        "default": 30,
        "description": "Seconds a new pod warms up before it counts as ready.",
        "x-kubernetes-validations": [
            {
                "rule": "self <= 600 || self % 60 == 0",
                "message": "warmupSeconds above 600 must be whole minutes",
                "messageExpression": "self > 1800 ? 'a warm-up over 30 minutes is whole minutes'"
                " : 'a warm-up over 10 minutes is whole minutes'",
                "reason": "FieldValueInvalid",
            }
        ],
    }
    assert node["x-kubernetes-validations"] == [
        r.CEL_ROLE_NAME_DNS.as_schema(),
        r.CEL_ROLE_NAME_LENGTH.as_schema(),
        r.CEL_SCALING_BAND_NEEDS_EXTERNAL.as_schema(),
        r.CEL_DEPENDS_ON_SELF.as_schema(),
        r.CEL_ENTRY_TEMPLATE_NEEDS_GROUP.as_schema(),
        r.CEL_GROUP_RECOVERY_NEEDS_GROUPS.as_schema(),
        {
            "rule": "self.warmupSeconds == 0 || self.replicas > 0",
            "message": "a warm-up needs replicas",
            "fieldPath": ".warmupSeconds",
        },
    ]
    assert node["description"] == WarmRoleSpec.__doc__
    # Everything else is the role as it was.
    base = gen.model_schema(RoleSpec)
    del node["properties"]["warmupSeconds"], node["x-kubernetes-validations"][-1], node["description"]
    assert node == base
    assert base["required"] == ["name", "template"]


def test_the_model_checks_the_bounds_the_schema_publishes() -> None:
    role = {"name": "warm", "template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}
    assert WarmRoleSpec.model_validate(role).warmup_seconds == 30
    for value, words in ((-1, "greater than or equal to 0"), (3601, "less than or equal to 3600")):
        with pytest.raises(ValidationError, match=words) as err:
            WarmRoleSpec.model_validate({**role, "warmupSeconds": value})
        assert err.value.errors()[0]["loc"] == ("warmupSeconds",)
        # Like the admission rules, bounds are not checked on objects older CRDs let through.
        assert from_wire(WarmRoleSpec, {**role, "warmupSeconds": value}, lenient=True).warmup_seconds == value


class Phase(enum.Enum):
    PENDING = "Pending"
    DONE = "Done"


class Part(WireModel):
    name: str
    weight: Annotated[int, INT64] | None = None


class Options(WireModel):
    level: Literal[1, 2, 3] = 2
    """How hard to try."""


class WidgetSpec(WireModel):
    parts: Annotated[list[Part], ListType("map", ("name",)), Bounds(max_items=8)] = Field(
        default_factory=list
    )
    """Parts, by name.

    Each part once."""
    tags: Annotated[list[str], ListType("set")] | None = None
    labels: Annotated[dict[str, Annotated[str, Bounds(max_length=63)]], MapType("granular")] = Field(
        default_factory=dict
    )
    phase: Phase = Phase.PENDING
    deadline: Annotated[str, Nullable()] | None = None
    raw: dict[str, Any] | None = None
    embedded: Annotated[dict[str, Any], EmbeddedResource(), PreserveUnknownFields()] | None = None
    selector: Annotated[dict[str, Any], CoreSchema("io.k8s.api.core.v1.NodeSelector")] | None = None
    options: Annotated[Options, DefaultEmpty()] = Field(default_factory=Options)
    size: int | str | None = None
    ratio: Annotated[float, Field(ge=0, le=1)] = 0.5
    note: Annotated[str, Field(min_length=1, max_length=10, description="A short note.")] | None = None
    enabled: bool = True
    disabled: bool = False
    count: Annotated[int, Required()] = 0


class Widget(WireModel):
    """Widget is a fixture kind."""

    crd_markers = (CelRule("self.metadata.name.size() < 10", "short names only", ".metadata.name"),)

    api_version: Literal["test/v1"] = "test/v1"
    kind: Literal["Widget"] = "Widget"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: WidgetSpec
    """What the widget should be."""


def test_kind_schema_of_a_fixture_kind() -> None:
    node = gen.kind_schema(Widget)
    spec = node["properties"].pop("spec")
    assert node == {
        "type": "object",
        "description": "Widget is a fixture kind.",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
        },
        "required": ["spec"],
        "x-kubernetes-validations": [
            {
                "rule": "self.metadata.name.size() < 10",
                "message": "short names only",
                "fieldPath": ".metadata.name",
            }
        ],
    }
    props = spec.pop("properties")
    assert spec == {"type": "object", "description": "What the widget should be.", "required": ["count"]}
    assert props.pop("selector") == gen.core_definition("io.k8s.api.core.v1.NodeSelector")
    assert props == {
        "parts": {
            "type": "array",
            "description": "Parts, by name.\n\nEach part once.",
            "maxItems": 8,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "weight": {"type": "integer", "format": "int64"},
                },
            },
        },
        "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
        "labels": {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 63},
            "x-kubernetes-map-type": "granular",
        },
        "phase": {"type": "string", "enum": ["Pending", "Done"], "default": "Pending"},
        "deadline": {"type": "string", "nullable": True},
        "raw": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "embedded": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "x-kubernetes-embedded-resource": True,
        },
        "options": {
            "type": "object",
            "default": {},
            "properties": {
                "level": {
                    "type": "integer",
                    "enum": [1, 2, 3],
                    "default": 2,
                    "description": "How hard to try.",
                }
            },
        },
        "size": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True},
        "ratio": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
        "note": {"type": "string", "minLength": 1, "maxLength": 10, "description": "A short note."},
        "enabled": {"type": "boolean", "default": True},
        "disabled": {"type": "boolean"},
        "count": {"type": "integer", "format": "int32"},
    }


def test_core_schema_adds_keywords_required_and_property_rules() -> None:
    class Role(WireModel):
        template: Annotated[
            dict[str, Any],
            CoreSchema(
                "io.k8s.api.core.v1.PodTemplateSpec",
                keywords={("io.k8s.api.core.v1.Container", "image"): {"minLength": 1}},
                required=("spec",),
                property_rules={"spec": (r.CEL_NO_EPHEMERAL_CONTAINERS,)},
            ),
        ]

    template = gen.model_schema(Role)["properties"]["template"]
    assert template["required"] == ["spec"]
    assert template["properties"]["spec"]["x-kubernetes-validations"] == [
        r.CEL_NO_EPHEMERAL_CONTAINERS.as_schema()
    ]
    pod = template["properties"]["spec"]["properties"]
    for containers in ("containers", "initContainers"):
        assert pod[containers]["items"]["properties"]["image"] == {"type": "string", "minLength": 1}
    # Keywords go by definition: ephemeral containers are EphemeralContainers.
    assert pod["ephemeralContainers"]["items"]["properties"]["image"] == {"type": "string"}
    # The shared bundle is left as it was.
    plain = gen.core_definition("io.k8s.api.core.v1.PodTemplateSpec")
    assert plain["properties"]["spec"]["properties"]["containers"]["items"]["properties"]["image"] == {
        "type": "string"
    }


class Unsupported(enum.Enum):
    MIXED = "mixed"


@pytest.mark.parametrize(
    ("annotation", "default", "error"),
    [
        (int | float, None, "a union other than"),
        (dict[int, str], None, "map keys must be str"),
        (Annotated[int, object()], None, "no schema for the annotation"),
        (set[str], None, "no schema for the type"),
        (Literal["a", 1], None, "enum values must be all strings or all ints"),
        (tuple[int, int], None, "no schema for the type"),
        (list[int], [1, 2], "only scalar defaults"),
    ],
)
def test_what_a_crd_cannot_say_is_refused(annotation: Any, default: Any, error: str) -> None:
    namespace: dict[str, Any] = {"__annotations__": {"x": annotation}}
    if default is not None:
        namespace["x"] = default
    model = type("Odd", (WireModel,), namespace)
    with pytest.raises(gen.SchemaError, match=error):
        gen.model_schema(model)


@pytest.mark.parametrize(
    ("bounds", "value", "broken"),
    [
        (Bounds(minimum=1, maximum=3), 0, "should be greater than or equal to 1"),
        (Bounds(minimum=1, maximum=3), 4, "should be less than or equal to 3"),
        (Bounds(minimum=1, maximum=3), 3, None),
        (Bounds(minimum=1), True, None),  # a bool is no number here; the type check refuses it
        (Bounds(min_length=2, max_length=3), "a", "should be at least 2 chars long"),
        (Bounds(min_length=2, max_length=3), "abcd", "may not be more than 3 bytes"),
        (Bounds(max_length=3), 12345, None),  # an int-or-string's int has no length
        (Bounds(pattern=r"^[a-z]+$"), "abc", None),
        (Bounds(pattern=r"^[a-z]+$"), "abc\n", "should match '^[a-z]+$'"),  # ECMA `$`: the very end
        (Bounds(pattern=r"[0-9]"), "a1b", None),  # a search, as OpenAPI's pattern is
        (Bounds(min_items=1, max_items=2), [], "should have at least 1 items"),
        (Bounds(min_items=1, max_items=2), [1, 2, 3], "must have at most 2 items"),
        (Bounds(max_properties=1), {"a": "1", "b": "2"}, "must have at most 1 items"),
    ],
)
def test_bounds_say_which_bound_is_broken(bounds: Bounds, value: Any, broken: str | None) -> None:
    assert bounds.violation(value) == broken


def test_bounds_keywords_are_the_openapi_names() -> None:
    every = Bounds(
        minimum=0,
        maximum=9,
        min_length=1,
        max_length=8,
        min_items=1,
        max_items=7,
        max_properties=6,
        pattern="^x$",
        message="unused here",
    )
    assert every.keywords() == {
        "minimum": 0,
        "maximum": 9,
        "minLength": 1,
        "maxLength": 8,
        "minItems": 1,
        "maxItems": 7,
        "maxProperties": 6,
        "pattern": "^x$",
    }
