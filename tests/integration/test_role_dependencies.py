"""Role dependencies (`dependsOn`, issue 15), on the local control plane.

- test_the_crd_refuses_bad_dependencies: admission (CEL) of unknown, self, duplicate and cyclic
  dependencies, with the messages users see; a diamond and the sample are admitted.
- test_router_starts_only_once_prefill_and_decode_are_ready: the dependencies' pods are held
  not ready (a node selector no node matches, until the test labels a node); no router pod
  exists meanwhile and both the RoleSet and the StormService say WaitingForDependencies; once
  they are Ready the router is created after them, the condition goes, a DependenciesReady event
  says so. Then, started, the router is neither stopped nor held by an unready dependency (its
  scale-up goes on), and removing dependsOn makes no revision and restarts no pod.
- test_a_fix_to_a_dependency_that_never_got_ready_rolls_out: the router is first in the
  RoleSet's Sequential upgradeOrder and waits for prefill, whose pods never get ready; the fixed
  prefill template (InPlaceUpdate rewrites the RoleSet) replaces them although the router, before
  it in the order, has no pod; then the router starts.
- test_a_manifest_without_depends_on_behaves_as_before: samples/prefill-decode.yaml unchanged:
  no WaitingForDependencies condition anywhere, no DependenciesReady event.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import ControllerProcess, Kubectl
from tests.kubectl_reads import StormServiceReads
from tests.manifests import API, IN_PLACE, role, storm
from tests.storm_reads import condition, is_pod_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
WAITING = "WaitingForDependencies"

Obj = dict[str, Any]


class Reads(StormServiceReads):
    def rolesets(self) -> list[Obj]:
        return [r for r in super().rolesets() if not r["metadata"].get("deletionTimestamp")]


@pytest.fixture
def node_label(kubectl: Kubectl, namespace: str) -> Iterator[tuple[str, str]]:
    """A node label key of this test only (no node has it yet), removed from every node after."""
    key = f"deps.test/{namespace}"[:63]
    yield key, "ready"
    kubectl("label", "nodes", "--all", f"{key}-", check=False)


def test_the_crd_refuses_bad_dependencies(kubectl: Kubectl, namespace: str, crds: list[str]) -> None:
    refusals = [
        (
            storm("unknown", role("prefill", 1), role("router", 1, dependsOn=["prefil"])),
            "dependsOn must name roles of the same RoleSet",
        ),
        (
            storm("selfish", role("router", 1, dependsOn=["router"])),
            "dependsOn must not name the role itself",
        ),
        (
            storm("twice", role("prefill", 1), role("router", 1, dependsOn=["prefill", "prefill"])),
            "dependsOn must not name a role twice",
        ),
        (
            storm("pair", role("prefill", 1, dependsOn=["decode"]), role("decode", 1, dependsOn=["prefill"])),
            "dependsOn must not form a cycle",
        ),
        (
            storm(
                "ring",
                role("a", 1, dependsOn=["c"]),
                role("b", 1, dependsOn=["a"]),
                role("c", 1, dependsOn=["b"]),
                role("d", 1),
            ),
            "dependsOn must not form a cycle",
        ),
    ]
    for manifest, message in refusals:
        refused = kubectl.apply(manifest, "-n", namespace, check=False)
        assert refused.returncode != 0, f"admitted, expected: {message}"
        assert message in refused.stderr, refused.stderr
    # The RoleSet kind has the same rules.
    roleset = {
        "apiVersion": API,
        "kind": "RoleSet",
        "metadata": {"name": "ring"},
        "spec": {"roles": [role("a", 1, dependsOn=["b"]), role("b", 1, dependsOn=["a"])]},
    }
    refused = kubectl.apply(roleset, "-n", namespace, check=False)
    assert refused.returncode != 0 and "dependsOn must not form a cycle" in refused.stderr

    diamond = storm(
        "diamond",
        role("base", 1),
        role("left", 1, dependsOn=["base"]),
        role("right", 1, dependsOn=["base"]),
        role("top", 1, dependsOn=["left", "right"]),
    )
    kubectl.apply(diamond, "-n", namespace, "--dry-run=server")
    kubectl("apply", "-n", namespace, "--dry-run=server", "-f", str(SAMPLES / "role-dependencies.yaml"))


def test_router_starts_only_once_prefill_and_decode_are_ready(
    kubectl: Kubectl,
    namespace: str,
    crds: list[str],
    run_controller: Callable[..., ControllerProcess],
    node_label: tuple[str, str],
) -> None:
    key, value = node_label
    held = {key: value}  # a node selector: Pending, so not ready, until a node has the label
    name = "routed"
    controller = run_controller(f"--namespace={namespace}")
    kubectl.apply(
        storm(
            name,
            role("prefill", 2, node_selector=held),
            role("decode", 1, podGroupSize=2, node_selector=held),
            role("router", 1, dependsOn=["prefill", "decode"]),
        ),
        "-n",
        namespace,
    )
    ss = Reads(kubectl, namespace, name, controller)

    def waiting_reported() -> bool:
        rolesets = ss.rolesets()
        return (
            len(rolesets) == 1
            and (condition(rolesets[0], WAITING) or {}).get("status") == "True"
            and (condition(ss.storm(), WAITING) or {}).get("status") == "True"
        )

    ss.wait(waiting_reported, "WaitingForDependencies on the RoleSet and the StormService")
    ss.wait(lambda: len(ss.pods("prefill")) == 2 and len(ss.pods("decode")) == 2, "the dependencies' pods")
    (roleset,) = ss.rolesets()
    rs_cond = condition(roleset, WAITING) or {}
    assert rs_cond["reason"] == "DependenciesNotReady"
    assert rs_cond["message"] == 'role "router" waits for "prefill" (0/2 ready), "decode" (0/1 ready)'
    ss_cond = condition(ss.storm(), WAITING) or {}
    assert ss_cond["reason"] == "DependenciesNotReady"
    assert ss_cond["message"] == f"RoleSet {roleset['metadata']['name']}: {rs_cond['message']}"
    assert ss.pods("router") == []
    assert not any(is_pod_ready(p) for p in ss.pods("prefill") + ss.pods("decode"))
    assert ss.events("DependenciesReady") == []

    node = kubectl.get_json("nodes")["items"][0]["metadata"]["name"]
    kubectl("label", "node", node, f"{key}={value}")
    ss.wait(lambda: len(ss.pods("router")) == 1, "the router pod, once its dependencies are ready")
    ready_at = [
        (condition(p, "Ready") or {}).get("lastTransitionTime", "")
        for p in ss.pods("prefill") + ss.pods("decode")
    ]
    router = ss.pods("router")[0]
    # RFC 3339 UTC strings of one format compare as times.
    assert all(t and t <= router["metadata"]["creationTimestamp"] for t in ready_at), (ready_at, router)
    ss.wait(
        lambda: condition(ss.rolesets()[0], WAITING) is None and condition(ss.storm(), WAITING) is None,
        "WaitingForDependencies removed",
    )
    ss.wait(lambda: bool(ss.events("DependenciesReady")), "a DependenciesReady event")
    assert 'role "router"' in ss.events("DependenciesReady")[0]["message"]
    ss.wait(lambda: all(is_pod_ready(p) for p in ss.pods("router")), "the router Ready")

    # Started: a dependency going unready later neither stops nor holds the router.
    kubectl("label", "node", node, f"{key}-")
    victim = ss.pods("prefill")[0]["metadata"]["name"]
    kubectl("delete", "pod", victim, "-n", namespace, "--wait=false")
    ss.wait(
        lambda: len(ss.pods("prefill")) == 2 and any(not is_pod_ready(p) for p in ss.pods("prefill")),
        "a prefill replacement that cannot be scheduled",
    )
    router_uid = router["metadata"]["uid"]
    revisions = ss.revisions()
    patch = [
        {"op": "test", "path": "/spec/template/spec/roles/2/name", "value": "router"},
        {"op": "replace", "path": "/spec/template/spec/roles/2/replicas", "value": 2},
    ]
    kubectl("patch", "stormservice", name, "-n", namespace, "--type=json", "-p", json.dumps(patch))
    ss.wait(lambda: len(ss.pods("router")) == 2, "the router's scale-up, not held by prefill")
    assert router_uid in {p["metadata"]["uid"] for p in ss.pods("router")}
    assert condition(ss.rolesets()[0], WAITING) is None

    # dependsOn is not part of a revision: removing it restarts nothing.
    uids = {p["metadata"]["uid"] for r in ("prefill", "decode", "router") for p in ss.pods(r)}
    patch = [
        {"op": "test", "path": "/spec/template/spec/roles/2/name", "value": "router"},
        {"op": "remove", "path": "/spec/template/spec/roles/2/dependsOn"},
    ]
    kubectl("patch", "stormservice", name, "-n", namespace, "--type=json", "-p", json.dumps(patch))
    ss.wait(
        lambda: (
            (ss.storm().get("status") or {}).get("observedGeneration") == ss.storm()["metadata"]["generation"]
        ),
        "the StormService controller to see the change",
    )
    assert ss.revisions() == revisions
    assert {p["metadata"]["uid"] for r in ("prefill", "decode", "router") for p in ss.pods(r)} == uids
    assert len(ss.rolesets()) == 1


def test_a_fix_to_a_dependency_that_never_got_ready_rolls_out(
    kubectl: Kubectl,
    namespace: str,
    crds: list[str],
    run_controller: Callable[..., ControllerProcess],
    node_label: tuple[str, str],
) -> None:
    key, value = node_label
    name = "fixed"
    controller = run_controller(f"--namespace={namespace}")
    manifest = storm(
        name,
        role("router", 1, upgradeOrder=1, dependsOn=["prefill"]),
        # Never ready as it is (no node has the label): a broken image, say.
        role("prefill", 2, upgradeOrder=2, node_selector={key: value}),
        strategy=IN_PLACE,
    )
    manifest["spec"]["template"]["spec"]["updateStrategy"] = "Sequential"
    kubectl.apply(manifest, "-n", namespace)
    ss = Reads(kubectl, namespace, name, controller)
    ss.wait(lambda: len(ss.pods("prefill")) == 2, "the broken prefill pods")
    ss.wait(lambda: (condition(ss.storm(), WAITING) or {}).get("status") == "True", "the router waiting")
    broken = {p["metadata"]["uid"] for p in ss.pods("prefill")}
    assert ss.pods("router") == []

    fix = [
        {"op": "test", "path": "/spec/template/spec/roles/1/name", "value": "prefill"},
        {"op": "remove", "path": "/spec/template/spec/roles/1/template/spec/nodeSelector"},
    ]
    ss.patch(fix)

    def fixed() -> bool:
        pods = ss.pods("prefill")
        return (
            len(pods) == 2
            and not {p["metadata"]["uid"] for p in pods} & broken
            and all(is_pod_ready(p) for p in pods)
        )

    ss.wait(fixed, "prefill replaced by the fixed template, though the router is first in order")
    ss.wait(lambda: len(ss.pods("router")) == 1, "the router, once prefill is ready")
    ss.wait(lambda: condition(ss.storm(), WAITING) is None, "WaitingForDependencies removed")
    assert len(ss.rolesets()) == 1  # rewritten in place, not replaced


def test_a_manifest_without_depends_on_behaves_as_before(
    kubectl: Kubectl,
    namespace: str,
    crds: list[str],
    run_controller: Callable[..., ControllerProcess],
) -> None:
    controller = run_controller(f"--namespace={namespace}")
    kubectl("apply", "-n", namespace, "-f", str(SAMPLES / "prefill-decode.yaml"))
    ss = Reads(kubectl, namespace, "llama-pd", controller)

    def ready() -> bool:
        storm = ss.storm()
        status = storm.get("status") or {}
        return (
            status.get("observedGeneration") == storm["metadata"]["generation"]
            and (condition(storm, "Ready") or {}).get("status") == "True"
            and len(ss.rolesets()) == storm["spec"]["replicas"]
        )

    ss.wait(ready, "the sample Ready")
    assert condition(ss.storm(), WAITING) is None
    assert all(condition(r, WAITING) is None for r in ss.rolesets())
    assert ss.events("DependenciesReady") == []
