"""Progress deadline and automatic rollback (issue 15, feature 6), on the local control plane.

A stalled rollout here is one to a template whose pods no node can take (a nodeSelector no kwok
node matches): they stay Pending and never Ready. kwok sets pods Ready itself, readiness gates
included, so a readiness gate nobody sets would not stall anything.

- test_the_crd_refuses_rollback_without_a_deadline: admission (CEL) with the message users see;
  the sample is admitted (server-side dry run).
- test_a_stalled_rollout_reports_the_deadline_and_waits: without rollbackOnFailure,
  Progressing=False ProgressDeadlineExceeded names the revision; the template is left alone;
  fixing the template makes it progress and complete.
- test_a_stalled_rollout_is_rolled_back_to_the_last_ready_revision: with rollbackOnFailure, the
  template returns to the previous one (event RolledBack, condition RolledBack), everything is
  Ready again on the old revision, and the controller never writes the template again.
- test_a_progressing_rollout_never_times_out: a rollout longer than the deadline whose steps
  are shorter keeps Progressing=True, the clock reset on each step (the test paces the steps by
  binding the new pods itself, so the rollout is longer than the deadline on any machine).
- test_the_template_write_is_conditional: the rollback's writes (status, then spec.template),
  against the real API server: refused (409) once the StormService changed after it was read;
  otherwise the whole template is replaced (no key of the failed one left behind).
- test_an_aibrix_manifest_behaves_as_before: samples/prefill-decode.yaml (no deadline) is
  created and rolled: no lastUpdateTime, no lastReadyRevision, no RolledBack, no spec write.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.runtime.client import ApiClient
from controller.runtime.errors import Conflict
from controller.runtime.resources import STORMSERVICES
from controller.stormservice.rollback import KubeRollbackControl
from tests import manifests
from tests.cluster import ControllerProcess, Kubectl
from tests.kubectl_reads import StormServiceReads
from tests.storm_reads import condition

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

IMAGE_V1 = "registry.k8s.io/pause:3.10"
IMAGE_V2 = "registry.k8s.io/pause:3.9"
ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 15
UNSCHEDULABLE = {"stormservice.test/no-such-node": "true"}
PACED = "stormservice-test-paced"  # no such scheduler: the test binds these pods itself
STEP = 4.0  # seconds between two bindings, well within DEADLINE even on a loaded machine


def storm(name: str, *, replicas: int = 1, roles: int = 1, **spec: Any) -> dict[str, Any]:
    return manifests.storm(
        name,
        *(manifests.role(f"role{i}", 1, image=IMAGE_V1) for i in range(roles)),
        replicas=replicas,
        **spec,
    )


class Watched(StormServiceReads):
    """Reads of one StormService, its RoleSets, pods and events, through kubectl."""

    wait_timeout = 180.0

    def condition(self, type_: str, obj: dict[str, Any] | None = None) -> dict[str, Any]:
        return condition(obj or self.storm(), type_) or {}

    def ready_on(self, revision: str | None = None) -> bool:
        """Ready, every RoleSet of the update revision (`revision` if given), nothing else left."""
        obj = self.storm()
        status = obj.get("status") or {}
        if self.condition("Ready", obj).get("status") != "True":
            return False
        if revision is not None and status.get("updateRevision") != revision:
            return False
        return all(
            r["metadata"]["labels"].get("storm-service-revision") == status.get("updateRevision")
            for r in self.rolesets()
        )

    def events(self, reason: str) -> list[dict[str, Any]]:
        """Events of that reason on the StormService."""
        return [e for e in super().events(reason) if e["involvedObject"]["name"] == self.name]

    def roll_to_unschedulable(self) -> None:
        """A new revision whose pods no node takes: a new image and a nodeSelector nobody has."""
        self.patch(
            [
                {
                    "op": "replace",
                    "path": "/spec/template/spec/roles/0/template/spec/containers/0/image",
                    "value": IMAGE_V2,
                },
                {
                    "op": "add",
                    "path": "/spec/template/spec/roles/0/template/spec/nodeSelector",
                    "value": UNSCHEDULABLE,
                },
            ]
        )


def test_the_crd_refuses_rollback_without_a_deadline(
    kubectl: Kubectl, namespace: str, crds: list[str]
) -> None:
    message = "rollbackOnFailure requires progressDeadlineSeconds > 0"
    refusals = [
        (storm("no-deadline", rollbackOnFailure=True), message),
        (storm("zero-deadline", rollbackOnFailure=True, progressDeadlineSeconds=0), message),
    ]
    for manifest, expected in refusals:
        refused = kubectl.apply(manifest, "-n", namespace, check=False)
        assert refused.returncode != 0, f"admitted, expected: {expected}"
        assert expected in refused.stderr, refused.stderr

    kubectl.apply(storm("with-deadline", rollbackOnFailure=True, progressDeadlineSeconds=30), "-n", namespace)
    kubectl.apply(storm("deadline-only", progressDeadlineSeconds=30), "-n", namespace)
    kubectl.apply(storm("off", rollbackOnFailure=False), "-n", namespace)
    sample = (ROOT / "samples" / "progress-deadline.yaml").read_text()
    kubectl.apply(sample, "-n", namespace, "--server-side", "--dry-run=server")


def test_a_stalled_rollout_reports_the_deadline_and_waits(
    kubectl: Kubectl, namespace: str, crds: list[str], run_controller: Callable[..., ControllerProcess]
) -> None:
    controller = run_controller(f"--namespace={namespace}")
    name = "stalls"
    kubectl.apply(storm(name, progressDeadlineSeconds=DEADLINE), "-n", namespace)
    ss = Watched(kubectl, namespace, name, controller)
    ss.wait(ss.ready_on, "the StormService Ready")
    first = ss.storm()["status"]["updateRevision"]
    assert ss.storm()["status"]["lastReadyRevision"] == first
    assert ss.condition("Progressing")["lastUpdateTime"]

    ss.roll_to_unschedulable()
    ss.wait(lambda: ss.storm()["status"]["updateRevision"] != first, "the rollout to start")
    stalled = ss.storm()["status"]["updateRevision"]
    ss.wait(
        lambda: ss.condition("Progressing").get("reason") == "ProgressDeadlineExceeded",
        "Progressing=False ProgressDeadlineExceeded",
        timeout=120,
    )
    progressing = ss.condition("Progressing")
    assert progressing["status"] == "False"
    assert f"revision {stalled} made no progress for {DEADLINE}s" in progressing["message"], progressing
    obj = ss.storm()
    assert "RolledBack" not in {c["type"] for c in obj["status"]["conditions"]}
    assert obj["spec"]["template"]["spec"]["roles"][0]["template"]["spec"]["nodeSelector"] == UNSCHEDULABLE
    assert obj["status"]["lastReadyRevision"] == first
    # The old RoleSet keeps serving.
    assert ss.condition("Ready")["status"] == "False"
    assert any(p["spec"]["containers"][0]["image"] == IMAGE_V1 for p in ss.pods())

    # Fixed by the user: the rollout moves again, and completes.
    ss.patch([{"op": "remove", "path": "/spec/template/spec/roles/0/template/spec/nodeSelector"}])
    ss.wait(ss.ready_on, "the fixed rollout to complete")
    assert ss.condition("Progressing")["reason"] == "RolloutComplete"
    assert all(p["spec"]["containers"][0]["image"] == IMAGE_V2 for p in ss.pods())


def test_a_stalled_rollout_is_rolled_back_to_the_last_ready_revision(
    kubectl: Kubectl, namespace: str, crds: list[str], run_controller: Callable[..., ControllerProcess]
) -> None:
    controller = run_controller(f"--namespace={namespace}")
    name = "rolls-back"
    kubectl.apply(
        storm(name, replicas=2, roles=2, progressDeadlineSeconds=DEADLINE, rollbackOnFailure=True),
        "-n",
        namespace,
    )
    ss = Watched(kubectl, namespace, name, controller)
    ss.wait(ss.ready_on, "the StormService Ready")
    good = ss.storm()
    good_revision = good["status"]["updateRevision"]
    good_template = good["spec"]["template"]

    ss.roll_to_unschedulable()
    ss.wait(lambda: bool(ss.events("RolledBack")), "a RolledBack event", timeout=120)
    event = ss.events("RolledBack")[0]
    assert event["type"] == "Warning"
    assert f"to revision {good_revision}" in event["message"], event
    rolled_back = ss.condition("RolledBack")
    assert (rolled_back["status"], rolled_back["reason"]) == ("True", "ProgressDeadlineExceeded")
    assert rolled_back["message"] == event["message"]

    ss.wait(lambda: ss.ready_on(good_revision), f"Ready again on revision {good_revision}")
    obj = ss.storm()
    assert obj["spec"]["template"] == good_template
    assert obj["status"]["currentRevision"] == good_revision
    pods = ss.pods()
    assert len(pods) == 4
    assert all(
        p["spec"]["containers"][0]["image"] == IMAGE_V1 and not p["spec"].get("nodeSelector") for p in pods
    )
    assert ss.condition("Progressing", obj)["reason"] == "RolloutComplete"
    # Still says what happened, once.
    assert ss.condition("RolledBack", obj)["status"] == "True"
    assert len(ss.events("RolledBack")) == 1
    assert int(ss.events("RolledBack")[0].get("count") or 1) == 1
    generation = obj["metadata"]["generation"]

    # A new rollout of the user's moves on: RolledBack goes; the controller never wrote the
    # spec again (only the user's patch moves the generation).
    ss.patch(
        [
            {
                "op": "replace",
                "path": "/spec/template/spec/roles/1/template/spec/containers/0/image",
                "value": IMAGE_V2,
            }
        ]
    )
    ss.wait(
        lambda: ss.ready_on() and ss.storm()["status"]["updateRevision"] != good_revision, "the new rollout"
    )
    assert "RolledBack" not in {c["type"] for c in ss.storm()["status"]["conditions"]}
    assert ss.storm()["metadata"]["generation"] == generation + 1


def test_a_stalled_rollback_stops_without_looping(
    kubectl: Kubectl, namespace: str, crds: list[str], run_controller: Callable[..., ControllerProcess]
) -> None:
    controller = run_controller(f"--namespace={namespace}")
    name = "no-loop"
    manifest = storm(name, progressDeadlineSeconds=DEADLINE, rollbackOnFailure=True)
    # The old RoleSet goes first, so the rollback has to create pods of the good revision again.
    manifest["spec"]["updateStrategy"] = {"type": "RollingUpdate", "maxSurge": 0, "maxUnavailable": 1}
    kubectl.apply(manifest, "-n", namespace)
    ss = Watched(kubectl, namespace, name, controller)
    ss.wait(ss.ready_on, "the StormService Ready")
    good_revision = ss.storm()["status"]["updateRevision"]
    nodes = [n["metadata"]["name"] for n in kubectl.get_json("nodes")["items"]]
    ss.roll_to_unschedulable()
    # Nothing can be scheduled any more, the good revision's pods included.
    for node in nodes:
        kubectl("cordon", node)
    try:
        ss.wait(lambda: bool(ss.events("RolledBack")), "a RolledBack event", timeout=120)
        generation = ss.storm()["metadata"]["generation"]
        ss.wait(
            lambda: (
                ss.storm()["status"]["updateRevision"] == good_revision
                and ss.condition("Progressing").get("reason") == "ProgressDeadlineExceeded"
            ),
            "the rollback to stall in turn",
            timeout=120,
        )
        progressing = ss.condition("Progressing")
        assert f"revision {good_revision} made no progress" in progressing["message"], progressing
        assert (
            f"not rolled back: revision {good_revision} is the last one that was Ready"
            in progressing["message"]
        )
        obj = ss.storm()
        assert obj["metadata"]["generation"] == generation, "the template was written again"
        assert len(ss.events("RolledBack")) == 1
        assert int(ss.events("RolledBack")[0].get("count") or 1) == 1
    finally:
        for node in nodes:
            kubectl("uncordon", node)
    ss.wait(lambda: ss.ready_on(good_revision), f"Ready again on revision {good_revision}")
    assert ss.condition("Progressing")["reason"] == "RolloutComplete"


def test_a_progressing_rollout_never_times_out(
    kubectl: Kubectl, namespace: str, crds: list[str], run_controller: Callable[..., ControllerProcess]
) -> None:
    controller = run_controller(f"--namespace={namespace}")
    name = "keeps-going"
    kubectl.apply(storm(name, replicas=10, roles=2, progressDeadlineSeconds=DEADLINE), "-n", namespace)
    ss = Watched(kubectl, namespace, name, controller)
    ss.wait(ss.ready_on, "the StormService Ready")
    first = ss.storm()["status"]["updateRevision"]
    node = kubectl.get_json("nodes")["items"][0]["metadata"]["name"]

    # The test paces the rollout so that it lasts longer than the deadline whatever the
    # machine's speed (kwok readies a pod at once; 10 RoleSets can roll in 3 s): the new pods
    # name a scheduler that does not exist, and the test binds one at a time, STEP seconds
    # apart, a step well within the deadline.
    started = time.monotonic()
    ss.patch(
        [
            {
                "op": "replace",
                "path": "/spec/template/spec/roles/0/template/spec/containers/0/image",
                "value": IMAGE_V2,
            },
            {"op": "add", "path": "/spec/template/spec/roles/0/template/spec/schedulerName", "value": PACED},
        ]
    )
    seen: list[dict[str, Any]] = []
    last_bound = time.monotonic()

    def bind_next_when_due() -> None:
        nonlocal last_bound
        if time.monotonic() - last_bound < STEP:
            return
        waiting = [
            p
            for p in ss.pods("role0")
            if p["spec"].get("schedulerName") == PACED and not p["spec"].get("nodeName")
        ]
        if waiting:
            pod = min(waiting, key=lambda p: p["metadata"]["creationTimestamp"])["metadata"]["name"]
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": pod},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            }
            kubectl(
                "create",
                "-n",
                namespace,
                "--raw",
                f"/api/v1/namespaces/{namespace}/pods/{pod}/binding",
                "-f",
                "-",
                input=json.dumps(binding),
            )
            last_bound = time.monotonic()

    def complete() -> bool:
        obj = ss.storm()
        seen.append(ss.condition("Progressing", obj))
        bind_next_when_due()
        return obj["status"]["updateRevision"] != first and ss.ready_on()

    ss.wait(complete, "the rollout to complete", timeout=300)
    took = time.monotonic() - started
    assert took > DEADLINE, f"the rollout took {took:.0f}s: not longer than the {DEADLINE}s deadline"
    assert not [c for c in seen if c.get("status") != "True"], seen
    # The clock was reset as RoleSets were replaced one by one.
    updates = {c.get("lastUpdateTime") for c in seen if c.get("reason") != "RolloutComplete"}
    assert len(updates) >= 3, (took, updates)
    print(f"rollout of 10 RoleSets took {took:.0f}s with a {DEADLINE}s deadline")
    assert ss.condition("Progressing")["reason"] == "RolloutComplete"


async def test_the_template_write_is_conditional(
    kube: ApiClient, kubectl: Kubectl, namespace: str, crds: list[str]
) -> None:
    name = "conditional"
    manifest = storm(name)
    manifest["spec"]["template"]["spec"]["roles"][0]["template"]["spec"]["nodeSelector"] = UNSCHEDULABLE
    kubectl.apply(manifest, "-n", namespace)
    read = await kube.get(STORMSERVICES, namespace, name)
    good = storm(name)["spec"]["template"]
    kubectl("label", "stormservice", name, "-n", namespace, "edited=by-the-user")
    control = KubeRollbackControl(kube)
    stale = {"metadata": {"resourceVersion": read["metadata"]["resourceVersion"]}, "status": {"replicas": 7}}
    with pytest.raises(Conflict):
        await control.patch_status(read, stale)
    with pytest.raises(Conflict):
        await control.replace_template(read, read["metadata"]["resourceVersion"], good)
    after = await kube.get(STORMSERVICES, namespace, name)
    assert after["spec"]["template"] == read["spec"]["template"], "written over the user's edit"
    assert (after.get("status") or {}).get("replicas") != 7

    written = await control.replace_template(after, after["metadata"]["resourceVersion"], good)
    role = written["spec"]["template"]["spec"]["roles"][0]
    assert "nodeSelector" not in role["template"]["spec"]
    assert written["metadata"]["labels"] == {"edited": "by-the-user"}


def test_an_aibrix_manifest_behaves_as_before(
    kubectl: Kubectl, namespace: str, crds: list[str], run_controller: Callable[..., ControllerProcess]
) -> None:
    controller = run_controller(f"--namespace={namespace}")
    sample = (ROOT / "samples" / "prefill-decode.yaml").read_text()
    name = yaml.safe_load(sample)["metadata"]["name"]
    kubectl.apply(sample, "-n", namespace)
    ss = Watched(kubectl, namespace, name, controller)

    def as_before(obj: dict[str, Any]) -> None:
        status = obj["status"]
        assert "lastReadyRevision" not in status
        assert {c["type"] for c in status["conditions"]} == {"Ready", "Progressing"}
        assert all("lastUpdateTime" not in c for c in status["conditions"])

    ss.wait(ss.ready_on, "the sample Ready")
    as_before(ss.storm())
    first = ss.storm()["status"]["updateRevision"]
    ss.patch(
        [
            {
                "op": "replace",
                "path": "/spec/template/spec/roles/0/template/spec/containers/0/image",
                "value": IMAGE_V2,
            }
        ]
    )
    ss.wait(lambda: ss.storm()["status"]["updateRevision"] != first and ss.ready_on(), "the rollout")
    obj = ss.storm()
    as_before(obj)
    assert obj["metadata"]["generation"] == 2, "the controller wrote the spec"
    assert not ss.events("RolledBack")
