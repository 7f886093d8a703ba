"""Markers: what the CRD schema says about a field beyond its Python type, attached to the models.

The models are the one source of the CRD schema (``apis/crdgen/schema.py`` walks them, as
controller-gen walks Go types and their ``+kubebuilder`` comments). A marker is put where the
type is: in ``Annotated[T, marker, ...]`` of a field or of a type alias (then it holds wherever
the alias is used, also as a list item or map value), or, for a model's own object node, in its
``crd_markers: ClassVar[tuple[Marker, ...]]`` (a subclass extends its parent's).

* ``Bounds``: minimum, maximum, lengths, item/property counts, pattern. Published in the schema
  and checked by the model with the same numbers (skipped when parsing leniently, like the
  admission rules), in the marker's ``message`` if it has one.
* ``rules.CelRule``: an ``x-kubernetes-validations`` rule. The model makes the same check in
  Python (a validator raising the rule's message): CEL is not evaluated here.
* ``ListType``, ``MapType``, ``Format``, ``Nullable``, ``PreserveUnknownFields``,
  ``EmbeddedResource``: the OpenAPI / ``x-kubernetes-*`` keyword of the same name.
* ``CoreSchema``: the field holds a core Kubernetes object kept as a raw dict (a pod template, a
  node selector); its schema is that definition from ``apis/openapi/``.
* ``Required``: required on the wire although the model, reading, fills in its default.
* ``DefaultEmpty``: publish ``default: {}`` for a nested object, so that the API server
  applies the defaults inside it to objects that leave it out.

Everything else comes from the field itself: its type, its docstring (the description), its
default (published unless it is Go's zero value: None, False, 0, "").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic import GetCoreSchemaHandler, ValidationInfo
from pydantic_core import core_schema

from apis.v1alpha1.rules import CelRule

#: Validation context key: when true, only structure and types are checked, not admission rules.
LENIENT: Final = "stormservice.lenient"


def is_lenient(info: ValidationInfo) -> bool:
    ctx = info.context
    return bool(ctx and isinstance(ctx, dict) and ctx.get(LENIENT))


def _python_pattern(pattern: str) -> re.Pattern[str]:
    # OpenAPI patterns are ECMA-262 searches; there `$` matches only at the very end, in Python
    # also before a final newline.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


@dataclass(frozen=True, slots=True)
class Bounds:
    """OpenAPI value bounds, published in the schema and checked by the model.

    Each applies where the schema applies it: lengths and pattern to strings, ``max_items`` to
    lists, ``max_properties`` to maps, minimum/maximum to numbers (so an int-or-string may carry
    a ``max_length`` for its string form).
    """

    minimum: int | None = None
    maximum: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    min_items: int | None = None
    max_items: int | None = None
    max_properties: int | None = None
    pattern: str | None = None
    #: What the model says when a bound is broken; by default which bound it is.
    message: str | None = None

    def keywords(self) -> dict[str, Any]:
        names = {
            "minimum": self.minimum,
            "maximum": self.maximum,
            "minLength": self.min_length,
            "maxLength": self.max_length,
            "minItems": self.min_items,
            "maxItems": self.max_items,
            "maxProperties": self.max_properties,
            "pattern": self.pattern,
        }
        return {k: v for k, v in names.items() if v is not None}

    def violation(self, value: Any) -> str | None:
        """Which bound `value` breaks, in the API server's words, or None."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                return f"should be greater than or equal to {self.minimum}"
            if self.maximum is not None and value > self.maximum:
                return f"should be less than or equal to {self.maximum}"
        elif isinstance(value, str):
            if self.min_length is not None and len(value) < self.min_length:
                return f"should be at least {self.min_length} chars long"
            if self.max_length is not None and len(value) > self.max_length:
                return f"may not be more than {self.max_length} bytes"
            if self.pattern is not None and not _python_pattern(self.pattern).search(value):
                return f"should match '{self.pattern}'"
        elif isinstance(value, list):
            if self.min_items is not None and len(value) < self.min_items:
                return f"should have at least {self.min_items} items"
            if self.max_items is not None and len(value) > self.max_items:
                return f"must have at most {self.max_items} items"
        elif isinstance(value, dict) and self.max_properties is not None and len(value) > self.max_properties:
            return f"must have at most {self.max_properties} items"
        return None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_after_validator_function(self._check, handler(source))

    def _check(self, value: Any, info: ValidationInfo) -> Any:
        if is_lenient(info):
            return value
        broken = self.violation(value)
        if broken is not None:
            raise ValueError(self.message or broken)
        return value


@dataclass(frozen=True, slots=True)
class ListType:
    """``x-kubernetes-list-type`` (and ``-list-map-keys`` for "map")."""

    kind: Literal["atomic", "set", "map"]
    map_keys: tuple[str, ...] = ()

    def keywords(self) -> dict[str, Any]:
        out: dict[str, Any] = {"x-kubernetes-list-type": self.kind}
        if self.map_keys:
            out["x-kubernetes-list-map-keys"] = list(self.map_keys)
        return out


@dataclass(frozen=True, slots=True)
class MapType:
    """``x-kubernetes-map-type``: "atomic" (replaced as a whole by server-side apply) or "granular"."""

    kind: Literal["atomic", "granular"]

    def keywords(self) -> dict[str, Any]:
        return {"x-kubernetes-map-type": self.kind}


@dataclass(frozen=True, slots=True)
class Format:
    """The OpenAPI ``format`` of a string or integer ("date-time", "int64"; int is int32 by default)."""

    name: str

    def keywords(self) -> dict[str, Any]:
        return {"format": self.name}


@dataclass(frozen=True, slots=True)
class Nullable:
    """``nullable: true``: a null is stored as null instead of being refused (the models still
    read a null as unset)."""

    def keywords(self) -> dict[str, Any]:
        return {"nullable": True}


@dataclass(frozen=True, slots=True)
class PreserveUnknownFields:
    """``x-kubernetes-preserve-unknown-fields``: the server keeps fields the schema does not name."""

    def keywords(self) -> dict[str, Any]:
        return {"x-kubernetes-preserve-unknown-fields": True}


@dataclass(frozen=True, slots=True)
class EmbeddedResource:
    """``x-kubernetes-embedded-resource``: the object is a whole resource (apiVersion, kind, metadata)."""

    def keywords(self) -> dict[str, Any]:
        return {"x-kubernetes-embedded-resource": True}


@dataclass(frozen=True, slots=True)
class Required:
    """Required on the wire although the model has a default (it reads what older writers left out)."""


@dataclass(frozen=True, slots=True)
class DefaultEmpty:
    """``default: {}`` on a nested object, so that the API server fills in the defaults inside it."""


@dataclass(frozen=True, eq=False)
class CoreSchema:
    """A core Kubernetes definition from the embedded OpenAPI bundle, for a field the model keeps
    as a raw dict, e.g. ``"io.k8s.api.core.v1.NodeSelector"``.

    ``keywords`` adds OpenAPI keywords to properties of the bundle's definitions wherever they
    occur ({(definition, property): keywords}); ``required`` and ``property_rules`` (CEL rules
    by property name) apply to the definition's own object node.
    """

    definition: str
    keywords: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    property_rules: Mapping[str, tuple[CelRule, ...]] = field(default_factory=dict)


#: Markers that only add keywords to the node they are on.
KeywordMarker = Bounds | ListType | MapType | Format | Nullable | PreserveUnknownFields | EmbeddedResource
#: Everything that may stand in ``Annotated[...]`` metadata or ``crd_markers`` for the generator.
Marker = KeywordMarker | CelRule | CoreSchema | Required | DefaultEmpty

#: Common types.
INT64: Final = Format("int64")
DATE_TIME: Final = Format("date-time")
