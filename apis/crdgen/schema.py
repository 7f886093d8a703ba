"""The CustomResourceDefinitions of StormService and RoleSet, generated from the pydantic models.

The models in ``apis/v1alpha1/types.py`` are the one source of the schema, as Go types are for
controller-gen: this module walks their fields and writes the OpenAPI v3 structural schema.

To add a field, add it to its model, and only there::

    class RoleSpec(WireModel):
        warmup_seconds: Annotated[int, Bounds(minimum=0, maximum=3600)] = 30
        \"\"\"Seconds a new pod warms up before it counts as ready.\"\"\"

and run ``make manifests``. What each part of it becomes:

* the wire name: the camelCase alias (``warmupSeconds``);
* the type: ``int`` is an int32 integer (``Annotated[int, INT64]`` for int64), ``str``, ``bool``,
  ``Literal[...]`` (an enum), ``list[T]``, ``dict[str, T]``, a nested model (an object),
  ``int | str`` (int-or-string); ``T | None`` is an optional T;
* the docstring under the field: its description (wrapped lines are joined; a field without
  one takes its model's class docstring, and a kind's class docstring describes the kind);
* the default: published as the CRD ``default`` unless it is Go's zero value (None, False, 0,
  ""), which the API server would not write either; a nested object gets ``default: {}`` with
  ``DefaultEmpty()``, so that the defaults inside it are applied;
* required: a field without a default, or marked ``Required()``;
* markers (``apis/v1alpha1/markers.py``) in ``Annotated[...]``: ``Bounds`` (checked by the model
  too), ``rules.CelRule`` (x-kubernetes-validations; write the same check in Python in the
  model), ``ListType``, ``MapType``, ``Format``, ``Nullable``, ``PreserveUnknownFields``,
  ``EmbeddedResource``, ``CoreSchema`` (a core Kubernetes definition for a raw dict); markers of
  a model's own object node (rules over several fields) go in its ``crd_markers``.

A CEL rule needs bounded inputs (maxItems, maxLength, maxProperties on what it iterates over or
scans): the API server estimates a rule's cost from the largest value the schema allows and
refuses a CRD whose rules could cost too much. ``tests/unit/apis/test_crdgen.py`` checks the
output; ``tests/integration/test_crd_admission.py`` applies it to a real API server.

The role templates embed the real PodTemplateSpec schema (``apis/openapi/podtemplatespec-v*.json``,
refreshed by hack/update-openapi.sh through ``openapi.py``).
"""

from __future__ import annotations

import copy
import enum
import inspect
import json
import types
import typing
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any, Final

import annotated_types
from pydantic import AfterValidator, BaseModel, BeforeValidator, PlainValidator, WrapValidator
from pydantic.fields import FieldInfo

from apis.crdgen.openapi import inline
from apis.v1alpha1 import constants as c
from apis.v1alpha1.markers import CoreSchema, DefaultEmpty, KeywordMarker, Required
from apis.v1alpha1.rules import CelRule
from apis.v1alpha1.types import RoleScaler, RoleSet, StormService, WireModel

Schema = dict[str, Any]

#: The Kubernetes minor whose PodTemplateSpec schema the CRDs embed.
KUBERNETES_SCHEMA_VERSION: Final = "1.34"
PODTEMPLATESPEC_RESOURCE: Final = f"podtemplatespec-v{KUBERNETES_SCHEMA_VERSION}.json"


class SchemaError(TypeError):
    """A model field the generator cannot express in a CRD schema."""


@cache
def _podtemplate_bundle() -> dict[str, Any]:
    text = resources.files("apis").joinpath("openapi", PODTEMPLATESPEC_RESOURCE).read_text()
    bundle: dict[str, Any] = json.loads(text)
    return bundle


@cache
def _bundle_with_keywords(marker: CoreSchema) -> dict[str, Any]:
    bundle = copy.deepcopy(_podtemplate_bundle())
    for (definition, prop), keywords in marker.keywords.items():
        # A KeyError here means a Kubernetes bump renamed the field: look again at what it checks.
        node: Schema = bundle["definitions"][definition]["properties"][prop]
        assert not set(node) & set(keywords), f"{definition}.{prop} already has {sorted(node)}"
        node.update(copy.deepcopy(dict(keywords)))
    return bundle


def core_definition(name: str) -> Schema:
    """One expanded core/v1 definition, e.g. "io.k8s.api.core.v1.NodeSelector" (a fresh copy)."""
    return inline(_podtemplate_bundle(), name)


def podtemplate_source() -> str:
    return str(_podtemplate_bundle().get("source", ""))


def _core_schema(marker: CoreSchema) -> Schema:
    bundle = _bundle_with_keywords(marker) if marker.keywords else _podtemplate_bundle()
    node = inline(bundle, marker.definition)
    if marker.required:
        node["required"] = list(marker.required)
    for prop, rules in marker.property_rules.items():
        node["properties"][prop]["x-kubernetes-validations"] = [rule.as_schema() for rule in rules]
    return node


# --- the walk --------------------------------------------------------------------------------------


def _description(doc: str | None) -> str | None:
    """A docstring as one line per paragraph: wrapped source lines are joined."""
    if not doc:
        return None
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip()) or None


# Validators run by pydantic only; they say nothing the schema could.
_VALIDATORS = (AfterValidator, BeforeValidator, PlainValidator, WrapValidator)


def _apply(node: Schema, metadata: Iterable[object], where: str) -> Schema:
    """`node` with the markers in `metadata` applied (a CoreSchema replaces it)."""
    metadata = list(metadata)
    for marker in metadata:
        if isinstance(marker, CoreSchema):
            node = _core_schema(marker)
    for marker in metadata:
        if isinstance(marker, KeywordMarker):
            node.update(marker.keywords())
        elif isinstance(marker, CelRule):
            node.setdefault("x-kubernetes-validations", []).append(marker.as_schema())
        elif isinstance(marker, annotated_types.Ge):
            node["minimum"] = marker.ge
        elif isinstance(marker, annotated_types.Le):
            node["maximum"] = marker.le
        elif isinstance(marker, annotated_types.MinLen | annotated_types.MaxLen):
            kind = node.get("type")
            noun = {"array": "Items", "object": "Properties"}.get(str(kind), "Length")
            if isinstance(marker, annotated_types.MinLen):
                node[f"min{noun}"] = marker.min_length
            else:
                node[f"max{noun}"] = marker.max_length
        elif isinstance(marker, FieldInfo):  # Field(...) inside Annotated below the field's top level
            node = _apply(node, marker.metadata, where)
            description = _description(marker.description)
            if description:
                node["description"] = description
        elif isinstance(marker, (CoreSchema, Required, DefaultEmpty, *_VALIDATORS)):
            pass
        else:
            raise SchemaError(f"{where}: no schema for the annotation {marker!r}")
    return node


def type_schema(annotation: Any, where: str = "") -> Schema:
    """The schema of a type as a model field may have it (see the module doc)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _apply(type_schema(args[0], where), args[1:], where)
    if origin in (typing.Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        if len(present) == 1:
            return type_schema(present[0], where)
        if sorted(present, key=lambda t: t.__name__) == [int, str]:
            return {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
        raise SchemaError(f"{where}: a union other than T | None or int | str: {annotation}")
    if origin is typing.Literal:
        return _enum_schema(list(args), where)
    if origin is list:
        return {"type": "array", "items": type_schema(args[0], f"{where}[]")}
    if origin is dict:
        if args[0] is not str:
            raise SchemaError(f"{where}: map keys must be str, not {args[0]}")
        if args[1] is Any:
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return {"type": "object", "additionalProperties": type_schema(args[1], f"{where}{{}}")}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer", "format": "int32"}
    if annotation is float:
        return {"type": "number"}
    if annotation is str:
        return {"type": "string"}
    if annotation is Any:
        return {"x-kubernetes-preserve-unknown-fields": True}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _enum_schema([m.value for m in annotation], where)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_schema(annotation)
    raise SchemaError(f"{where}: no schema for the type {annotation!r}")


def _enum_schema(values: list[Any], where: str) -> Schema:
    kinds = {type(v) for v in values}
    if kinds == {str}:
        return {"type": "string", "enum": values}
    if kinds == {int}:
        return {"type": "integer", "enum": values}
    raise SchemaError(f"{where}: enum values must be all strings or all ints: {values}")


def _published_default(field: FieldInfo, where: str) -> Any:
    """The field's default as the CRD publishes it, or None for none (see the module doc)."""
    if DefaultEmpty() in field.metadata:
        return {}
    if field.default_factory is not None or field.is_required():
        return None
    value = field.default
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or value is False or value == 0 or value == "":
        return None
    if not isinstance(value, str | int | float | bool):
        raise SchemaError(f"{where}: only scalar defaults can be published, not {value!r}")
    return value


def field_schema(model: type[BaseModel], name: str) -> tuple[Schema, bool]:
    """(schema, required) of one field of `model`."""
    field = model.model_fields[name]
    where = f"{model.__name__}.{name}"
    node = _apply(type_schema(field.annotation, where), field.metadata, where)
    description = _description(field.description)
    if description:
        node["description"] = description
    default = _published_default(field, where)
    if default is not None:
        node["default"] = default
    return node, field.is_required() or Required() in field.metadata


def model_schema(model: type[BaseModel]) -> Schema:
    """The object schema of a model: its fields, required ones, docstring and crd_markers."""
    properties: Schema = {}
    required: list[str] = []
    for name, field in model.model_fields.items():
        wire = field.alias or name
        properties[wire], is_required = field_schema(model, name)
        if is_required:
            required.append(wire)
    node: Schema = {"type": "object", "properties": properties}
    if required:
        node["required"] = required
    markers = model.crd_markers if issubclass(model, WireModel) else ()
    node = _apply(node, markers, model.__name__)
    description = _description(model.__doc__)
    if description:
        node["description"] = description
    return node


def kind_schema(model: type[BaseModel]) -> Schema:
    """The openAPIV3Schema of a kind: apiVersion, kind and metadata as Kubernetes has them."""
    node = model_schema(model)
    node["properties"].update(
        {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            # Only name (and generateName) may be declared here; declaring name lets the root
            # rules (crd_markers of the kind) report their errors at metadata.name.
            "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
        }
    )
    return node


# --- the CRDs --------------------------------------------------------------------------------------


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
    crd = {
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
    # No node shared between two places: YAML would write it once, as an anchor and aliases.
    unshared: dict[str, Any] = json.loads(json.dumps(crd))
    return unshared


_AGE: Final = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def storm_service_crd() -> dict[str, Any]:
    return _crd(
        kind=c.KIND_STORM_SERVICE,
        list_kind=c.KIND_STORM_SERVICE_LIST,
        plural=c.PLURAL_STORM_SERVICES,
        singular=c.SINGULAR_STORM_SERVICE,
        short_names=list(c.SHORT_NAMES_STORM_SERVICE),
        schema=kind_schema(StormService),
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
            _AGE,
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
        schema=kind_schema(RoleSet),
        columns=[
            {
                "name": "Ready",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                "description": "Whether every role is ready",
            },
            _AGE,
        ],
        subresources={"status": {}},
    )


def role_scaler_crd() -> dict[str, Any]:
    return _crd(
        kind=c.KIND_ROLE_SCALER,
        list_kind=c.KIND_ROLE_SCALER_LIST,
        plural=c.PLURAL_ROLE_SCALERS,
        singular=c.SINGULAR_ROLE_SCALER,
        short_names=[],
        schema=kind_schema(RoleScaler),
        columns=[
            {
                "name": "StormService",
                "type": "string",
                "jsonPath": ".spec.stormServiceName",
                "description": "The StormService of the role",
            },
            {"name": "Role", "type": "string", "jsonPath": ".spec.roleName", "description": "The role"},
            {
                "name": "Desired",
                "type": "integer",
                "jsonPath": ".spec.replicas",
                "description": "Instances asked for",
            },
            {
                "name": "Current",
                "type": "integer",
                "jsonPath": ".status.replicas",
                "description": "Instances the role has",
            },
            {
                "name": "Clamped",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Clamped")].status',
                "description": "Whether the ratio band overrides the desired instances",
            },
            _AGE,
        ],
        subresources={
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector",
            },
        },
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """File name (under manifests/crds) -> CRD object."""
    return {
        f"{c.GROUP}_{c.PLURAL_ROLE_SCALERS}.yaml": role_scaler_crd(),
        f"{c.GROUP}_{c.PLURAL_STORM_SERVICES}.yaml": storm_service_crd(),
        f"{c.GROUP}_{c.PLURAL_ROLE_SETS}.yaml": role_set_crd(),
    }
