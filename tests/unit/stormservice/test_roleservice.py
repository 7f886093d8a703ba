"""Per-role Services (`RoleSpec.service`): the model's rules, the pure builder and diff (tables),
then the sync against a FakeClient with real informers."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from apis.v1alpha1 import StormService
from apis.v1alpha1 import rules as r
from controller.runtime.errors import ApiError, Forbidden
from controller.runtime.resources import SERVICES, STORMSERVICES
from controller.stormservice.labels import roleset_spec
from controller.stormservice.naming import MAX_OBJECT_NAME_LENGTH, role_service_name
from controller.stormservice.revisions import revision_content, revision_data
from controller.stormservice.roleservice import (
    ANNOTATION_APPLIED_METADATA,
    desired_role_services,
    plan_role_services,
    role_service_patch,
    template_ports,
)
from tests.unit.apis import cases
from tests.unit.stormservice.harness import API, NS, Env, storm

pytestmark = pytest.mark.timeout(30)

Obj = dict[str, Any]
UID = "ss-uid"
SELECTOR = {"storm-service-name": "llm", "role-name": "prefill"}
HTTP = {"name": "http", "containerPort": 8000}


def template(*containers: list[Obj]) -> Obj:
    return {
        "spec": {
            "containers": [
                {"name": f"c{i}", "image": "x", "ports": ports} for i, ports in enumerate(containers)
            ]
        }
    }


def with_service(
    obj: Obj, role: str = "prefill", container_ports: list[Obj] | None = None, **service: Any
) -> Obj:
    """`obj` with `service` on `role`, whose container declares `container_ports` (HTTP)."""
    for rl in obj["spec"]["template"]["spec"]["roles"]:
        if rl["name"] == role:
            rl["service"] = service
            rl["template"]["spec"]["containers"][0]["ports"] = (
                [HTTP] if container_ports is None else container_ports
            )
    return obj


def ss_obj(**service: Any) -> Obj:
    obj = storm()
    obj["metadata"]["uid"] = UID
    return with_service(obj, **service)


def body(**service: Any) -> Obj:
    return desired_role_services(ss_obj(**service))["llm-prefill"].body or {}


def stored(service: Obj, **spec: Any) -> Obj:
    """`service` as the API server returns it: defaults filled, a clusterIP, `spec` on top."""
    out = copy.deepcopy(service)
    out["metadata"].update(uid="svc-uid", resourceVersion="5")
    out["spec"].setdefault("clusterIP", "10.0.0.7")
    out["spec"]["sessionAffinity"] = "None"
    out["spec"].update(spec)
    return out


# ---------------------------------------------------------------------------------------------
# the model


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ({"ports": [{"port": 80}, {"port": 81, "name": "b"}]}, r.MSG_SERVICE_PORT_NAMES),
        ({"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]}, r.MSG_SERVICE_PORT_NAMES),
        ({"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]}, r.MSG_SERVICE_PORTS_UNIQUE),
        ({"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30080}]}, r.MSG_SERVICE_NODE_PORT_TYPE),
        ({"type": "Headless", "ports": [{"port": 80, "nodePort": 30080}]}, r.MSG_SERVICE_NODE_PORT_TYPE),
        ({"ports": [{"port": 0}]}, r.MSG_SERVICE_PORT_RANGE),
        ({"ports": [{"port": 80, "targetPort": "a-much-too-long-name"}]}, r.MSG_SERVICE_TARGET_PORT),
        ({"ports": [{"port": 80, "name": "Http"}]}, r.MSG_SERVICE_PORT_NAME),
        ({"type": "ExternalName"}, "Headless"),
    ],
)
def test_the_model_refuses_what_the_crd_refuses(service: Obj, message: str) -> None:
    obj = cases.minimal_storm_service()
    obj["spec"]["template"]["spec"]["roles"][0]["service"] = service
    with pytest.raises(ValidationError, match=message[:40].replace("(", r"\(")):
        StormService.model_validate(obj)


@pytest.mark.parametrize(
    "service",
    [
        {},
        {"type": "Headless"},
        {"ports": [{"port": 80}]},
        {"ports": [{"port": 53, "name": "dns"}, {"port": 53, "name": "dns-udp", "protocol": "UDP"}]},
        {"type": "NodePort", "ports": [{"port": 80, "targetPort": "http", "nodePort": 30080}]},
        {"type": "LoadBalancer", "annotations": {"lb.example/internal": "true"}, "labels": {"tier": "edge"}},
    ],
)
def test_the_model_admits(service: Obj) -> None:
    obj = cases.minimal_storm_service()
    obj["spec"]["template"]["spec"]["roles"][0]["service"] = service
    role = StormService.model_validate(obj).spec.template.spec.roles[0]
    assert role.service is not None
    assert role.service.type == service.get("type", "ClusterIP")


def test_no_service_is_todays_behaviour() -> None:
    role = StormService.model_validate(cases.minimal_storm_service()).spec.template.spec.roles[0]
    assert role.service is None


def test_service_is_not_part_of_a_revision_nor_of_a_roleset() -> None:
    plain = storm()["spec"]["template"]
    served = with_service(storm(), type="Headless", container_ports=[])["spec"]["template"]
    for rl in served["spec"]["roles"]:
        rl["template"]["spec"]["containers"][0].pop("ports", None)
    assert revision_content(revision_data(served)) == revision_content(revision_data(plain))
    assert roleset_spec(served) == roleset_spec(plain)


# ---------------------------------------------------------------------------------------------
# names and ports


def test_role_service_name_is_short_and_a_dns_1035_label() -> None:
    assert role_service_name("llm", "prefill") == "llm-prefill"
    long = role_service_name("s" * 49, "r" * 44)
    assert len(long) <= MAX_OBJECT_NAME_LENGTH and long[0] == "s" and long.endswith("-" + "r" * 44)
    assert long != role_service_name("s" * 48 + "t", "r" * 44)


@pytest.mark.parametrize(
    ("containers", "want"),
    [
        ([], []),
        ([[]], []),
        ([[HTTP]], [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]),
        # unnamed: named after protocol and port, targeted by number
        ([[{"containerPort": 9000}]], [{"name": "tcp-9000", "port": 9000, "targetPort": 9000, "protocol": "TCP"}]),
        (
            [[HTTP, {"containerPort": 5353, "protocol": "UDP"}], [{"name": "metrics", "containerPort": 9090}]],
            [
                {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"},
                {"name": "udp-5353", "port": 5353, "targetPort": 5353, "protocol": "UDP"},
                {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"},
            ],
        ),
        # the same port and protocol twice: once
        ([[HTTP], [{"name": "web", "containerPort": 8000}]], [
            {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
        ]),
        # a name two containers use: the second by number (a name resolves to the first's port)
        ([[HTTP], [{"name": "http", "containerPort": 8001}]], [
            {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"},
            {"name": "tcp-8001", "port": 8001, "targetPort": 8001, "protocol": "TCP"},
        ]),
    ],
)  # fmt: skip
def test_template_ports(containers: list[list[Obj]], want: list[Obj]) -> None:
    assert template_ports(template(*containers)) == want


# ---------------------------------------------------------------------------------------------
# desired Services


def test_desired_service_wire_format() -> None:
    assert body(type="ClusterIP") == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "llm-prefill",
            "namespace": NS,
            "labels": SELECTOR,
            "ownerReferences": [
                {
                    "apiVersion": API,
                    "kind": "StormService",
                    "name": "llm",
                    "uid": UID,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": SELECTOR,
            "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}],
        },
    }


@pytest.mark.parametrize(
    ("service", "ports", "spec"),
    [
        # Headless: ClusterIP with clusterIP None; no port needed
        ({"type": "Headless"}, [], {"type": "ClusterIP", "clusterIP": "None", "selector": SELECTOR}),
        (
            {"type": "Headless", "publishNotReadyAddresses": True},
            [HTTP],
            {
                "type": "ClusterIP",
                "clusterIP": "None",
                "selector": SELECTOR,
                "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}],
                "publishNotReadyAddresses": True,
            },
        ),
        # given ports win over the template's; defaults filled as the API server fills them
        (
            {"type": "NodePort", "ports": [{"port": 80, "targetPort": "http", "nodePort": 30080}]},
            [HTTP],
            {
                "type": "NodePort",
                "selector": SELECTOR,
                "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP", "nodePort": 30080}],
            },
        ),
        (
            {"type": "LoadBalancer", "ports": [{"port": 443, "name": "https", "appProtocol": "https"}]},
            [],
            {
                "type": "LoadBalancer",
                "selector": SELECTOR,
                "ports": [{"name": "https", "port": 443, "targetPort": 443, "protocol": "TCP", "appProtocol": "https"}],
            },
        ),
    ],
)  # fmt: skip
def test_desired_service_spec(service: Obj, ports: list[Obj], spec: Obj) -> None:
    assert body(container_ports=ports, **service)["spec"] == spec


@pytest.mark.parametrize("type_", ["ClusterIP", "NodePort", "LoadBalancer"])
def test_no_port_to_serve_is_no_service_and_a_problem(type_: str) -> None:
    [want] = desired_role_services(ss_obj(container_ports=[], type=type_)).values()
    assert want.body is None
    assert want.problem is not None and "role prefill" in want.problem and type_ in want.problem


def test_labels_and_annotations_and_what_was_applied() -> None:
    meta = body(labels={"tier": "edge", "role-name": "mine"}, annotations={"lb.example/internal": "true"})[
        "metadata"
    ]
    assert meta["labels"] == {"tier": "edge", **SELECTOR}, "the selector's labels are ours"
    assert meta["annotations"] == {
        "lb.example/internal": "true",
        ANNOTATION_APPLIED_METADATA: '{"annotations":["lb.example/internal"],"labels":["role-name","tier"]}',
    }


def test_no_service_no_desired() -> None:
    assert desired_role_services({**storm(), "metadata": {"name": "llm", "namespace": NS, "uid": UID}}) == {}


# ---------------------------------------------------------------------------------------------
# the diff


ANNOTATED = {"labels": {"tier": "edge"}, "annotations": {"a.example/x": "1"}}


@pytest.mark.parametrize(
    ("service", "existing", "want"),
    [
        # the API server's defaults and a NodePort it picked are no difference
        ({}, stored(body()), None),
        (
            {"type": "NodePort"},
            stored(body(type="NodePort"), ports=[
                {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP", "nodePort": 31234}
            ]),
            None,
        ),
        # a NodePort asked for is one
        (
            {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]},
            stored(body(type="NodePort", ports=[{"port": 80}]), ports=[
                {"port": 80, "targetPort": 80, "protocol": "TCP", "nodePort": 31234}
            ]),
            {"spec": {"ports": [{"port": 80, "targetPort": 80, "protocol": "TCP", "nodePort": 30080}]}},
        ),
        # a type change in place (the ports stay: the API server drops the node ports)
        ({"type": "ClusterIP"}, stored(body(type="NodePort")), {"spec": {"type": "ClusterIP"}}),
        ({"type": "LoadBalancer"}, stored(body()), {"spec": {"type": "LoadBalancer"}}),
        # ports from a changed template
        (
            {},
            stored(body(), ports=[{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]),
            {"spec": {"ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]}},
        ),
        # a selector edited by hand: back, without the extra key
        (
            {},
            stored(body(), selector={**SELECTOR, "role-name": "decode", "x": "y"}),
            {"spec": {"selector": {**SELECTOR, "x": None}}},
        ),
        ({"publishNotReadyAddresses": True}, stored(body()), {"spec": {"publishNotReadyAddresses": True}}),
        ({}, stored(body(publishNotReadyAddresses=True)), {"spec": {"publishNotReadyAddresses": False}}),
        # labels and annotations: set, changed, and removed when dropped from the spec (only ours)
        (
            ANNOTATED,
            stored(body()),
            {
                "metadata": {
                    "labels": {"tier": "edge"},
                    "annotations": {
                        "a.example/x": "1",
                        ANNOTATION_APPLIED_METADATA: '{"annotations":["a.example/x"],"labels":["tier"]}',
                    },
                }
            },
        ),
        (
            {},
            (lambda s: (s["metadata"]["labels"].update(other="kept"), s)[1])(stored(body(**ANNOTATED))),
            {
                "metadata": {
                    "labels": {"tier": None},
                    "annotations": {"a.example/x": None, ANNOTATION_APPLIED_METADATA: None},
                }
            },
        ),
    ],
)  # fmt: skip
def test_role_service_patch(service: Obj, existing: Obj, want: Obj | None) -> None:
    assert role_service_patch(existing, body(**service)) == want


def _foreign(name: str) -> Obj:
    return {"metadata": {"name": name, "namespace": NS, "uid": "other"}, "spec": {"clusterIP": "10.0.0.9"}}


def _owned(name: str, role: str, **spec: Any) -> Obj:
    svc = stored(body())
    svc["metadata"].update(name=name)
    svc["metadata"]["labels"] = {**SELECTOR, "role-name": role}
    svc["spec"].update(spec)
    return svc


@pytest.mark.parametrize(
    ("service", "cached", "want"),
    [
        ({}, {}, [("create", "llm-prefill")]),
        ({}, {"llm-prefill": stored(body())}, []),
        ({}, {"llm-prefill": _foreign("llm-prefill")}, [("conflict", "llm-prefill")]),
        ({"container_ports": []}, {}, [("no-ports", "llm-prefill")]),
        ({"type": "Headless"}, {"llm-prefill": stored(body())}, [("recreate", "llm-prefill")]),
        ({}, {"llm-prefill": stored(body(type="Headless"))}, [("recreate", "llm-prefill")]),
        ({"type": "NodePort"}, {"llm-prefill": stored(body())}, [("patch", "llm-prefill")]),
        # being deleted: wait for it to go
        ({}, {"llm-prefill": {**_foreign("llm-prefill"), "metadata": {
            **_foreign("llm-prefill")["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}}}, []),
        # a role no longer asking (or gone): deleted; the one asking is created
        ({}, {"llm-decode": _owned("llm-decode", "decode")}, [("create", "llm-prefill"), ("delete", "llm-decode")]),
    ],
)  # fmt: skip
def test_plan_role_services(service: Obj, cached: dict[str, Obj], want: list[tuple[str, str]]) -> None:
    obj = ss_obj(**service)
    owned = [s for s in cached.values() if s["metadata"]["uid"] != "other"]
    actions = plan_role_services(obj, desired_role_services(obj), owned, cached.get)
    assert [(a.action, a.name) for a in actions] == want


# ---------------------------------------------------------------------------------------------
# the sync


def services_in(env: Env) -> dict[str, Obj]:
    return {s["metadata"]["name"]: s for s in env.client.objects(SERVICES, NS)}


def service_writes(env: Env) -> list[tuple[str, str | None]]:
    return [(a.verb, a.name) for a in env.client.writes() if a.resource == "services"]


def seed_storm(env: Env, **service: Any) -> Obj:
    return env.seed(STORMSERVICES, with_service(storm(replicas=2), **service))


async def test_creates_the_service_then_writes_nothing_when_equal() -> None:
    async with Env() as env:
        ss = seed_storm(env)
        await env.sync()
        svc = services_in(env)["llm-prefill"]
        assert svc["spec"]["selector"] == SELECTOR
        assert [p["name"] for p in svc["spec"]["ports"]] == ["http"]
        [ref] = svc["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("StormService", ss["metadata"]["uid"], True)
        assert set(services_in(env)) == {"llm", "llm-prefill"}, "the headless Service as before"
        assert env.recorder.reasons().count("CreatedService") == 1
        cond = env.condition("RoleServicesSynced")
        assert cond is not None
        assert (cond["status"], cond["reason"]) == ("True", "RoleServicesSynced")
        assert "llm-prefill (ClusterIP)" in cond["message"]

        env.client.clear_actions()
        await env.sync()
        await env.sync()
        assert service_writes(env) == [], "no write when nothing changed"


async def test_headless_change_recreates_and_removal_deletes() -> None:
    async with Env() as env:
        seed_storm(env)
        await env.sync()
        old_uid = services_in(env)["llm-prefill"]["metadata"]["uid"]

        await env.edit(lambda spec: spec["template"]["spec"]["roles"][0]["service"].update(type="Headless"))
        env.client.clear_actions()
        await env.sync()
        await env.sync()  # the deletion seen: created again
        assert service_writes(env) == [("delete", "llm-prefill"), ("create", "llm-prefill")]
        svc = services_in(env)["llm-prefill"]
        assert svc["metadata"]["uid"] != old_uid and svc["spec"]["clusterIP"] == "None"
        assert "RecreatingService" in env.recorder.reasons()

        await env.edit(lambda spec: spec["template"]["spec"]["roles"][0].pop("service"))
        await env.sync()
        assert set(services_in(env)) == {"llm"}
        assert "DeletedService" in env.recorder.reasons()
        assert env.condition("RoleServicesSynced") is None, "no condition once no role asks"


@pytest.mark.parametrize("labelled", [True, False])
async def test_a_foreign_service_is_left_alone_and_reported(labelled: bool) -> None:
    async with Env() as env:
        seed_storm(env)
        foreign = env.seed(
            SERVICES,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "llm-prefill",
                    "namespace": NS,
                    **({"labels": {"storm-service-name": "someone"}} if labelled else {}),
                },
                "spec": {"selector": {"app": "mine"}, "ports": [{"port": 1}]},
            },
        )
        requeue = await env.sync()
        assert env.client.get_object(SERVICES, NS, "llm-prefill") == foreign, "untouched"
        if not labelled:
            assert requeue is not None and requeue <= 60, "outside the cache: looked at again later"
        cond = env.condition("RoleServicesSynced")
        assert cond is not None
        assert (cond["status"], cond["reason"]) == ("False", "ServiceConflict")
        assert "llm-prefill" in cond["message"]
        assert len(env.rolesets()) == 2, "a Service conflict does not hold up RoleSets"
        await env.sync()
        env.client.clear_actions()
        await env.sync()
        assert service_writes(env) == [], "reported, never written"
        assert env.recorder.reasons().count("ServiceConflict") == 1, "reported once"


async def test_no_port_is_reported_in_the_condition() -> None:
    async with Env() as env:
        seed_storm(env, container_ports=[])
        await env.sync()
        assert set(services_in(env)) == {"llm"}
        cond = env.condition("RoleServicesSynced")
        assert cond is not None
        assert (cond["status"], cond["reason"]) == ("False", "NoServicePorts")
        assert env.recorder.reasons().count("NoServicePorts") == 1


async def test_an_api_error_is_reported_and_does_not_stall_rolesets() -> None:
    async with Env() as env:
        env.seed(STORMSERVICES, storm(replicas=2))
        await env.sync()

        def serve_and_scale(spec: Obj) -> None:
            spec["replicas"] = 3
            with_service({"spec": spec})

        await env.edit(serve_and_scale)
        env.client.inject_error("create", "services", Forbidden(403, "Forbidden", "no RBAC"), times=1)
        with pytest.raises(ApiError):
            await env.sync()
        assert len(env.rolesets()) == 3, "scaled in the same pass"
        cond = env.condition("RoleServicesSynced")
        assert cond is not None and cond["reason"] == "ServiceSyncFailed" and "no RBAC" in cond["message"]
        assert "ServiceSyncFailed" in env.recorder.reasons()
        await env.sync()
        assert "llm-prefill" in services_in(env)
        cond = env.condition("RoleServicesSynced")
        assert cond is not None and cond["status"] == "True"


async def test_service_events_wake_the_owner() -> None:
    async with Env() as env:
        seed_storm(env)
        await env.sync()
        while len(env.ctrl.queue):
            key = await env.ctrl.queue.get()
            assert key is not None
            env.ctrl.queue.done(key)
        svc = services_in(env)["llm-prefill"]
        svc["spec"]["selector"] = {"x": "y"}
        env.seed(SERVICES, svc)
        await env.settle()
        assert len(env.ctrl.queue) == 1 and await env.ctrl.queue.get() == f"{NS}/llm"
