"""A role's updateStrategy.partition (a canary rollout), on the local control plane.

- test_the_crd_admits_a_partition_only_with_in_place_update: admission (CEL and bounds) with the
  messages users see; the sample and an AIBrix InPlaceUpdate manifest are admitted unchanged.
- test_a_partition_holds_part_of_a_pooled_rollout: a pooled InPlaceUpdate StormService, decode
  with 4 replicas and partition 2: an image change updates exactly 2 decode pods (in place under
  InPlaceIfPossible, same UIDs; replaced under Recreate) and keeps 2; the RoleSet and the
  StormService say PartitionHeld; the role after it (Sequential) rolls all the same. Lowering
  the partition goes on (1, then 0) with no new ControllerRevision, and ends Ready.
- test_a_slotted_role_keeps_the_ordinals_below_its_partition: StatefulSet's semantics, for a
  stateful role and for groups (podGroupSize 2); raising the partition rolls nothing back.
- test_an_aibrix_manifest_without_partition_rolls_fully: samples/prefill-decode.yaml applied
  unchanged rolls every pod; no partition is written anywhere and PartitionHeld never appears.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from apis.v1alpha1 import constants as c
from tests.cluster import ControllerProcess, Kubectl
from tests.kubectl_reads import StormServiceReads
from tests.manifests import IMAGE, IN_PLACE, role, storm
from tests.storm_reads import condition, is_pod_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

IMAGE_V1 = IMAGE
IMAGE_V2 = "registry.k8s.io/pause:3.9"
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "canary-partition.yaml"
AIBRIX_IN_PLACE = ROOT.parent / "shared" / "reference" / "aibrix-objects" / "vllm-replica.manifest.yaml"
VENV_BIN = Path(sys.executable).parent


def image(pod: dict[str, Any]) -> str:
    return str(pod["spec"]["containers"][0]["image"])


class Storm(StormServiceReads):
    """Reads of one StormService, its RoleSets, pods, revisions and events, through kubectl."""

    def images(self, role: str) -> dict[str, int]:
        """Ready pods of the role by image; any pod not ready, or an in-place update still under
        way, makes it {}."""
        pods = self.pods(role)
        if not all(is_pod_ready(p) for p in pods) or any(
            c.ANNOTATION_IN_PLACE_UPDATE_TARGET_HASH in (p["metadata"].get("annotations") or {}) for p in pods
        ):
            return {}
        out: dict[str, int] = {}
        for p in pods:
            out[image(p)] = out.get(image(p), 0) + 1
        return out

    @staticmethod
    def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
        return condition(obj, type_) or {}

    def progressing(self) -> tuple[str | None, str | None, str | None]:
        """(StormService reason, RoleSet reason, RoleSet message) of Progressing."""
        rolesets = self.rolesets()
        rs = self.condition(rolesets[0], "Progressing") if len(rolesets) == 1 else {}
        return self.condition(self.storm(), "Progressing").get("reason"), rs.get("reason"), rs.get("message")

    def set_partition(self, index: int, value: int) -> None:
        path = f"/spec/template/spec/roles/{index}/updateStrategy/partition"
        self.patch([{"op": "add", "path": path, "value": value}])

    def set_images(self, count: int, value: str) -> None:
        self.patch(
            [
                {
                    "op": "replace",
                    "path": f"/spec/template/spec/roles/{i}/template/spec/containers/0/image",
                    "value": value,
                }
                for i in range(count)
            ]
        )

    def complete(self) -> bool:
        ss = self.storm()
        status = ss.get("status") or {}
        return (
            status.get("observedGeneration") == ss["metadata"]["generation"]
            and self.condition(ss, "Ready").get("status") == "True"
            and self.condition(ss, "Progressing").get("reason") == c.REASON_ROLLOUT_COMPLETE
        )

    def storm_status(self, kubeconfig: str) -> str:
        env = {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "KUBECONFIG": kubeconfig,
            # This checkout's code, not the one the console script was installed from.
            "PYTHONPATH": str(ROOT),
        }
        proc = subprocess.run(
            [str(VENV_BIN / "kubectl-storm"), "status", self.name, "-n", self.namespace],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


def held_message(role_name: str, kept: int, replicas: int) -> str:
    return f"role {role_name}: {kept} of {replicas} instances kept on the old revision by partition"


def test_the_crd_admits_a_partition_only_with_in_place_update(
    kubectl: Kubectl, namespace: str, crds: list[str]
) -> None:
    refusals = [
        (
            storm(
                "rolling",
                role("decode", 2, updateStrategy={"partition": 1}),
                strategy={"type": "RollingUpdate"},
            ),
            "updateStrategy.partition needs the StormService's updateStrategy.type InPlaceUpdate",
        ),
        (
            storm("defaulted", role("decode", 2, updateStrategy={"partition": 1}), strategy=None),
            "updateStrategy.partition needs the StormService's updateStrategy.type InPlaceUpdate",
        ),
        (
            storm("negative", role("decode", 2, updateStrategy={"partition": -1}), strategy=IN_PLACE),
            "should be greater than or equal to 0",
        ),
    ]
    for manifest, message in refusals:
        refused = kubectl.apply(manifest, "-n", namespace, "--dry-run=server", check=False)
        assert refused.returncode != 0, f"admitted, expected: {message}"
        assert message in refused.stderr, refused.stderr

    admitted = [
        storm(
            "canary",
            role("decode", 2, updateStrategy={"type": "InPlaceIfPossible", "partition": 5}),
            strategy=IN_PLACE,
        ),
        storm("zero", role("decode", 2, updateStrategy={"partition": 0}), strategy={"type": "RollingUpdate"}),
    ]
    for manifest in admitted:
        kubectl.apply(manifest, "-n", namespace, "--dry-run=server")
    kubectl("apply", "--server-side", "--dry-run=server", "-n", namespace, "-f", str(SAMPLE))
    if AIBRIX_IN_PLACE.exists():  # AIBrix's own InPlaceUpdate manifest, unchanged
        kubectl("apply", "--server-side", "--dry-run=server", "-n", namespace, "-f", str(AIBRIX_IN_PLACE))


@pytest.mark.parametrize("decode_update", ["InPlaceIfPossible", "Recreate"])
def test_a_partition_holds_part_of_a_pooled_rollout(
    kubectl: Kubectl,
    kubeconfig: str,
    namespace: str,
    crds: list[str],
    run_controller: Callable[..., ControllerProcess],
    decode_update: str,
) -> None:
    controller = run_controller(f"--namespace={namespace}")
    name = "canary"
    kubectl.apply(
        storm(
            name,
            # decode rolls first (Sequential); prefill has no partition and must roll fully
            # although decode is held.
            role(
                "decode",
                4,
                upgradeOrder=1,
                updateStrategy={"type": decode_update, "maxUnavailable": 2, "partition": 2},
            ),
            role("prefill", 2, upgradeOrder=2, updateStrategy={"type": "Recreate", "maxUnavailable": 1}),
            strategy=IN_PLACE,
        ),
        "-n",
        namespace,
    )
    st = Storm(kubectl, namespace, name, controller)
    st.wait(st.complete, "the StormService created and Ready")
    # No image changed yet: a partition with nothing to hold is complete.
    assert st.images("decode") == {IMAGE_V1: 4}
    assert st.rolesets()[0]["spec"]["roles"][0]["updateStrategy"]["partition"] == 2
    revisions = st.revisions()
    assert len(revisions) == 1
    roleset_uid = st.rolesets()[0]["metadata"]["uid"]
    before = {p["metadata"]["uid"] for p in st.pods("decode")}

    st.set_images(2, IMAGE_V2)
    expected = held_message("decode", 2, 4)
    st.wait(
        lambda: st.progressing() == ("PartitionHeld", "PartitionHeld", expected),
        "the rollout held at the partition",
    )
    assert st.images("decode") == {IMAGE_V1: 2, IMAGE_V2: 2}
    assert st.images("prefill") == {IMAGE_V2: 2}, "the role after the held one did not roll"
    uids = {p["metadata"]["uid"] for p in st.pods("decode")}
    kept_uids = {p["metadata"]["uid"] for p in st.pods("decode") if image(p) == IMAGE_V1}
    assert kept_uids <= before
    if decode_update == "InPlaceIfPossible":
        assert uids == before, "an in-place update replaced a pod"
    else:
        assert len(uids & before) == 2, "Recreate should have replaced exactly 2 pods"
    ss = st.storm()
    assert (
        st.condition(ss, "Progressing")["message"]
        == f"RoleSet {st.rolesets()[0]['metadata']['name']}: {expected}"
    )
    assert st.condition(ss, "Ready")["status"] == "False", "a held rollout is not complete"
    decode_status = next(r for r in ss["status"]["roleStatuses"] if r["name"] == "decode")
    assert (decode_status["replicas"], decode_status["updatedReplicas"]) == (4, 2)
    assert ss["status"]["updatedReplicas"] == 0
    st.wait(lambda: bool(st.events("PartitionHeld")), "a PartitionHeld event on the RoleSet", timeout=60)
    text = st.storm_status(kubeconfig)
    assert "PARTITION" in text and "held by partition: RoleSet" in text, text
    assert len(st.revisions()) == 2

    # Lowering it goes on: one more, then all. No new revision, the same RoleSet.
    st.set_partition(0, 1)
    st.wait(
        lambda: (
            st.progressing() == ("PartitionHeld", "PartitionHeld", held_message("decode", 1, 4))
            and st.images("decode") == {IMAGE_V1: 1, IMAGE_V2: 3}
        ),
        "the rollout held at partition 1",
    )
    st.set_partition(0, 0)
    st.wait(st.complete, "the rollout complete once the partition is 0")
    assert st.images("decode") == {IMAGE_V2: 4}
    assert len(st.revisions()) == 2, "a partition change made a ControllerRevision"
    assert st.rolesets()[0]["metadata"]["uid"] == roleset_uid
    if decode_update == "InPlaceIfPossible":
        assert {p["metadata"]["uid"] for p in st.pods("decode")} == before


@pytest.mark.parametrize(
    ("kind", "shape"),
    [("stateful", {"stateful": True}), ("grouped", {"podGroupSize": 2})],
)
def test_a_slotted_role_keeps_the_ordinals_below_its_partition(
    kubectl: Kubectl,
    namespace: str,
    crds: list[str],
    run_controller: Callable[..., ControllerProcess],
    kind: str,
    shape: dict[str, Any],
) -> None:
    controller = run_controller(f"--namespace={namespace}")
    name = f"ordinals-{kind}"
    strategy = {"type": "Recreate", "maxUnavailable": 2, "partition": 2}
    kubectl.apply(
        storm(name, role("decode", 4, updateStrategy=strategy, **shape), strategy=IN_PLACE), "-n", namespace
    )
    st = Storm(kubectl, namespace, name, controller)
    st.wait(st.complete, "the StormService created and Ready")
    before = {p["metadata"]["uid"] for p in st.pods("decode")}

    st.set_images(1, IMAGE_V2)
    st.wait(
        lambda: st.progressing() == ("PartitionHeld", "PartitionHeld", held_message("decode", 2, 4)),
        "the rollout held at the partition",
    )

    def by_ordinal() -> dict[int, set[str]]:
        out: dict[int, set[str]] = {}
        for p in st.pods("decode"):
            out.setdefault(int(p["metadata"]["labels"][c.LABEL_ROLE_REPLICA_INDEX]), set()).add(image(p))
        return out

    assert by_ordinal() == {0: {IMAGE_V1}, 1: {IMAGE_V1}, 2: {IMAGE_V2}, 3: {IMAGE_V2}}
    kept = {p["metadata"]["uid"] for p in st.pods("decode") if image(p) == IMAGE_V1}
    assert len(kept) == 2 * shape.get("podGroupSize", 1) and kept <= before

    # Raising it holds what is already updated where it is: nothing rolls back, no revision.
    revisions = st.revisions()
    st.set_partition(0, 3)

    def raised() -> bool:
        rs = st.rolesets()[0]
        seen = (rs.get("status") or {}).get("observedGeneration") == rs["metadata"]["generation"]
        return (
            seen
            and rs["spec"]["roles"][0]["updateStrategy"]["partition"] == 3
            and st.progressing()[1:] == ("PartitionHeld", held_message("decode", 2, 4))
        )

    st.wait(raised, "the raised partition carried to the RoleSet and observed")
    assert by_ordinal()[2] == {IMAGE_V2}
    assert {p["metadata"]["uid"] for p in st.pods("decode") if image(p) == IMAGE_V1} == kept
    st.set_partition(0, 0)
    st.wait(st.complete, "the rollout complete once the partition is 0")
    assert by_ordinal() == {key: {IMAGE_V2} for key in range(4)}
    assert st.revisions() == revisions


def test_an_aibrix_manifest_without_partition_rolls_fully(
    kubectl: Kubectl,
    namespace: str,
    crds: list[str],
    run_controller: Callable[..., ControllerProcess],
) -> None:
    controller = run_controller(f"--namespace={namespace}")
    sample = ROOT / "samples" / "prefill-decode.yaml"
    manifest = yaml.safe_load(sample.read_text())
    name = manifest["metadata"]["name"]
    kubectl("apply", "-n", namespace, "-f", str(sample))
    st = Storm(kubectl, namespace, name, controller)
    st.wait(st.complete, "the sample created and Ready")
    roles = [r["name"] for r in manifest["spec"]["template"]["spec"]["roles"]]
    before = {p["metadata"]["uid"] for r in roles for p in st.pods(r)}

    st.set_images(len(roles), IMAGE_V2)
    st.wait(
        lambda: st.complete() and all(st.images(r) == {IMAGE_V2: len(st.pods(r))} for r in roles),
        "the sample's rollout complete",
    )
    after = {p["metadata"]["uid"] for r in roles for p in st.pods(r)}
    assert not (before & after), "a pod of the old revision survived the rollout"
    for rs in st.rolesets():
        for r in rs["spec"]["roles"]:
            assert "partition" not in (r.get("updateStrategy") or {}), "a partition was written"
        assert st.condition(rs, "Progressing").get("reason") == c.REASON_ROLLOUT_COMPLETE
    assert not st.events("PartitionHeld")
