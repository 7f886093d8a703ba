"""Per-role autoscaling through RoleScalers (issue 14), on the local control plane.

- test_the_crd_refuses_external_scaling_outside_pooled_mode: admission (CEL) of the opt-in and of
  ratio bands, with the messages users see.
- test_kubectl_scale_scales_one_role_in_place_within_its_band: `kubectl scale rolescaler/...`
  changes that role's pod count with no pod replaced and no new ControllerRevision; the ratio
  band moves the follower and clamps it (Clamped condition + event); the RoleScalers keep their
  names and uids across a rollout; opting out deletes the RoleScaler.
- test_scaling_while_a_rollout_is_paused_advances_nothing: a role scaled through its RoleScaler
  while a new revision waits (paused) is scaled in the old RoleSet; the rollout neither starts
  nor is lost, and finishes with the new count once resumed.
- test_an_hpa_reads_the_scale_subresource: an autoscaling/v2 HorizontalPodAutoscaler of the
  real kube-controller-manager gets the scale and its selector (AbleToScale=True, no
  FailedGetScale); there is no metrics API here, so ScalingActive may say it lacks metrics.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.cluster import ControllerProcess, Kubectl
from tests.kubectl_reads import StormServiceReads
from tests.manifests import API, IMAGE, role, storm
from tests.storm_reads import is_pod_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

IMAGE_V1 = IMAGE
IMAGE_V2 = "registry.k8s.io/pause:3.9"
DECODE_BAND = {"follows": "prefill", "minRatio": "1.5", "maxRatio": "3"}


class Pooled(StormServiceReads):
    """Reads of one StormService, its RoleScalers and pods, through kubectl."""

    wait_timeout = 180.0

    def scaler(self, role: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get("rolescaler", f"{self.name}-{role}")
        return result

    def scalers(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("rolescalers")["items"]
        return items

    def ready_pods(self, role: str) -> int:
        return sum(1 for p in self.pods(role) if is_pod_ready(p))

    def template_replicas(self) -> dict[str, int]:
        ss = self.storm()
        return {r["name"]: r["replicas"] for r in ss["spec"]["template"]["spec"]["roles"]}

    def clamped(self, role: str) -> dict[str, Any]:
        conditions = (self.scaler(role).get("status") or {}).get("conditions") or ()
        return next((c for c in conditions if c["type"] == "Clamped"), {})

    def wait_role(self, role: str, instances: int) -> None:
        """The role has `instances` ready pods, its RoleScaler reports them, nothing is going."""

        def done() -> bool:
            if not self.kubectl.exists("rolescaler", f"{self.name}-{role}", "-n", self.namespace):
                return False
            status = self.scaler(role).get("status") or {}
            return (
                len(self.pods(role)) == instances
                and self.ready_pods(role) == instances
                and status.get("replicas") == instances
            )

        self.wait(done, f"role {role} at {instances} ready instances, reported by its RoleScaler")


def test_the_crd_refuses_external_scaling_outside_pooled_mode(
    kubectl: Kubectl, namespace: str, crds: list[str]
) -> None:
    refusals = [
        (
            storm("replicated", role("prefill", 1), role("decode", 1, scaling="External"), replicas=3),
            "scaling: External is allowed only in pooled mode (spec.replicas: 1)",
        ),
        (
            storm(
                "selfish",
                role("prefill", 1),
                role("decode", 1, scaling="External", scalingBand={"follows": "decode", "maxRatio": "2"}),
            ),
            "scalingBand.follows must name another role",
        ),
        (
            storm(
                "inverted",
                role("prefill", 1),
                role(
                    "decode",
                    1,
                    scaling="External",
                    scalingBand={"follows": "prefill", "minRatio": "3", "maxRatio": "1.5"},
                ),
            ),
            "minRatio <= maxRatio",
        ),
        (
            storm("unscaled", role("prefill", 1), role("decode", 1, scalingBand=DECODE_BAND)),
            "scalingBand requires scaling: External",
        ),
    ]
    for manifest, message in refusals:
        refused = kubectl.apply(manifest, "-n", namespace, check=False)
        assert refused.returncode != 0, f"admitted, expected: {message}"
        assert message in refused.stderr

    # The same in pooled mode is admitted.
    kubectl.apply(
        storm(
            "accepted",
            role("prefill", 1, scaling="External"),
            role("decode", 2, scaling="External", scalingBand=DECODE_BAND),
        ),
        "-n",
        namespace,
    )


def test_kubectl_scale_scales_one_role_in_place_within_its_band(
    kubectl: Kubectl,
    namespace: str,
    crds: list[str],
    run_controller: Callable[..., ControllerProcess],
) -> None:
    controller = run_controller(f"--namespace={namespace}")
    name = "llama"
    kubectl.apply(
        storm(
            name,
            role("prefill", 1, scaling="External"),
            role("decode", 2, scaling="External", scalingBand=DECODE_BAND),
            role("router", 1),
        ),
        "-n",
        namespace,
    )
    ss = Pooled(kubectl, namespace, name, controller)
    ss.wait(lambda: len(ss.scalers()) == 2, "a RoleScaler for each External role")
    assert sorted(s["metadata"]["name"] for s in ss.scalers()) == [f"{name}-decode", f"{name}-prefill"]
    ss.wait_role("prefill", 1)
    ss.wait_role("decode", 2)
    decode = ss.scaler("decode")
    assert decode["spec"] == {"replicas": 2, "stormServiceName": name, "roleName": "decode"}
    assert decode["status"]["selector"] == f"storm-service-name={name},role-name=decode"
    owner = decode["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("StormService", name, True)
    assert ss.clamped("decode")["status"] == "False"
    scale = json.loads(
        kubectl("get", "--raw", f"/apis/{API}/namespaces/{namespace}/rolescalers/{name}-decode/scale").stdout
    )
    assert scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 2 and scale["status"]["replicas"] == 2
    assert scale["status"]["selector"] == f"storm-service-name={name},role-name=decode"

    revisions = ss.revisions()
    uids = {p["metadata"]["uid"] for r in ("prefill", "decode", "router") for p in ss.pods(r)}
    scaler_uids = {s["metadata"]["uid"] for s in ss.scalers()}

    # The followed role scaled: decode (asking 2) is moved into [ceil(1.5 x 2), 3 x 2] = [3, 6].
    kubectl("scale", f"rolescaler/{name}-prefill", "--replicas=2", "-n", namespace)
    ss.wait_role("prefill", 2)
    ss.wait_role("decode", 3)
    assert ss.template_replicas() == {"prefill": 2, "decode": 3, "router": 1}
    clamped = ss.clamped("decode")
    assert (clamped["status"], clamped["reason"]) == ("True", "OutsideRatioBand"), clamped
    assert "asked for 2" in clamped["message"] and "applying 3" in clamped["message"]
    assert ss.scaler("decode")["status"]["desiredReplicas"] == 3

    def band_event() -> bool:
        events = ss.get(
            "events", "--field-selector", f"involvedObject.name={name}-decode,reason=OutsideRatioBand"
        )["items"]
        return any(e["involvedObject"]["kind"] == "RoleScaler" for e in events)

    ss.wait(band_event, "an OutsideRatioBand event on the decode RoleScaler", timeout=60)

    # The follower's own scaler within the band, then above it (clamped to 6).
    kubectl("scale", f"rolescaler/{name}-decode", "--replicas=4", "-n", namespace)
    ss.wait_role("decode", 4)
    ss.wait(lambda: ss.clamped("decode").get("status") == "False", "decode no longer clamped")
    kubectl("scale", f"rolescaler/{name}-decode", "--replicas=10", "-n", namespace)
    ss.wait_role("decode", 6)
    assert ss.clamped("decode")["status"] == "True"
    assert "asked for 10" in ss.clamped("decode")["message"]

    # In place: no new revision, every pod there before still there, the router untouched.
    assert ss.revisions() == revisions
    after = {p["metadata"]["uid"] for r in ("prefill", "decode", "router") for p in ss.pods(r)}
    assert uids <= after, "a pod was replaced by scaling"
    assert len(ss.pods("router")) == 1

    # A rollout replaces the pods; the RoleScalers stay (same names, same objects) and the
    # new pods come in the scaled numbers.
    kubectl(
        "patch", "stormservice", name, "-n", namespace, "--type=json", "-p",
        json.dumps([
            {"op": "replace", "path": f"/spec/template/spec/roles/{i}/template/spec/containers/0/image",
             "value": IMAGE_V2}
            for i in range(3)
        ]),
    )  # fmt: skip
    ss.wait(lambda: len(ss.revisions()) == len(revisions) + 1, "a new revision")

    def rolled() -> bool:
        pods = [p for r in ("prefill", "decode") for p in ss.pods(r)]
        return all(p["spec"]["containers"][0]["image"] == IMAGE_V2 for p in pods)

    ss.wait(rolled, "every pod on the new image", timeout=300)
    ss.wait_role("prefill", 2)
    ss.wait_role("decode", 6)
    assert {s["metadata"]["uid"] for s in ss.scalers()} == scaler_uids
    kubectl("scale", f"rolescaler/{name}-prefill", "--replicas=1", "-n", namespace)
    ss.wait_role("prefill", 1)
    ss.wait_role("decode", 3)  # asked 10, band now [2, 3]

    # Opting out deletes the RoleScaler; the role keeps the replicas it has.
    kubectl(
        "patch", "stormservice", name, "-n", namespace, "--type=json", "-p",
        json.dumps([
            {"op": "remove", "path": "/spec/template/spec/roles/1/scalingBand"},
            {"op": "remove", "path": "/spec/template/spec/roles/1/scaling"},
        ]),
    )  # fmt: skip
    ss.wait(lambda: [s["metadata"]["name"] for s in ss.scalers()] == [f"{name}-prefill"], "decode opted out")
    assert ss.template_replicas()["decode"] == 3
    assert "Traceback" not in controller.log_text()


def test_scaling_while_a_rollout_is_paused_advances_nothing(
    kubectl: Kubectl,
    namespace: str,
    crds: list[str],
    run_controller: Callable[..., ControllerProcess],
) -> None:
    controller = run_controller(f"--namespace={namespace}")
    name = "paused"
    kubectl.apply(storm(name, role("prefill", 1, scaling="External"), role("decode", 1)), "-n", namespace)
    ss = Pooled(kubectl, namespace, name, controller)
    ss.wait_role("prefill", 1)
    ss.wait(lambda: len(ss.revisions()) == 1, "the first revision")

    def rolesets() -> list[tuple[str, str]]:
        items = ss.get("rolesets", "-l", f"storm-service-name={name}")["items"]
        return sorted(
            (rs["metadata"]["name"], rs["metadata"]["labels"]["storm-service-revision"])
            for rs in items
            if not rs["metadata"].get("deletionTimestamp")
        )

    before = rolesets()
    decode_uids = {p["metadata"]["uid"] for p in ss.pods("decode")}
    kubectl(
        "patch", "stormservice", name, "-n", namespace, "--type=json", "-p",
        json.dumps([
            {"op": "add", "path": "/spec/paused", "value": True},
            *({"op": "replace", "path": f"/spec/template/spec/roles/{i}/template/spec/containers/0/image",
               "value": IMAGE_V2} for i in range(2)),
        ]),
    )  # fmt: skip
    ss.wait(lambda: len(ss.revisions()) == 2, "the paused new revision")

    kubectl("scale", f"rolescaler/{name}-prefill", "--replicas=3", "-n", namespace)
    ss.wait_role("prefill", 3)
    assert rolesets() == before, "scaling while paused replaced a RoleSet"
    assert all(p["spec"]["containers"][0]["image"] == IMAGE_V1 for p in ss.pods("prefill"))
    assert {p["metadata"]["uid"] for p in ss.pods("decode")} == decode_uids
    assert len(ss.revisions()) == 2

    kubectl("patch", "stormservice", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":false}}')

    def rolled_out() -> bool:
        pods = ss.pods("prefill") + ss.pods("decode")
        return (
            len(ss.pods("prefill")) == 3
            and len(ss.pods("decode")) == 1
            and all(p["spec"]["containers"][0]["image"] == IMAGE_V2 for p in pods)
        )

    ss.wait(rolled_out, "the resumed rollout with prefill at 3", timeout=300)
    ss.wait_role("prefill", 3)
    assert ss.template_replicas() == {"prefill": 3, "decode": 1}


def test_an_hpa_reads_the_scale_subresource(
    kubectl: Kubectl,
    namespace: str,
    crds: list[str],
    run_controller: Callable[..., ControllerProcess],
) -> None:
    controller = run_controller(f"--namespace={namespace}")
    name = "hpa"
    kubectl.apply(storm(name, role("prefill", 1), role("decode", 1, scaling="External")), "-n", namespace)
    ss = Pooled(kubectl, namespace, name, controller)
    ss.wait_role("decode", 1)
    kubectl.apply(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": f"{name}-decode"},
            "spec": {
                "scaleTargetRef": {"apiVersion": API, "kind": "RoleScaler", "name": f"{name}-decode"},
                "minReplicas": 1,
                "maxReplicas": 4,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 60},
                        },
                    }
                ],
            },
        },
        "-n",
        namespace,
    )

    def conditions() -> dict[str, dict[str, Any]]:
        hpa = ss.get("hpa", f"{name}-decode")
        return {c["type"]: c for c in (hpa.get("status") or {}).get("conditions") or ()}

    # The HPA controller syncs every 15 s.
    ss.wait(lambda: "AbleToScale" in conditions(), "the HPA controller to look at the HPA", timeout=120)
    got = conditions()
    print(f"\nHPA conditions: {json.dumps(got, indent=1)}")
    assert got["AbleToScale"]["status"] == "True", got
    assert got["AbleToScale"]["reason"] != "FailedGetScale", got
    # Without a metrics API it cannot compute a recommendation, but it got as far as asking for
    # the metrics of the selected pods (a missing or unusable selector stops it before that).
    assert got["ScalingActive"]["reason"] in ("FailedGetResourceMetric", "ValidMetricFound"), got
    hpa = ss.get("hpa", f"{name}-decode")
    assert hpa["status"].get("currentReplicas") == 1, hpa["status"]
    events = ss.get("events", "--field-selector", f"involvedObject.name={name}-decode")["items"]
    reasons = {e["reason"] for e in events if e["involvedObject"]["kind"] == "HorizontalPodAutoscaler"}
    assert not reasons & {"FailedGetScale", "SelectorRequired", "InvalidSelector"}, reasons
