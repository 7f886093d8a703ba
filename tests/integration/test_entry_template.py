"""Entry and worker templates of grouped roles (issue 15, feature 1), on the local control plane.

- test_entry_and_workers_run_their_templates: member 0 of each group runs the entryTemplate
  (image, command, label `entry: "true"`), the others the template; every member has Kthena's
  GROUP_SIZE, ENTRY_ADDRESS (= LEADER_ADDRESS) and WORKER_INDEX; a Service selecting the entry
  label has exactly one endpoint per group, the entry pod. A new entryTemplate image under
  InPlaceIfPossible keeps every pod (same UIDs): the kwok stage restarts the entries' container
  on the new image, the workers keep theirs, unrestarted.
- test_an_entry_template_the_api_server_refuses_replaces_nothing: an entryTemplate the CRD
  admits but no pod can be made of (a mount of a volume that does not exist) is caught by the
  dry run: ReplicaFailure InvalidPodTemplate naming the entryTemplate, no pod touched.
- test_the_crd_refuses_an_entry_template_without_groups: CEL refusals, with the message.
- test_an_aibrix_grouped_role_is_as_before: samples/prefill-decode.yaml (a grouped decode role,
  no entryTemplate) applied unchanged: no entry label, none of the new env, and the role
  template hash is the hash of the template alone, as before the field existed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.roleset import labels as L
from controller.runtime.revision import hash_revision_data
from tests.cluster import ControllerProcess, Kubectl
from tests.kubectl_reads import StormServiceReads
from tests.manifests import API, IN_PLACE, storm
from tests.storm_reads import is_pod_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
WORKER_IMAGE = "registry.k8s.io/pause:3.10"
ENTRY_IMAGE = "registry.k8s.io/pause:3.9"
ENTRY_IMAGE_V2 = "registry.k8s.io/pause:3.8"
KTHENA_ENV = (L.ENV_GROUP_SIZE, L.ENV_ENTRY_ADDRESS, L.ENV_WORKER_INDEX)


def pod_template(image: str, command: str, kind: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"kind": kind}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "engine",
                    "image": image,
                    "command": [command],
                    "ports": [{"name": "http", "containerPort": 8000}],
                }
            ],
        },
    }


def grouped_role(**extra: Any) -> dict[str, Any]:
    return {
        "name": "decode",
        "replicas": 2,
        "podGroupSize": 3,
        "updateStrategy": {"type": "InPlaceIfPossible", "maxUnavailable": 2},
        "template": pod_template(WORKER_IMAGE, "worker", "worker"),
        "entryTemplate": pod_template(ENTRY_IMAGE, "entry", "entry"),
        **extra,
    }


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0].get("env") or ()}


class Service(StormServiceReads):
    """Reads of one StormService's pods and revisions through kubectl."""

    def wait_ready(self, count: int) -> list[dict[str, Any]]:
        def done() -> bool:
            pods = self.pods()
            return len(pods) == count and all(is_pod_ready(p) for p in pods)

        self.wait(done, f"{count} ready pods of {self.name}")
        return self.pods()


def test_entry_and_workers_run_their_templates(
    kubectl: Kubectl,
    namespace: str,
    crds: list[str],
    run_controller: Callable[..., ControllerProcess],
) -> None:
    # The sample stays valid.
    kubectl("apply", "--dry-run=server", "-f", str(REPO / "samples" / "entry-worker.yaml"), "-n", namespace)

    controller = run_controller(f"--namespace={namespace}")
    name = "ew"
    # RoleSets rewritten in place, so that the role's InPlaceIfPossible decides.
    kubectl.apply(storm(name, grouped_role(), strategy=IN_PLACE), "-n", namespace)
    ss = Service(kubectl, namespace, name, controller)
    pods = ss.wait_ready(6)

    groups: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        groups.setdefault(pod["metadata"]["labels"][L.PODSET_NAME_LABEL], []).append(pod)
    assert len(groups) == 2 and all(len(members) == 3 for members in groups.values())
    entries: dict[str, str] = {}  # entry pod name -> group
    for group, members in groups.items():
        by_index = {int(p["metadata"]["labels"][L.POD_GROUP_INDEX_LABEL]): p for p in members}
        assert sorted(by_index) == [0, 1, 2]
        entry = by_index[0]
        entry_name = entry["metadata"]["name"]
        entries[entry_name] = group
        address = f"{entry_name}.{name}.{namespace}.svc"
        for member, pod in by_index.items():
            labels, env = pod["metadata"]["labels"], env_of(pod)
            container = pod["spec"]["containers"][0]
            if member == 0:
                assert (container["image"], container["command"]) == (ENTRY_IMAGE, ["entry"])
                assert labels[L.ENTRY_LABEL] == "true" and labels["kind"] == "entry"
            else:
                assert (container["image"], container["command"]) == (WORKER_IMAGE, ["worker"])
                assert L.ENTRY_LABEL not in labels and labels["kind"] == "worker"
            assert {k: env.get(k) for k in KTHENA_ENV} == {
                "GROUP_SIZE": "3",
                "ENTRY_ADDRESS": address,
                "WORKER_INDEX": str(member),
            }, pod["metadata"]["name"]
            assert env["LEADER_ADDRESS"] == address and env["POD_GROUP_SIZE"] == "3"
            assert env["POD_GROUP_INDEX"] == str(member)

    # A Service of the entries: one endpoint per group, each an entry pod.
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{name}-entries"},
            "spec": {
                "selector": {L.STORM_SERVICE_NAME_LABEL: name, L.ENTRY_LABEL: "true"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
        "-n",
        namespace,
    )

    def endpoint_pods() -> list[str]:
        slices = ss.get("endpointslices", "-l", f"kubernetes.io/service-name={name}-entries")["items"]
        return sorted(
            e["targetRef"]["name"]
            for s in slices
            for e in s.get("endpoints") or ()
            if (e.get("conditions") or {}).get("ready")
        )

    ss.wait(lambda: endpoint_pods() == sorted(entries), "the entries' Service to have one endpoint per group")

    # A new entry image, in place: same pods, only the entries restarted on the new image.
    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}
    revisions = ss.revisions()
    kubectl(
        "patch", "stormservice", name, "-n", namespace, "--type=json", "-p",
        json.dumps([{
            "op": "replace",
            "path": "/spec/template/spec/roles/0/entryTemplate/spec/containers/0/image",
            "value": ENTRY_IMAGE_V2,
        }]),
    )  # fmt: skip

    def updated() -> bool:
        rolesets = ss.get("rolesets", "-l", f"storm-service-name={name}")["items"]
        if len(rolesets) != 1:
            return False
        role = rolesets[0]["spec"]["roles"][0]
        if role["entryTemplate"]["spec"]["containers"][0]["image"] != ENTRY_IMAGE_V2:
            return False
        want = hash_revision_data(
            {"template": role["template"], "entryTemplate": role["entryTemplate"]}, None
        )
        current = ss.pods()
        return (
            len(current) == 6
            and all(p["metadata"]["labels"][L.ROLE_TEMPLATE_HASH_LABEL] == want for p in current)
            and all(is_pod_ready(p) for p in current)
        )

    ss.wait(updated, "every pod at the new role template hash, ready")
    after = ss.pods()
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in after} == uids, "a pod was replaced"
    assert len(ss.revisions()) == len(revisions) + 1
    for pod in after:
        status = pod["status"]["containerStatuses"][0]
        if pod["metadata"]["name"] in entries:
            assert pod["spec"]["containers"][0]["image"] == ENTRY_IMAGE_V2
            assert status["image"] == ENTRY_IMAGE_V2 and status["restartCount"] >= 1, status
        else:
            assert pod["spec"]["containers"][0]["image"] == WORKER_IMAGE
            assert status["restartCount"] == 0, status
    # The EndpointSlice controller marks a restarted entry ready after the pod is: wait for it.
    ss.wait(lambda: endpoint_pods() == sorted(entries), "the entries' Service to have both entries again")


def test_an_entry_template_the_api_server_refuses_replaces_nothing(
    kubectl: Kubectl,
    namespace: str,
    crds: list[str],
    run_controller: Callable[..., ControllerProcess],
) -> None:
    controller = run_controller(f"--namespace={namespace}")
    name = "badentry"
    kubectl.apply(storm(name, grouped_role(replicas=1), strategy=IN_PLACE), "-n", namespace)
    ss = Service(kubectl, namespace, name, controller)
    uids = {p["metadata"]["uid"] for p in ss.wait_ready(3)}
    kubectl(
        "patch", "stormservice", name, "-n", namespace, "--type=json", "-p",
        json.dumps([
            {"op": "replace", "path": "/spec/template/spec/roles/0/entryTemplate/spec/containers/0/image",
             "value": ENTRY_IMAGE_V2},
            {"op": "add", "path": "/spec/template/spec/roles/0/entryTemplate/spec/containers/0/volumeMounts",
             "value": [{"name": "missing", "mountPath": "/data"}]},
        ]),
    )  # fmt: skip

    def refused() -> dict[str, Any] | None:
        conditions = (ss.get("stormservice", name).get("status") or {}).get("conditions") or ()
        failure = next((c for c in conditions if c["type"] == "ReplicaFailure"), None)
        return failure if failure is not None and failure["reason"] == "InvalidPodTemplate" else None

    ss.wait(lambda: refused() is not None, "ReplicaFailure InvalidPodTemplate on the StormService")
    failure = refused()
    assert failure is not None and "role decode entryTemplate" in failure["message"], failure
    assert "missing" in failure["message"], failure
    current = ss.pods()
    assert {p["metadata"]["uid"] for p in current} == uids
    assert all(p["spec"]["containers"][0]["image"] != ENTRY_IMAGE_V2 for p in current)


def test_the_crd_refuses_an_entry_template_without_groups(
    kubectl: Kubectl, namespace: str, crds: list[str]
) -> None:
    message = "entryTemplate requires podGroupSize > 1"
    single = grouped_role(podGroupSize=1)
    defaulted = {k: v for k, v in grouped_role().items() if k != "podGroupSize"}
    roleset = {
        "apiVersion": API,
        "kind": "RoleSet",
        "metadata": {"name": "single"},
        "spec": {"roles": [copy.deepcopy(single)]},
    }
    # The entryTemplate is checked as the template is.
    with_ephemeral = pod_template(ENTRY_IMAGE, "entry", "entry")
    with_ephemeral["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox"}]
    refusals = [
        (storm("single", single, strategy=IN_PLACE), message),
        (storm("defaulted", defaulted, strategy=IN_PLACE), message),
        (roleset, message),
        (
            storm("empty", grouped_role(entryTemplate=with_ephemeral), strategy=IN_PLACE),
            "ephemeral containers are not allowed in a pod template",
        ),
    ]
    for manifest, expected in refusals:
        refused = kubectl.apply(manifest, "-n", namespace, check=False)
        assert refused.returncode != 0, f"admitted, expected: {expected}"
        assert expected in refused.stderr, refused.stderr
    kubectl.apply(storm("grouped", grouped_role(), strategy=IN_PLACE), "-n", namespace)


def test_an_aibrix_grouped_role_is_as_before(
    kubectl: Kubectl,
    namespace: str,
    crds: list[str],
    run_controller: Callable[..., ControllerProcess],
) -> None:
    controller = run_controller(f"--namespace={namespace}")
    kubectl("apply", "-f", str(REPO / "samples" / "prefill-decode.yaml"), "-n", namespace)
    ss = Service(kubectl, namespace, "llama-pd", controller)
    pods = ss.wait_ready(8)  # 2 RoleSets x (2 prefill + one decode group of 2)
    rolesets = ss.get("rolesets", "-l", "storm-service-name=llama-pd")["items"]
    hashes = {
        role["name"]: hash_revision_data(role["template"], None)
        for rs in rolesets
        for role in rs["spec"]["roles"]
    }
    decode = [p for p in pods if p["metadata"]["labels"][L.ROLE_NAME_LABEL] == "decode"]
    assert len(decode) == 4
    for pod in pods:
        labels = pod["metadata"]["labels"]
        assert L.ENTRY_LABEL not in labels
        assert labels[L.ROLE_TEMPLATE_HASH_LABEL] == hashes[labels[L.ROLE_NAME_LABEL]]
        assert not set(KTHENA_ENV) & set(env_of(pod)), pod["metadata"]["name"]
        assert all("entryTemplate" not in role for rs in rolesets for role in rs["spec"]["roles"])
    for pod in decode:
        assert "LEADER_ADDRESS" in env_of(pod)  # today's group env, as before
