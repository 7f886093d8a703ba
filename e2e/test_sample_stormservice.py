"""End to end, on whatever cluster KUBECONFIG names (kind, a dev cluster) or, without it, on the
session's local control plane: the controller process, the README's sample, and the operations
a user does with kubectl (apply, scale, change the image, delete)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import ControllerFactory, Kubectl, wait_until

pytestmark = pytest.mark.e2e

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "prefill-decode.yaml"
TIMEOUT = 180


def sample() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(SAMPLE.read_text()) if d]
    (storm,) = [d for d in docs if d["kind"] == "StormService"]
    assert isinstance(storm, dict)
    return storm


def expected_pods_per_roleset(storm: dict[str, Any]) -> int:
    return sum(
        r.get("replicas", 1) * r.get("podGroupSize", 1) for r in storm["spec"]["template"]["spec"]["roles"]
    )


def storm_status(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = kubectl.get_json("-n", ns, "stormservice", name).get("status") or {}
    return status


def is_ready(status: dict[str, Any], replicas: int) -> bool:
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return (
        status.get("readyReplicas") == replicas
        and status.get("updatedReplicas") == replicas
        and status.get("replicas") == replicas
        and status.get("currentRevision") == status.get("updateRevision")
        and bool(ready)
        and ready[0].get("status") == "True"
    )


def pods(kubectl: Kubectl, ns: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl.get_json("-n", ns, "pods", "-l", f"storm-service-name={name}")[
        "items"
    ]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions") or []
    )


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0].get("env") or []}


def test_sample_lifecycle(
    kubectl: Kubectl, crds: list[str], namespace: str, run_controller: ControllerFactory
) -> None:
    storm = sample()
    name = storm["metadata"]["name"]
    replicas = storm["spec"]["replicas"]
    per_roleset = expected_pods_per_roleset(storm)
    run_controller("--namespace", namespace)

    # apply: every RoleSet and pod comes up, carrying AIBrix's labels and env vars
    kubectl("apply", "-n", namespace, "-f", str(SAMPLE))
    wait_until(lambda: is_ready(storm_status(kubectl, namespace, name), replicas), TIMEOUT, "sample Ready")
    live = pods(kubectl, namespace, name)
    assert len(live) == replicas * per_roleset and all(pod_ready(p) for p in live)
    for pod in live:
        labels = pod["metadata"]["labels"]
        assert labels["storm-service-name"] == name
        assert labels["role-name"] in {"prefill", "decode"}
        assert pod["spec"]["subdomain"] == name
        env = env_of(pod)
        assert env["STORM_SERVICE_NAME"] == name and env["ROLE_NAME"] == labels["role-name"]
    # multi-node decode: every member of a group points at member 0 through the headless Service
    groups: dict[str, dict[str, str]] = {}
    for pod in live:
        labels = pod["metadata"]["labels"]
        if labels["role-name"] == "decode":
            member = labels["stormservice.orchestration.aibrix.ai/pod-group-index"]
            podset = labels["stormservice.orchestration.aibrix.ai/podset-name"]
            groups.setdefault(podset, {})[member] = pod["metadata"]["name"]
    assert groups and all(set(g) == {"0", "1"} for g in groups.values())
    for pod in live:
        labels = pod["metadata"]["labels"]
        if labels["role-name"] == "decode":
            leader = groups[labels["stormservice.orchestration.aibrix.ai/podset-name"]]["0"]
            assert env_of(pod)["LEADER_ADDRESS"] == f"{leader}.{name}.{namespace}.svc"
    service = kubectl.get_json("-n", namespace, "service", name)
    assert service["spec"]["clusterIP"] == "None"

    # kubectl scale through the scale subresource
    kubectl("scale", "-n", namespace, f"stormservice/{name}", "--replicas", str(replicas + 1))
    wait_until(
        lambda: is_ready(storm_status(kubectl, namespace, name), replicas + 1), TIMEOUT, "scaled up and Ready"
    )
    assert len(pods(kubectl, namespace, name)) == (replicas + 1) * per_roleset

    # a new image rolls every RoleSet to the new revision
    before = storm_status(kubectl, namespace, name)["updateRevision"]
    patch = [
        {
            "op": "add",
            "path": "/spec/template/spec/roles/0/template/metadata/annotations",
            "value": {"rollout": "2"},
        }
    ]
    kubectl("patch", "-n", namespace, "stormservice", name, "--type=json", "-p", json.dumps(patch))
    wait_until(
        lambda: (
            (s := storm_status(kubectl, namespace, name)).get("updateRevision") != before
            and is_ready(s, replicas + 1)
        ),
        TIMEOUT,
        "rolled out to the new revision",
    )

    # delete: garbage collection removes RoleSets, pods and the Service
    kubectl("delete", "-n", namespace, "stormservice", name, "--wait=false")
    wait_until(
        lambda: (
            not kubectl.get_json("-n", namespace, "rolesets")["items"] and not pods(kubectl, namespace, name)
        ),
        TIMEOUT,
        "everything garbage-collected",
    )
    assert not kubectl.exists("-n", namespace, "service", name)
