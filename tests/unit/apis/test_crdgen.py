from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from apis.crdgen import openapi
from apis.crdgen.__main__ import DEFAULT_OUT, main
from apis.crdgen.render import render_all
from apis.crdgen.schema import PODTEMPLATESPEC_RESOURCE, all_crds
from apis.v1alpha1 import defaults as d
from apis.v1alpha1 import rules as r
from apis.v1alpha1.types import RoleSet, StormService
from tests.unit.apis import cases

REPO = Path(__file__).resolve().parents[3]
SS_FILE = "orchestration.aibrix.ai_stormservices.yaml"
RS_FILE = "orchestration.aibrix.ai_rolesets.yaml"
RSC_FILE = "orchestration.aibrix.ai_rolescalers.yaml"


@pytest.fixture(scope="module")
def crds() -> dict[str, dict[str, Any]]:
    return {name: yaml.safe_load(text) for name, text in render_all().items()}


def root_schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def ss_schema(crds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return root_schema(crds[SS_FILE])


def rs_schema(crds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return root_schema(crds[RS_FILE])


def at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """Follow a path of property names; "[]" steps into array items, "{}" into map values."""
    node = schema
    for part in path.split("."):
        if part == "[]":
            node = node["items"]
        elif part == "{}":
            node = node["additionalProperties"]
        else:
            node = node["properties"][part]
    return node


def rules_at(schema: dict[str, Any], path: str | None = None) -> list[dict[str, str]]:
    node = at(schema, path) if path else schema
    rules: list[dict[str, str]] = node.get("x-kubernetes-validations", [])
    return rules


SS_ROLE = "spec.template.spec.roles.[]"
RS_ROLE = "spec.roles.[]"


# --- files and --check -----------------------------------------------------------------------------


def test_committed_crds_are_current() -> None:
    assert main(["--check"]) == 0


def test_check_reports_a_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([SS_FILE, RS_FILE, RSC_FILE])
    assert main(["--check", "--out", str(tmp_path)]) == 0
    path = tmp_path / RS_FILE
    path.write_text(
        path.read_text().replace("shortNames", "shortNamez").replace("type: boolean", "type: string", 1)
    )
    capsys.readouterr()
    assert main(["--check", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "(committed)" in out and "(generated)" in out and "-" in out and "+" in out
    (tmp_path / SS_FILE).unlink()
    assert main(["--check", "--out", str(tmp_path)]) == 1


def test_default_output_is_the_repo_manifests() -> None:
    assert DEFAULT_OUT == REPO / "manifests" / "crds"


def test_rendering_is_deterministic() -> None:
    assert render_all() == render_all()


# --- CRD shape -------------------------------------------------------------------------------------


def test_names_and_scope(crds: dict[str, dict[str, Any]]) -> None:
    ss, rs = crds[SS_FILE], crds[RS_FILE]
    assert ss["apiVersion"] == "apiextensions.k8s.io/v1" and ss["kind"] == "CustomResourceDefinition"
    assert ss["metadata"]["name"] == "stormservices.orchestration.aibrix.ai"
    assert rs["metadata"]["name"] == "rolesets.orchestration.aibrix.ai"
    assert ss["spec"]["names"] == {
        "kind": "StormService",
        "listKind": "StormServiceList",
        "plural": "stormservices",
        "singular": "stormservice",
        "shortNames": ["storm"],
    }
    assert rs["spec"]["names"] == {
        "kind": "RoleSet",
        "listKind": "RoleSetList",
        "plural": "rolesets",
        "singular": "roleset",
    }
    for crd in (ss, rs):
        assert crd["spec"]["group"] == "orchestration.aibrix.ai"
        assert crd["spec"]["scope"] == "Namespaced"
        (version,) = crd["spec"]["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)


def test_subresources(crds: dict[str, dict[str, Any]]) -> None:
    assert crds[SS_FILE]["spec"]["versions"][0]["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.scalingTargetSelector",
        },
    }
    assert crds[RS_FILE]["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_print_columns(crds: dict[str, dict[str, Any]]) -> None:
    def cols(name: str) -> list[tuple[str, str, str]]:
        return [
            (x["name"], x["type"], x["jsonPath"])
            for x in crds[name]["spec"]["versions"][0]["additionalPrinterColumns"]
        ]

    assert cols(SS_FILE) == [
        ("Replicas", "integer", ".spec.replicas"),
        ("Ready", "integer", ".status.readyReplicas"),
        ("Updated", "integer", ".status.updatedReplicas"),
        ("Paused", "boolean", ".spec.paused"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    assert cols(RS_FILE) == [
        ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]


def test_pod_template_is_the_full_core_schema(crds: dict[str, dict[str, Any]]) -> None:
    for schema, role in ((ss_schema(crds), SS_ROLE), (rs_schema(crds), RS_ROLE)):
        template = at(schema, f"{role}.template")
        assert template["required"] == ["spec"]
        container = at(template, "spec.containers.[]")
        assert at(container, "image") == {"type": "string"}
        assert container["required"] == ["name"]
        assert at(template, "spec")["required"] == ["containers"]
        containers = at(template, "spec.containers")
        assert containers["x-kubernetes-list-type"] == "map" and containers["x-kubernetes-list-map-keys"] == [
            "name"
        ]
        # deep parts of PodSpec are there too
        assert "nodeAffinity" in at(template, "spec.affinity")["properties"]
        assert at(container, "ports.[].protocol")["default"] == "TCP"
        assert at(container, "resources.limits.{}")["x-kubernetes-int-or-string"] is True
        assert at(container, "livenessProbe.httpGet.port")["x-kubernetes-int-or-string"] is True
        assert "ephemeral" in at(template, "spec.volumes.[]")["properties"]
        # embedded metadata is reduced to what a template may set (+ creationTimestamp, Go sends null)
        assert at(template, "metadata.creationTimestamp")["nullable"] is True
        assert sorted(at(template, "metadata")["properties"]) == [
            "annotations",
            "creationTimestamp",
            "finalizers",
            "labels",
            "name",
            "namespace",
        ]
        pvc_meta = at(template, "spec.volumes.[].ephemeral.volumeClaimTemplate.metadata")
        assert sorted(pvc_meta["properties"]) == [
            "annotations",
            "creationTimestamp",
            "finalizers",
            "labels",
            "name",
            "namespace",
        ]


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.get("properties", {}).items():
            yield from _walk(value, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            yield from _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _walk(node["additionalProperties"], f"{path}{{}}")
        for key in ("anyOf", "allOf", "oneOf"):
            for i, sub in enumerate(node.get(key, [])):
                yield from _walk(sub, f"{path}<{key}{i}>")


def test_schemas_are_structural(crds: dict[str, dict[str, Any]]) -> None:
    """The rules apiextensions enforces that we can check without a server."""
    for name, crd in crds.items():
        text = json.dumps(crd)
        assert "$ref" not in text and "x-stormservice-" not in text and "oneOf" not in text, name
        for path, node in _walk(root_schema(crd)):
            if "<anyOf" in path:
                assert node in ({"type": "integer"}, {"type": "string"}), path
                continue
            if node.get("x-kubernetes-int-or-string"):
                assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
                assert "type" not in node, path
                continue
            assert node.get("type") in ("object", "array", "string", "integer", "number", "boolean"), path
            if "properties" in node or "additionalProperties" in node:
                assert node["type"] == "object", path
                assert not ("properties" in node and "additionalProperties" in node), path
            if "items" in node:
                assert node["type"] == "array", path
            if node["type"] == "array":
                assert "items" in node, path
            if node.get("x-kubernetes-list-type") == "map":
                item = node["items"]
                for key in node["x-kubernetes-list-map-keys"]:
                    assert key in item.get("required", []) or "default" in item["properties"][key], (
                        f"{path}: {key}"
                    )
            if node.get("x-kubernetes-list-type") == "set":
                assert node["items"]["type"] in ("string", "integer", "number", "boolean"), path
            for req in node.get("required", []):
                assert req in node["properties"], f"{path}: required {req}"
            if "default" in node:
                assert path.endswith((".protocol", ".name")) or "x-kubernetes-" not in path, path


def test_only_expected_defaults_inside_pod_templates(crds: dict[str, dict[str, Any]]) -> None:
    template = at(rs_schema(crds), f"{RS_ROLE}.template")
    defaults = sorted((p, n["default"]) for p, n in _walk(template) if "default" in n)
    assert defaults == [
        (".spec.containers[].ports[].protocol", "TCP"),
        (".spec.ephemeralContainers[].ports[].protocol", "TCP"),
        (".spec.imagePullSecrets[].name", ""),
        (".spec.initContainers[].ports[].protocol", "TCP"),
    ]


# --- defaults and rules ----------------------------------------------------------------------------


def test_crd_defaults_equal_model_defaults(crds: dict[str, dict[str, Any]]) -> None:
    ss = ss_schema(crds)
    assert at(ss, "spec.replicas")["default"] == d.DEFAULT_STORM_SERVICE_REPLICAS == 1
    assert at(ss, "spec.revisionHistoryLimit")["default"] == d.DEFAULT_REVISION_HISTORY_LIMIT == 10
    assert at(ss, "spec.updateStrategy")["default"] == {}
    assert at(ss, "spec.updateStrategy.type")["default"] == d.DEFAULT_STORM_SERVICE_UPDATE_STRATEGY
    for schema, role, roleset_spec in (
        (ss, SS_ROLE, "spec.template.spec"),
        (rs_schema(crds), RS_ROLE, "spec"),
    ):
        assert at(schema, f"{roleset_spec}.updateStrategy")["default"] == d.DEFAULT_ROLE_SET_UPDATE_STRATEGY
        assert at(schema, f"{roleset_spec}.topologyPolicy.mode")["default"] == d.DEFAULT_TOPOLOGY_MODE
        assert at(schema, f"{role}.replicas")["default"] == d.DEFAULT_ROLE_REPLICAS
        assert at(schema, f"{role}.podGroupSize")["default"] == d.DEFAULT_POD_GROUP_SIZE
        assert at(schema, f"{role}.updateStrategy")["default"] == {}
        assert at(schema, f"{role}.updateStrategy.type")["default"] == d.DEFAULT_ROLE_UPDATE_STRATEGY
        assert at(schema, f"{role}.recoveryPolicy")["default"] == d.DEFAULT_RECOVERY_POLICY
        for intstr in (
            "updateStrategy.maxSurge",
            "updateStrategy.maxUnavailable",
            "disruptionTolerance.maxUnavailable",
        ):
            assert "default" not in at(schema, f"{role}.{intstr}")  # unset stays visible; resolved in code
    # The model, built from a manifest without those fields, carries the same values.
    model = StormService.model_validate(cases.minimal_storm_service())
    assert model.spec.replicas == at(ss, "spec.replicas")["default"]
    assert model.spec.revision_history_limit == at(ss, "spec.revisionHistoryLimit")["default"]
    role_model = model.spec.template.spec.roles[0]
    assert (role_model.replicas, role_model.pod_group_size) == (1, 1)


def test_cel_rules_are_where_they_belong(crds: dict[str, dict[str, Any]]) -> None:
    ss, rs = ss_schema(crds), rs_schema(crds)
    assert rules_at(ss) == [
        r.CEL_STORM_SERVICE_NAME_LENGTH.as_schema(),
        r.CEL_STORM_SERVICE_NAME_DNS.as_schema(),
    ]
    assert rules_at(rs) == [r.CEL_ROLE_SET_NAME_LENGTH.as_schema(), r.CEL_ROLE_SET_NAME_DNS.as_schema()]
    assert rules_at(ss, "spec") == [
        r.CEL_SELECTOR_MATCHES_TEMPLATE.as_schema(),
        r.CEL_EXTERNAL_SCALING_POOLED.as_schema(),
        r.CEL_PARTITION_NEEDS_IN_PLACE_UPDATE.as_schema(),
        r.CEL_ROLLBACK_NEEDS_DEADLINE.as_schema(),
    ]
    assert rules_at(ss, "spec.selector") == [r.CEL_SELECTOR_NOT_EMPTY.as_schema()]
    assert rules_at(ss, "spec.selector.matchExpressions.[]") == [
        r.CEL_SELECTOR_REQUIREMENT_VALUES.as_schema()
    ]
    intstr = [r.CEL_INT_OR_PERCENT.as_schema()]
    assert rules_at(ss, "spec.updateStrategy.maxSurge") == intstr
    assert rules_at(ss, "spec.updateStrategy.maxUnavailable") == intstr
    assert rules_at(ss, "spec.disruptionTolerance.maxUnavailable") == intstr
    for schema, roles, roleset_spec in (
        (ss, "spec.template.spec.roles", "spec.template.spec"),
        (rs, "spec.roles", "spec"),
    ):
        assert rules_at(schema, roles) == [
            r.CEL_ROLE_NAMES_UNIQUE.as_schema(),
            r.CEL_SCALING_BAND_FOLLOWS.as_schema(),
            r.CEL_DEPENDS_ON_KNOWN.as_schema(),
            r.CEL_DEPENDS_ON_ACYCLIC.as_schema(),
        ]
        assert at(schema, roles)["maxItems"] == 64
        assert rules_at(schema, f"{roles}.[]") == [
            r.CEL_ROLE_NAME_DNS.as_schema(),
            r.CEL_ROLE_NAME_LENGTH.as_schema(),
            r.CEL_SCALING_BAND_NEEDS_EXTERNAL.as_schema(),
            r.CEL_DEPENDS_ON_SELF.as_schema(),
            r.CEL_ENTRY_TEMPLATE_NEEDS_GROUP.as_schema(),
            r.CEL_GROUP_RECOVERY_NEEDS_GROUPS.as_schema(),
        ]
        assert rules_at(schema, f"{roles}.[].scalingBand") == [r.CEL_SCALING_BAND_BOUNDS.as_schema()]
        assert rules_at(schema, f"{roles}.[].dependsOn") == [r.CEL_DEPENDS_ON_UNIQUE.as_schema()]
        assert at(schema, f"{roles}.[].dependsOn")["maxItems"] == 63
        assert at(schema, f"{roles}.[].dependsOn.[]")["maxLength"] == 63
        assert rules_at(schema, f"{roles}.[].schedulingStrategy") == [
            r.CEL_ONE_SCHEDULING_STRATEGY.as_schema()
        ]
        assert rules_at(schema, f"{roleset_spec}.schedulingStrategy") == [
            r.CEL_ONE_SCHEDULING_STRATEGY.as_schema()
        ]
        for p in (
            "updateStrategy.maxSurge",
            "updateStrategy.maxUnavailable",
            "disruptionTolerance.maxUnavailable",
        ):
            assert rules_at(schema, f"{roles}.[].{p}") == intstr
        assert rules_at(schema, f"{roles}.[].template.spec") == [r.CEL_NO_EPHEMERAL_CONTAINERS.as_schema()]
        assert rules_at(schema, f"{roles}.[].entryTemplate.spec") == [
            r.CEL_NO_EPHEMERAL_CONTAINERS.as_schema()
        ]
    # Nowhere else in a pod template: a rule under a list there (containers, volumes, ...) is
    # charged for the longest list a 3 MB request can hold, and those lists have no bound.
    for schema, role in ((ss, SS_ROLE), (rs, RS_ROLE)):
        for field in ("template", "entryTemplate"):
            template = at(schema, f"{role}.{field}")
            assert [p for p, n in _walk(template) if "x-kubernetes-validations" in n] == [".spec"]


def test_pod_template_checks_what_pod_validation_checks(crds: dict[str, dict[str, Any]]) -> None:
    """Plain OpenAPI keywords (no CEL cost), in both CRDs, on containers and init containers."""
    port_range = {"minimum": r.MIN_PORT, "maximum": r.MAX_PORT}
    for schema, role, field in (
        (ss_schema(crds), SS_ROLE, "template"),
        (rs_schema(crds), RS_ROLE, "template"),
        (ss_schema(crds), SS_ROLE, "entryTemplate"),
        (rs_schema(crds), RS_ROLE, "entryTemplate"),
    ):
        spec = at(schema, f"{role}.{field}.spec")
        assert at(spec, "restartPolicy") == {"type": "string", "enum": ["Always", "OnFailure", "Never", ""]}
        for containers in ("containers", "initContainers"):
            container = at(spec, f"{containers}.[]")
            assert at(container, "name") == {
                "type": "string",
                "maxLength": 63,
                "pattern": r.DNS1123_LABEL_PATTERN,
            }
            port = at(container, "ports.[]")
            assert at(port, "containerPort") == {"type": "integer", "format": "int32", **port_range}
            assert at(port, "hostPort") == {
                "type": "integer",
                "format": "int32",
                "minimum": 0,
                "maximum": 65535,
            }
            assert at(port, "name") == {"type": "string"}  # IANA_SVC_NAME: left to the API server
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                assert at(container, f"{probe}.grpc.port") == {
                    "type": "integer",
                    "format": "int32",
                    **port_range,
                }
        # The Container definition is shared; nothing else in the pod template has these names.
        assert at(spec, "ephemeralContainers.[].name") == {"type": "string"}


def test_every_cel_rule_has_bounded_inputs(crds: dict[str, dict[str, Any]]) -> None:
    """CEL cost: lists and maps a rule iterates over are bounded, strings it scans too."""
    ss = ss_schema(crds)
    assert at(ss, "spec.selector.matchLabels")["maxProperties"] == 64
    assert at(ss, "spec.selector.matchLabels.{}")["maxLength"] == 63
    assert at(ss, "spec.selector.matchExpressions")["maxItems"] == 64
    assert at(ss, "spec.selector.matchExpressions.[].values")["maxItems"] == 64
    assert at(ss, "spec.template.metadata.labels.{}")["maxLength"] == 63
    assert at(ss, f"{SS_ROLE}.name")["maxLength"] == 63
    assert at(ss, "spec.updateStrategy.maxSurge")["maxLength"] == 8


# The CEL grammar bits the rules use, so a typo shows up here rather than at `kubectl apply`.
_CEL_TOKEN = re.compile(
    r"\s+|'[^']*'|[A-Za-z_][A-Za-z0-9_]*|[0-9]+|==|!=|<=|>=|&&|\|\||[()\[\]{}.,?:!<>+\-*/%]"
)


@pytest.mark.parametrize("rule", r.ALL_CEL_RULES, ids=lambda x: x.message[:40])
def test_cel_rules_are_well_formed(rule: r.CelRule) -> None:
    pos = 0
    depth = 0
    tokens: list[str] = []
    map_colons = 0  # `{key: value}` literals: their colons are not the `:` of `?:`
    braces: list[str] = []
    while pos < len(rule.rule):
        m = _CEL_TOKEN.match(rule.rule, pos)
        assert m is not None, f"unexpected character at {pos}: {rule.rule[pos : pos + 20]!r}"
        tok = m.group()
        pos = m.end()
        if tok.isspace():
            continue
        tokens.append(tok)
        if tok in ("(", "[", "{"):
            depth += 1
            braces.append(tok)
        elif tok in (")", "]", "}"):
            depth -= 1
            assert braces and braces.pop() == {")": "(", "]": "[", "}": "{"}[tok], rule.rule
        elif tok == ":" and braces and braces[-1] == "{":
            map_colons += 1
        assert depth >= 0, rule.rule
    assert depth == 0, rule.rule
    assert tokens.count("?") == tokens.count(":") - map_colons, rule.rule
    assert rule.message and rule.message[-1] not in ". " and "\n" not in rule.message
    for tok in tokens:
        if tok.startswith("'") and "^" in tok:
            re.compile(tok[1:-1])  # RE2 and Python agree on these simple patterns


# --- manifests against the schema ------------------------------------------------------------------


def _validate(schema: dict[str, Any], value: Any, path: str, errors: list[str]) -> None:
    """OpenAPI value validation as the API server does it (no CEL), plus pruning of unknown fields."""
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, int | str):
            errors.append(f"{path}: must be int or string")
        elif isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: should match {schema['pattern']}")
        elif isinstance(value, str) and len(value) > schema.get("maxLength", len(value)):
            errors.append(f"{path}: Too long")
        return
    kind = schema.get("type")
    python = {"object": dict, "array": list, "string": str, "boolean": bool}
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: must be integer")
            return
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: should be greater than or equal to {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: should be less than or equal to {schema['maximum']}")
        return
    if kind in python and not isinstance(value, python[kind]):
        errors.append(f"{path}: must be {kind}")
        return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: Unsupported value {value!r}")
    if kind == "string":
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: Too long")
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: Too short")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: should match {schema['pattern']}")
    elif kind == "array":
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: Too many")
        if schema.get("x-kubernetes-list-type") == "map":
            props = schema["items"]["properties"]
            keys = [
                tuple(item.get(k, props[k].get("default")) for k in schema["x-kubernetes-list-map-keys"])
                for item in value
            ]
            errors.extend(f"{path}[{i}]: Duplicate value" for i, k in enumerate(keys) if k in keys[:i])
        for i, item in enumerate(value):
            _validate(schema["items"], item, f"{path}[{i}]", errors)
    elif kind == "object":
        for req in schema.get("required", []):
            if req not in value:
                errors.append(f"{path}.{req}: Required value")
        if "additionalProperties" in schema:
            for k, v in value.items():
                _validate(schema["additionalProperties"], v, f"{path}.{k}", errors)
        elif "properties" in schema:
            for k, v in value.items():
                if v is None:
                    continue  # null = unset: pruned (unknown field) or dropped (non-nullable), never stored
                if k not in schema["properties"]:
                    errors.append(f"{path}.{k}: unknown field")
                else:
                    _validate(schema["properties"][k], v, f"{path}.{k}", errors)


def schema_errors(crds: dict[str, dict[str, Any]], obj: dict[str, Any]) -> list[str]:
    schema = ss_schema(crds) if obj["kind"] == "StormService" else rs_schema(crds)
    errors: list[str] = []
    _validate(schema, obj, "", errors)
    return [e for e in errors if not e.startswith(".metadata.")]


@pytest.mark.parametrize("name", cases.fixture_names())
def test_fixtures_pass_the_crd_schema(crds: dict[str, dict[str, Any]], name: str) -> None:
    assert schema_errors(crds, cases.load(name)) == []


@pytest.mark.parametrize("name", cases.fixture_names())
def test_model_wire_output_passes_the_crd_schema(crds: dict[str, dict[str, Any]], name: str) -> None:
    raw = cases.load(name)
    cls: type[StormService] | type[RoleSet] = StormService if raw["kind"] == "StormService" else RoleSet
    wire = cls.model_validate(raw).model_dump(mode="json", by_alias=True, exclude_none=True)
    assert schema_errors(crds, wire) == []


@pytest.mark.parametrize("case", [c for c in cases.INVALID if not c.cel], ids=lambda x: x.id)
def test_openapi_keywords_reject_what_the_models_reject(
    crds: dict[str, dict[str, Any]], case: cases.Invalid
) -> None:
    assert schema_errors(crds, case.build()) != []


def test_unknown_fields_are_detected(crds: dict[str, dict[str, Any]]) -> None:
    obj = cases.minimal_storm_service()
    obj["spec"]["template"]["spec"]["roles"][0]["template"]["spec"]["containers"][0]["imagee"] = "x"
    assert any("imagee" in e for e in schema_errors(crds, obj))


# --- the OpenAPI bundle ----------------------------------------------------------------------------


def _module_openapi() -> Path | None:
    cache = os.environ.get("GOMODCACHE") or str(Path.home() / "go" / "pkg" / "mod")
    path = (
        Path(cache) / "k8s.io" / "kubernetes@v1.34.4" / "api" / "openapi-spec" / "v3" / "api__v1_openapi.json"
    )
    return path if path.exists() else None


def test_committed_bundle_matches_kubernetes_openapi() -> None:
    spec = _module_openapi()
    if spec is None:
        pytest.skip(
            "k8s.io/kubernetes@v1.34.4 not in the Go module cache (hack/update-openapi.sh fetches it)"
        )
    committed = (REPO / "apis" / "openapi" / PODTEMPLATESPEC_RESOURCE).read_text()
    bundle = openapi.extract(json.loads(spec.read_text()))
    source = json.loads(committed)["source"]
    assert openapi.dumps(bundle, source=source) == committed


def test_bundle_is_valid_json_with_the_closure() -> None:
    bundle = json.loads((REPO / "apis" / "openapi" / PODTEMPLATESPEC_RESOURCE).read_text())
    assert bundle["root"] == "io.k8s.api.core.v1.PodTemplateSpec"
    assert "k8s.io/kubernetes@v1.34.4" in bundle["source"]
    defs = bundle["definitions"]
    assert "io.k8s.api.core.v1.Container" in defs
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry" not in defs  # went with full ObjectMeta
    assert openapi.inline(bundle)["properties"]["spec"]["required"] == ["containers"]


def _doc(schemas: dict[str, Any]) -> dict[str, Any]:
    return {"components": {"schemas": schemas}}


def _ref(name: str) -> dict[str, Any]:
    return {"allOf": [{"$ref": f"#/components/schemas/{name}"}], "default": {}}


def test_extract_converts_to_structural() -> None:
    doc = _doc(
        {
            "Root": {
                "type": "object",
                "description": "dropped",
                "required": ["items"],
                "properties": {
                    "meta": _ref(openapi.OBJECT_META),
                    "port": _ref(openapi.INT_OR_STRING),
                    "limits": {"type": "object", "additionalProperties": _ref(openapi.QUANTITY)},
                    "items": {
                        "type": "array",
                        "items": _ref("Item"),
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name", "proto"],
                        "x-kubernetes-patch-strategy": "merge",
                        "x-kubernetes-patch-merge-key": "name",
                    },
                    "free": {"type": "object"},
                },
            },
            "Item": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "default": ""},
                    "proto": {"type": "string", "default": "TCP"},
                    "n": {"type": "integer", "format": "int32", "default": 0},
                },
            },
            openapi.OBJECT_META: {"type": "object", "properties": {"managedFields": _ref("Unused")}},
            "Unused": {"type": "object", "properties": {}},
            openapi.INT_OR_STRING: {
                "format": "int-or-string",
                "oneOf": [{"type": "integer"}, {"type": "string"}],
            },
            openapi.QUANTITY: {"oneOf": [{"type": "string"}, {"type": "number"}]},
        }
    )
    bundle = openapi.extract(doc, "Root")
    assert sorted(bundle["definitions"]) == sorted(
        ["Root", "Item", openapi.OBJECT_META, openapi.INT_OR_STRING, openapi.QUANTITY]
    )
    s = openapi.inline(bundle)
    assert "description" not in s
    assert s["properties"]["port"] == {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": True,
    }
    assert s["properties"]["limits"]["additionalProperties"]["pattern"] == openapi.QUANTITY_PATTERN
    items = s["properties"]["items"]
    assert (
        items["x-kubernetes-list-map-keys"] == ["name", "proto"]
        and "x-kubernetes-patch-strategy" not in items
    )
    assert items["items"]["properties"] == {
        "name": {"type": "string"},  # required key: its zero default is dropped
        "proto": {"type": "string", "default": "TCP"},  # optional key: default kept
        "n": {"type": "integer", "format": "int32"},
    }
    assert s["properties"]["free"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert sorted(s["properties"]["meta"]["properties"]) == [
        "annotations",
        "creationTimestamp",
        "finalizers",
        "labels",
        "name",
        "namespace",
    ]


@pytest.mark.parametrize(
    ("schemas", "error"),
    [
        ({"Root": {"type": "object", "properties": {"a": _ref("Missing")}}}, "missing"),
        ({"Root": {"type": "object", "not": {"type": "string"}}}, "unsupported schema keys"),
        ({"Root": {"allOf": [{"type": "object"}, {"type": "object"}]}}, "single \\$ref"),
        (
            {"Root": {"type": "object", "properties": {"a": {"$ref": "http://elsewhere/x"}}}},
            "unsupported \\$ref",
        ),
        (
            {
                "Root": {
                    "type": "array",
                    "items": _ref("I"),
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["k"],
                },
                "I": {"type": "object", "properties": {"k": {"type": "string"}}},
            },
            "neither required nor defaulted",
        ),
    ],
)
def test_extract_refuses_what_it_cannot_convert(schemas: dict[str, Any], error: str) -> None:
    with pytest.raises(openapi.OpenAPIError, match=error):
        openapi.extract(_doc(schemas), "Root")


def test_inline_detects_cycles() -> None:
    bundle = {
        "root": "A",
        "definitions": {
            "A": {"type": "object", "properties": {"b": {"$ref": "B"}}},
            "B": {"type": "object", "properties": {"a": {"$ref": "A"}}},
        },
    }
    with pytest.raises(openapi.OpenAPIError, match="cycle"):
        openapi.inline(bundle)


def test_openapi_cli(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(_doc({openapi.ROOT: {"type": "object", "properties": {"x": {"type": "string"}}}}))
    )
    out = tmp_path / "out.json"
    assert openapi.main([str(spec), str(out), "--source", "test"]) == 0
    data = json.loads(out.read_text())
    assert data["source"] == "test" and data["definitions"][openapi.ROOT]["properties"] == {
        "x": {"type": "string"}
    }


def test_all_crds_file_names() -> None:
    assert sorted(all_crds()) == sorted([SS_FILE, RS_FILE, RSC_FILE])
