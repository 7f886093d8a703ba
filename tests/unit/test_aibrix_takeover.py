"""Taking over what AIBrix's controller made, on the fake client, from the objects AIBrix's own
controller created (../shared/reference/aibrix-objects, copied under tests/unit/fixtures/aibrix):
its revisions are recognised by content, its pods by content (relabelled, never replaced), its
PodSets are dissolved into their RoleSet."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.roleset import podsets
from controller.runtime.resources import (
    CONTROLLER_REVISIONS,
    CUSTOM_RESOURCE_DEFINITIONS,
    PODS,
    PODSETS,
    ROLESETS,
    SERVICES,
    STORMSERVICES,
)
from controller.stormservice.revisions import revision_content, revision_data
from tests.unit.roleset.harness import NS, Harness
from tests.unit.stormservice.harness import Env

FIXTURES = Path(__file__).parents[1] / "fixtures" / "aibrix"
FILES = ["vllm-replica.objects.yaml", "sglang-tp-1p1d.objects.yaml"]


def load(name: str) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all((FIXTURES / name).read_text()):
        if doc:
            objs += doc["items"] if doc.get("kind", "").endswith("List") else [doc]
    for obj in objs:
        obj["metadata"]["namespace"] = NS
    return objs


def of_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


@pytest.mark.parametrize("name", FILES)
def test_aibrix_revision_has_the_content_of_the_template_it_recorded(name: str) -> None:
    objs = load(name)
    (ss,) = of_kind(objs, "StormService")
    (rev,) = of_kind(objs, "ControllerRevision")
    assert revision_content(rev["data"]) == revision_content(revision_data(ss["spec"]["template"]))
    changed = copy.deepcopy(ss["spec"]["template"])
    changed["spec"]["roles"][0]["template"]["spec"]["containers"][0]["image"] = "other:1"
    assert revision_content(rev["data"]) != revision_content(revision_data(changed))


def test_revision_content_ignores_what_go_writes_for_unset_fields_only() -> None:
    def data(**role: Any) -> dict[str, Any]:
        base = {"name": "w", "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}
        return revision_data({"spec": {"roles": [{**base, **role}]}})

    same = [
        data(),
        data(replicas=3),
        # what our CRD defaults when the template is stored
        data(podGroupSize=1, recoveryPolicy="ReplaceUnhealthy", updateStrategy={"type": "Recreate"}),
        data(disruptionTolerance={}),
        data(template={"metadata": {"creationTimestamp": None}, "spec": {"containers": [{"name": "c", "image": "i", "resources": {}}]}}),
    ]  # fmt: skip
    assert len({revision_content(d) for d in same}) == 1
    limits = [
        data(
            template={
                "spec": {"containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": q}}}]}
            }
        )
        for q in ("1", 1, "1000m")
    ]
    assert len({revision_content(d) for d in limits}) == 1
    assert revision_content(data(stateful=True)) != revision_content(data())
    assert revision_content(data(podGroupSize=2)) != revision_content(data())


@pytest.mark.parametrize("name", FILES)
async def test_stormservice_reuses_aibrix_revision_and_leaves_the_roleset_alone(name: str) -> None:
    objs = load(name)
    kinds = {
        "StormService": STORMSERVICES,
        "ControllerRevision": CONTROLLER_REVISIONS,
        "RoleSet": ROLESETS,
        "Service": SERVICES,
    }
    async with Env() as env:
        for obj in objs:
            if obj["kind"] in kinds:
                env.seed(kinds[obj["kind"]], obj)
        (ss,) = of_kind(objs, "StormService")
        (rev,) = of_kind(objs, "ControllerRevision")
        env.client.clear_actions()
        for _ in range(3):
            await env.sync(ss["metadata"]["name"])
        writes = {(a.verb, a.resource) for a in env.client.writes()}
        # The headless Service AIBrix made has none of our labels: they are added (no recreate).
        assert writes <= {("create", "services"), ("patch", "services"), ("patch", "stormservices/status")}, (
            writes
        )
        status = env.status(ss["metadata"]["name"])
        assert status["updateRevision"] == status["currentRevision"] == rev["metadata"]["name"]


def roleset_harness(objs: list[dict[str, Any]]) -> Harness:
    h = Harness()
    h.client.seed(CUSTOM_RESOURCE_DEFINITIONS, {"metadata": {"name": "podsets.orchestration.aibrix.ai"}})
    for obj in of_kind(objs, "RoleSet"):
        h.client.seed(ROLESETS, obj)
    for obj in of_kind(objs, "PodSet"):
        h.client.seed(PODSETS, obj)
    for obj in of_kind(objs, "Pod"):
        h.client.seed(PODS, obj)
    return h


@pytest.mark.parametrize("name", FILES)
async def test_roleset_takes_over_pods_and_podsets_without_replacing_a_pod(name: str) -> None:
    objs = load(name)
    (rs,) = of_kind(objs, "RoleSet")
    uid = rs["metadata"]["uid"]
    h = roleset_harness(objs)
    await h.start()
    try:
        await h.until(lambda: h.ctrl._podset_store() is not None)
        before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in h.client.objects(PODS, NS)}
        h.client.clear_actions()
        for _ in range(5):
            await h.sync(rs["metadata"]["name"])
            await h.settle()
        assert not [a for a in h.client.writes() if a.resource == "pods" and a.verb in ("create", "delete")]
        pods = h.client.objects(PODS, NS)
        assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods} == before
        for pod in pods:
            (ref,) = [r for r in pod["metadata"]["ownerReferences"] if r.get("controller")]
            assert (ref["kind"], ref["uid"]) == ("RoleSet", uid)
        assert h.client.objects(PODSETS, NS) == []
        role_hashes = {p["metadata"]["labels"]["role-template-hash"] for p in pods}
        assert not role_hashes & {p["metadata"]["labels"]["role-template-hash"] for p in of_kind(objs, "Pod")}
        status = h.get(rs["metadata"]["name"])["status"]
        for role in status["roles"]:
            assert role["updatedReplicas"] == role["replicas"], role
    finally:
        await h.stop()


def test_podset_patches_test_what_they_change() -> None:
    pod = {"metadata": {"uid": "p", "ownerReferences": [{"uid": "other"}, {"uid": "ps", "controller": True}]}}
    ref = {"kind": "RoleSet", "uid": "rs", "controller": True}
    assert podsets.reparent_patch(pod, "ps", ref) == [
        {"op": "test", "path": "/metadata/uid", "value": "p"},
        {"op": "test", "path": "/metadata/ownerReferences/1/uid", "value": "ps"},
        {"op": "replace", "path": "/metadata/ownerReferences/1", "value": ref},
    ]
    assert podsets.reparent_patch(pod, "not-its-podset", ref) is None
    podset = {"metadata": {"uid": "ps", "finalizers": ["a", podsets.PODSET_FINALIZER]}}
    assert podsets.finalizer_patch(podset) == [
        {"op": "test", "path": "/metadata/uid", "value": "ps"},
        {"op": "test", "path": "/metadata/finalizers/1", "value": podsets.PODSET_FINALIZER},
        {"op": "remove", "path": "/metadata/finalizers/1"},
    ]
    assert podsets.finalizer_patch({"metadata": {"uid": "ps", "finalizers": ["a"]}}) is None
