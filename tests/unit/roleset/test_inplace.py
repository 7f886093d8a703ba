"""In-place update: eligibility diff, patches and completion."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from controller.roleset import labels as L
from controller.roleset.inplace import (
    check_completion,
    complete_patch,
    default_pull_policy,
    gate_status_patch,
    inplace_diff,
    parse_state,
    runtime_image_matches,
    start_patch,
)
from controller.roleset.pods import PodSpecInputs, RoleSetInfo, render_pod
from controller.roleset.scheduling import topology_term

RS = RoleSetInfo(name="rs", namespace="ns", uid="u1", labels={L.STORM_SERVICE_NAME_LABEL: "ss"})
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def template(image: str = "vllm:v1", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "x"}},
        "spec": {
            "containers": [{"name": "main", "image": image, "env": [{"name": "A", "value": "1"}]}],
            **spec,
        },
    }


def rendered(tpl: dict[str, Any], hash_: str, index: int | None = None) -> dict[str, Any]:
    return render_pod(RS, PodSpecInputs(role="w", template=tpl, template_hash=hash_), index)


def as_live(pod: dict[str, Any]) -> dict[str, Any]:
    """What the API server stores: defaults filled in."""
    live = copy.deepcopy(pod)
    live["metadata"]["name"] = live["metadata"].get("name") or "rs-w-abcde"
    spec = live["spec"]
    spec.update(
        schedulerName="default-scheduler",
        restartPolicy="Always",
        dnsPolicy="ClusterFirst",
        terminationGracePeriodSeconds=30,
        enableServiceLinks=True,
        serviceAccountName="default",
        serviceAccount="default",
        securityContext={},
        priority=0,
        preemptionPolicy="PreemptLowerPriority",
        nodeName="node-1",
        tolerations=[
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
        volumes=[
            {
                "name": "kube-api-access-x1",
                "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}], "defaultMode": 420},
            }
        ],
    )
    for c in spec["containers"]:
        c.update(
            terminationMessagePath="/dev/termination-log",
            terminationMessagePolicy="File",
            imagePullPolicy=default_pull_policy(c["image"]),
            resources={},
            volumeMounts=[{"name": "kube-api-access-x1", "mountPath": "/var/run/secrets"}],
        )
    return live


OLD = as_live(rendered(template("vllm:v1"), "h1"))


@pytest.mark.parametrize(
    ("new_template", "eligible"),
    [
        (template("vllm:v2"), True),
        (template("vllm:v1"), True),  # nothing but our own labels differ
        (template("vllm:latest"), True),
        (template("vllm:v2", nodeSelector={"gpu": "a100"}), False),
        (template("vllm:v2", restartPolicy="Always"), True),  # explicit default
        (template("vllm:v2", terminationGracePeriodSeconds=60), False),
        ({**template("vllm:v2"), "metadata": {"labels": {"app": "y"}}}, False),
    ],
)
def test_eligibility(new_template: dict[str, Any], eligible: bool) -> None:
    desired = rendered(new_template, "h2")
    assert (inplace_diff(OLD, desired) is None) is eligible, inplace_diff(OLD, desired)


def test_env_change_is_not_eligible() -> None:
    tpl = template("vllm:v2")
    tpl["spec"]["containers"][0]["env"] = [{"name": "A", "value": "2"}]
    reason = inplace_diff(OLD, rendered(tpl, "h2"))
    assert reason is not None and "env" in reason


def test_added_container_is_not_eligible() -> None:
    tpl = template("vllm:v2")
    tpl["spec"]["containers"].append({"name": "side", "image": "busybox"})
    assert inplace_diff(OLD, rendered(tpl, "h2")) == "containers added, removed or reordered"


def test_init_container_image_is_not_eligible() -> None:
    old = as_live(rendered(template("a", initContainers=[{"name": "i", "image": "x:1"}]), "h1"))
    new = rendered(template("b", initContainers=[{"name": "i", "image": "x:2"}]), "h2")
    assert inplace_diff(old, new) == "init container images changed"


def test_stateful_pod_keeps_its_name_and_hostname() -> None:
    old = as_live(rendered(template("vllm:v1"), "h1", index=0))
    assert inplace_diff(old, rendered(template("vllm:v2"), "h2", index=0)) is None
    assert inplace_diff(old, rendered(template("vllm:v2"), "h2", index=1)) is not None  # other slot


def test_topology_term_added_later_does_not_force_recreate() -> None:
    term = topology_term({"scope": "RoleSet", "key": "zone"}, storm_service="ss", roleset="rs", role="w")
    assert term is not None
    desired = render_pod(
        RS, PodSpecInputs(role="w", template=template("vllm:v2"), template_hash="h2", affinity=term)
    )
    assert inplace_diff(OLD, desired) is not None
    assert inplace_diff(OLD, desired, term[1]) is None


def test_start_patch_records_state_and_images() -> None:
    live = copy.deepcopy(OLD)
    live["status"] = {
        "containerStatuses": [
            {"name": "main", "image": "docker.io/library/vllm:v1", "imageID": "sha:old", "ready": True}
        ]
    }
    patch = start_patch(live, rendered(template("vllm:v2"), "h2"), "h2", NOW)
    assert patch["spec"] == {"containers": [{"name": "main", "image": "vllm:v2"}]}
    ann = patch["metadata"]["annotations"]
    assert ann[L.INPLACE_TARGET_HASH_ANNOTATION] == "h2"
    assert ann[L.INPLACE_PENDING_REASON_ANNOTATION] is None
    state = orjson.loads(ann[L.INPLACE_STATE_ANNOTATION])
    assert state == {
        "lastContainerStatuses": {"main": {"imageID": "sha:old", "image": "docker.io/library/vllm:v1"}},
        "updateTimestamp": "2024-05-01T12:00:00Z",
    }


def test_complete_patch_promotes_hash_and_clears_annotations() -> None:
    p = complete_patch("h2", "3", "ss-abc")
    assert p["metadata"]["labels"] == {
        L.ROLE_TEMPLATE_HASH_LABEL: "h2",
        L.ROLE_REVISION_LABEL: "3",
        L.ROLE_REVISION_NAME_LABEL: "ss-abc",
    }
    assert all(v is None for v in p["metadata"]["annotations"].values())


def test_gate_patch() -> None:
    p = gate_status_patch("False", NOW)
    types = [(c["type"], c["status"]) for c in p["status"]["conditions"]]
    assert types == [(L.INPLACE_READY_CONDITION, "False")]  # Ready is the kubelet's


def inflight(
    *,
    ready: bool = True,
    image: str = "vllm:v2",
    image_id: str = "sha:new",
    c_ready: bool = True,
    old_image: str = "vllm:v1",
    gate: bool = False,
    containers_ready: bool | None = None,
) -> dict[str, Any]:
    pod = copy.deepcopy(OLD)
    pod["spec"]["containers"][0]["image"] = "vllm:v2"
    if gate:
        pod["spec"]["readinessGates"] = [{"conditionType": L.INPLACE_READY_CONDITION}]
    state = {
        "lastContainerStatuses": {"main": {"imageID": "sha:old", "image": old_image}},
        "updateTimestamp": "2024-05-01T11:00:00Z",
    }
    pod["metadata"]["annotations"][L.INPLACE_STATE_ANNOTATION] = orjson.dumps(state).decode()
    conds = [{"type": "Ready", "status": "True" if ready else "False"}]
    if containers_ready is not None:
        conds.append({"type": "ContainersReady", "status": "True" if containers_ready else "False"})
    pod["status"] = {
        "conditions": conds,
        "containerStatuses": [{"name": "main", "image": image, "imageID": image_id, "ready": c_ready}],
    }
    return pod


@pytest.mark.parametrize(
    ("pod", "done", "reason"),
    [
        (inflight(), True, ""),
        (inflight(ready=False), False, "PodNotReady"),
        (inflight(c_ready=False), False, "ContainerNotReady"),
        (inflight(image_id="sha:old"), False, "ImageIDUnchanged"),
        (inflight(image="vllm:v1"), False, "RuntimeImageMismatch"),
        (inflight(image="docker.io/library/vllm:v2"), True, ""),
        # Reverted to the image that was running: no restart needed.
        (inflight(image_id="sha:old", old_image="vllm:v2"), True, ""),
        # With the in-place gate, Ready stays False until we flip the gate: ContainersReady counts.
        (inflight(ready=False, gate=True, containers_ready=True), True, ""),
        (inflight(ready=False, gate=True, containers_ready=False), False, "PodNotReady"),
    ],
)
def test_completion(pod: dict[str, Any], done: bool, reason: str) -> None:
    check = check_completion(pod)
    assert (check.done, check.reason) == (done, reason)
    assert check.started == datetime(2024, 5, 1, 11, 0, 0, tzinfo=UTC)


def test_missing_container_status() -> None:
    pod = inflight()
    pod["status"]["containerStatuses"] = []
    assert check_completion(pod).reason == "ContainerStatusMissing"


def test_parse_state_tolerates_garbage() -> None:
    pod = {"metadata": {"annotations": {L.INPLACE_STATE_ANNOTATION: "{nope"}}}
    assert parse_state(pod) == ({}, None)


@pytest.mark.parametrize(
    ("runtime", "spec", "match"),
    [
        ("vllm:v1", "vllm:v1", True),
        ("docker.io/library/nginx:latest", "nginx", True),
        ("docker.io/org/img:1", "org/img:1", True),
        ("registry.local:5000/img:1", "registry.local:5000/img:1", True),
        ("nginx:1", "nginx:2", False),
    ],
)
def test_runtime_image_matches(runtime: str, spec: str, match: bool) -> None:
    assert runtime_image_matches(runtime, spec) is match
