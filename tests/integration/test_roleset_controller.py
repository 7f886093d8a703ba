"""The RoleSet controller on the real control plane (kube-apiserver + etcd + scheduler + kwok).

The controller runs in the test process (the same RoleSetController, informers, ApiClient and
EventRecorder as in production), so a test can stop and restart it and read its metrics. Pods on
the fake nodes become Running/Ready through kwok; failures and new imageIDs are driven with
status patches, as a kubelet would write them. kwok's own in-place restart (the stage
pod-container-image-update) is off for these pods: the in-place tests report the new images
themselves, when and as they need to (same digest, an update that never completes, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from controller.roleset import labels as L
from controller.roleset.controller import RoleSetController
from controller.roleset.podcontrol import KubeObjectControl
from controller.roleset.sync import SyncConfig, template_hash
from controller.runtime import metrics as runtime_metrics
from controller.runtime.client import Obj, create_client
from controller.runtime.errors import AlreadyExists, ApiError, NotFound
from controller.runtime.events import EventRecorder
from controller.runtime.informer import InformerFactory
from controller.runtime.loop import run_workers
from controller.runtime.resources import (
    CUSTOM_RESOURCE_DEFINITIONS,
    EVENTS,
    POD_DISRUPTION_BUDGETS,
    PODS,
    ROLESETS,
    Resource,
)
from controller.runtime.workqueue import RateLimitingQueue

pytestmark = pytest.mark.integration

IMAGE_V1 = "registry.k8s.io/pause:3.10"
IMAGE_V2 = "registry.k8s.io/pause:3.9"
POLL = 0.1


# ---------------------------------------------------------------------------------------------
# helpers


class Controller:
    """The RoleSet controller running in this process, restartable."""

    def __init__(self, kubeconfig: str, namespace: str, *, deadline: float = 600.0) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.deadline = deadline
        self._stack: contextlib.AsyncExitStack | None = None
        self.ctrl: RoleSetController | None = None

    async def start(self) -> None:
        stack = contextlib.AsyncExitStack()
        client = await create_client(self.kubeconfig)
        stack.push_async_callback(client.close)
        recorder = EventRecorder(client, "stormservice-controller")
        await recorder.start()
        stack.push_async_callback(recorder.stop)
        factory = InformerFactory(client, namespace=self.namespace)
        self.ctrl = RoleSetController(
            informers=factory,
            control=KubeObjectControl(client),
            recorder=recorder,
            config=SyncConfig(inplace_deadline_seconds=self.deadline),
            queue=RateLimitingQueue("roleset"),
        )
        factory.start()
        stack.push_async_callback(factory.stop)
        # Twice: a PodGroup informer added during the first wait (its CRD was listed) is not
        # part of that wait's snapshot.
        assert await factory.wait_for_sync(timeout=30) or await factory.wait_for_sync(timeout=30)
        workers = asyncio.create_task(run_workers(self.ctrl, 2))

        async def stop_workers() -> None:
            assert self.ctrl is not None
            self.ctrl.queue.shut_down()
            workers.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await workers

        stack.push_async_callback(stop_workers)
        self._stack = stack

    async def stop(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None


@pytest.fixture
async def controller(kubeconfig: str, namespace: str, crds: list[str]) -> AsyncIterator[Controller]:
    c = Controller(kubeconfig, namespace)
    await c.start()
    yield c
    await c.stop()


async def eventually(
    check: Callable[[], Any],
    what: str,
    timeout: float = 60.0,  # noqa: ASYNC109 (a deadline for polling, not a cancel scope)
    interval: float = POLL,
) -> Any:
    """Await `check()` (sync or async) until it returns a truthy value; returns that value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        last = result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


KWOK_RESTARTS_OFF = {"pod-container-image-update.stage.kwok.x-k8s.io/disabled": "true"}


def role(name: str, replicas: int = 2, image: str = IMAGE_V1, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "replicas": replicas,
        "template": {
            "metadata": {"labels": {"app": name}, "annotations": dict(KWOK_RESTARTS_OFF)},
            "spec": {
                "containers": [{"name": "main", "image": image, "env": [{"name": "USER_VAR", "value": "x"}]}]
            },
        },
        **extra,
    }


def roleset(name: str, roles: list[dict[str, Any]], **spec: Any) -> Obj:
    return {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "RoleSet",
        "metadata": {
            "name": name,
            "labels": {L.STORM_SERVICE_NAME_LABEL: "svc"},
            "annotations": {L.ROLESET_INDEX_ANNOTATION: "0"},
        },
        "spec": {"roles": roles, **spec},
    }


class Api:
    def __init__(self, kube: Any, namespace: str) -> None:
        self.kube = kube
        self.ns = namespace

    async def create(self, obj: Obj) -> Obj:
        result: Obj = await self.kube.create(ROLESETS, self.ns, obj)
        return result

    async def get(self, name: str) -> Obj:
        result: Obj = await self.kube.get(ROLESETS, self.ns, name)
        return result

    async def patch_spec(self, name: str, mutate: Callable[[dict[str, Any]], None]) -> None:
        obj = await self.get(name)
        spec = obj["spec"]
        mutate(spec)
        await self.kube.patch(ROLESETS, self.ns, name, {"spec": spec}, patch_type="merge")

    async def pods(self, rs: str, role_name: str | None = None, *, live: bool = True) -> list[Obj]:
        selector = f"{L.ROLESET_NAME_LABEL}={rs}" + (f",{L.ROLE_NAME_LABEL}={role_name}" if role_name else "")
        items: list[Obj] = (await self.kube.list(PODS, self.ns, label_selector=selector))["items"]
        if live:
            items = [p for p in items if not p["metadata"].get("deletionTimestamp")]
        return sorted(items, key=lambda p: p["metadata"]["name"])

    async def status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = (await self.get(name)).get("status") or {}
        return status

    async def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        for c in (await self.status(name)).get("conditions") or []:
            if c["type"] == type_:
                return dict(c)
        return None

    async def events(self) -> list[Obj]:
        items: list[Obj] = (await self.kube.list(EVENTS, self.ns))["items"]
        return items

    async def event_reasons(self) -> list[str]:
        return [e.get("reason", "") for e in await self.events()]

    async def set_pod_status(self, pod: Obj, **changes: Any) -> None:
        await self.kube.patch(
            PODS,
            self.ns,
            pod["metadata"]["name"],
            {"status": changes},
            patch_type="strategic",
            subresource="status",
        )

    async def run_new_images(self, pod: Obj, image_id: str = "sha256:new") -> None:
        """What a kubelet reports after restarting containers on new images."""
        statuses = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": f"{image_id}-{c['name']}",
                "ready": True,
                "restartCount": 1,
                "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}},
            }
            for c in pod["spec"]["containers"]
        ]
        await self.set_pod_status(pod, containerStatuses=statuses)


def is_ready(pod: Obj) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def pod_hash(pod: Obj) -> str:
    return str(pod["metadata"]["labels"].get(L.ROLE_TEMPLATE_HASH_LABEL, ""))


async def settled(api: Api, name: str, replicas: dict[str, int]) -> bool:
    """Every role has exactly its replicas, all ready and updated, reported in a current status."""
    obj = await api.get(name)
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return False
    got = {r["name"]: r for r in status.get("roles") or []}
    for rname, n in replicas.items():
        r = got.get(rname)
        if r is None or (r["replicas"], r["readyReplicas"], r["updatedReadyReplicas"]) != (n, n, n):
            return False
    return set(got) == set(replicas)


def counter(name: str, **labels: str) -> float:
    value = runtime_metrics.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


@pytest.fixture
def api(kube: Any, namespace: str) -> Api:
    return Api(kube, namespace)


# ---------------------------------------------------------------------------------------------
# stateless roles, status, labels and env


async def test_stateless_scale_status_labels_env(controller: Controller, api: Api, namespace: str) -> None:
    created_before = counter("stormservice_roleset_pods_created_total", role="worker", reason="scale-up")
    obj = roleset("web", [role("worker", replicas=3)])
    obj["metadata"]["annotations"][L.role_revision_annotation("worker")] = "3"
    obj["metadata"]["annotations"][L.role_revision_name_annotation("worker")] = "svc-abc"
    rs = await api.create(obj)
    await eventually(lambda: settled(api, "web", {"worker": 3}), "3 ready pods")
    pods = await api.pods("web")
    assert len(pods) == 3
    h = template_hash(rs["spec"]["roles"][0]["template"])
    for pod in pods:
        meta = pod["metadata"]
        assert meta["name"].startswith("web-worker-")
        assert meta["labels"]["roleset-name"] == "web"
        assert meta["labels"]["role-name"] == "worker"
        assert meta["labels"]["role-template-hash"] == h
        assert meta["labels"]["storm-service-name"] == "svc"
        assert meta["labels"]["app"] == "worker"
        assert meta["labels"][L.ROLE_REVISION_LABEL] == "3"
        assert meta["labels"][L.ROLE_REVISION_NAME_LABEL] == "svc-abc"
        assert meta["annotations"][L.ROLESET_INDEX_ANNOTATION] == "0"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "orchestration.aibrix.ai/v1alpha1",
                "kind": "RoleSet",
                "name": "web",
                "uid": rs["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert pod["spec"]["subdomain"] == "svc"
        # Every pod has a DNS name under the headless Service, stateless ones too.
        assert pod["spec"]["hostname"] == meta["name"]
        env = [(e["name"], e.get("value")) for e in pod["spec"]["containers"][0]["env"]]
        assert env == [
            ("STORM_SERVICE_NAME", "svc"),
            ("ROLESET_NAME", "web"),
            ("ROLESET_INDEX", "0"),
            ("ROLE_NAME", "worker"),
            ("ROLE_TEMPLATE_HASH", h),
            ("USER_VAR", "x"),
        ]
    ready = await api.condition("web", "Ready")
    assert ready is not None and ready["status"] == "True"
    assert (
        counter("stormservice_roleset_pods_created_total", role="worker", reason="scale-up") - created_before
        == 3
    )

    # Scale down: newest first, down to 1; then a terminated pod is replaced.
    deleted = "stormservice_roleset_pods_deleted_total"
    scaled_down_before = counter(deleted, role="worker", reason="scale-down")
    terminated_before = counter(deleted, role="worker", reason="terminated")
    await api.patch_spec("web", lambda s: s["roles"][0].__setitem__("replicas", 1))
    await eventually(lambda: settled(api, "web", {"worker": 1}), "scaled to 1")
    assert counter(deleted, role="worker", reason="scale-down") - scaled_down_before == 2
    (survivor,) = await api.pods("web")
    assert survivor["metadata"]["creationTimestamp"] == min(p["metadata"]["creationTimestamp"] for p in pods)
    await api.set_pod_status(survivor, phase="Failed")

    async def replaced() -> bool:
        pods_now = await api.pods("web")
        return (
            len(pods_now) == 1
            and pods_now[0]["metadata"]["uid"] != survivor["metadata"]["uid"]
            and is_ready(pods_now[0])
        )

    await eventually(replaced, "failed pod replaced")
    assert counter(deleted, role="worker", reason="terminated") - terminated_before == 1
    assert counter(deleted, role="worker", reason="scale-down") - scaled_down_before == 2


async def test_no_double_creation(controller: Controller, api: Api) -> None:
    """Slow-start batches and overlapping events: every pod is created exactly once."""
    await api.create(roleset("burst", [role("worker", replicas=12)]))
    await eventually(lambda: settled(api, "burst", {"worker": 12}), "12 ready pods", timeout=90)
    await asyncio.sleep(2)
    uids = {p["metadata"]["uid"] for p in await api.pods("burst", live=False)}
    assert len(uids) == 12, "every pod created exactly once"


async def test_removed_role_and_foreign_pods(
    controller: Controller, api: Api, kube: Any, namespace: str
) -> None:
    rs = await api.create(roleset("mix", [role("a", replicas=1), role("b", replicas=2)]))
    await eventually(lambda: settled(api, "mix", {"a": 1, "b": 2}), "roles ready")
    # Controlled by another object (an orphan with these labels would be adopted, see
    # test_orphan_adopted_foreign_pod_left_alone).
    await kube.create(PODS, namespace, await foreign_pod(kube, namespace, "foreign", "mix", "b"))
    await api.patch_spec("mix", lambda s: s.__setitem__("roles", [s["roles"][0]]))
    await eventually(lambda: settled(api, "mix", {"a": 1}), "role b gone from status")

    async def b_pods_gone() -> bool:
        return [p["metadata"]["name"] for p in await api.pods("mix", "b")] == ["foreign"]

    await eventually(b_pods_gone, "role b pods deleted, the foreign pod kept")
    assert (await kube.get(PODS, namespace, "foreign"))["metadata"]["uid"]
    assert rs["metadata"]["uid"]


CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")


async def foreign_pod(kube: Any, namespace: str, name: str, rs: str, role_name: str) -> Obj:
    """A pod carrying a RoleSet's labels but controlled by a ConfigMap (a real object, so that a
    garbage collector would not remove the pod either)."""
    owner = await kube.create(CONFIGMAPS, namespace, {"metadata": {"name": f"{name}-owner"}})
    return {
        "metadata": {
            "name": name,
            "labels": {L.ROLESET_NAME_LABEL: rs, L.ROLE_NAME_LABEL: role_name},
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {"containers": [{"name": "c", "image": IMAGE_V1}]},
    }


def controller_uid(pod: Obj) -> str | None:
    for ref in pod["metadata"].get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref["uid"])
    return None


async def test_orphan_adopted_foreign_pod_left_alone(
    controller: Controller, api: Api, kube: Any, namespace: str
) -> None:
    # Before the RoleSet exists: an orphan that looks like one of its pods (as left behind by
    # `kubectl delete --cascade=orphan` of an earlier RoleSet of the same name), and a pod with
    # the same labels controlled by someone else.
    obj = roleset("adopt", [role("w", replicas=2)])
    h = template_hash(obj["spec"]["roles"][0]["template"])
    labels = {
        L.ROLESET_NAME_LABEL: "adopt",
        L.ROLE_NAME_LABEL: "w",
        L.ROLE_TEMPLATE_HASH_LABEL: h,
        L.STORM_SERVICE_NAME_LABEL: "svc",
        "app": "w",
    }
    orphan = {
        "metadata": {"name": "adopt-w-orphan", "labels": labels},
        "spec": {"containers": [{"name": "main", "image": IMAGE_V1}]},
    }
    orphan_uid = (await kube.create(PODS, namespace, orphan))["metadata"]["uid"]
    foreign = await kube.create(
        PODS, namespace, await foreign_pod(kube, namespace, "adopt-w-foreign", "adopt", "w")
    )

    created_before = counter("stormservice_roleset_pods_created_total", role="w", reason="scale-up")
    rs = await api.create(obj)
    uid = rs["metadata"]["uid"]
    await eventually(lambda: settled(api, "adopt", {"w": 2}), "2 ready pods")
    adopted = await kube.get(PODS, namespace, "adopt-w-orphan")
    assert adopted["metadata"]["uid"] == orphan_uid, "the orphan itself, not a replacement"
    assert adopted["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "orchestration.aibrix.ai/v1alpha1",
            "kind": "RoleSet",
            "name": "adopt",
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    await asyncio.sleep(2)
    # Counted: two replicas took the orphan plus one new pod, never a third.
    ever = {p["metadata"]["uid"]: p for p in await api.pods("adopt", live=False)}
    ours = [p for p in ever.values() if controller_uid(p) == uid]
    assert len(ours) == 2 and orphan_uid in {p["metadata"]["uid"] for p in ours}
    assert (
        counter("stormservice_roleset_pods_created_total", role="w", reason="scale-up") - created_before == 1
    )
    assert set(ever) == {p["metadata"]["uid"] for p in ours} | {foreign["metadata"]["uid"]}
    still = await kube.get(PODS, namespace, "adopt-w-foreign")
    assert still["metadata"]["ownerReferences"] == foreign["metadata"]["ownerReferences"]
    managers = {f.get("manager") for f in still["metadata"].get("managedFields") or []}
    # KubeObjectControl's field manager; the test's own client creates as stormservice-controller.
    assert "stormservice-roleset-controller" not in managers, f"foreign pod written: {managers}"
    assert not still["metadata"].get("deletionTimestamp")


async def test_pod_whose_label_is_removed_is_released_and_replaced(
    controller: Controller, api: Api, kube: Any, namespace: str
) -> None:
    """`kubectl label pod P roleset-name-`, the usual way to take a pod out for debugging: as
    with a ReplicaSet, the pod keeps running, is no longer ours (so it outlives the RoleSet), and
    a replacement takes its place."""
    rs = await api.create(roleset("rel", [role("w", replicas=2)]))
    uid = rs["metadata"]["uid"]
    await eventually(lambda: settled(api, "rel", {"w": 2}), "2 ready pods")
    victim = (await api.pods("rel"))[0]
    name = victim["metadata"]["name"]
    await kube.patch(
        PODS, namespace, name, [{"op": "remove", "path": f"/metadata/labels/{L.ROLESET_NAME_LABEL}"}],
        patch_type="json",
    )  # fmt: skip

    async def released() -> bool:
        pod = await kube.get(PODS, namespace, name)
        return not pod["metadata"].get("ownerReferences")

    await eventually(released, "the pod released")
    await eventually(lambda: settled(api, "rel", {"w": 2}), "a replacement")
    ours = await api.pods("rel")
    assert len(ours) == 2 and name not in {p["metadata"]["name"] for p in ours}
    assert all(controller_uid(p) == uid for p in ours)
    pod = await kube.get(PODS, namespace, name)
    assert pod["metadata"]["uid"] == victim["metadata"]["uid"] and not pod["metadata"].get(
        "deletionTimestamp"
    )

    # Deleting the RoleSet garbage-collects its pods, not the released one.
    await kube.delete(ROLESETS, namespace, "rel", propagation_policy="Foreground")

    async def collected() -> bool:
        return not await api.pods("rel", live=False)

    await eventually(collected, "the RoleSet's pods collected", timeout=90)
    pod = await kube.get(PODS, namespace, name)
    assert not pod["metadata"].get("deletionTimestamp"), "the released pod outlives the RoleSet"


# ---------------------------------------------------------------------------------------------
# stateful roles


async def test_stateful_slots(controller: Controller, api: Api, kube: Any, namespace: str) -> None:
    rs = await api.create(roleset("st", [role("db", replicas=3, stateful=True)]))
    await eventually(lambda: settled(api, "st", {"db": 3}), "3 stateful pods")
    h = template_hash(rs["spec"]["roles"][0]["template"])
    pods = await api.pods("st")
    assert [p["metadata"]["name"] for p in pods] == [f"st-db-{h}-{i}" for i in range(3)]
    for i, pod in enumerate(pods):
        assert pod["metadata"]["labels"][L.ROLE_REPLICA_INDEX_LABEL] == str(i)
        assert pod["metadata"]["annotations"][L.ROLE_REPLICA_INDEX_ANNOTATION] == str(i)
        assert pod["spec"]["hostname"] == pod["metadata"]["name"]
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["ROLE_REPLICA_INDEX"] == str(i)

    # A lost pod comes back with the same name.
    victim = pods[1]
    await kube.delete(PODS, namespace, victim["metadata"]["name"])

    async def back() -> bool:
        now = {p["metadata"]["name"]: p for p in await api.pods("st")}
        p = now.get(victim["metadata"]["name"])
        return p is not None and p["metadata"]["uid"] != victim["metadata"]["uid"] and len(now) == 3

    await eventually(back, "slot 1 refilled under the same name")

    # A pod with a bad index (owned by the RoleSet) is removed.
    bad = {
        "metadata": {
            "name": "st-db-bad",
            "labels": {L.ROLESET_NAME_LABEL: "st", L.ROLE_NAME_LABEL: "db", L.ROLE_TEMPLATE_HASH_LABEL: h},
            "annotations": {L.ROLE_REPLICA_INDEX_ANNOTATION: "7"},
            "ownerReferences": [
                {
                    "apiVersion": "orchestration.aibrix.ai/v1alpha1",
                    "kind": "RoleSet",
                    "name": "st",
                    "uid": rs["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {"containers": [{"name": "main", "image": IMAGE_V1}]},
    }
    await kube.create(PODS, namespace, bad)

    async def bad_gone() -> bool:
        return "st-db-bad" not in {p["metadata"]["name"] for p in await api.pods("st")}

    await eventually(bad_gone, "bad-index pod deleted")
    assert len(await api.pods("st")) == 3


# ---------------------------------------------------------------------------------------------
# pod groups


async def test_pod_groups(controller: Controller, api: Api, kube: Any, namespace: str) -> None:
    rs = await api.create(roleset("grp", [role("infer", replicas=2, podGroupSize=3)]))
    await eventually(lambda: settled(api, "grp", {"infer": 2}), "2 groups of 3")
    h = template_hash(rs["spec"]["roles"][0]["template"])
    pods = await api.pods("grp")
    assert len(pods) == 6
    for pod in pods:
        labels = pod["metadata"]["labels"]
        i, k = labels[L.ROLE_REPLICA_INDEX_LABEL], labels[L.POD_GROUP_INDEX_LABEL]
        assert pod["metadata"]["name"] == f"grp-infer-{h}-{i}-{k}"
        assert labels[L.PODSET_NAME_LABEL] == f"grp-infer-{h}-{i}"
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["PODSET_NAME"] == f"grp-infer-{h}-{i}"
        assert env["POD_GROUP_INDEX"] == k and env["POD_GROUP_SIZE"] == "3" and env["ROLE_REPLICA_INDEX"] == i
        assert env["LEADER_ADDRESS"] == f"grp-infer-{h}-{i}-0.svc.{namespace}.svc"

    # One member not ready -> that instance is not ready.
    member = next(p for p in pods if p["metadata"]["name"].endswith("-1-2"))
    # A failing readiness probe; Ready=False alone is what kwok, as a kubelet, sets back to True.
    await api.set_pod_status(
        member,
        conditions=[{"type": "Ready", "status": "False"}, {"type": "ContainersReady", "status": "False"}],
    )

    async def one_not_ready() -> bool:
        roles = (await api.status("grp")).get("roles") or []
        return bool(roles) and (roles[0]["replicas"], roles[0]["readyReplicas"]) == (2, 1)

    await eventually(one_not_ready, "group 1 counted not ready")

    # A failed member is replaced alone (ReplaceUnhealthy).
    others = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods if p is not member}
    await api.set_pod_status(member, phase="Failed")

    async def member_replaced() -> bool:
        now = {p["metadata"]["name"]: p for p in await api.pods("grp")}
        m = now.get(member["metadata"]["name"])
        return (
            m is not None
            and m["metadata"]["uid"] != member["metadata"]["uid"]
            and is_ready(m)
            and len(now) == 6
        )

    await eventually(member_replaced, "failed member replaced")
    now = {p["metadata"]["name"]: p["metadata"]["uid"] for p in await api.pods("grp")}
    assert all(now[n] == uid for n, uid in others.items()), "only the failed member was replaced"

    # Recreate: a failed member takes its whole group down and back up.
    await api.patch_spec("grp", lambda s: s["roles"][0].__setitem__("recoveryPolicy", "Recreate"))
    group0 = {
        p["metadata"]["name"]: p["metadata"]["uid"]
        for p in await api.pods("grp")
        if p["metadata"]["labels"][L.ROLE_REPLICA_INDEX_LABEL] == "0"
    }
    victim = await kube.get(PODS, namespace, sorted(group0)[1])
    await api.set_pod_status(victim, phase="Failed")

    async def group_recreated() -> bool:
        now = {p["metadata"]["name"]: p for p in await api.pods("grp")}
        return all(
            n in now and now[n]["metadata"]["uid"] != uid and is_ready(now[n]) for n, uid in group0.items()
        )

    await eventually(group_recreated, "whole group recreated")

    # Changing podGroupSize replaces instances.
    await api.patch_spec("grp", lambda s: s["roles"][0].__setitem__("podGroupSize", 2))
    await eventually(lambda: settled(api, "grp", {"infer": 2}), "groups of 2")

    async def groups_of_two() -> bool:
        ps = await api.pods("grp")
        return len(ps) == 4 and all(
            p["metadata"]["annotations"].get(L.POD_GROUP_SIZE_ANNOTATION) == "2" for p in ps
        )

    await eventually(groups_of_two, "4 pods in groups of 2")


async def test_groups_whose_pods_lost_their_group_metadata_are_kept(
    controller: Controller, api: Api, kube: Any, namespace: str
) -> None:
    """A group-size annotation (and the member label) removed from every pod, by hand or by
    another tool: the groups are still whole and ready, and no pod is deleted for it."""
    strategy = {"maxUnavailable": 1}
    await api.create(roleset("lost", [role("w", replicas=3, podGroupSize=2, updateStrategy=strategy)]))
    await eventually(lambda: settled(api, "lost", {"w": 3}), "3 ready groups")
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in await api.pods("lost")}
    assert len(before) == 6
    for name in before:
        await kube.patch(
            PODS,
            namespace,
            name,
            {
                "metadata": {
                    "annotations": {L.POD_GROUP_SIZE_ANNOTATION: None},
                    "labels": {L.POD_GROUP_INDEX_LABEL: None} if name.endswith("-1") else {},
                }
            },
        )
    assert controller.ctrl is not None
    ctrl = controller.ctrl

    def seen_and_idle() -> bool:
        # The old pods still cached have lost the annotation (if the controller deleted some,
        # they are gone from the cache and the check below says so).
        cached = [p for p in ctrl.pods.store.list() if p["metadata"]["name"] in before]
        stripped = bool(cached) and all(
            L.POD_GROUP_SIZE_ANNOTATION not in p["metadata"].get("annotations", {}) for p in cached
        )
        # A look-again minutes ahead (the expectations' 5-minute expiry, scheduled when a sync
        # ran before the cache saw its creates) is not work about to happen.
        due = ctrl.queue.next_due_in()
        return stripped and len(ctrl.queue) == 0 and not ctrl.queue.processing and (due is None or due > 60)

    await eventually(seen_and_idle, "the controller saw the stripped pods and went idle")
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in await api.pods("lost", live=False)}
    assert after == before, "no pod deleted or replaced"
    assert all(not p["metadata"].get("deletionTimestamp") for p in await api.pods("lost", live=False))
    status = await api.status("lost")
    assert [(r["replicas"], r["readyReplicas"]) for r in status["roles"]] == [(3, 3)]


async def test_group_size_change_without_unavailable_budget_is_reported(
    controller: Controller, api: Api, kube: Any, namespace: str
) -> None:
    strategy = {"maxSurge": 1, "maxUnavailable": 0}
    await api.create(roleset("gsz", [role("w", replicas=2, podGroupSize=2, updateStrategy=strategy)]))
    await eventually(lambda: settled(api, "gsz", {"w": 2}), "2 groups of 2")
    uids = {p["metadata"]["uid"] for p in await api.pods("gsz")}
    await api.patch_spec("gsz", lambda s: s["roles"][0].__setitem__("podGroupSize", 3))

    async def blocked() -> dict[str, Any] | None:
        c = await api.condition("gsz", "Progressing")
        return c if c and (c["status"], c["reason"]) == ("False", "RolloutBlocked") else None

    cond = await eventually(blocked, "Progressing=False RolloutBlocked")
    assert "role w: podGroupSize changed to 3" in cond["message"]
    assert {p["metadata"]["uid"] for p in await api.pods("gsz")} == uids, "no group was taken down"

    await api.patch_spec("gsz", lambda s: s["roles"][0]["updateStrategy"].__setitem__("maxUnavailable", 1))
    await eventually(lambda: settled(api, "gsz", {"w": 2}), "groups of 3", timeout=120)
    pods = await api.pods("gsz")
    assert len(pods) == 6 and not uids & {p["metadata"]["uid"] for p in pods}
    cond = await api.condition("gsz", "Progressing")
    assert cond is not None and cond["reason"] != "RolloutBlocked"


# ---------------------------------------------------------------------------------------------
# switching a role's kind


def ready_instances(pods: dict[str, Obj]) -> int:
    """Ready role instances among live pods: a group counts when all its members are ready."""
    groups: dict[str, list[Obj]] = {}
    ready = 0
    for pod in pods.values():
        if pod["metadata"].get("deletionTimestamp"):
            continue
        group = pod["metadata"]["labels"].get(L.PODSET_NAME_LABEL)
        if group:
            groups.setdefault(group, []).append(pod)
        elif is_ready(pod):
            ready += 1
    for members in groups.values():
        size = int(members[0]["metadata"]["annotations"].get(L.POD_GROUP_SIZE_ANNOTATION) or 0)
        if len(members) == size and all(is_ready(p) for p in members):
            ready += 1
    return ready


class PodFollower:
    """Follows a RoleSet's pods through a watch from a list's resourceVersion, so that no
    transition is missed between polls; `on_change` sees the pods after every event."""

    def __init__(self, kube: Any, namespace: str, rs: str) -> None:
        self.kube, self.namespace, self.rs = kube, namespace, rs
        self.pods: dict[str, Obj] = {}
        self.uids: set[str] = set()  # of every pod seen
        self.events = 0
        self._task: asyncio.Task[None] | None = None

    def on_change(self) -> None:
        """Called once after the list and once after every watch event."""

    async def start(self) -> None:
        listed = await self.kube.list(
            PODS, self.namespace, label_selector=f"{L.ROLESET_NAME_LABEL}={self.rs}"
        )
        self.pods = {p["metadata"]["name"]: p for p in listed["items"]}
        self.uids.update(p["metadata"]["uid"] for p in listed["items"])
        self.on_change()
        self._task = asyncio.create_task(self._run(listed["metadata"]["resourceVersion"]))

    async def _run(self, rv: str) -> None:
        async for event in self.kube.watch(
            PODS,
            self.namespace,
            resource_version=rv,
            label_selector=f"{L.ROLESET_NAME_LABEL}={self.rs}",
            timeout_seconds=600,
        ):
            obj = event["object"]
            if event["type"] in ("ADDED", "MODIFIED"):
                self.pods[obj["metadata"]["name"]] = obj
            elif event["type"] == "DELETED":
                self.pods.pop(obj["metadata"]["name"], None)
            else:
                continue
            self.uids.add(obj["metadata"]["uid"])
            self.events += 1
            self.on_change()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class ReadyMonitor(PodFollower):
    """Records the fewest ready instances seen."""

    min_ready: int | None = None

    def on_change(self) -> None:
        ready = ready_instances(self.pods)
        self.min_ready = ready if self.min_ready is None else min(self.min_ready, ready)


Sample = dict[str, tuple[int, int, int]]


class RolloutRecorder(PodFollower):
    """Records, after every pod event, (updated, updated-ready, total) live pods per role, where
    "updated" means carrying the role's target template hash."""

    def __init__(self, kube: Any, namespace: str, rs: str, targets: dict[str, str]) -> None:
        super().__init__(kube, namespace, rs)
        self.targets = targets
        self.samples: list[Sample] = []

    def on_change(self) -> None:
        sample = {r: (0, 0, 0) for r in self.targets}
        for p in self.pods.values():
            r = p["metadata"]["labels"].get(L.ROLE_NAME_LABEL)
            if r not in sample or p["metadata"].get("deletionTimestamp"):
                continue
            updated, updated_ready, total = sample[r]
            if pod_hash(p) == self.targets[r]:
                updated += 1
                updated_ready += int(is_ready(p))
            sample[r] = (updated, updated_ready, total + 1)
        if not self.samples or self.samples[-1] != sample:
            self.samples.append(sample)


async def test_switch_to_stateful_then_grouped_respects_max_unavailable(
    controller: Controller, api: Api, kube: Any, namespace: str
) -> None:
    strategy = {"maxSurge": 0, "maxUnavailable": 1}
    await api.create(roleset("sw", [role("w", replicas=3, updateStrategy=strategy)]))
    await eventually(lambda: settled(api, "sw", {"w": 3}), "3 stateless pods")
    monitor = ReadyMonitor(kube, namespace, "sw")
    await monitor.start()
    try:
        await api.patch_spec("sw", lambda s: s["roles"][0].__setitem__("stateful", True))
        h = template_hash((await api.get("sw"))["spec"]["roles"][0]["template"])

        async def stateful_done() -> bool:
            names = [p["metadata"]["name"] for p in await api.pods("sw")]
            return names == [f"sw-w-{h}-{i}" for i in range(3)] and await settled(api, "sw", {"w": 3})

        await eventually(stateful_done, "three stateful slots", timeout=120)
        assert monitor.events > 0
        assert monitor.min_ready is not None and monitor.min_ready >= 2, (
            f"ready instances fell to {monitor.min_ready} (< replicas - maxUnavailable = 2)"
        )

        await api.patch_spec("sw", lambda s: s["roles"][0].__setitem__("podGroupSize", 2))

        async def grouped_done() -> bool:
            ps = await api.pods("sw")
            return (
                len(ps) == 6
                and all(p["metadata"]["labels"].get(L.PODSET_NAME_LABEL) for p in ps)
                and await settled(api, "sw", {"w": 3})
            )

        await eventually(grouped_done, "three groups of two", timeout=120)
        assert monitor.min_ready >= 2, (
            f"ready instances fell to {monitor.min_ready} during the switch to groups"
        )
    finally:
        await monitor.stop()


# ---------------------------------------------------------------------------------------------
# rollouts across roles


async def record_rollout(kube: Any, namespace: str, api: Api, name: str) -> RolloutRecorder:
    """Starts following `name`'s pods, then bumps every role's image; the recorder has seen the
    pods before the change, so it misses none of the rollout's steps."""
    obj = await api.get(name)
    bumped = copy.deepcopy(obj["spec"])
    _bump_all(bumped)
    targets = {r["name"]: template_hash(r["template"]) for r in bumped["roles"]}
    recorder = RolloutRecorder(kube, namespace, name, targets)
    await recorder.start()
    await api.patch_spec(name, _bump_all)
    assert targets == {
        r["name"]: template_hash(r["template"]) for r in (await api.get(name))["spec"]["roles"]
    }, "the server changed the bumped template (defaults?)"
    return recorder


def _bump_all(spec: dict[str, Any]) -> None:
    for r in spec["roles"]:
        r["template"]["spec"]["containers"][0]["image"] = IMAGE_V2


async def test_sequential_rollout_honours_upgrade_order(
    controller: Controller, api: Api, kube: Any, namespace: str
) -> None:
    roles = [
        role("decode", replicas=2, upgradeOrder=2),
        role("prefill", replicas=2, upgradeOrder=1),
        role("router", replicas=1),
    ]
    await api.create(roleset("seq", roles))
    await eventually(lambda: settled(api, "seq", {"decode": 2, "prefill": 2, "router": 1}), "ready")
    recorder = await record_rollout(kube, namespace, api, "seq")
    try:
        await eventually(
            lambda: settled(api, "seq", {"decode": 2, "prefill": 2, "router": 1}), "rolled out", timeout=120
        )
    finally:
        await recorder.stop()
    samples = recorder.samples
    order = ["prefill", "decode", "router"]  # upgradeOrder 1, 2, then unset
    for s in samples:
        for i, later in enumerate(order[1:], start=1):
            if s[later][0] > 0:
                for earlier in order[:i]:
                    n = {"prefill": 2, "decode": 2, "router": 1}[earlier]
                    assert s[earlier][1] >= n, f"{later} changed before {earlier} was updated and ready: {s}"
    assert any(s["prefill"][0] > 0 and s["decode"][0] == 0 for s in samples), (
        f"prefill rolled first: {samples}"
    )
    assert samples[-1] == {"prefill": (2, 2, 2), "decode": (2, 2, 2), "router": (1, 1, 1)}, samples[-1]


async def test_interleave_rollout_lock_step(
    controller: Controller, api: Api, kube: Any, namespace: str
) -> None:
    roles = [role("a", replicas=4), role("b", replicas=4)]
    await api.create(roleset("il", roles, updateStrategy="Interleave"))
    await eventually(lambda: settled(api, "il", {"a": 4, "b": 4}), "ready")
    recorder = await record_rollout(kube, namespace, api, "il")
    try:
        await eventually(lambda: settled(api, "il", {"a": 4, "b": 4}), "rolled out", timeout=120)
    finally:
        await recorder.stop()
    samples = recorder.samples
    # Step length max(1, 0 + 1) = 1: a role never has more than one updated pod beyond the
    # other's updated-and-ready count.
    for s in samples:
        assert s["a"][0] <= s["b"][1] + 1 and s["b"][0] <= s["a"][1] + 1, f"not in lock-step: {s}"
    assert any(0 < s["a"][0] < 4 and 0 < s["b"][0] < 4 for s in samples), (
        f"both roles advanced together: {samples}"
    )


async def test_parallel_rollout(controller: Controller, api: Api, kube: Any, namespace: str) -> None:
    roles = [role("a", replicas=2, upgradeOrder=1), role("b", replicas=2, upgradeOrder=2)]
    await api.create(roleset("par", roles, updateStrategy="Parallel"))
    await eventually(lambda: settled(api, "par", {"a": 2, "b": 2}), "ready")
    recorder = await record_rollout(kube, namespace, api, "par")
    try:
        await eventually(lambda: settled(api, "par", {"a": 2, "b": 2}), "rolled out", timeout=120)
    finally:
        await recorder.stop()
    samples = recorder.samples
    # Parallel ignores upgradeOrder: b starts before a has finished.
    assert any(s["a"][1] < 2 and s["b"][0] > 0 for s in samples), f"both roles rolled at once: {samples}"


async def test_restart_mid_rollout_converges_without_extra_pods(
    kubeconfig: str, namespace: str, crds: list[str], api: Api, kube: Any
) -> None:
    c = Controller(kubeconfig, namespace)
    await c.start()
    try:
        await api.create(
            roleset("rr", [role("w", replicas=4, updateStrategy={"maxSurge": 1, "maxUnavailable": 0})])
        )
        await eventually(lambda: settled(api, "rr", {"w": 4}), "ready")
        recorder = await record_rollout(kube, namespace, api, "rr")
        await eventually(lambda: 0 < recorder.samples[-1]["w"][0] < 4, "rollout under way", interval=0.01)
    finally:
        await c.stop()
    c2 = Controller(kubeconfig, namespace)
    await c2.start()
    try:
        await eventually(lambda: settled(api, "rr", {"w": 4}), "converged after restart", timeout=120)
        await asyncio.sleep(2)
    finally:
        await c2.stop()
        await recorder.stop()
    assert recorder.samples[-1] == {"w": (4, 4, 4)}, recorder.samples[-1]
    assert len(recorder.uids) == 8, f"4 old + 4 new pods, nothing more: {len(recorder.uids)}"
    max_live = max(s["w"][2] for s in recorder.samples)
    assert max_live <= 5, f"never above replicas + maxSurge: {recorder.samples}"


# ---------------------------------------------------------------------------------------------
# in-place updates


async def test_in_place_update(controller: Controller, api: Api, kube: Any, namespace: str) -> None:
    strategy = {"type": "InPlaceIfPossible", "maxUnavailable": 1}
    r = role("w", replicas=2, stateful=True, updateStrategy=strategy)
    r["template"]["spec"]["readinessGates"] = [{"conditionType": L.INPLACE_READY_CONDITION}]
    await api.create(roleset("ip", [r]))
    await eventually(lambda: settled(api, "ip", {"w": 2}), "ready (the controller sets the gate)")
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in await api.pods("ip")}
    completed_before = counter("stormservice_inplace_updates_total", result="completed")
    await api.patch_spec(
        "ip", lambda s: s["roles"][0]["template"]["spec"]["containers"][0].__setitem__("image", IMAGE_V2)
    )
    target = template_hash((await api.get("ip"))["spec"]["roles"][0]["template"])
    completed = 0
    while completed < 2:

        async def one_patched() -> Obj | None:
            for p in await api.pods("ip"):
                if p["metadata"]["annotations"].get(L.INPLACE_TARGET_HASH_ANNOTATION) == target:
                    return p
            return None

        pod = await eventually(one_patched, "an in-place update started")
        assert pod["spec"]["containers"][0]["image"] == IMAGE_V2
        assert L.INPLACE_STATE_ANNOTATION in pod["metadata"]["annotations"]
        gate = [c for c in pod["status"]["conditions"] if c["type"] == L.INPLACE_READY_CONDITION]
        assert gate and gate[0]["status"] == "False"
        # Only maxUnavailable (1) at a time.
        assert (
            sum(
                1
                for p in await api.pods("ip")
                if p["metadata"]["annotations"].get(L.INPLACE_TARGET_HASH_ANNOTATION)
            )
            == 1
        )
        await api.run_new_images(pod)

        async def finished(name: str = pod["metadata"]["name"]) -> bool:
            p = await kube.get(PODS, namespace, name)
            return (
                pod_hash(p) == target and L.INPLACE_TARGET_HASH_ANNOTATION not in p["metadata"]["annotations"]
            )

        await eventually(finished, "in-place update completed")
        completed += 1
    await eventually(lambda: settled(api, "ip", {"w": 2}), "all updated and ready")
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in await api.pods("ip")}
    assert after == before, "same names and UIDs"
    assert counter("stormservice_inplace_updates_total", result="completed") - completed_before == 2
    for p in await api.pods("ip"):
        assert p["spec"]["containers"][0]["image"] == IMAGE_V2
        gate = [c for c in p["status"]["conditions"] if c["type"] == L.INPLACE_READY_CONDITION]
        assert gate[0]["status"] == "True"
        assert L.INPLACE_STATE_ANNOTATION not in p["metadata"]["annotations"]
    reasons = await eventually(
        lambda: _has(api, "InPlaceUpdateStarted", "InPlaceUpdateCompleted"), "in-place events"
    )
    assert reasons


async def test_in_place_update_of_a_roleset_no_stormservice_owns(
    controller: Controller, api: Api, kube: Any, namespace: str
) -> None:
    """Its pods' STORM_SERVICE_NAME and ROLESET_INDEX are empty, which the API server stores
    without a `value` key: that is no reason to recreate them."""
    strategy = {"type": "InPlaceIfPossible", "maxSurge": 0, "maxUnavailable": 1}
    standalone = roleset("alone", [role("w", replicas=1, updateStrategy=strategy)])
    standalone["metadata"] = {"name": "alone"}
    await api.create(standalone)
    await eventually(lambda: settled(api, "alone", {"w": 1}), "ready")
    (before,) = await api.pods("alone")
    env = before["spec"]["containers"][0]["env"]
    assert {"name": "STORM_SERVICE_NAME"} in env, env  # stored without its empty value
    await api.patch_spec(
        "alone", lambda s: s["roles"][0]["template"]["spec"]["containers"][0].__setitem__("image", IMAGE_V2)
    )
    target = template_hash((await api.get("alone"))["spec"]["roles"][0]["template"])

    async def patched() -> Obj | None:
        pods = await api.pods("alone", live=False)
        if len(pods) != 1 or pods[0]["spec"]["containers"][0]["image"] != IMAGE_V2:
            return None
        return pods[0]

    pod = await eventually(patched, "the image patched in place")
    assert pod["metadata"]["uid"] == before["metadata"]["uid"], "recreated instead of updated in place"
    await api.run_new_images(pod)

    async def completed() -> bool:
        (p,) = await api.pods("alone")
        return pod_hash(p) == target and L.INPLACE_TARGET_HASH_ANNOTATION not in p["metadata"]["annotations"]

    await eventually(completed, "in-place update completed")
    (after,) = await api.pods("alone")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert "InPlaceFallback" not in await api.event_reasons()


async def test_in_place_update_to_a_new_tag_of_the_same_digest_completes(
    controller: Controller, api: Api, kube: Any, namespace: str
) -> None:
    """`:rc1` retagged `:1.0`: the kubelet restarts the container on the new tag, and the imageID
    (the digest) stays. The restart is what completes the update."""
    strategy = {"type": "InPlaceIfPossible", "maxUnavailable": 1}
    await api.create(
        roleset("retag", [role("w", replicas=1, image="example.com/llm:rc1", updateStrategy=strategy)])
    )
    await eventually(lambda: settled(api, "retag", {"w": 1}), "ready")
    (before,) = await api.pods("retag")
    digest = "example.com/llm@sha256:" + "1" * 64
    running = {
        "name": "main",
        "image": "example.com/llm:rc1",
        "imageID": digest,
        "containerID": "containerd://first",
        "restartCount": 0,
        "ready": True,
        "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}},
    }
    await api.set_pod_status(before, containerStatuses=[running])

    async def status_seen() -> bool:
        return bool(
            controller.ctrl
            and any(
                (s.get("containerID") == "containerd://first")
                for p in controller.ctrl.pods.store.list()
                for s in (p.get("status") or {}).get("containerStatuses") or ()
            )
        )

    await eventually(status_seen, "the controller's cache sees the running container")
    await api.patch_spec(
        "retag",
        lambda s: s["roles"][0]["template"]["spec"]["containers"][0].__setitem__(
            "image", "example.com/llm:1.0"
        ),
    )
    target = template_hash((await api.get("retag"))["spec"]["roles"][0]["template"])

    async def patched() -> Obj | None:
        (p,) = await api.pods("retag")
        return p if p["metadata"]["annotations"].get(L.INPLACE_TARGET_HASH_ANNOTATION) == target else None

    pod = await eventually(patched, "the image patched in place")
    # What the kubelet reports after restarting the container on the new tag: same digest.
    restarted = {
        **running,
        "image": "example.com/llm:1.0",
        "containerID": "containerd://second",
        "restartCount": 1,
        "state": {"running": {"startedAt": "2024-01-01T00:10:00Z"}},
    }
    await api.set_pod_status(pod, containerStatuses=[restarted])

    async def completed() -> bool:
        (p,) = await api.pods("retag")
        return pod_hash(p) == target and L.INPLACE_TARGET_HASH_ANNOTATION not in p["metadata"]["annotations"]

    await eventually(completed, "in-place update completed")
    (after,) = await api.pods("retag")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    cond = await api.condition("retag", "Progressing")
    assert cond is not None and cond["status"] == "True", cond


async def test_a_template_the_api_server_rejects_replaces_no_pod(
    controller: Controller, api: Api, kube: Any, namespace: str
) -> None:
    """The CRD admits a role template whose pods the API server refuses (here a volume mount of
    a volume that does not exist): the old pods stay, the RoleSet says why, and a fixed template
    rolls as usual."""
    strategy = {"maxSurge": 0, "maxUnavailable": 1}
    await api.create(roleset("bad", [role("w", replicas=2, updateStrategy=strategy)]))
    await eventually(lambda: settled(api, "bad", {"w": 2}), "2 ready pods")
    before = {p["metadata"]["uid"] for p in await api.pods("bad")}

    def break_it(s: dict[str, Any]) -> None:
        c = s["roles"][0]["template"]["spec"]["containers"][0]
        c["image"] = IMAGE_V2
        c["volumeMounts"] = [{"name": "missing", "mountPath": "/data"}]

    await api.patch_spec("bad", break_it)

    async def reported() -> dict[str, Any] | None:
        status = await api.status("bad")
        if status.get("observedGeneration") != (await api.get("bad"))["metadata"]["generation"]:
            return None
        cond = await api.condition("bad", "ReplicaFailure")
        return cond if cond and cond["reason"] == "InvalidPodTemplate" else None

    failure = await eventually(reported, "ReplicaFailure InvalidPodTemplate")
    assert failure["status"] == "True" and "volumeMounts[0].name" in failure["message"], failure
    progressing = await api.condition("bad", "Progressing")
    assert progressing is not None and (progressing["status"], progressing["reason"]) == (
        "False",
        "RolloutBlocked",
    )
    await eventually(lambda: _has(api, "InvalidPodTemplate"), "a Warning event")
    pods = await api.pods("bad", live=False)
    assert {p["metadata"]["uid"] for p in pods} == before, "no pod deleted or replaced"
    assert not any(p["metadata"].get("deletionTimestamp") for p in pods)

    def fix_it(s: dict[str, Any]) -> None:
        s["roles"][0]["template"]["spec"]["containers"][0].pop("volumeMounts")

    await api.patch_spec("bad", fix_it)
    await eventually(lambda: settled(api, "bad", {"w": 2}), "rolled to the fixed template")
    assert not {p["metadata"]["uid"] for p in await api.pods("bad")} & before
    assert await api.condition("bad", "ReplicaFailure") is None


async def test_in_place_update_of_a_grouped_role(
    controller: Controller, api: Api, kube: Any, namespace: str
) -> None:
    """Every member of a group is patched in place, one group at a time (maxUnavailable 1
    instance); names and UIDs stay."""
    strategy = {"type": "InPlaceIfPossible", "maxUnavailable": 1}
    await api.create(roleset("gip", [role("w", replicas=2, podGroupSize=2, updateStrategy=strategy)]))
    await eventually(lambda: settled(api, "gip", {"w": 2}), "2 ready groups")
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in await api.pods("gip")}
    assert len(before) == 4
    completed_before = counter("stormservice_inplace_updates_total", result="completed")
    fallback_before = counter("stormservice_inplace_updates_total", result="fallback")
    await api.patch_spec(
        "gip", lambda s: s["roles"][0]["template"]["spec"]["containers"][0].__setitem__("image", IMAGE_V2)
    )
    target = template_hash((await api.get("gip"))["spec"]["roles"][0]["template"])
    done_groups: set[str] = set()
    while len(done_groups) < 2:

        async def group_patched() -> list[Obj] | None:
            inflight = [
                p
                for p in await api.pods("gip")
                if p["metadata"]["annotations"].get(L.INPLACE_TARGET_HASH_ANNOTATION) == target
            ]
            groups = {p["metadata"]["labels"][L.PODSET_NAME_LABEL] for p in inflight}
            assert len(groups) <= 1, f"two groups in flight at once (maxUnavailable 1): {groups}"
            return inflight if len(inflight) == 2 else None

        members = await eventually(group_patched, "a whole group patched in place")
        (group,) = {p["metadata"]["labels"][L.PODSET_NAME_LABEL] for p in members}
        assert group not in done_groups
        for p in members:
            assert p["spec"]["containers"][0]["image"] == IMAGE_V2
            assert before[p["metadata"]["name"]] == p["metadata"]["uid"]
            await api.run_new_images(p, image_id=f"sha256:{p['metadata']['name']}")

        async def group_finished(
            names: tuple[str, ...] = tuple(p["metadata"]["name"] for p in members),
        ) -> bool:
            for name in names:
                p = await kube.get(PODS, namespace, name)
                if pod_hash(p) != target or L.INPLACE_TARGET_HASH_ANNOTATION in p["metadata"]["annotations"]:
                    return False
            return True

        await eventually(group_finished, f"in-place update of {group} completed")
        done_groups.add(group)
    await eventually(lambda: settled(api, "gip", {"w": 2}), "all groups updated and ready")
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in await api.pods("gip")}
    assert after == before, "same names and UIDs for every member"
    for p in await api.pods("gip"):
        assert p["spec"]["containers"][0]["image"] == IMAGE_V2
        assert L.INPLACE_STATE_ANNOTATION not in p["metadata"]["annotations"]
    assert counter("stormservice_inplace_updates_total", result="completed") - completed_before == 4
    assert counter("stormservice_inplace_updates_total", result="fallback") == fallback_before


async def _has(api: Api, *reasons: str) -> list[str] | None:
    got = await api.event_reasons()
    return got if all(r in got for r in reasons) else None


async def test_in_place_fallback_to_recreate(controller: Controller, api: Api) -> None:
    await api.create(roleset("fb", [role("w", replicas=1, updateStrategy={"type": "InPlaceIfPossible"})]))
    await eventually(lambda: settled(api, "fb", {"w": 1}), "ready")
    (before,) = await api.pods("fb")

    def change(spec: dict[str, Any]) -> None:
        c = spec["roles"][0]["template"]["spec"]["containers"][0]
        c["image"] = IMAGE_V2
        c["env"] = [{"name": "USER_VAR", "value": "y"}]

    await api.patch_spec("fb", change)
    await eventually(lambda: settled(api, "fb", {"w": 1}), "recreated")
    (after,) = await api.pods("fb")
    assert after["metadata"]["uid"] != before["metadata"]["uid"]
    await eventually(lambda: _has(api, "InPlaceFallback"), "InPlaceFallback event")


async def test_stuck_in_place_update_and_revert(
    kubeconfig: str, namespace: str, crds: list[str], api: Api
) -> None:
    c = Controller(kubeconfig, namespace, deadline=3)
    await c.start()
    try:
        await api.create(
            roleset("stuck", [role("w", replicas=1, updateStrategy={"type": "InPlaceIfPossible"})])
        )
        await eventually(lambda: settled(api, "stuck", {"w": 1}), "ready")
        (before,) = await api.pods("stuck")
        await api.patch_spec(
            "stuck",
            lambda s: s["roles"][0]["template"]["spec"]["containers"][0].__setitem__("image", IMAGE_V2),
        )

        async def stuck() -> bool:
            cond = await api.condition("stuck", "Progressing")
            return cond is not None and (cond["status"], cond["reason"]) == ("False", "InPlaceUpdateStuck")

        await eventually(stuck, "stuck condition", timeout=30)
        await eventually(lambda: _has(api, "InPlaceUpdateStuck"), "stuck event")
        # Revert the template: the pod goes back to the old image, in place.
        await api.patch_spec(
            "stuck",
            lambda s: s["roles"][0]["template"]["spec"]["containers"][0].__setitem__("image", IMAGE_V1),
        )

        async def reverted() -> bool:
            (p,) = await api.pods("stuck")
            return (
                p["metadata"]["uid"] == before["metadata"]["uid"]
                and p["spec"]["containers"][0]["image"] == IMAGE_V1
                and L.INPLACE_TARGET_HASH_ANNOTATION not in p["metadata"]["annotations"]
            )

        await eventually(reverted, "pod reverted in place")
        await eventually(lambda: settled(api, "stuck", {"w": 1}), "settled after revert")
        cond = await api.condition("stuck", "Progressing")
        assert cond is not None and cond["status"] == "True"
    finally:
        await c.stop()


# ---------------------------------------------------------------------------------------------
# topology, PodGroups, PDBs


async def test_topology_policy_on_new_pods_only(controller: Controller, api: Api) -> None:
    await api.create(roleset("topo", [role("w", replicas=1)]))
    await eventually(lambda: settled(api, "topo", {"w": 1}), "ready")
    (old,) = await api.pods("topo")

    def add_policy(spec: dict[str, Any]) -> None:
        spec["topologyPolicy"] = {
            "scope": "RoleSet",
            "mode": "Required",
            "key": "topology.kubernetes.io/zone",
        }
        spec["roles"][0]["replicas"] = 2

    await api.patch_spec("topo", add_policy)

    async def reported() -> bool:
        cond = await api.condition("topo", "TopologyPolicyApplied")
        return (
            cond is not None
            and cond["status"] == "False"
            and old["metadata"]["name"] in cond.get("message", "")
        )

    await eventually(reported, "old pod reported as lacking the term")
    pods = await api.pods("topo")
    assert len(pods) == 2
    for p in pods:
        terms = ((p["spec"].get("affinity") or {}).get("podAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        if p["metadata"]["uid"] == old["metadata"]["uid"]:
            assert not terms, "existing pods are not touched"
        else:
            assert terms == [
                {
                    "labelSelector": {"matchLabels": {"roleset-name": "topo"}},
                    "topologyKey": "topology.kubernetes.io/zone",
                }
            ]


POD_GROUP_CRD: Obj = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "podgroups.scheduling.x-k8s.io"},
    "spec": {
        "group": "scheduling.x-k8s.io",
        "names": {
            "kind": "PodGroup",
            "plural": "podgroups",
            "singular": "podgroup",
            "listKind": "PodGroupList",
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}
PODGROUPS = Resource("scheduling.x-k8s.io", "v1alpha1", "podgroups", "PodGroup")


async def test_pod_group_crd_missing_then_installed(
    controller: Controller, api: Api, kube: Any, namespace: str
) -> None:
    with contextlib.suppress(NotFound):
        await kube.delete(CUSTOM_RESOURCE_DEFINITIONS, None, POD_GROUP_CRD["metadata"]["name"])
    strategy = {"coschedulingSchedulingStrategy": {"scheduleTimeoutSeconds": 60}}
    await api.create(roleset("gang", [role("w", replicas=2)], schedulingStrategy=strategy))

    async def missing() -> bool:
        cond = await api.condition("gang", "PodGroupSynced")
        return cond is not None and cond["reason"] == "PodGroupCRDMissing"

    await eventually(missing, "CRD-missing condition")
    await eventually(lambda: _has(api, "PodGroupCRDMissing"), "Warning event")
    events = [e for e in await api.events() if e.get("reason") == "PodGroupCRDMissing"]
    assert events[0]["type"] == "Warning"
    for p in await api.pods("gang"):
        assert p["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "gang"

    await kube.create(CUSTOM_RESOURCE_DEFINITIONS, None, POD_GROUP_CRD)
    try:

        async def synced() -> bool:
            cond = await api.condition("gang", "PodGroupSynced")
            return cond is not None and cond["status"] == "True"

        await eventually(synced, "PodGroup synced", timeout=60)
        pg = await kube.get(PODGROUPS, namespace, "gang")
        assert pg["spec"] == {"scheduleTimeoutSeconds": 60, "minMember": 2}
        assert pg["metadata"]["ownerReferences"][0]["name"] == "gang"
        assert controller.ctrl is not None
        informer = controller.ctrl.pod_group_informers["coschedulingSchedulingStrategy"]

        # Uninstalled again: its informer stops instead of failing against a resource that is
        # no longer served, and the RoleSet says the CRD is missing.
        await kube.delete(CUSTOM_RESOURCE_DEFINITIONS, None, POD_GROUP_CRD["metadata"]["name"])
        await eventually(missing, "CRD-missing condition again", timeout=60)
        assert "coschedulingSchedulingStrategy" not in controller.ctrl.pod_group_informers
        assert informer not in controller.ctrl._informers.informers
    finally:
        with contextlib.suppress(NotFound):
            await kube.delete(CUSTOM_RESOURCE_DEFINITIONS, None, POD_GROUP_CRD["metadata"]["name"])


async def test_pdb_per_role(controller: Controller, api: Api, kube: Any, namespace: str) -> None:
    await api.create(roleset("pdb", [role("w", replicas=2, disruptionTolerance={"maxUnavailable": "50%"})]))

    async def pdb() -> Obj | None:
        try:
            got: Obj = await kube.get(POD_DISRUPTION_BUDGETS, namespace, "pdb-w")
            return got
        except NotFound:
            return None

    got = await eventually(pdb, "PodDisruptionBudget")
    # 50% of 2 pods may be down: an integer minAvailable of 1, which the disruption controller
    # can evaluate without a scale subresource on the RoleSet.
    assert got["spec"]["minAvailable"] == 1 and "maxUnavailable" not in got["spec"]

    async def allows_one_disruption() -> bool:
        current = await pdb()
        return bool(current and (current.get("status") or {}).get("disruptionsAllowed") == 1)

    await eventually(allows_one_disruption, "PDB allowing exactly one disruption")
    assert got["spec"]["selector"] == {"matchLabels": {"roleset-name": "pdb", "role-name": "w"}}
    await api.patch_spec("pdb", lambda s: s["roles"][0].pop("disruptionTolerance"))

    async def gone() -> bool:
        return await pdb() is None

    await eventually(gone, "PodDisruptionBudget removed")


async def test_pdb_of_a_grouped_role_counts_a_broken_group_per_pod(
    controller: Controller, api: Api, kube: Any, namespace: str
) -> None:
    """3 groups of 3 pods, one instance may be down. A group is broken as soon as one member is
    gone, so the disruption controller must allow one eviction (a drain taking one member of
    each group would break all three instances), not a whole group's worth."""
    await api.create(
        roleset("gpdb", [role("w", replicas=3, podGroupSize=3, disruptionTolerance={"maxUnavailable": 1})])
    )

    async def evaluated() -> Obj | None:
        try:
            got: Obj = await kube.get(POD_DISRUPTION_BUDGETS, namespace, "gpdb-w")
        except NotFound:
            return None
        status = got.get("status") or {}
        if (
            status.get("observedGeneration") != got["metadata"].get("generation")
            or status.get("expectedPods") != 9
            or status.get("currentHealthy") != 9
        ):
            return None
        return got

    pdb = await eventually(evaluated, "the PDB evaluated over 9 healthy pods", timeout=120)
    assert pdb["spec"]["minAvailable"] == 8 and "maxUnavailable" not in pdb["spec"]
    assert pdb["status"]["desiredHealthy"] == 8
    assert pdb["status"]["disruptionsAllowed"] == 1


async def test_pod_groups_of_removed_groups_deleted_after_restart(
    kubeconfig: str, namespace: str, crds: list[str], api: Api, kube: Any
) -> None:
    """What exists is read from the cluster: a controller that never wrote the PodGroups still
    removes those of groups that are gone."""
    with contextlib.suppress(AlreadyExists):
        await kube.create(CUSTOM_RESOURCE_DEFINITIONS, None, POD_GROUP_CRD)

    async def served() -> bool:
        try:
            await kube.list(PODGROUPS, namespace)
        except ApiError:  # 404 until the CRD is established; 429 while its storage initializes
            return False
        return True

    await eventually(served, "PodGroup CRD served")
    try:
        c = Controller(kubeconfig, namespace)
        await c.start()
        try:
            strategy = {"coschedulingSchedulingStrategy": {"scheduleTimeoutSeconds": 30}}
            await api.create(
                roleset("pgr", [role("w", replicas=2, podGroupSize=2, schedulingStrategy=strategy)])
            )
            await eventually(lambda: settled(api, "pgr", {"w": 2}), "2 groups")

            async def pod_group_names() -> set[str]:
                return {pg["metadata"]["name"] for pg in (await kube.list(PODGROUPS, namespace))["items"]}

            async def two() -> bool:
                return len(await pod_group_names()) == 2

            await eventually(two, "a PodGroup per group")
        finally:
            await c.stop()
        # While no controller runs, the role shrinks to one group.
        await api.patch_spec("pgr", lambda s: s["roles"][0].__setitem__("replicas", 1))
        c2 = Controller(kubeconfig, namespace)
        await c2.start()
        try:
            await eventually(lambda: settled(api, "pgr", {"w": 1}), "1 group")

            async def only_the_live_group() -> bool:
                groups = {p["metadata"]["labels"][L.PODSET_NAME_LABEL] for p in await api.pods("pgr")}
                return len(groups) == 1 and await pod_group_names() == groups

            await eventually(only_the_live_group, "the removed group's PodGroup deleted")
        finally:
            await c2.stop()
    finally:
        with contextlib.suppress(NotFound):
            await kube.delete(CUSTOM_RESOURCE_DEFINITIONS, None, POD_GROUP_CRD["metadata"]["name"])
