"""The local control plane behaves like a real cluster in the ways the controller relies on:
scheduling and pod readiness (kube-scheduler + kwok), garbage collection through
ownerReferences (kube-controller-manager), and our CRDs with their CEL validation."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from controller.runtime.errors import NotFound
from controller.runtime.resources import Resource
from tests.cluster import ClusterHandle, Kubectl, wait_until

pytestmark = pytest.mark.integration

GROUP = "orchestration.aibrix.ai"
# kwok never pulls it; on kind (KUBECONFIG) it is already on every node as the sandbox image.
IMAGE = "registry.k8s.io/pause:3.10"


def test_local_cluster_has_pinned_version_and_fake_gpu_nodes(
    cluster: ClusterHandle, kubectl: Kubectl
) -> None:
    if cluster.external:
        pytest.skip("checks the local control plane's own build and nodes")
    version = json.loads(kubectl("get", "--raw", "/version").stdout)
    assert version["gitVersion"] == "v1.34.4"
    nodes = kubectl.get_json("nodes", "-l", "type=kwok")["items"]
    assert len(nodes) == cluster.local.nodes
    zones = set()
    for node in nodes:
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert node["metadata"]["labels"]["kubernetes.io/hostname"] == node["metadata"]["name"]
        zones.add(node["metadata"]["labels"]["topology.kubernetes.io/zone"])
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"
    assert len(zones) > 1


def test_pod_is_scheduled_and_becomes_ready(cluster: ClusterHandle, kubectl: Kubectl, namespace: str) -> None:
    # Only the local cluster's fake nodes have GPUs.
    gpu = {} if cluster.external else {"nvidia.com/gpu": "1"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gpu-pod", "namespace": namespace, "labels": {"app": "gpu-pod"}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "16Mi", **gpu},
                        "limits": gpu,
                    },
                }
            ]
        },
    }
    kubectl.create(pod)
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/gpu-pod", "--timeout=60s")
    got = kubectl.get_json("-n", namespace, "pod/gpu-pod")
    assert got["spec"]["nodeName"], "the scheduler bound the pod to a node"
    if not cluster.external:
        node = kubectl.get_json("node", got["spec"]["nodeName"])
        assert node["metadata"]["annotations"].get("kwok.x-k8s.io/node") == "fake"
    assert got["status"]["phase"] == "Running"
    assert got["status"].get("podIP")


def test_pod_that_fits_nowhere_stays_pending(kubectl: Kubectl, namespace: str) -> None:
    """The scheduler really accounts for extended resources: 9 GPUs fit on no 8-GPU node."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "too-big", "namespace": namespace},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "resources": {"requests": {"nvidia.com/gpu": "9"}, "limits": {"nvidia.com/gpu": "9"}},
                }
            ]
        },
    }
    kubectl.create(pod)

    def unschedulable() -> bool:
        conds = kubectl.get_json("-n", namespace, "pod/too-big")["status"].get("conditions", [])
        return any(c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conds)

    wait_until(unschedulable, 30, "PodScheduled=False/Unschedulable on pod too-big")
    assert not kubectl.get_json("-n", namespace, "pod/too-big")["spec"].get("nodeName")


@pytest.mark.parametrize("cascade", ["background", "foreground"])
def test_deleting_owner_garbage_collects_dependents(kubectl: Kubectl, namespace: str, cascade: str) -> None:
    kubectl("create", "configmap", "owner", "-n", namespace, "--from-literal=k=v")
    owner = kubectl.get_json("-n", namespace, "configmap/owner")
    owner_ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "blockOwnerDeletion": True,
    }
    dependent_cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "dependent", "namespace": namespace, "ownerReferences": [owner_ref]},
        "data": {"k": "v"},
    }
    dependent_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "dependent-pod", "namespace": namespace, "ownerReferences": [owner_ref]},
        "spec": {"containers": [{"name": "main", "image": IMAGE}]},
    }
    bystander = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "bystander", "namespace": namespace},
    }
    for obj in (dependent_cm, dependent_pod, bystander):
        kubectl.create(obj)
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/dependent-pod", "--timeout=60s")

    # kubectl delete waits until the owner itself is gone.
    kubectl("delete", "-n", namespace, "configmap/owner", f"--cascade={cascade}", "--timeout=60s")
    if cascade == "foreground":
        # Foreground deletion removes the owner only after its blocking dependents are gone.
        assert not kubectl.exists("-n", namespace, "configmap/dependent")
        assert not kubectl.exists("-n", namespace, "pod/dependent-pod")
    wait_until(
        lambda: (
            not kubectl.exists("-n", namespace, "configmap/dependent")
            and not kubectl.exists("-n", namespace, "pod/dependent-pod")
        ),
        60,
        "the garbage collector to delete the owner's dependents",
    )
    assert kubectl.exists("-n", namespace, "configmap/bystander")


# ---------------------------------------------------------------------------------------------
# the project's own client and process fixtures, against the same server

CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")


async def test_kube_fixture_talks_to_the_cluster(kube: Any, namespace: str) -> None:
    body = {"metadata": {"name": "via-client", "labels": {"fixture": "kube"}}, "data": {"a": "1"}}
    created = await kube.create(CONFIGMAPS, namespace, body)
    assert created["metadata"]["uid"]
    page = await kube.list(CONFIGMAPS, namespace, label_selector="fixture=kube")
    assert [o["metadata"]["name"] for o in page["items"]] == ["via-client"]
    await kube.patch(CONFIGMAPS, namespace, "via-client", {"data": {"a": "2"}})
    assert (await kube.get(CONFIGMAPS, namespace, "via-client"))["data"] == {"a": "2"}
    await kube.delete(CONFIGMAPS, namespace, "via-client")
    with pytest.raises(NotFound):
        await kube.get(CONFIGMAPS, namespace, "via-client")


def test_run_controller_starts_and_stops_gracefully(crds: list[str], run_controller: Any) -> None:
    ctrl = run_controller()
    ctrl.wait_for_log("caches synced", timeout=60)
    assert ctrl.alive()
    assert ctrl.stop() == 0, ctrl.log_text()[-3000:]


# ---------------------------------------------------------------------------------------------
# CRDs


def test_crds_install_and_are_served(crds: list[str], kubectl: Kubectl) -> None:
    assert f"stormservices.{GROUP}" in crds
    assert f"rolesets.{GROUP}" in crds
    for name in crds:
        crd = kubectl.get_json("crd", name)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", name
        assert conditions.get("NamesAccepted") == "True", name
    served = kubectl("api-resources", f"--api-group={GROUP}", "-o", "name").stdout.split()
    assert f"stormservices.{GROUP}" in served
    assert f"rolesets.{GROUP}" in served


def _role(name: str, app: str) -> dict[str, Any]:
    return {
        "name": name,
        "replicas": 1,
        "stateful": False,
        "template": {
            "metadata": {"labels": {"app": app, "role": name}},
            "spec": {"containers": [{"name": "main", "image": IMAGE}]},
        },
    }


def valid_stormservice(name: str, namespace: str) -> dict[str, Any]:
    """Minimal valid StormService; spec.replicas is left out to exercise its schema default."""
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "StormService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"roles": [_role("prefill", name), _role("decode", name)]},
            },
        },
    }


def test_valid_stormservice_is_accepted(crds: list[str], kubectl: Kubectl, namespace: str) -> None:
    kubectl.create(valid_stormservice("ok", namespace))
    got = kubectl.get_json("-n", namespace, f"stormservices.{GROUP}/ok")
    assert [r["name"] for r in got["spec"]["template"]["spec"]["roles"]] == ["prefill", "decode"]
    assert got["spec"]["replicas"] == 1, "spec.replicas defaults to 1 in the schema"


def _duplicate_roles(obj: dict[str, Any]) -> None:
    roles = obj["spec"]["template"]["spec"]["roles"]
    roles[1]["name"] = roles[0]["name"]


def _selector_mismatch(obj: dict[str, Any]) -> None:
    obj["spec"]["selector"] = {"matchLabels": {"app": "something-else"}}


def _percent_without_sign(obj: dict[str, Any]) -> None:
    obj["spec"]["updateStrategy"] = {"type": "RollingUpdate", "maxSurge": "50"}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(_duplicate_roles, "role names must be unique", id="duplicate-role-names"),
        pytest.param(
            _selector_mismatch,
            "selector does not match template labels",
            id="selector-does-not-match-template",
        ),
        pytest.param(_percent_without_sign, "percentage", id="percent-without-percent-sign"),
    ],
)
def test_invalid_stormservice_is_rejected_by_cel(
    crds: list[str], kubectl: Kubectl, namespace: str, mutate: Any, expected: str
) -> None:
    obj = copy.deepcopy(valid_stormservice("bad", namespace))
    mutate(obj)
    proc = kubectl.create(obj, check=False)
    assert proc.returncode != 0, f"the API server accepted an invalid StormService: {proc.stdout}"
    message = proc.stderr
    assert "is invalid" in message, message  # a validation error from the server, not a client error
    assert expected in message, message
    assert not kubectl.exists("-n", namespace, f"stormservices.{GROUP}/bad")
