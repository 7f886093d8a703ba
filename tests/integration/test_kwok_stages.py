"""The local cluster's kwok stages of our own (hack/controlplane/kwok-extra-stages.yaml) report
what a kubelet would: a container image patched in place runs the new image in the same pod,
and a pod the node lifecycle controller marked NotReady is Ready again, so that rollouts and
recoveries measure the controller, not the simulator. Nothing here plays the kubelet."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from controller.runtime.client import KubeClient
from controller.runtime.resources import STORMSERVICES
from tests.cluster import ClusterHandle, ControllerFactory, Kubectl, wait_until
from tests.storm_reads import StormReads

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

Obj = dict[str, Any]

API = "orchestration.aibrix.ai/v1alpha1"
IMAGE_V1 = "registry.k8s.io/pause:3.10"
IMAGE_V2 = "registry.k8s.io/pause:3.9"
SIDECAR_IMAGE = "busybox:1.36"
GATE = "example.com/load-balancer-ready"
OPT_OUT = "pod-container-image-update.stage.kwok.x-k8s.io/disabled"
SETTLE = 240.0  # generous: the machine is shared and loaded


@pytest.fixture(autouse=True)
def _local_only(cluster: ClusterHandle) -> None:
    if cluster.external:
        pytest.skip("checks the kwok stages of the local control plane")


def bare_pod(name: str, *, annotations: dict[str, str] | None = None, gates: bool = False) -> Obj:
    spec: Obj = {
        "terminationGracePeriodSeconds": 0,
        "containers": [
            {"name": "main", "image": IMAGE_V1},
            {"name": "sidecar", "image": SIDECAR_IMAGE},
        ],
    }
    if gates:
        spec["readinessGates"] = [{"conditionType": GATE}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": spec,
    }


def condition(pod: Obj, type_: str) -> Obj:
    for c in (pod.get("status") or {}).get("conditions") or ():
        if c["type"] == type_:
            return dict(c)
    return {}


def statuses(pod: Obj) -> dict[str, Obj]:
    return {s["name"]: s for s in (pod.get("status") or {}).get("containerStatuses") or ()}


def is_ready(pod: Obj) -> bool:
    return condition(pod, "Ready").get("status") == "True"


class Pods:
    def __init__(self, kubectl: Kubectl, namespace: str) -> None:
        self.kubectl = kubectl
        self.ns = namespace

    def create_ready(self, pod: Obj) -> Obj:
        self.kubectl.create(pod, "-n", self.ns)
        name = pod["metadata"]["name"]
        self.kubectl("wait", "-n", self.ns, "--for=condition=Ready", f"pod/{name}", "--timeout=120s")
        return self.get(name)

    def get(self, name: str) -> Obj:
        pod: Obj = self.kubectl.get_json("-n", self.ns, f"pod/{name}")
        return pod

    def patch_image(self, name: str, container: str, image: str) -> None:
        patch = f'{{"spec":{{"containers":[{{"name":"{container}","image":"{image}"}}]}}}}'
        self.kubectl("patch", "-n", self.ns, f"pod/{name}", "--type=strategic", "-p", patch)

    def patch_status(self, name: str, status: str) -> Obj:
        """The pod as the patch left it."""
        out = self.kubectl(
            "patch", "-n", self.ns, f"pod/{name}", "--subresource=status", "--type=strategic",
            "-p", f'{{"status":{status}}}', "-o", "json",
        )  # fmt: skip
        pod: Obj = json.loads(out.stdout)
        return pod


@pytest.fixture
def pods(kubectl: Kubectl, namespace: str) -> Pods:
    return Pods(kubectl, namespace)


# ---------------------------------------------------------------------------------------------
# in-place image updates


def test_a_patched_image_runs_in_the_same_pod_after_a_container_restart(pods: Pods) -> None:
    before = pods.create_ready(bare_pod("inplace"))
    sidecar_before = statuses(before)["sidecar"]
    pods.patch_image("inplace", "main", IMAGE_V2)

    def restarted() -> bool:
        return statuses(pods.get("inplace"))["main"].get("image") == IMAGE_V2

    wait_until(restarted, 60, "kwok to report the new image")
    wait_until(lambda: is_ready(pods.get("inplace")), 60, "the pod Ready again")
    after = pods.get("inplace")
    assert after["metadata"]["uid"] == before["metadata"]["uid"], "the same pod, not a new one"
    main = statuses(after)["main"]
    old_main = statuses(before)["main"]
    assert main["ready"] is True and main.get("started") is True
    assert main["restartCount"] == old_main["restartCount"] + 1
    assert main["imageID"] and main["imageID"] != old_main.get("imageID", "")
    assert main["containerID"] and main["containerID"] != old_main.get("containerID", "")
    assert main["state"]["running"]["startedAt"] >= old_main["state"]["running"]["startedAt"]
    assert main["lastState"]["terminated"]["reason"] == "Completed"
    assert condition(after, "ContainersReady")["status"] == "True"
    assert statuses(after)["sidecar"] == sidecar_before, "the container whose image stayed is untouched"

    # Back to the first image: a second restart, and the image's ID is the first one's again.
    pods.patch_image("inplace", "main", IMAGE_V1)
    wait_until(
        lambda: statuses(pods.get("inplace"))["main"].get("restartCount") == main["restartCount"] + 1,
        60,
        "the second restart",
    )
    wait_until(lambda: is_ready(pods.get("inplace")), 60, "the pod Ready again")
    back = statuses(pods.get("inplace"))["main"]
    assert back["image"] == IMAGE_V1 and back["imageID"] != main["imageID"]
    assert back["containerID"] != main["containerID"]


def test_a_restarted_pod_stays_not_ready_until_its_readiness_gates_are_true(pods: Pods) -> None:
    """As the kubelet computes it: Ready is ContainersReady and every readiness gate."""
    pods.create_ready(bare_pod("gated", gates=True))
    pods.patch_status("gated", f'{{"conditions":[{{"type":"{GATE}","status":"False"}}]}}')
    pods.patch_image("gated", "sidecar", "busybox:1.37")

    def running_new_image() -> bool:
        s = statuses(pods.get("gated"))["sidecar"]
        return s.get("image") == "busybox:1.37" and bool(s.get("ready"))

    wait_until(running_new_image, 60, "the sidecar running its new image")
    pod = pods.get("gated")
    assert condition(pod, "ContainersReady")["status"] == "True"
    assert condition(pod, "Ready")["status"] == "False", "a readiness gate is False"
    pods.patch_status("gated", f'{{"conditions":[{{"type":"{GATE}","status":"True"}}]}}')
    wait_until(lambda: is_ready(pods.get("gated")), 60, "Ready once the gate is True")


def test_a_pod_annotated_so_is_left_to_the_test(pods: Pods) -> None:
    pods.create_ready(bare_pod("manual", annotations={OPT_OUT: "true"}))
    # A pod without the annotation, patched after it, shows when kwok has had its chance.
    pods.create_ready(bare_pod("witness"))
    pods.patch_image("manual", "main", IMAGE_V2)
    pods.patch_image("witness", "main", IMAGE_V2)
    wait_until(
        lambda: statuses(pods.get("witness"))["main"].get("image") == IMAGE_V2, 60, "the witness restarted"
    )
    manual = pods.get("manual")
    assert statuses(manual)["main"]["image"] == IMAGE_V1
    assert statuses(manual)["main"]["restartCount"] == 0


# ---------------------------------------------------------------------------------------------
# readiness after the node lifecycle controller


def test_a_pod_marked_not_ready_by_the_node_controller_is_ready_again(pods: Pods) -> None:
    pods.create_ready(bare_pod("node-flap"))
    # What kube-controller-manager writes for the pods of a node that missed its heartbeats:
    # Ready=False only (the Warning event it records has reason NodeNotReady).
    t0 = time.monotonic()
    marked = pods.patch_status(
        "node-flap",
        '{"conditions":[{"type":"Ready","status":"False","reason":"NodeNotReady",'
        '"message":"Node is not ready"}]}',
    )
    assert not is_ready(marked)
    assert condition(marked, "ContainersReady")["status"] == "True"
    wait_until(lambda: is_ready(pods.get("node-flap")), 60, "the pod Ready again")
    # A kubelet's status sync, not at once (that would fight the node controller).
    assert time.monotonic() - t0 >= 1.0
    ready = condition(pods.get("node-flap"), "Ready")
    assert "reason" not in ready and "message" not in ready, ready


def test_a_pod_whose_containers_are_not_ready_stays_not_ready(pods: Pods) -> None:
    """A failing readiness probe (ContainersReady=False) is not the simulator's to undo."""
    pods.create_ready(bare_pod("probe-fails"))
    pods.create_ready(bare_pod("node-flap-witness"))
    pods.patch_status(
        "probe-fails",
        '{"conditions":[{"type":"Ready","status":"False"},{"type":"ContainersReady","status":"False"}]}',
    )
    pods.patch_status("node-flap-witness", '{"conditions":[{"type":"Ready","status":"False"}]}')
    wait_until(lambda: is_ready(pods.get("node-flap-witness")), 60, "the witness Ready again")
    pod = pods.get("probe-fails")
    assert condition(pod, "Ready")["status"] == "False"
    assert condition(pod, "ContainersReady")["status"] == "False"


# ---------------------------------------------------------------------------------------------
# a StormService InPlaceUpdate rollout, end to end


class Storms(StormReads):
    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace


async def eventually(check: Callable[[], Awaitable[Any]], what: str, within: float = SETTLE) -> Any:
    deadline = time.monotonic() + within
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.5)


def inplace_storm(name: str) -> Obj:
    def role(role_name: str, replicas: int, *, gated: bool) -> Obj:
        spec: Obj = {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "engine", "image": IMAGE_V1}],
        }
        if gated:
            # The controller holds it False while the update is in flight.
            spec["readinessGates"] = [
                {"conditionType": "stormservice.orchestration.aibrix.ai/in-place-update-ready"}
            ]
        return {
            "name": role_name,
            "replicas": replicas,
            "updateStrategy": {"type": "InPlaceIfPossible", "maxUnavailable": 1},
            "template": {"metadata": {"labels": {"component": role_name}}, "spec": spec},
        }

    return {
        "apiVersion": API,
        "kind": "StormService",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": {"type": "InPlaceUpdate"},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"roles": [role("prefill", 2, gated=False), role("decode", 1, gated=True)]},
            },
        },
    }


async def test_an_inplace_update_rollout_completes_with_kwok_as_the_kubelet(
    kubectl: Kubectl,
    namespace: str,
    crds: list[str],
    kube: KubeClient,
    run_controller: ControllerFactory,
) -> None:
    controller = run_controller("--namespace", namespace)
    storms = Storms(kube, namespace)
    kubectl.apply(inplace_storm("ip"), "-n", namespace)
    first = await eventually(lambda: storms.settled("ip"), "the StormService Ready")
    rolesets = {rs["metadata"]["uid"] for rs in await storms.rolesets("ip")}
    before = {p["metadata"]["uid"] for p in await storms.pods("ip")}
    assert len(before) == 2 * 3

    image = [{"op": "replace", "path": f"/spec/template/spec/roles/{i}/template/spec/containers/0/image",
              "value": IMAGE_V2} for i in range(2)]  # fmt: skip
    await kube.patch(STORMSERVICES, namespace, "ip", image, patch_type="json")

    async def rolled() -> Obj | None:
        ss = await storms.settled("ip")
        if ss is None or ss["status"]["updateRevision"] == first["status"]["updateRevision"]:
            return None
        pods = await storms.pods("ip")
        running_v2 = all(
            statuses(p)["engine"].get("image") == IMAGE_V2 and p["spec"]["containers"][0]["image"] == IMAGE_V2
            for p in pods
        )
        return ss if running_v2 else None

    await eventually(rolled, "the InPlaceUpdate rollout to complete")
    assert controller.alive()
    assert {rs["metadata"]["uid"] for rs in await storms.rolesets("ip")} == rolesets, "RoleSets replaced"
    pods = await storms.pods("ip")
    assert {p["metadata"]["uid"] for p in pods} == before, "pods recreated, not updated in place"
    for p in pods:
        engine = statuses(p)["engine"]
        assert engine["restartCount"] == 1, (p["metadata"]["name"], engine)
        assert is_ready(p), p["metadata"]["name"]
