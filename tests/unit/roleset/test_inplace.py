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
            {
                "name": "main",
                "image": "docker.io/library/vllm:v1",
                "imageID": "sha:old",
                "ready": True,
                "containerID": "containerd://aaa",
                "restartCount": 2,
                "state": {"running": {"startedAt": "2024-05-01T10:00:00Z"}},
            }
        ]
    }
    patch = start_patch(live, rendered(template("vllm:v2"), "h2"), "h2", NOW)
    assert patch["spec"] == {"containers": [{"name": "main", "image": "vllm:v2"}]}
    ann = patch["metadata"]["annotations"]
    assert ann[L.INPLACE_TARGET_HASH_ANNOTATION] == "h2"
    assert ann[L.INPLACE_PENDING_REASON_ANNOTATION] is None
    state = orjson.loads(ann[L.INPLACE_STATE_ANNOTATION])
    assert state == {
        "lastContainerStatuses": {
            "main": {
                "imageID": "sha:old",
                "image": "docker.io/library/vllm:v1",
                "containerID": "containerd://aaa",
                "restartCount": "2",
                "startedAt": "2024-05-01T10:00:00Z",
            }
        },
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
    recorded: dict[str, str] | None = None,
    now: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An in-flight pod; `recorded`: more of the container's state at the start (containerID,
    restartCount, startedAt); `now`: more of its status as the kubelet reports it."""
    pod = copy.deepcopy(OLD)
    pod["spec"]["containers"][0]["image"] = "vllm:v2"
    if gate:
        pod["spec"]["readinessGates"] = [{"conditionType": L.INPLACE_READY_CONDITION}]
    state = {
        "lastContainerStatuses": {"main": {"imageID": "sha:old", "image": old_image, **(recorded or {})}},
        "updateTimestamp": "2024-05-01T11:00:00Z",
    }
    pod["metadata"]["annotations"][L.INPLACE_STATE_ANNOTATION] = orjson.dumps(state).decode()
    conds = [{"type": "Ready", "status": "True" if ready else "False"}]
    if containers_ready is not None:
        conds.append({"type": "ContainersReady", "status": "True" if containers_ready else "False"})
    pod["status"] = {
        "conditions": conds,
        "containerStatuses": [
            {"name": "main", "image": image, "imageID": image_id, "ready": c_ready, **(now or {})}
        ],
    }
    return pod


BEFORE = {
    "containerID": "containerd://aaa",
    "restartCount": "0",
    "startedAt": "2024-05-01T10:00:00Z",
}
RUNNING_SINCE_BEFORE = {
    "containerID": "containerd://aaa",
    "restartCount": 0,
    "state": {"running": {"startedAt": "2024-05-01T10:00:00Z"}},
}


@pytest.mark.parametrize(
    ("pod", "done", "reason"),
    [
        (inflight(), True, ""),
        (inflight(ready=False), False, "PodNotReady"),
        (inflight(c_ready=False), False, "ContainerNotReady"),
        (inflight(image_id="sha:old"), False, "ContainerNotRestarted"),
        # A new tag of the same digest (":rc1" retagged ":1.0"): the imageID stays; the kubelet
        # shows the restart by a new container, a higher restart count or a later start.
        (
            inflight(image_id="sha:old", recorded=BEFORE, now=RUNNING_SINCE_BEFORE),
            False,
            "ContainerNotRestarted",
        ),
        (
            inflight(
                image_id="sha:old",
                recorded=BEFORE,
                now={**RUNNING_SINCE_BEFORE, "containerID": "containerd://bbb"},
            ),
            True,
            "",
        ),
        (
            inflight(image_id="sha:old", recorded=BEFORE, now={**RUNNING_SINCE_BEFORE, "restartCount": 1}),
            True,
            "",
        ),
        (
            inflight(
                image_id="sha:old",
                recorded=BEFORE,
                now={**RUNNING_SINCE_BEFORE, "state": {"running": {"startedAt": "2024-05-01T11:00:05Z"}}},
            ),
            True,
            "",
        ),
        # Restarted, but the runtime still runs the old image: not complete.
        (
            inflight(
                image="vllm:v1",
                image_id="sha:old",
                recorded=BEFORE,
                now={**RUNNING_SINCE_BEFORE, "restartCount": 1},
            ),
            False,
            "RuntimeImageMismatch",
        ),
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


def _standalone(tpl: dict[str, Any], hash_: str) -> dict[str, Any]:
    """A pod of a RoleSet no StormService owns: STORM_SERVICE_NAME and ROLESET_INDEX are empty."""
    return render_pod(
        RoleSetInfo(name="rs", namespace="ns", uid="u1"),
        PodSpecInputs(role="w", template=tpl, template_hash=hash_),
    )


def _without_empty_env_values(pod: dict[str, Any]) -> dict[str, Any]:
    """As the API server stores it: an env var's empty value has no `value` key (omitempty)."""
    out = copy.deepcopy(pod)
    for c in out["spec"]["containers"]:
        c["env"] = [{k: v for k, v in e.items() if not (k == "value" and v == "")} for e in c["env"]]
    return out


def test_empty_builtin_env_values_stored_without_the_key_are_not_a_change() -> None:
    old = _without_empty_env_values(as_live(_standalone(template("vllm:v1"), "h1")))
    assert [e for e in old["spec"]["containers"][0]["env"] if "value" not in e]  # the case at hand
    assert inplace_diff(old, _standalone(template("vllm:v2"), "h2")) is None


def _container(**fields: Any) -> dict[str, Any]:
    return {"name": "main", "image": "vllm:v1", **fields}


@pytest.mark.parametrize(
    ("sent", "stored", "same"),
    [
        # Non-pointer fields at their zero value: the server drops them or writes the zero.
        ({"workingDir": ""}, {}, True),
        ({"stdin": False, "tty": False}, {}, True),
        ({"command": [], "args": []}, {}, True),
        (
            {"volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": False, "subPath": ""}]},
            {"volumeMounts": [{"name": "v", "mountPath": "/v"}]},
            True,
        ),
        (
            {"env": [{"name": "E", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}]},
            {
                "env": [
                    {
                        "name": "E",
                        "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "0"}},
                    }
                ]
            },
            True,
        ),
        (
            {"readinessProbe": {"exec": {"command": ["true"]}, "initialDelaySeconds": 0}},
            {"readinessProbe": {"exec": {"command": ["true"]}}},
            True,
        ),
        # Quantities come back canonical.
        (
            {
                "resources": {
                    "limits": {"cpu": "0.5", "memory": "1Gi"},
                    "requests": {"cpu": "0.5", "memory": "1Gi"},
                }
            },
            {
                "resources": {
                    "limits": {"cpu": "500m", "memory": "1Gi"},
                    "requests": {"cpu": "500m", "memory": "1Gi"},
                }
            },
            True,
        ),
        # Pointer fields keep unset apart from zero: these are real differences.
        ({"securityContext": {"runAsUser": 0}}, {"securityContext": {}}, False),
        ({"securityContext": {"privileged": False}}, {"securityContext": {}}, False),
        (
            {"resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}},
            {"resources": {"limits": {"cpu": "2"}, "requests": {"cpu": "2"}}},
            False,
        ),
        ({"env": [{"name": "E", "value": ""}]}, {"env": [{"name": "E", "value": "x"}]}, False),
    ],
)
def test_zero_values_the_server_drops_are_not_a_change(
    sent: dict[str, Any], stored: dict[str, Any], same: bool
) -> None:
    old = as_live(rendered(template("vllm:v1"), "h1"))
    old["spec"]["containers"][0].update(stored)
    new_template = template("vllm:v2")
    new_template["spec"]["containers"] = [_container(image="vllm:v2", env=[{"name": "A", "value": "1"}])]
    new_template["spec"]["containers"][0].update(sent)
    if "env" not in sent:
        old["spec"]["containers"][0]["env"] = rendered(template("vllm:v1"), "h1")["spec"]["containers"][0][
            "env"
        ]
    else:
        base = rendered(template("vllm:v1"), "h1")["spec"]["containers"][0]["env"][:5]
        old["spec"]["containers"][0]["env"] = base + stored["env"]
    assert (inplace_diff(old, rendered(new_template, "h2")) is None) is same, inplace_diff(
        old, rendered(new_template, "h2")
    )


def test_volume_sources_that_are_empty_objects_stay_different() -> None:
    """emptyDir: {} and secret: {} are pointers to structs: both kept, and not the same."""
    old = as_live(rendered(template("vllm:v1"), "h1"))
    old["spec"]["volumes"].insert(0, {"name": "v", "emptyDir": {}})
    same = rendered(template("vllm:v2", volumes=[{"name": "v", "emptyDir": {}}]), "h2")
    other = rendered(template("vllm:v2", volumes=[{"name": "v", "configMap": {}}]), "h2")
    assert inplace_diff(old, same) is None
    assert inplace_diff(old, other) is not None
