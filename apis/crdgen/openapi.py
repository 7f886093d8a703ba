"""Turn Kubernetes' published OpenAPI v3 into the structural schema a CRD may embed.

``extract()`` takes ``api/openapi-spec/v3/api__v1_openapi.json`` from the k8s.io/kubernetes
module and returns the transitive closure of ``io.k8s.api.core.v1.PodTemplateSpec`` as a map of
definitions, each already converted to the structural-schema dialect that apiextensions.k8s.io/v1
accepts. References between definitions stay as ``{"$ref": "<name>"}``; ``inline()`` expands
them when the CRD is generated (the closure has no cycles; ``inline`` checks).

Conversions, and why:

* ``allOf: [{$ref}]`` (how the v3 spec wraps every reference) becomes the plain reference.
* Descriptions go: they would make each CRD several times larger, and the built-in types'
  documentation is a ``kubectl explain pod`` away.
* ``default`` goes, except on a property that is a key of an ``x-kubernetes-list-type: map`` list
  and not required (the API server demands such keys be required or defaulted, e.g. a container
  port's ``protocol: TCP``). The spec's other defaults are the Go zero values of non-pointer
  fields ("" / 0 / {}); as CRD defaults they would be written into every stored template, and
  ``{}`` defaults of objects with required fields make a CRD invalid. The pod's own defaults are
  applied anyway when the controller creates the pod.
* IntOrString becomes ``x-kubernetes-int-or-string`` with the anyOf integer/string pair;
  Quantity the same plus the quantity grammar as a ``pattern`` (so "16Gx" is rejected at
  admission; a bare float such as 0.5 is not accepted by any CRD, write "500m" or "0.5").
* ObjectMeta, wherever a template embeds it (the pod template, a PVC template of an ephemeral
  volume), is reduced to name, namespace, labels, annotations and finalizers — what a template
  may meaningfully set and what controller-gen emits for AIBrix, so its manifests keep parsing —
  plus creationTimestamp: Go clients serialize it as null in every embedded template, and a
  server-side apply of a field the schema does not declare fails, even when null (and so does
  a declared non-nullable one: apply patches are not null-pruned). Hence nullable.
* Strategic-merge-patch and union extensions are dropped (a CRD schema has no such fields);
  ``x-kubernetes-list-type``, ``-list-map-keys`` and ``-map-type`` stay (they are valid in CRDs
  and make server-side apply merge containers, env, ports… by key).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = "io.k8s.api.core.v1.PodTemplateSpec"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_REF_PREFIX = "#/components/schemas/"

#: The resource.Quantity grammar: signed decimal number, then a binary-SI, decimal-SI or
#: decimal-exponent suffix ("100m", "1.5Gi", "2e3", "-1").
QUANTITY_PATTERN = (
    r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)))?$"
)

_KEEP_KEYS = frozenset(
    {
        "type",
        "format",
        "properties",
        "additionalProperties",
        "items",
        "required",
        "enum",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "pattern",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
        "x-kubernetes-preserve-unknown-fields",
        "nullable",
    }
)
_DROP_KEYS = frozenset(
    {
        "description",
        "default",
        "x-kubernetes-patch-strategy",
        "x-kubernetes-patch-merge-key",
        "x-kubernetes-unions",
    }
)


class OpenAPIError(ValueError):
    pass


def _ref_name(ref: str) -> str:
    if not ref.startswith(_REF_PREFIX):
        raise OpenAPIError(f"unsupported $ref {ref!r}")
    return ref[len(_REF_PREFIX) :]


def _refs(node: Any, to_name: Callable[[str], str]) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield to_name(value)
            else:
                yield from _refs(value, to_name)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item, to_name)


def closure(schemas: dict[str, Any], root: str, *, to_name: Callable[[str], str] = _ref_name) -> list[str]:
    """Names of every definition reachable from `root` (sorted). `to_name` maps a `$ref` value to
    a definition name: OpenAPI's "#/components/schemas/<name>" by default; our converted
    definitions refer to each other by bare name."""
    seen: set[str] = set()
    stack = [root]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        if name not in schemas:
            raise OpenAPIError(f"definition {name!r} is referenced but missing")
        seen.add(name)
        stack.extend(_refs(schemas[name], to_name))
    return sorted(seen)


def _convert(node: dict[str, Any], where: str) -> dict[str, Any]:
    """One schema node (not a whole definition) to structural form."""
    all_of = node.get("allOf")
    if all_of is not None:
        if len(all_of) != 1 or set(all_of[0]) != {"$ref"}:
            raise OpenAPIError(f"{where}: only allOf with a single $ref is supported")
        return {"$ref": _ref_name(all_of[0]["$ref"])}
    if "$ref" in node:
        return {"$ref": _ref_name(node["$ref"])}
    unknown = set(node) - _KEEP_KEYS - _DROP_KEYS
    if unknown:
        raise OpenAPIError(f"{where}: unsupported schema keys {sorted(unknown)}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            out[key] = {p: _convert(s, f"{where}.{p}") for p, s in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value, f"{where}[{key}]")
        else:
            out[key] = copy.deepcopy(value)
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        # A free-form object (none in today's closure, but keep the CRD structural if one appears).
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _restore_list_map_key_defaults(
    orig: dict[str, Any], conv: dict[str, Any], schemas: dict[str, Any], where: str
) -> None:
    """Put back defaults of list-map keys that are not required (see module doc)."""
    keys = orig.get("x-kubernetes-list-map-keys")
    if keys:
        item_ref = conv.get("items", {}).get("$ref")
        if item_ref is None:
            raise OpenAPIError(f"{where}: list-map items must be a reference")
        orig_item = schemas[item_ref]
        required = set(orig_item.get("required", []))
        for key in keys:
            if key in required:
                continue
            prop = orig_item.get("properties", {}).get(key, {})
            if "default" not in prop:
                raise OpenAPIError(
                    f"{where}: list-map key {key!r} of {item_ref} is neither required nor defaulted"
                )
            # Recorded on the list; inline() applies it to the item's property.
            conv.setdefault("x-stormservice-key-defaults", {})[key] = prop["default"]
    for p, sub in orig.get("properties", {}).items():
        if isinstance(sub, dict) and p in conv.get("properties", {}):
            _restore_list_map_key_defaults(sub, conv["properties"][p], schemas, f"{where}.{p}")


def _reduced_object_meta() -> dict[str, Any]:
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    return {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "namespace": {"type": "string"},
            "labels": copy.deepcopy(string_map),
            "annotations": copy.deepcopy(string_map),
            "finalizers": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
            "creationTimestamp": {"type": "string", "format": "date-time", "nullable": True},
        },
    }


def _int_or_string() -> dict[str, Any]:
    return {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}


def extract(openapi: dict[str, Any], root: str = ROOT) -> dict[str, Any]:
    """The converted closure of `root`: {"root": ..., "definitions": {name: schema}}."""
    schemas: dict[str, Any] = openapi["components"]["schemas"]
    names = closure(schemas, root)
    definitions: dict[str, Any] = {}
    for name in names:
        if name == OBJECT_META:
            definitions[name] = _reduced_object_meta()
        elif name == INT_OR_STRING:
            definitions[name] = _int_or_string()
        elif name == QUANTITY:
            definitions[name] = {**_int_or_string(), "pattern": QUANTITY_PATTERN}
        else:
            conv = _convert(schemas[name], name)
            _restore_list_map_key_defaults(schemas[name], conv, schemas, name)
            definitions[name] = conv
    # The reduced ObjectMeta no longer needs what only the full one referenced.
    used = closure(definitions, root, to_name=str)
    return {"root": root, "definitions": {n: definitions[n] for n in used}}


def inline(bundle: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The fully expanded schema of `name` (default: the bundle's root)."""
    definitions: dict[str, Any] = bundle["definitions"]

    def expand(node: Any, stack: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [expand(x, stack) for x in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            ref = node["$ref"]
            if ref in stack:
                raise OpenAPIError(f"reference cycle: {' -> '.join((*stack, ref))}")
            return expand(definitions[ref], (*stack, ref))
        out = {k: expand(v, stack) for k, v in node.items() if k != "x-stormservice-key-defaults"}
        for key, default in node.get("x-stormservice-key-defaults", {}).items():
            out["items"]["properties"][key]["default"] = default
        return out

    root = name or bundle["root"]
    result = expand(definitions[root], (root,))
    assert isinstance(result, dict)
    return result


def dumps(bundle: dict[str, Any], *, source: str) -> str:
    """Compact JSON, one definition per line so a Kubernetes bump shows as a readable diff."""
    lines = [
        "{",
        f'"source":{json.dumps(source)},',
        f'"root":{json.dumps(bundle["root"])},',
        '"definitions":{',
    ]
    items = sorted(bundle["definitions"].items())
    for i, (name, schema) in enumerate(items):
        sep = "," if i < len(items) - 1 else ""
        lines.append(f"{json.dumps(name)}:{json.dumps(schema, sort_keys=True, separators=(',', ':'))}{sep}")
    lines.append("}}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("spec", type=Path, help="api__v1_openapi.json from the k8s.io/kubernetes module")
    parser.add_argument("out", type=Path, help="where to write the converted closure")
    parser.add_argument(
        "--source", required=True, help="provenance recorded in the file, e.g. k8s.io/kubernetes@v1.34.4"
    )
    args = parser.parse_args(argv)
    bundle = extract(json.loads(args.spec.read_text()))
    inline(bundle)  # fail here, not in the generator, if something does not expand
    args.out.write_text(dumps(bundle, source=args.source))
    print(f"wrote {args.out}: {len(bundle['definitions'])} definitions from {args.source}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
