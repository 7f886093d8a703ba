"""Valid and invalid manifests as data, shared by the model tests and usable by integration tests
that apply them to a real API server (each invalid case names the CRD rule message it must hit).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from apis.v1alpha1 import rules as r

FIXTURES = Path(__file__).parent / "fixtures"

Obj = dict[str, Any]


def load(name: str) -> Obj:
    data = yaml.safe_load((FIXTURES / name).read_text())
    assert isinstance(data, dict)
    return data


def fixture_names() -> list[str]:
    return sorted(p.name for p in FIXTURES.glob("*.yaml"))


def minimal_storm_service(name: str = "demo") -> Obj:
    return {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "StormService",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": "demo"}},
            "template": {
                "metadata": {"labels": {"app": "demo"}},
                "spec": {
                    "roles": [
                        {
                            "name": "prefill",
                            "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}},
                        },
                        {
                            "name": "decode",
                            "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}},
                        },
                    ]
                },
            },
        },
    }


def minimal_role_set(name: str = "demo-roleset-abcde") -> Obj:
    return {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "RoleSet",
        "metadata": {"name": name},
        "spec": {
            "roles": [
                {"name": "worker", "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
            ]
        },
    }


@dataclass(frozen=True)
class Invalid:
    id: str
    kind: str  # "StormService" | "RoleSet"
    mutate: Callable[[Obj], None]
    #: The CRD message (CEL message, or for plain OpenAPI keywords the model's wording).
    message: str
    #: True when the API server reports this through a CEL rule with exactly `message`.
    cel: bool = True
    #: For a plain OpenAPI keyword (cel=False): the API server's own words, which it must say.
    server_message: str | None = None

    def build(self) -> Obj:
        obj = minimal_storm_service() if self.kind == "StormService" else minimal_role_set()
        obj = copy.deepcopy(obj)
        self.mutate(obj)
        return obj


def _ss_roles(o: Obj) -> list[Obj]:
    roles: list[Obj] = o["spec"]["template"]["spec"]["roles"]
    return roles


def _set(path: str, value: Any) -> Callable[[Obj], None]:
    """Set a dotted path ("spec.replicas", "spec.template.spec.roles.0.name")."""

    def mutate(o: Obj) -> None:
        keys = path.split(".")
        cur: Any = o
        for k in keys[:-1]:
            cur = cur[int(k)] if isinstance(cur, list) else cur.setdefault(k, {})
        last = keys[-1]
        if isinstance(cur, list):
            cur[int(last)] = value
        else:
            cur[last] = value

    return mutate


def _dup_role(o: Obj) -> None:
    _ss_roles(o)[1]["name"] = "prefill"


def _long_selector_label(o: Obj) -> None:
    o["spec"]["selector"]["matchLabels"]["app"] = "a" * 64
    o["spec"]["template"]["metadata"]["labels"]["app"] = "a" * 64


def _many_roles(o: Obj) -> None:
    role = o["spec"]["roles"][0]
    o["spec"]["roles"] = [{**copy.deepcopy(role), "name": f"r{i}"} for i in range(65)]


ROLE0 = "spec.template.spec.roles.0"

KINDS = ("StormService", "RoleSet")


def pod_spec_path(kind: str) -> str:
    """Role 0's pod spec, as a `_set` path."""
    return f"{ROLE0 if kind == 'StormService' else 'spec.roles.0'}.template.spec"


def pod_spec_field(kind: str) -> str:
    """Role 0's pod spec, as the API server names it in errors."""
    return f"spec.{'template.spec.' if kind == 'StormService' else ''}roles[0].template.spec"


def _container(**fields: Any) -> Obj:
    return {"name": "c", "image": "nginx", **fields}


_DNS1123_SHOULD_MATCH = "should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'"


def _pod_template_invalid(kind: str) -> list[Invalid]:
    """Templates of which the API server would create no pod, refused at admission (issue 8)."""
    spec, at = pod_spec_path(kind), pod_spec_field(kind)
    k = "ss" if kind == "StormService" else "rs"
    return [
        Invalid(
            f"{k}-container-name-underscore",
            kind,
            _set(f"{spec}.containers.0.name", "Engine_1"),
            r.MSG_CONTAINER_NAME_DNS,
            cel=False,
            server_message=f'{at}.containers[0].name: Invalid value: "Engine_1": '
            f"{at}.containers[0].name in body {_DNS1123_SHOULD_MATCH}",
        ),
        Invalid(
            f"{k}-container-name-64",
            kind,
            _set(f"{spec}.containers.0.name", "c" * 64),
            r.MSG_CONTAINER_NAME_DNS,
            cel=False,
            server_message=f"{at}.containers[0].name: Too long: may not be more than 63 bytes",
        ),
        Invalid(
            f"{k}-init-container-name-leading-dash",
            kind,
            _set(f"{spec}.initContainers", [_container(name="-init")]),
            r.MSG_CONTAINER_NAME_DNS,
            cel=False,
            server_message=f'{at}.initContainers[0].name: Invalid value: "-init": '
            f"{at}.initContainers[0].name in body {_DNS1123_SHOULD_MATCH}",
        ),
        Invalid(
            f"{k}-container-names-duplicate",
            kind,
            _set(f"{spec}.containers", [_container(), _container(image="busybox")]),
            r.MSG_CONTAINER_NAMES_UNIQUE,
            cel=False,
            server_message=f"{at}.containers[1]: Duplicate value:",
        ),
        Invalid(
            f"{k}-container-port-70000",
            kind,
            _set(f"{spec}.containers.0.ports", [{"containerPort": 70000}]),
            r.MSG_CONTAINER_PORT_RANGE,
            cel=False,
            server_message=f"{at}.containers[0].ports[0].containerPort: Invalid value: 70000: "
            f"{at}.containers[0].ports[0].containerPort in body should be less than or equal to 65535",
        ),
        Invalid(
            f"{k}-container-port-0",
            kind,
            _set(f"{spec}.containers.0.ports", [{"containerPort": 0}]),
            r.MSG_CONTAINER_PORT_RANGE,
            cel=False,
            server_message=f"{at}.containers[0].ports[0].containerPort: Invalid value: 0: "
            f"{at}.containers[0].ports[0].containerPort in body should be greater than or equal to 1",
        ),
        Invalid(
            f"{k}-init-container-port-65536",
            kind,
            _set(f"{spec}.initContainers", [_container(ports=[{"containerPort": 65536}])]),
            r.MSG_CONTAINER_PORT_RANGE,
            cel=False,
            server_message=f"{at}.initContainers[0].ports[0].containerPort in body "
            "should be less than or equal to 65535",
        ),
        Invalid(
            f"{k}-host-port-70000",
            kind,
            _set(f"{spec}.containers.0.ports", [{"containerPort": 80, "hostPort": 70000}]),
            r.MSG_HOST_PORT_RANGE,
            cel=False,
            server_message=f"{at}.containers[0].ports[0].hostPort: Invalid value: 70000: "
            f"{at}.containers[0].ports[0].hostPort in body should be less than or equal to 65535",
        ),
        Invalid(
            f"{k}-host-port-negative",
            kind,
            _set(f"{spec}.containers.0.ports", [{"containerPort": 80, "hostPort": -1}]),
            r.MSG_HOST_PORT_RANGE,
            cel=False,
            server_message=f"{at}.containers[0].ports[0].hostPort: Invalid value: -1: "
            f"{at}.containers[0].ports[0].hostPort in body should be greater than or equal to 0",
        ),
        Invalid(
            f"{k}-grpc-probe-port-0",
            kind,
            _set(f"{spec}.containers.0.readinessProbe", {"grpc": {"port": 0}}),
            r.MSG_GRPC_PORT_RANGE,
            cel=False,
            server_message=f"{at}.containers[0].readinessProbe.grpc.port: Invalid value: 0: "
            f"{at}.containers[0].readinessProbe.grpc.port in body should be greater than or equal to 1",
        ),
        Invalid(
            f"{k}-restart-policy-sometimes",
            kind,
            _set(f"{spec}.restartPolicy", "Sometimes"),
            r.MSG_RESTART_POLICY,
            cel=False,
            server_message=f'{at}.restartPolicy: Unsupported value: "Sometimes": supported values: '
            '"Always", "OnFailure", "Never", ""',
        ),
        Invalid(
            f"{k}-ephemeral-containers",
            kind,
            _set(f"{spec}.ephemeralContainers", [{"name": "debug", "image": "busybox"}]),
            r.MSG_NO_EPHEMERAL_CONTAINERS,
        ),
    ]


INVALID: list[Invalid] = [
    # names
    Invalid(
        "ss-name-too-long", "StormService", _set("metadata.name", "a" * 50), r.MSG_STORM_SERVICE_NAME_LENGTH
    ),
    Invalid(
        "ss-name-starts-with-digit",
        "StormService",
        _set("metadata.name", "1abc"),
        r.MSG_STORM_SERVICE_NAME_DNS,
    ),
    Invalid("ss-name-with-dot", "StormService", _set("metadata.name", "a.b"), r.MSG_STORM_SERVICE_NAME_DNS),
    Invalid("rs-name-too-long", "RoleSet", _set("metadata.name", "a" * 64), r.MSG_ROLE_SET_NAME_LENGTH),
    Invalid("rs-name-with-dot", "RoleSet", _set("metadata.name", "a.b"), r.MSG_ROLE_SET_NAME_DNS),
    Invalid("role-name-uppercase", "StormService", _set(f"{ROLE0}.name", "Prefill"), r.MSG_ROLE_NAME_DNS),
    Invalid("role-name-underscore", "RoleSet", _set("spec.roles.0.name", "my_role"), r.MSG_ROLE_NAME_DNS),
    Invalid("role-name-too-long", "StormService", _set(f"{ROLE0}.name", "r" * 45), r.MSG_ROLE_NAME_LENGTH),
    Invalid("role-names-duplicate", "StormService", _dup_role, r.MSG_ROLE_NAMES_UNIQUE),
    # numbers
    Invalid("ss-replicas-negative", "StormService", _set("spec.replicas", -1), r.MSG_REPLICAS_MIN, cel=False),
    Invalid(
        "role-replicas-negative", "RoleSet", _set("spec.roles.0.replicas", -1), r.MSG_REPLICAS_MIN, cel=False
    ),
    Invalid(
        "pod-group-size-0",
        "StormService",
        _set(f"{ROLE0}.podGroupSize", 0),
        r.MSG_POD_GROUP_SIZE_RANGE,
        cel=False,
    ),
    Invalid(
        "pod-group-size-101",
        "StormService",
        _set(f"{ROLE0}.podGroupSize", 101),
        r.MSG_POD_GROUP_SIZE_RANGE,
        cel=False,
    ),
    Invalid(
        "upgrade-order-0", "RoleSet", _set("spec.roles.0.upgradeOrder", 0), r.MSG_UPGRADE_ORDER_MIN, cel=False
    ),
    Invalid(
        "revision-history-negative",
        "StormService",
        _set("spec.revisionHistoryLimit", -1),
        r.MSG_REVISION_HISTORY_LIMIT_MIN,
        cel=False,
    ),
    # int-or-percent
    Invalid(
        "ss-max-surge-no-percent",
        "StormService",
        _set("spec.updateStrategy.maxSurge", "50"),
        r.MSG_INT_OR_PERCENT,
    ),
    Invalid(
        "ss-max-unavailable-negative",
        "StormService",
        _set("spec.updateStrategy.maxUnavailable", -1),
        r.MSG_INT_OR_PERCENT,
    ),
    Invalid(
        "ss-max-unavailable-fraction",
        "StormService",
        _set("spec.updateStrategy.maxUnavailable", "2.5%"),
        r.MSG_INT_OR_PERCENT,
    ),
    Invalid(
        "role-max-surge-word",
        "RoleSet",
        _set("spec.roles.0.updateStrategy.maxSurge", "half"),
        r.MSG_INT_OR_PERCENT,
    ),
    Invalid(
        "role-disruption-no-percent",
        "StormService",
        _set(f"{ROLE0}.disruptionTolerance.maxUnavailable", "10"),
        r.MSG_INT_OR_PERCENT,
    ),
    Invalid(
        "ss-disruption-negative-percent",
        "StormService",
        _set("spec.disruptionTolerance.maxUnavailable", "-5%"),
        r.MSG_INT_OR_PERCENT,
    ),
    # scheduling
    Invalid(
        "two-scheduling-strategies",
        "RoleSet",
        _set(
            "spec.schedulingStrategy",
            {"godelSchedulingStrategy": {"minMember": 2}, "volcanoSchedulingStrategy": {"minMember": 2}},
        ),
        r.MSG_ONE_SCHEDULING_STRATEGY,
    ),
    Invalid(
        "two-role-scheduling-strategies",
        "StormService",
        _set(
            f"{ROLE0}.schedulingStrategy",
            {
                "coschedulingSchedulingStrategy": {"minMember": 2},
                "volcanoSchedulingStrategy": {"minMember": 2},
            },
        ),
        r.MSG_ONE_SCHEDULING_STRATEGY,
    ),
    # selector
    Invalid("selector-empty", "StormService", _set("spec.selector", {}), r.MSG_SELECTOR_EMPTY),
    Invalid(
        "selector-label-mismatch",
        "StormService",
        _set("spec.selector.matchLabels", {"app": "other"}),
        r.MSG_SELECTOR_MISMATCH,
    ),
    Invalid(
        "selector-label-missing-in-template",
        "StormService",
        _set("spec.selector.matchLabels", {"app": "demo", "tier": "gpu"}),
        r.MSG_SELECTOR_MISMATCH,
    ),
    Invalid(
        "selector-template-without-labels",
        "StormService",
        _set("spec.template.metadata", {}),
        r.MSG_SELECTOR_MISMATCH,
    ),
    Invalid(
        "selector-in-not-satisfied",
        "StormService",
        _set("spec.selector.matchExpressions", [{"key": "app", "operator": "In", "values": ["x", "y"]}]),
        r.MSG_SELECTOR_MISMATCH,
    ),
    Invalid(
        "selector-notin-violated",
        "StormService",
        _set("spec.selector.matchExpressions", [{"key": "app", "operator": "NotIn", "values": ["demo"]}]),
        r.MSG_SELECTOR_MISMATCH,
    ),
    Invalid(
        "selector-exists-violated",
        "StormService",
        _set("spec.selector.matchExpressions", [{"key": "tier", "operator": "Exists"}]),
        r.MSG_SELECTOR_MISMATCH,
    ),
    Invalid(
        "selector-doesnotexist-violated",
        "StormService",
        _set("spec.selector.matchExpressions", [{"key": "app", "operator": "DoesNotExist"}]),
        r.MSG_SELECTOR_MISMATCH,
    ),
    Invalid(
        "selector-in-without-values",
        "StormService",
        _set("spec.selector.matchExpressions", [{"key": "app", "operator": "In"}]),
        r.MSG_SELECTOR_REQUIREMENT_VALUES,
    ),
    Invalid(
        "selector-exists-with-values",
        "StormService",
        _set("spec.selector.matchExpressions", [{"key": "app", "operator": "Exists", "values": ["demo"]}]),
        r.MSG_SELECTOR_REQUIREMENT_VALUES,
    ),
    # topology
    Invalid(
        "topology-key-invalid",
        "RoleSet",
        _set("spec.topologyPolicy", {"scope": "RoleSet", "key": "not a key"}),
        r.MSG_TOPOLOGY_KEY,
        cel=False,
    ),
    # bounds published for CEL cost (or by AIBrix), which the models check too
    Invalid(
        "progress-deadline-negative",
        "StormService",
        _set("spec.progressDeadlineSeconds", -1),
        "should be greater than or equal to 0",
        cel=False,
        server_message="spec.progressDeadlineSeconds in body should be greater than or equal to 0",
    ),
    Invalid(
        "selector-label-value-64",
        "StormService",
        _long_selector_label,
        "may not be more than 63 bytes",
        cel=False,
        server_message="spec.selector.matchLabels.app: Too long: may not be more than 63 bytes",
    ),
    Invalid(
        "template-label-value-64",
        "StormService",
        _set("spec.template.metadata.labels", {"app": "demo", "owner": "o" * 64}),
        "may not be more than 63 bytes",
        cel=False,
        server_message="spec.template.metadata.labels.owner: Too long: may not be more than 63 bytes",
    ),
    Invalid(
        "max-surge-10-characters",
        "StormService",
        _set("spec.updateStrategy.maxSurge", "100000000%"),
        "may not be more than 8 bytes",
        cel=False,
        server_message="spec.updateStrategy.maxSurge: Too long: may not be more than 8 bytes",
    ),
    Invalid(
        "roles-65",
        "RoleSet",
        _many_roles,
        "at most 64 roles are allowed",
        cel=False,
        server_message="spec.roles: Too many: 65: must have at most 64 items",
    ),
    # pod templates
    *(case for kind in KINDS for case in _pod_template_invalid(kind)),
]


VALID_MUTATIONS: list[tuple[str, str, Callable[[Obj], None]]] = [
    ("ss-name-49", "StormService", _set("metadata.name", "a" * 49)),
    ("rs-name-63", "RoleSet", _set("metadata.name", "a" * 63)),
    ("role-name-44", "StormService", _set(f"{ROLE0}.name", "r" * 44)),
    ("role-name-digits", "RoleSet", _set("spec.roles.0.name", "0")),
    ("percent-0", "StormService", _set("spec.updateStrategy.maxSurge", "0%")),
    ("percent-over-100", "StormService", _set("spec.updateStrategy.maxSurge", "200%")),
    ("int-0", "RoleSet", _set("spec.roles.0.updateStrategy.maxUnavailable", 0)),
    ("pod-group-size-100", "StormService", _set(f"{ROLE0}.podGroupSize", 100)),
    ("replicas-0", "StormService", _set("spec.replicas", 0)),
    ("upgrade-order-1", "RoleSet", _set("spec.roles.0.upgradeOrder", 1)),
    (
        "selector-notin-absent-key",
        "StormService",
        _set("spec.selector.matchExpressions", [{"key": "x", "operator": "NotIn", "values": ["y"]}]),
    ),
    (
        "selector-subset-of-labels",
        "StormService",
        _set("spec.template.metadata.labels", {"app": "demo", "extra": "1"}),
    ),
    (
        "one-scheduling-strategy",
        "RoleSet",
        _set("spec.schedulingStrategy", {"volcanoSchedulingStrategy": {"queue": "q"}}),
    ),
    ("no-roles", "RoleSet", _set("spec.roles", [])),
    # pod templates: the limits of what the API server accepts in a pod
    *(
        (f"{kind}-{name}", kind, _set(f"{pod_spec_path(kind)}.{path}", value))
        for kind in KINDS
        for name, path, value in [
            ("container-name-63", "containers.0.name", "c" * 63),
            ("container-name-digits-and-dashes", "containers.0.name", "0-engine-1"),
            (
                "port-limits",
                "containers.0.ports",
                [
                    {"containerPort": 1},
                    {"containerPort": 65535, "hostPort": 65535, "name": "http-metrics"},
                    {"containerPort": 8000, "hostPort": 0},
                    {"containerPort": 8000, "protocol": "UDP", "hostPort": 1},
                ],
            ),
            ("grpc-probe-port-65535", "containers.0.livenessProbe", {"grpc": {"port": 65535}}),
            (
                "init-and-sidecar-containers",
                "initContainers",
                [
                    _container(name="init", ports=[{"containerPort": 9000}]),
                    _container(name="sidecar", restartPolicy="Always"),
                ],
            ),
            ("restart-policy-never", "restartPolicy", "Never"),
            ("restart-policy-on-failure", "restartPolicy", "OnFailure"),
            ("restart-policy-always", "restartPolicy", "Always"),
            ("restart-policy-empty", "restartPolicy", ""),
            ("ephemeral-containers-empty", "ephemeralContainers", []),
        ]
    ),
]
