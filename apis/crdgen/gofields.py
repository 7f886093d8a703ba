"""Which pod spec fields are Go pointers, read from the Go types the API server serializes.

The API server writes objects with Go's encoding/json. A field that is not a pointer cannot tell
"unset" from its zero value: "", 0, false, an empty list or map, a struct of zero values. Such a
field set to its zero value comes back absent (omitempty) or as the zero value, never as what
the client sent, so a controller comparing a pod with its template must treat absent and zero
as equal there. A pointer field keeps the difference (`runAsUser: 0` is root, unset is the
image's user), and so must the comparison. The published OpenAPI does not say which is which;
the Go types do.

``extract()`` parses ``core/v1/types.go`` of k8s.io/api and ``meta/v1/types.go`` of
k8s.io/apimachinery and returns, for every struct reachable from ``PodSpec``, its JSON fields:
``{"ptr": bool, "kind": ..., "elem": ...}`` with kind one of

* ``scalar``: string, number, bool (and named types of them);
* ``list``, ``map``: ``elem`` is the element's type name or kind;
* ``struct``: ``elem`` is the struct's type name;
* ``quantity`` (resource.Quantity, canonicalized by the server), ``int-or-string``, ``time``,
  ``opaque`` (anything else: compared as is).

Embedded (``json:",inline"``) structs are flattened into their parent, as encoding/json does.
Run by ``hack/update-openapi.sh``; the result is committed as ``apis/openapi/podspec-fields-*.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = "PodSpec"

_STRUCT_START = re.compile(r"^type (\w+) struct \{\s*$")
_NAMED_TYPE = re.compile(r"^type (\w+) (\S.*?)\s*(//.*)?$")
_FIELD = re.compile(r"^\t(\w+)\s+([^\s`]+)\s+`(.*)`")
_EMBEDDED = re.compile(r"^\t(\*?[\w.]+)\s+`(.*)`")
_JSON_TAG = re.compile(r'json:"([^"]*)"')

_SCALARS = frozenset(
    {"string", "bool", "int", "int8", "int16", "int32", "int64", "uint", "uint16", "uint32", "uint64"}
    | {"float32", "float64", "byte", "rune"}
)
# Types of other packages as encoding/json writes them.
_EXTERNAL = {
    "resource.Quantity": "quantity",
    "intstr.IntOrString": "int-or-string",
    "metav1.Time": "time",
    "metav1.MicroTime": "time",
    "types.UID": "scalar",
}


@dataclass(frozen=True, slots=True)
class _Field:
    json_name: str  # "" for an embedded (inline) struct
    go_type: str


@dataclass(slots=True)
class _Package:
    """The struct and named types of one Go package; `prefix` is how other files refer to it."""

    prefix: str
    structs: dict[str, list[_Field]]
    named: dict[str, str]


def parse_go_types(text: str, prefix: str = "") -> _Package:
    """The struct types (fields with their JSON names) and the other named types of a Go file."""
    structs: dict[str, list[_Field]] = {}
    named: dict[str, str] = {}
    current: list[_Field] | None = None
    for line in text.splitlines():
        if current is None:
            m = _STRUCT_START.match(line)
            if m:
                current = structs.setdefault(m.group(1), [])
                continue
            n = _NAMED_TYPE.match(line)
            if n and not n.group(2).startswith(("struct", "interface", "(")):
                named[n.group(1)] = n.group(2)
            continue
        if line.startswith("}"):
            current = None
            continue
        m = _FIELD.match(line)
        if m:
            tag = _JSON_TAG.search(m.group(3))
            name = tag.group(1).split(",")[0] if tag else m.group(1)
            if name != "-":
                current.append(_Field(name if tag is None or name else "", m.group(2)))
            continue
        e = _EMBEDDED.match(line)
        if e:
            # Embedded: inlined unless its tag names it (`metav1.ObjectMeta `json:"metadata"``).
            tag = _JSON_TAG.search(e.group(2))
            name = tag.group(1).split(",")[0] if tag else ""
            if name != "-":
                current.append(_Field(name, e.group(1)))
    return _Package(prefix, structs, named)


class _Resolver:
    def __init__(self, packages: list[_Package]) -> None:
        self.packages = packages
        self.out: dict[str, dict[str, dict[str, Any]]] = {}

    def _lookup(self, go_type: str, home: _Package) -> tuple[str, _Package, str] | None:
        """(kind, package, name) of a named type: kind "struct" or "named"."""
        if "." in go_type:
            prefix, _, name = go_type.partition(".")
            pkgs = [p for p in self.packages if p.prefix == prefix]
        else:
            name, pkgs = go_type, [home]
        for pkg in pkgs:
            if name in pkg.structs:
                return "struct", pkg, name
            if name in pkg.named:
                return "named", pkg, name
        return None

    def describe(self, go_type: str, home: _Package) -> tuple[str, str | None]:
        """(kind, elem) of a Go type, registering the structs it reaches."""
        if go_type.startswith("*"):
            return self.describe(go_type[1:], home)
        if go_type == "[]byte":
            return "scalar", None
        if go_type.startswith("[]"):
            return "list", self._elem(go_type[2:], home)
        if go_type.startswith("map["):
            depth, i = 0, 3
            while True:
                depth += {"[": 1, "]": -1}.get(go_type[i], 0)
                if depth == 0:
                    break
                i += 1
            return "map", self._elem(go_type[i + 1 :], home)
        if go_type in _SCALARS:
            return "scalar", None
        external = _EXTERNAL.get(go_type) or _EXTERNAL.get(f"{home.prefix}.{go_type}")
        if external is not None:
            return external, None
        found = self._lookup(go_type, home)
        if found is None:
            return "opaque", None
        kind, pkg, name = found
        if kind == "named":
            return self.describe(pkg.named[name], pkg)
        self.struct(name, pkg)
        return "struct", name

    def _elem(self, go_type: str, home: _Package) -> str:
        kind, elem = self.describe(go_type, home)
        return elem if kind == "struct" and elem else kind

    def struct(self, name: str, pkg: _Package) -> None:
        if name in self.out:
            return
        fields: dict[str, dict[str, Any]] = {}
        self.out[name] = fields  # before recursing: types may refer to themselves
        for f in pkg.structs[name]:
            if f.json_name == "":
                found = self._lookup(f.go_type.lstrip("*"), pkg)
                if found is None or found[0] != "struct":
                    continue
                _, epkg, ename = found
                self.struct(ename, epkg)
                fields.update(self.out[ename])
                continue
            kind, elem = self.describe(f.go_type, pkg)
            entry: dict[str, Any] = {"ptr": f.go_type.startswith("*"), "kind": kind}
            if elem is not None:
                entry["elem"] = elem
            fields[f.json_name] = entry


def extract(core_types: str, meta_types: str) -> dict[str, dict[str, dict[str, Any]]]:
    core = parse_go_types(core_types)
    meta = parse_go_types(meta_types, "metav1")
    resolver = _Resolver([core, meta])
    resolver.struct(ROOT, core)
    return dict(sorted(resolver.out.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("core_types", type=Path, help="k8s.io/api core/v1/types.go")
    parser.add_argument("meta_types", type=Path, help="k8s.io/apimachinery pkg/apis/meta/v1/types.go")
    parser.add_argument("output", type=Path)
    parser.add_argument("--source", default="", help="where the types came from, recorded in the output")
    args = parser.parse_args(argv)
    types = extract(args.core_types.read_text(), args.meta_types.read_text())
    bundle = {"source": args.source, "root": ROOT, "types": types}
    args.output.write_text(json.dumps(bundle, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.output} ({len(types)} types)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
