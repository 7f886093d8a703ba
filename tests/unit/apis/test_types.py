from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from apis.v1alpha1 import constants as c
from apis.v1alpha1 import defaults as d
from apis.v1alpha1 import rules as r
from apis.v1alpha1.types import (
    Condition,
    LabelSelector,
    LabelSelectorRequirement,
    ObjectMeta,
    RoleSet,
    RoleSpec,
    StormService,
    StormServiceSpec,
    from_wire,
    to_wire,
)
from tests.unit.apis import cases


def parse(obj: dict[str, Any], *, lenient: bool = False) -> StormService | RoleSet:
    if obj["kind"] == "StormService":
        return from_wire(StormService, obj, lenient=lenient)
    return from_wire(RoleSet, obj, lenient=lenient)


def _subset(expected: Any, actual: Any, path: str = "") -> None:
    """Everything in `expected` is in `actual` (which may add defaults).

    A null in `expected` is "unset", so the key may be missing (as Go's encoder would drop it).
    """
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        for k, v in expected.items():
            if v is None or (v in ({}, []) and k not in actual):
                continue  # null = unset; omitempty drops empty collections of our own fields
            assert k in actual, f"{path}.{k} lost"
            _subset(v, actual[k], f"{path}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            _subset(e, a, f"{path}[{i}]")
    else:
        assert expected == actual, f"{path}: {expected!r} != {actual!r}"


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", cases.fixture_names())
def test_fixture_round_trips(name: str) -> None:
    raw = cases.load(name)
    model = parse(raw)
    wire = to_wire(model)
    assert parse(wire) == model
    assert to_wire(parse(wire)) == wire
    # Nothing of the manifest is lost; nulls are "unset" and dropped, as Go's encoder would.
    _subset(raw, wire)


@pytest.mark.parametrize("name", cases.fixture_names())
def test_pod_templates_are_kept_verbatim(name: str) -> None:
    raw = cases.load(name)
    model = parse(raw)
    raw_roles = raw["spec"]["roles"] if raw["kind"] == "RoleSet" else raw["spec"]["template"]["spec"]["roles"]
    roles = model.spec.roles if isinstance(model, RoleSet) else model.spec.template.spec.roles
    assert [role.template for role in roles] == [role["template"] for role in raw_roles]
    wire = to_wire(model)
    wire_roles = (
        wire["spec"]["roles"] if raw["kind"] == "RoleSet" else wire["spec"]["template"]["spec"]["roles"]
    )
    # creationTimestamp: null inside a raw template is the user's data and stays.
    assert [role["template"] for role in wire_roles] == [role["template"] for role in raw_roles]


def test_prefill_decode_fields() -> None:
    ss = from_wire(StormService, cases.load("stormservice-prefill-decode.yaml"))
    assert ss.metadata.name == "qwen-pd"
    assert ss.spec.replicas == 2
    assert ss.spec.resolved_mode == "Replica"
    assert ss.spec.update_strategy.max_surge == 1
    assert ss.spec.update_strategy.max_unavailable == "25%"
    roles = {role.name: role for role in ss.spec.template.spec.roles}
    assert roles["prefill"].pod_group_size == 2
    assert roles["prefill"].upgrade_order == 1
    assert roles["router"].pod_group_size == d.DEFAULT_POD_GROUP_SIZE
    assert roles["decode"].update_strategy.type == "InPlaceIfPossible"
    assert roles["decode"].update_strategy.max_unavailable == 1
    assert roles["decode"].template_spec["containers"][0]["resources"]["requests"]["cpu"] == "500m"
    assert ss.spec.template.metadata.annotations == {"team": "serving"}


def test_pooled_defaults() -> None:
    ss = from_wire(StormService, cases.load("stormservice-pooled.yaml"))
    assert ss.spec.resolved_mode == "Pooled"
    assert ss.spec.update_strategy.type == "InPlaceUpdate"
    assert ss.spec.revision_history_limit == d.DEFAULT_REVISION_HISTORY_LIMIT
    assert ss.spec.template.spec.update_strategy == "Parallel"
    assert [(x.name, x.replicas) for x in ss.spec.template.spec.roles] == [("prefill", 4), ("decode", 3)]
    role = ss.spec.template.spec.roles[0]
    assert role.update_strategy.type == "Recreate"
    assert role.recovery_policy == "ReplaceUnhealthy"
    assert role.update_strategy.max_surge is None


def test_roleset_standalone_fields() -> None:
    rs = from_wire(RoleSet, cases.load("roleset-standalone.yaml"))
    assert rs.spec.update_strategy == "Interleave"
    assert rs.spec.scheduling_strategy is not None
    assert rs.spec.scheduling_strategy.scheduler() == "coscheduling"
    cos = rs.spec.scheduling_strategy.coscheduling_scheduling_strategy
    assert cos is not None and cos.min_resources == {"nvidia.com/gpu": 4, "cpu": "8"}
    assert rs.spec.topology_policy is not None
    assert rs.spec.topology_policy.mode == "Preferred"
    prefill = rs.spec.role("prefill")
    assert prefill is not None
    assert prefill.recovery_policy == "Recreate"
    assert prefill.disruption_tolerance is not None and prefill.disruption_tolerance.max_unavailable == 1
    assert (prefill.update_strategy.max_surge, prefill.update_strategy.max_unavailable) == ("50%", 0)
    assert rs.spec.role("decode") is not None and rs.spec.role("decode").replicas == 0  # type: ignore[union-attr]
    assert rs.spec.role("nope") is None
    assert to_wire(prefill)["recoveryPolicy"] == "Recreate"


def test_from_server_keeps_everything() -> None:
    raw = cases.load("stormservice-from-server.yaml")
    ss = from_wire(StormService, raw)
    assert ss.metadata.generation == 3
    assert ss.metadata.resource_version == "18231"
    assert ss.metadata.finalizers == [c.FINALIZER_STORM_SERVICE]
    assert ss.metadata.model_extra is not None and "managedFields" in ss.metadata.model_extra
    assert ss.spec.mode == "Replica" and ss.spec.progress_deadline_seconds == 600
    assert ss.spec.paused is True
    strategy = ss.spec.template.spec.scheduling_strategy
    assert strategy is not None and strategy.volcano_scheduling_strategy is not None
    assert strategy.volcano_scheduling_strategy.min_task_member == {"worker": 2}
    godel = ss.spec.template.spec.roles[0].scheduling_strategy
    assert godel is not None and godel.scheduler() == "godel"
    st = ss.status
    assert st is not None
    assert (st.replicas, st.ready_replicas, st.not_ready_replicas) == (3, 2, 1)
    assert st.collision_count == 0 and st.current_revision == st.update_revision == "full-6b9f7c5d8"
    assert st.conditions[0] == Condition(
        type="Ready",
        status="False",
        reason="RoleSetsNotReady",
        message="2 of 3 RoleSets are ready",
        last_transition_time="2025-06-01T10:05:00Z",
        last_update_time="2025-06-01T10:05:00Z",
    )
    assert st.conditions[1].last_update_micro_time == "2025-06-01T10:05:00.123456Z"
    assert st.role_statuses[0].updated_ready_replicas == 6
    wire = to_wire(ss)
    assert wire["metadata"]["managedFields"] == raw["metadata"]["managedFields"]
    assert wire["status"]["collisionCount"] == 0


def test_roleset_from_aibrix_go_serialization() -> None:
    rs = from_wire(RoleSet, cases.load("roleset-from-aibrix.yaml"))
    owner = rs.metadata.controller_owner()
    assert owner is not None and owner.kind == "StormService" and owner.block_owner_deletion is True
    assert rs.metadata.annotations[c.role_revision_annotation("prefill")] == "2"
    assert rs.metadata.annotations[c.role_revision_name_annotation("prefill")] == "qwen-pd-5d8c7b9f4"
    role = rs.spec.roles[0]
    assert role.update_strategy.type == "Recreate"  # `updateStrategy: {}` takes the default
    assert role.disruption_tolerance is not None and role.disruption_tolerance.max_unavailable is None
    assert rs.status is not None and rs.status.observed_generation == 0
    assert rs.status.roles[0].not_ready_replicas == 0


# --- wire conventions ----------------------------------------------------------------------------


def test_camel_case_and_snake_case_inputs() -> None:
    a = RoleSpec.model_validate(
        {"name": "x", "podGroupSize": 3, "upgradeOrder": 2, "template": {"spec": {"containers": [{}]}}}
    )
    b = RoleSpec(name="x", pod_group_size=3, upgrade_order=2, template={"spec": {"containers": [{}]}})
    assert a == b
    assert to_wire(a)["podGroupSize"] == 3
    assert "pod_group_size" in a.model_dump()


def test_null_means_unset() -> None:
    obj = cases.minimal_storm_service()
    obj["spec"]["replicas"] = None
    obj["spec"]["updateStrategy"] = None
    obj["metadata"]["labels"] = None
    obj["status"] = None
    ss = from_wire(StormService, obj)
    assert ss.spec.replicas == d.DEFAULT_STORM_SERVICE_REPLICAS
    assert ss.spec.update_strategy.type == d.DEFAULT_STORM_SERVICE_UPDATE_STRATEGY
    assert ss.metadata.labels == {}
    assert ss.status is None


def test_wire_form_omits_empty_collections_but_not_inside_templates() -> None:
    meta = ObjectMeta(name="x", finalizers=[], labels={})
    assert to_wire(meta) == {"name": "x"}  # a merge patch from this never wipes finalizers
    role = RoleSpec(name="x", template={"spec": {"containers": [{"name": "c", "args": []}], "volumes": []}})
    assert to_wire(role)["template"] == {"spec": {"containers": [{"name": "c", "args": []}], "volumes": []}}
    # Python-side dumps are untouched.
    assert meta.model_dump()["finalizers"] == []


def test_exclude_unset_wire_form() -> None:
    ss = from_wire(StormService, cases.minimal_storm_service())
    wire = to_wire(ss, exclude_unset=True)
    assert "replicas" not in wire["spec"]
    assert "revisionHistoryLimit" not in wire["spec"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.replicas", "3"),
        ("spec.replicas", 1.0),
        ("spec.replicas", True),
        ("spec.paused", "true"),
        ("spec.template.metadata.labels", {"app": 1}),
        ("spec.updateStrategy.type", "Rolling"),
        ("spec.updateStrategy.maxSurge", 1.5),
        ("spec.updateStrategy.maxSurge", True),
        ("kind", "RoleSet"),
        ("apiVersion", "orchestration.aibrix.ai/v1"),
    ],
)
def test_types_are_strict(path: str, value: Any) -> None:
    obj = cases.minimal_storm_service()
    cases._set(path, value)(obj)
    with pytest.raises(ValidationError):
        from_wire(StormService, obj)


def test_unknown_spec_fields_are_ignored_but_metadata_extras_kept() -> None:
    obj = cases.minimal_storm_service()
    obj["spec"]["someFutureField"] = {"x": 1}
    obj["metadata"]["selfLink"] = "/apis/x"
    ss = from_wire(StormService, obj)
    wire = to_wire(ss)
    assert "someFutureField" not in wire["spec"]
    assert wire["metadata"]["selfLink"] == "/apis/x"


def test_role_requires_template() -> None:
    with pytest.raises(ValidationError):
        RoleSpec.model_validate({"name": "x"})


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases.INVALID, ids=lambda x: x.id)
def test_invalid_manifests_are_rejected(case: cases.Invalid) -> None:
    obj = case.build()
    with pytest.raises(ValidationError) as err:
        parse(obj)
    assert case.message in str(err.value)


@pytest.mark.parametrize("case", cases.INVALID, ids=lambda x: x.id)
def test_lenient_parse_accepts_what_older_crds_stored(case: cases.Invalid) -> None:
    # Everything here is structurally fine; only admission rules fail.
    parse(case.build(), lenient=True)


@pytest.mark.parametrize(
    ("name", "kind", "mutate"), cases.VALID_MUTATIONS, ids=[m[0] for m in cases.VALID_MUTATIONS]
)
def test_edge_values_are_accepted(name: str, kind: str, mutate: Any) -> None:
    obj = cases.minimal_storm_service() if kind == "StormService" else cases.minimal_role_set()
    mutate(obj)
    parse(obj)


def test_role_template_needs_containers() -> None:
    obj = cases.minimal_role_set()
    obj["spec"]["roles"][0]["template"] = {"metadata": {"labels": {"a": "b"}}}
    with pytest.raises(ValidationError, match=r.MSG_ROLE_TEMPLATE_CONTAINERS):
        from_wire(RoleSet, obj)
    obj["spec"]["roles"][0]["template"] = {"spec": {"containers": []}}
    with pytest.raises(ValidationError, match=r.MSG_ROLE_TEMPLATE_CONTAINERS):
        from_wire(RoleSet, obj)


def test_pod_template_errors_say_where() -> None:
    obj = cases.minimal_role_set()
    spec = obj["spec"]["roles"][0]["template"]["spec"]
    spec["initContainers"] = [{"name": "init", "image": "x"}, {"name": "Init_2", "image": "x"}]
    with pytest.raises(ValidationError, match=re.escape("spec.initContainers[1].name: 'Init_2'")):
        from_wire(RoleSet, obj)
    spec["initContainers"] = [
        {"name": "init", "image": "x", "ports": [{"containerPort": 80, "hostPort": 65536}]}
    ]
    with pytest.raises(ValidationError, match=re.escape("spec.initContainers[0].ports[0].hostPort: 65536")):
        from_wire(RoleSet, obj)


def test_too_many_roles() -> None:
    obj = cases.minimal_role_set()
    role = obj["spec"]["roles"][0]
    obj["spec"]["roles"] = [{**copy.deepcopy(role), "name": f"r{i}"} for i in range(c.MAX_ROLES + 1)]
    with pytest.raises(ValidationError, match="at most 64 roles"):
        from_wire(RoleSet, obj)
    obj["spec"]["roles"] = obj["spec"]["roles"][: c.MAX_ROLES]
    from_wire(RoleSet, obj)


def test_generate_name_objects_skip_name_rules() -> None:
    obj = cases.minimal_storm_service()
    obj["metadata"] = {"generateName": "x-"}
    assert from_wire(StormService, obj).metadata.generate_name == "x-"


def test_name_limits_match_generated_names() -> None:
    # <ss>-roleset- is the generateName base; the API server keeps at most 58 characters of it.
    longest_ss = "a" * c.MAX_STORM_SERVICE_NAME_LENGTH
    assert len(f"{longest_ss}-roleset-") == 58
    assert len(f"{longest_ss}-roleset-") + 5 <= c.MAX_ROLE_SET_NAME_LENGTH
    longest_role = "r" * c.MAX_ROLE_NAME_LENGTH
    key = c.role_revision_name_annotation(longest_role)
    prefix, name = key.split("/")
    assert len(name) == 63
    assert prefix + "/" == c.PREFIX


# --- label selectors -----------------------------------------------------------------------------

SELECTOR_CASES: list[tuple[dict[str, Any], dict[str, str], bool]] = [
    ({}, {}, True),
    ({}, {"a": "b"}, True),
    ({"matchLabels": {"a": "b"}}, {"a": "b", "c": "d"}, True),
    ({"matchLabels": {"a": "b"}}, {"a": "c"}, False),
    ({"matchLabels": {"a": "b"}}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["x", "y"]}]}, {"a": "y"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x"]}]}, {}, True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x"]}]}, {"a": "x"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"b": ""}, False),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"b": ""}, True),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
    (
        {
            "matchLabels": {"app": "x"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["gpu"]}],
        },
        {"app": "x", "tier": "cpu"},
        False,
    ),
]


@pytest.mark.parametrize(("selector", "labels", "expected"), SELECTOR_CASES)
def test_selector_matches(selector: dict[str, Any], labels: dict[str, str], expected: bool) -> None:
    assert LabelSelector.model_validate(selector).matches(labels) is expected


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({}, ""),
        ({"matchLabels": {"b": "2", "a": "1"}}, "a=1,b=2"),
        (
            {
                "matchLabels": {"app": "x"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["web", "api"]},
                    {"key": "env", "operator": "NotIn", "values": ["prod"]},
                    {"key": "zone", "operator": "Exists"},
                    {"key": "legacy", "operator": "DoesNotExist"},
                ],
            },
            "app=x,env notin (prod),!legacy,tier in (api,web),zone",
        ),
    ],
)
def test_selector_string(selector: dict[str, Any], expected: str) -> None:
    assert LabelSelector.model_validate(selector).to_selector_string() == expected


def test_selector_requirement_operator_is_checked() -> None:
    with pytest.raises(ValidationError):
        LabelSelectorRequirement.model_validate({"key": "a", "operator": "Equals", "values": ["x"]})


def test_spec_requires_selector_and_template() -> None:
    with pytest.raises(ValidationError):
        StormServiceSpec.model_validate({"template": {}})
    with pytest.raises(ValidationError):
        StormServiceSpec.model_validate({"selector": {"matchLabels": {"a": "b"}}})


def test_importing_the_api_builds_no_validator_until_one_is_used() -> None:
    # A fresh interpreter: this session's other tests have built validators already.
    probe = (
        "from pydantic._internal._mock_val_ser import MockValSer\n"
        "import apis.v1alpha1.types as t\n"
        "built = lambda m: not isinstance(m.__pydantic_validator__, MockValSer)\n"
        "assert not any(built(m) for m in (t.StormService, t.RoleSet, t.RoleSpec, t.StormServiceSpec))\n"
        "t.RoleSet.model_validate({'apiVersion': t.API_VERSION, 'kind': 'RoleSet', 'metadata': {'name': 'x'},"
        " 'spec': {'roles': []}}, strict=False)\n"
        "assert built(t.RoleSet) and not built(t.RoleSpec) and not built(t.StormService)\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=Path(__file__).resolve().parents[3])
