"""The shipped install (manifests/, kustomize) on the real control plane.

- `kubectl kustomize` renders manifests/default and manifests/namespaced into what the README
  promises (and the optional monitoring component, once it exists);
- every rendered object passes a server-side dry run;
- the Deployment's two pods are admitted in a namespace that enforces Pod Security `restricted`,
  land on two nodes, and the PodDisruptionBudget and metrics Service find them;
- the controller, run with the token of the ServiceAccount the manifests create and only the
  RBAC they grant (leader election on), takes a StormService through create, scale, a
  RollingUpdate and an InPlaceUpdate rollout and delete without one forbidden request, and
  writes it does not need are forbidden to it.

The tests on the API server render the shipped directory through an overlay that only moves it
into the test's namespace (and, where cluster-scoped objects are created, suffixes their names),
as a user's overlay would. The local control plane enables OwnerReferencesPermissionEnforcement,
so the `*/finalizers` rule is needed there (hack/localcluster.py).
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from controller.roleset import labels as L
from controller.runtime.options import parse_args
from tests.aibrix_fixtures import FIXTURE_DIR
from tests.cluster import (
    REPO_ROOT,
    ControllerProcess,
    Kubectl,
    derived_kubeconfig,
    wait_until,
)
from tests.integration import test_aibrix_takeover as takeover

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

# The AIBrix takeover test's fixtures, for the takeover under the shipped RBAC.
loader = takeover.loader
podset_crd = takeover.podset_crd

Obj = dict[str, Any]

MANIFESTS = REPO_ROOT / "manifests"
MONITORING = MANIFESTS / "monitoring"
VARIANTS = ["default", "namespaced"]
RBAC_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
CONTROLLER = "stormservice-controller"
LEASE = "stormservice-controller"  # --leader-elect-id's default, named in the Lease Role
IMAGE_V1 = "registry.k8s.io/pause:3.10"
IMAGE_V2 = "registry.k8s.io/pause:3.9"


# ---------------------------------------------------------------------------------------------
# helpers


def render(kubectl: Kubectl, directory: Path) -> list[Obj]:
    text = kubectl("kustomize", str(directory)).stdout
    yaml_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are large
    return [doc for doc in yaml.load_all(text, Loader=yaml_loader) if doc]


def overlay(
    tmp_path: Path, variant: str, namespace: str, *, name_suffix: str = "", components: tuple[Path, ...] = ()
) -> Path:
    """A kustomization over manifests/<variant> that sets `namespace` (and a name suffix, and
    adds components), as a user's overlay would."""
    directory = tmp_path / f"overlay-{variant}"
    directory.mkdir(exist_ok=True)
    # kustomize refuses absolute paths to other kustomizations.
    spec: Obj = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": [os.path.relpath(MANIFESTS / variant, directory)],
    }
    if name_suffix:
        spec["nameSuffix"] = name_suffix
    if components:
        spec["components"] = [os.path.relpath(c, directory) for c in components]
    # JSON, not YAML: PyYAML leaves a suffix such as "-123e45" unquoted, which kustomize's YAML
    # 1.2 parser reads as a number and refuses.
    (directory / "kustomization.yaml").write_text(json.dumps(spec, indent=2))
    return directory


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in of_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name or '*'}"
    return found[0]


def manager_container(objects: list[Obj]) -> Obj:
    deployment = one(objects, "Deployment")
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "manager"]
    assert isinstance(container, dict)
    return container


def expand_env(arg: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion of container args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


def namespaced_objects(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o["kind"] not in CLUSTER_SCOPED]


def apply(kubectl: Kubectl, objects: list[Obj]) -> None:
    body = {"apiVersion": "v1", "kind": "List", "items": objects}
    kubectl("apply", "--server-side", "-f", "-", input=json.dumps(body))


@pytest.fixture
def cluster_scoped_cleanup(kubectl: Kubectl) -> Iterator[list[str]]:
    """Names (kind/name) of cluster-scoped objects a test created, deleted afterwards: the
    namespace's deletion does not take them."""
    created: list[str] = []
    yield created
    for ref in created:
        kubectl("delete", ref, "--ignore-not-found", "--wait=false", check=False)


# ---------------------------------------------------------------------------------------------
# rendering


def test_default_renders_the_cluster_wide_install(kubectl: Kubectl) -> None:
    objects = render(kubectl, MANIFESTS / "default")
    ns = one(objects, "Namespace")
    assert ns["metadata"]["name"] == "stormservice-system"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert sorted(c["metadata"]["name"] for c in of_kind(objects, "CustomResourceDefinition")) == [
        "rolescalers.orchestration.aibrix.ai",
        "rolesets.orchestration.aibrix.ai",
        "stormservices.orchestration.aibrix.ai",
    ]
    for obj in namespaced_objects(objects):
        assert obj["metadata"].get("namespace") == "stormservice-system", obj["metadata"]
    for obj in of_kind(objects, "CustomResourceDefinition") + of_kind(objects, "ClusterRole"):
        assert "namespace" not in obj["metadata"]

    shipped = yaml.safe_load((MANIFESTS / "rbac" / "role.yaml").read_text())
    assert one(objects, "ClusterRole", CONTROLLER)["rules"] == shipped["rules"]
    binding = one(objects, "ClusterRoleBinding", CONTROLLER)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": CONTROLLER,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": CONTROLLER, "namespace": "stormservice-system"}
    ]
    # Only the Lease is granted by a Role; everything else cluster-wide.
    (lease_role,) = of_kind(objects, "Role")
    assert {g for r in lease_role["rules"] for g in r["apiGroups"]} == {"coordination.k8s.io"}

    container = manager_container(objects)
    options = parse_args(container["args"], env={"POD_NAMESPACE": "stormservice-system"})
    assert options.namespace in (None, ""), "the cluster-wide install watches every namespace"
    assert options.leader_elect and options.leader_elect_namespace == "stormservice-system"
    for kind in ("PodDisruptionBudget", "Service", "ServiceAccount", "Deployment"):
        one(objects, kind)


def test_an_overlay_suffix_that_looks_like_a_number_stays_a_suffix(kubectl: Kubectl, tmp_path: Path) -> None:
    # The RBAC test suffixes names with a random hex tail of the namespace; "-123e45" once made
    # the overlay unreadable to kustomize.
    objects = render(kubectl, overlay(tmp_path, "default", "team-a", name_suffix="-123e45"))
    assert one(objects, "ClusterRole", CONTROLLER + "-123e45")


@pytest.mark.parametrize("chosen", [None, "team-a"], ids=["as-shipped", "overlay-namespace"])
def test_namespaced_renders_a_role_in_one_namespace(
    kubectl: Kubectl, tmp_path: Path, chosen: str | None
) -> None:
    """The shipped namespace, or one an overlay chooses with `namespace:` alone: every object,
    binding subject and the controller's --namespace follow it."""
    if chosen is None:
        objects, namespace = render(kubectl, MANIFESTS / "namespaced"), "stormservice"
    else:
        objects, namespace = render(kubectl, overlay(tmp_path, "namespaced", chosen)), chosen
    assert not of_kind(objects, "ClusterRole") and not of_kind(objects, "ClusterRoleBinding")
    ns = one(objects, "Namespace")
    assert ns["metadata"]["name"] == namespace
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in namespaced_objects(objects):
        assert obj["metadata"].get("namespace") == namespace, obj["metadata"]

    cluster_rules = one(render(kubectl, MANIFESTS / "default"), "ClusterRole", CONTROLLER)["rules"]
    assert one(objects, "Role", CONTROLLER)["rules"] == cluster_rules
    for binding in of_kind(objects, "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": CONTROLLER, "namespace": namespace}]

    container = manager_container(objects)
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    # What the kubelet runs: $(POD_NAMESPACE) expanded to the pod's namespace.
    args = [expand_env(a, {"POD_NAMESPACE": namespace}) for a in container["args"]]
    options = parse_args(args, env={"POD_NAMESPACE": namespace})
    assert options.namespace == namespace
    assert options.leader_elect and options.leader_elect_namespace == namespace


def test_the_monitoring_component_renders_with_the_install(kubectl: Kubectl, tmp_path: Path) -> None:
    if not (MONITORING / "kustomization.yaml").is_file():
        pytest.skip("manifests/monitoring (the optional Prometheus component) does not exist yet")
    objects = render(kubectl, overlay(tmp_path, "default", "stormservice-system", components=(MONITORING,)))
    service = one(objects, "Service")
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "stormservice-system"
    wanted = monitor["spec"]["selector"].get("matchLabels") or {}
    assert wanted and all(service["metadata"]["labels"].get(k) == v for k, v in wanted.items())
    assert "metrics" in {e.get("port") for e in monitor["spec"]["endpoints"]}
    assert of_kind(objects, "PrometheusRule")


# ---------------------------------------------------------------------------------------------
# on the API server


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_passes_a_server_side_dry_run(
    kubectl: Kubectl, namespace: str, crds: list[str], tmp_path: Path, variant: str
) -> None:
    """Into the test's namespace (which exists: a dry run creates no Namespace), after the CRDs,
    which the CR-typed objects need."""
    directory = overlay(tmp_path, variant, namespace)
    objects = render(kubectl, directory)
    out = kubectl("apply", "--server-side", "--dry-run=server", "-k", str(directory)).stdout
    applied = [line for line in out.splitlines() if line.endswith("(server dry run)")]
    assert len(applied) == len(objects), out
    for obj in objects:
        assert re.search(rf"\b{re.escape(obj['metadata']['name'])} serverside-applied", out), obj["kind"]


def test_the_deployment_runs_two_pods_on_two_nodes_under_pod_security_restricted(
    kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    """The Namespace (its Pod Security labels), Deployment, PodDisruptionBudget and metrics
    Service, applied for real into the test's namespace (kwok runs the pods)."""
    objects = render(kubectl, overlay(tmp_path, "default", namespace))
    wanted = {"Namespace", "ServiceAccount", "Deployment", "PodDisruptionBudget", "Service"}
    apply(kubectl, [o for o in objects if o["kind"] in wanted])
    labels = kubectl.get_json("namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    # The label is enforced: a pod without the restricted settings is refused.
    bare = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bare", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": IMAGE_V1}]},
    }
    refused = kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(bare), check=False)
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused.stderr

    selector = f"app.kubernetes.io/name={CONTROLLER}"

    def ready_pods() -> list[Obj]:
        pods = kubectl.get_json("pods", "-n", namespace, "-l", selector)["items"]
        return [p for p in pods if is_ready(p) and not p["metadata"].get("deletionTimestamp")]

    wait_until(lambda: len(ready_pods()) == 2, 120, "the controller's 2 pods Ready")
    nodes = {p["spec"]["nodeName"] for p in ready_pods()}
    assert len(nodes) == 2, f"both replicas on {nodes}: the anti-affinity did not spread them"

    def pdb_allows_one() -> bool:
        status = kubectl.get_json("pdb", CONTROLLER, "-n", namespace).get("status") or {}
        return status.get("expectedPods") == 2 and status.get("disruptionsAllowed") == 1

    wait_until(pdb_allows_one, 60, "the PDB to expect 2 pods and allow 1 disruption")

    def metrics_endpoints() -> int:
        slices = kubectl.get_json(
            "endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={CONTROLLER}-metrics"
        )["items"]
        ports = {p.get("name") for s in slices for p in s.get("ports") or ()}
        ready = [
            e for s in slices for e in s.get("endpoints") or () if (e.get("conditions") or {}).get("ready")
        ]
        return len(ready) if ports == {"metrics"} else 0

    wait_until(lambda: metrics_endpoints() == 2, 60, "the metrics Service to have both pods, port metrics")


# ---------------------------------------------------------------------------------------------
# the controller with only the shipped RBAC


def is_ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or ()
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def role(name: str, *, replicas: int, group: int) -> Obj:
    return {
        "name": name,
        "replicas": replicas,
        "podGroupSize": group,
        # In place where possible, so that an image change patches pods (and their status).
        "updateStrategy": {"type": "InPlaceIfPossible", "maxUnavailable": 1},
        "template": {
            "metadata": {"labels": {"component": name}},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "readinessGates": [{"conditionType": L.INPLACE_READY_CONDITION}],
                "containers": [{"name": "engine", "image": IMAGE_V1}],
            },
        },
    }


def storm(name: str) -> Obj:
    return {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "StormService",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": {"type": "RollingUpdate", "maxSurge": 1, "maxUnavailable": 0},
            "disruptionTolerance": {"maxUnavailable": 1},
            # Old revisions are deleted after the first rollout already.
            "revisionHistoryLimit": 1,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "roles": [role("prefill", replicas=2, group=1), role("decode", replicas=1, group=2)]
                },
            },
        },
    }


class Storm:
    """Drives and observes one StormService as an admin (kubectl)."""

    def __init__(self, kubectl: Kubectl, namespace: str, name: str, controller: ControllerProcess) -> None:
        self.kubectl, self.namespace, self.name, self.controller = kubectl, namespace, name, controller

    def get(self, kind: str, *args: str) -> Any:
        return self.kubectl.get_json(kind, "-n", self.namespace, *args)

    def owned(self, kind: str) -> list[Obj]:
        items: list[Obj] = self.get(kind, "-l", f"storm-service-name={self.name}")["items"]
        return items

    def patch(self, patch: list[Obj]) -> None:
        self.kubectl(
            "patch", "stormservice", self.name, "-n", self.namespace, "--type=json", "-p", json.dumps(patch)
        )

    def settled(self) -> bool:
        """Ready for its latest generation, every RoleSet of the update revision and ready, every
        pod Ready and running the image its spec asks for."""
        ss = self.get("stormservice", self.name)
        status = ss.get("status") or {}
        if status.get("observedGeneration") != ss["metadata"]["generation"]:
            return False
        ready: Obj = next((c for c in status.get("conditions") or () if c["type"] == "Ready"), {})
        if ready.get("status") != "True" or status.get("currentRevision") != status.get("updateRevision"):
            return False
        rolesets = self.owned("rolesets")
        if len(rolesets) != ss["spec"]["replicas"] or any(
            rs["metadata"].get("labels", {}).get("storm-service-revision") != status["updateRevision"]
            or rs["metadata"].get("deletionTimestamp")
            for rs in rolesets
        ):
            return False
        per_roleset = sum(r["replicas"] * r["podGroupSize"] for r in ss["spec"]["template"]["spec"]["roles"])
        pods = self.owned("pods")
        return len(pods) == ss["spec"]["replicas"] * per_roleset and all(
            is_ready(p) and not p["metadata"].get("deletionTimestamp") and runs_its_images(p) for p in pods
        )

    def wait_settled(self, what: str, *, kubelet: bool = False) -> None:
        def check() -> bool:
            assert self.controller.alive(), "the controller exited"
            refused = [line for line in self.controller.log_text().splitlines() if FORBIDDEN.search(line)]
            assert not refused, f"while waiting for {what}, a request was forbidden:\n{refused[0]}"
            if kubelet:
                self.run_new_images()
            return self.settled()

        wait_until(check, 240, f"{self.name} to settle: {what}", interval=0.5)

    def run_new_images(self) -> None:
        """What a kubelet reports after restarting containers on new images (kwok's stage
        pod-container-image-update reports it too; whichever writes first)."""
        for pod in self.owned("pods"):
            if runs_its_images(pod) or pod["metadata"].get("deletionTimestamp"):
                continue
            statuses = [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": f"sha256:{c['image'].rsplit(':', 1)[-1]}-{c['name']}",
                    "ready": True,
                    "restartCount": 1,
                    "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}},
                }
                for c in pod["spec"]["containers"]
            ]
            self.kubectl(
                "patch", "pod", pod["metadata"]["name"], "-n", self.namespace, "--subresource=status",
                "--type=strategic", "-p", json.dumps({"status": {"containerStatuses": statuses}}),
                check=False,  # deleted meanwhile
            )  # fmt: skip


def runs_its_images(pod: Obj) -> bool:
    running = {s["name"]: s.get("image") for s in (pod.get("status") or {}).get("containerStatuses") or ()}
    return all(running.get(c["name"]) == c["image"] for c in pod["spec"]["containers"])


def scrape(controller: ControllerProcess) -> list[tuple[str, dict[str, str], float]]:
    line = controller.wait_for_log(re.compile(r'"server":\s*"metrics"'), timeout=60)
    address = json.loads(line)["addresses"][0]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


# The writes the scenario below must have made, so that it cannot pass by doing too little:
# (verb, resource) as stormservice_api_writes_total counts them.
EXERCISED_WRITES = {
    ("create", "leases"),
    ("update", "leases"),
    ("create", "controllerrevisions"),
    ("create", "services"),
    ("patch", "services"),
    ("delete", "services"),
    ("create", "poddisruptionbudgets"),
    ("patch", "poddisruptionbudgets"),
    ("create", "rolesets"),
    ("patch", "rolesets"),
    ("delete", "rolesets"),
    ("patch", "rolesets/status"),
    ("patch", "stormservices/status"),
    ("create", "pods"),
    ("patch", "pods"),
    ("patch", "pods/status"),
    ("create", "events"),
    ("delete", "controllerrevisions"),
    ("delete", "pods"),
    ("delete", "poddisruptionbudgets"),
    ("create", "rolescalers"),
    ("patch", "rolescalers/status"),
    ("delete", "rolescalers"),
    ("patch", "stormservices"),
}

# A refusal as the controller logs it: the API server's message or its status code.
FORBIDDEN = re.compile(r'forbidden|"code":\s*40[13]\b', re.IGNORECASE)

# Writes and reads the controller never needs: refused to its ServiceAccount in its namespace.
# (verb, resource[, subresource]); `kubectl auth can-i` takes "a/b" for a resource type and name.
NOT_GRANTED: list[tuple[str, ...]] = [
    ("create", "stormservices.orchestration.aibrix.ai"),
    ("update", "stormservices.orchestration.aibrix.ai"),
    ("delete", "stormservices.orchestration.aibrix.ai"),
    ("update", "rolesets.orchestration.aibrix.ai"),
    ("update", "pods"),
    ("update", "services"),
    ("update", "controllerrevisions.apps"),
    ("update", "poddisruptionbudgets.policy"),
    ("get", "secrets"),
    ("create", "secrets"),
    ("list", "configmaps"),
    ("list", "leases.coordination.k8s.io"),
    ("delete", "leases.coordination.k8s.io"),
    ("patch", "leases.coordination.k8s.io"),
    ("update", "events"),
    ("delete", "events"),
    ("create", "deployments.apps"),
    ("create", "pods", "exec"),
    ("update", "pods", "status"),
    ("update", "stormservices.orchestration.aibrix.ai", "status"),
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_controller_needs_no_more_than_the_shipped_rbac(
    kubectl: Kubectl,
    kubeconfig: str,
    namespace: str,
    crds: list[str],
    run_controller: Callable[..., ControllerProcess],
    cluster_scoped_cleanup: list[str],
    tmp_path: Path,
    variant: str,
) -> None:
    config = install_rbac(kubectl, kubeconfig, tmp_path, variant, namespace, cluster_scoped_cleanup)
    as_controller = Kubectl(kubectl.binary, str(config))
    controller = run_controller(
        "--kubeconfig", str(config), f"--namespace={namespace}",
        "--leader-elect=true", f"--leader-elect-namespace={namespace}",
    )  # fmt: skip
    identity = json.loads(controller.wait_for_log('"became leader"', timeout=60))["identity"]
    assert kubectl.get_json("lease", LEASE, "-n", namespace)["spec"]["holderIdentity"] == identity

    name = "least"
    ss = Storm(kubectl, namespace, name, controller)
    kubectl.apply(storm(name), "-n", namespace)
    ss.wait_settled("created")
    assert ss.owned("poddisruptionbudgets"), "no PodDisruptionBudget for its disruptionTolerance"

    kubectl("scale", "stormservice", name, "-n", namespace, "--replicas=2")
    ss.wait_settled("scaled to 2")

    before = {rs["metadata"]["name"] for rs in ss.owned("rolesets")}
    env = [{"name": "ROLLOUT", "value": "2"}]
    ss.patch(
        [
            {
                "op": "add",
                "path": f"/spec/template/spec/roles/{i}/template/spec/containers/0/env",
                "value": env,
            }
            for i in range(2)
        ]
    )
    ss.wait_settled("a RollingUpdate rollout")
    assert not before & {rs["metadata"]["name"] for rs in ss.owned("rolesets")}, "RoleSets not replaced"

    rolesets = {rs["metadata"]["uid"] for rs in ss.owned("rolesets")}
    pods = {p["metadata"]["uid"] for p in ss.owned("pods")}
    ss.patch(
        [
            {"op": "replace", "path": "/spec/updateStrategy", "value": {"type": "InPlaceUpdate"}},
            *(
                {
                    "op": "replace",
                    "path": f"/spec/template/spec/roles/{i}/template/spec/containers/0/image",
                    "value": IMAGE_V2,
                }
                for i in range(2)
            ),
        ]
    )
    ss.wait_settled("an InPlaceUpdate rollout", kubelet=True)
    assert {rs["metadata"]["uid"] for rs in ss.owned("rolesets")} == rolesets, "RoleSets replaced"
    assert {p["metadata"]["uid"] for p in ss.owned("pods")} == pods, "pods recreated, not updated in place"
    assert all(c["image"] == IMAGE_V2 for p in ss.owned("pods") for c in p["spec"]["containers"])

    # A role's Service: created, patched (a type change), deleted and created again (to
    # Headless), deleted (the field removed).
    service = f"{name}-prefill"

    def role_service(check: Callable[[Obj], bool]) -> Callable[[], bool]:
        def ready() -> bool:
            assert controller.alive(), "the controller exited"
            found = [s for s in ss.owned("services") if s["metadata"]["name"] == service]
            return bool(found) and check(found[0])

        return ready

    ss.patch(
        [{"op": "add", "path": "/spec/template/spec/roles/0/service", "value": {"ports": [{"port": 80}]}}]
    )
    wait_until(role_service(lambda s: s["spec"]["type"] == "ClusterIP"), 60, "the role's Service")
    ss.patch([{"op": "replace", "path": "/spec/template/spec/roles/0/service/type", "value": "NodePort"}])
    wait_until(role_service(lambda s: s["spec"]["type"] == "NodePort"), 60, "a NodePort role Service")
    ss.patch([{"op": "replace", "path": "/spec/template/spec/roles/0/service/type", "value": "Headless"}])
    wait_until(role_service(lambda s: s["spec"].get("clusterIP") == "None"), 60, "a headless role Service")
    ss.patch([{"op": "remove", "path": "/spec/template/spec/roles/0/service"}])
    wait_until(lambda: service not in {s["metadata"]["name"] for s in ss.owned("services")}, 60, "it to go")

    # Fewer instances of one role (pods deleted), and no disruption budget (the PDBs deleted).
    ss.patch(
        [
            {"op": "replace", "path": "/spec/template/spec/roles/0/replicas", "value": 1},
            {"op": "remove", "path": "/spec/disruptionTolerance"},
        ]
    )
    ss.wait_settled("a role scaled down")
    wait_until(lambda: not ss.owned("poddisruptionbudgets"), 60, "the PDBs to go")

    # A role scaled through its RoleScaler (pooled mode), then opted out.
    pooled = Storm(kubectl, namespace, "pooled", controller)
    manifest = storm("pooled")
    manifest["spec"]["replicas"] = 1
    manifest["spec"]["template"]["spec"]["roles"][0]["scaling"] = "External"
    kubectl.apply(manifest, "-n", namespace)
    wait_until(lambda: kubectl.exists("rolescaler", "pooled-prefill", "-n", namespace), 60, "the RoleScaler")
    kubectl("scale", "rolescaler/pooled-prefill", "--replicas=3", "-n", namespace)
    wait_until(
        lambda: (pooled.get("rolescaler", "pooled-prefill").get("status") or {}).get("replicas") == 3,
        120,
        "prefill scaled through its RoleScaler",
    )
    pooled.wait_settled("a role scaled through its RoleScaler")
    pooled.patch([{"op": "remove", "path": "/spec/template/spec/roles/0/scaling"}])
    wait_until(lambda: not pooled.get("rolescalers")["items"], 60, "the RoleScaler to go")
    kubectl("delete", "stormservice", "pooled", "-n", namespace, "--wait=false")

    # What it must not do, tried for real with its own token.
    refused = as_controller("delete", "stormservice", name, "-n", namespace, "--wait=false", check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr, refused.stderr
    secret = as_controller(
        "create", "secret", "generic", "x", "-n", namespace, "--from-literal=a=b", check=False
    )
    assert secret.returncode != 0 and "forbidden" in secret.stderr, secret.stderr
    for verb, resource, *subresource in NOT_GRANTED:
        flags = [f"--subresource={s}" for s in subresource]
        can = as_controller("auth", "can-i", verb, resource, *flags, "-n", namespace, check=False)
        assert can.stdout.strip() == "no", f"{variant}: the controller may {verb} {resource} {flags}"
    # The namespaced install grants nothing outside its namespace.
    elsewhere = as_controller("auth", "can-i", "list", "pods", "-n", "default", check=False).stdout.strip()
    assert elsewhere == ("yes" if variant == "default" else "no")

    kubectl("delete", "stormservice", name, "-n", namespace, "--wait=false")

    def gone() -> bool:
        assert controller.alive(), "the controller exited"
        return not any(ss.owned(kind) for kind in ("rolesets", "pods", "services", "poddisruptionbudgets"))

    wait_until(gone, 120, "the StormService's RoleSets, pods, Service and PDBs to go", interval=0.5)

    writes = assert_nothing_refused(controller)
    assert writes >= EXERCISED_WRITES, f"not exercised: {sorted(EXERCISED_WRITES - writes)}"
    assert "leader election lost" not in controller.log_text()
    print(f"\n{variant}: writes made with the shipped RBAC: {sorted(writes)}")


# What taking over AIBrix's objects writes beyond the scenario above.
TAKEOVER_WRITES = {
    ("patch", "podsets"),
    ("delete", "podsets"),
    ("patch", "stormservices"),
    ("patch", "rolesets"),
    ("patch", "pods"),
}


async def test_the_aibrix_takeover_needs_no_more_than_the_shipped_rbac(
    kube: Any,
    loader: Any,
    kubectl: Kubectl,
    kubeconfig: str,
    namespace: str,
    crds: list[str],
    podset_crd: str,
    run_controller: Callable[..., ControllerProcess],
    cluster_scoped_cleanup: list[str],
    tmp_path: Path,
) -> None:
    """AIBrix's objects (with PodSets and finalizers) taken over and then deleted, by the
    controller with the namespaced install's RBAC: the PodSet, finalizer and adoption writes."""
    if not FIXTURE_DIR.is_dir():
        pytest.skip(f"AIBrix fixtures not found in {FIXTURE_DIR}")
    config = install_rbac(kubectl, kubeconfig, tmp_path, "namespaced", namespace, cluster_scoped_cleanup)

    def as_service_account(*extra: str, **kwargs: Any) -> ControllerProcess:
        return run_controller("--kubeconfig", str(config), *extra, **kwargs)

    cluster = takeover.Cluster(kube, namespace)
    base = await takeover.load(cluster, loader, "sglang-tp-1p1d")
    assert base.podset_pods, "the fixture has no PodSets to take over"
    controller = await takeover.start_and_take_over(cluster, base, as_service_account)

    # AIBrix's finalizer on the StormService is ours to remove when it is deleted.
    kubectl("delete", "stormservice", base.storm, "-n", namespace, "--wait=false")

    def gone() -> bool:
        assert controller.alive(), "the controller exited"
        left = kubectl("get", "stormservices,rolesets", "-n", namespace, "-o", "name").stdout
        return not left.strip()

    wait_until(gone, 120, "the StormService and its RoleSets to go (finalizers removed)", interval=0.5)
    writes = assert_nothing_refused(controller)
    assert writes >= TAKEOVER_WRITES, f"not exercised: {sorted(TAKEOVER_WRITES - writes)}"
    print(f"\ntakeover: writes made with the shipped RBAC: {sorted(writes)}")


def install_rbac(
    kubectl: Kubectl, kubeconfig: str, tmp_path: Path, variant: str, namespace: str, cleanup: list[str]
) -> Path:
    """The ServiceAccount and RBAC of manifests/<variant>, moved into `namespace` (cluster-scoped
    names suffixed), applied; returns a kubeconfig with a token of that ServiceAccount."""
    suffix = "-" + namespace.rsplit("-", 1)[1]
    objects = render(kubectl, overlay(tmp_path, variant, namespace, name_suffix=suffix))
    rbac = [o for o in objects if o["kind"] in RBAC_KINDS]
    cleanup.extend(
        f"{o['kind'].lower()}/{o['metadata']['name']}" for o in rbac if o["kind"] in CLUSTER_SCOPED
    )
    assert {o["kind"] for o in rbac} >= {"ServiceAccount", "Role", "RoleBinding"}
    apply(kubectl, rbac)
    account = one(rbac, "ServiceAccount")["metadata"]["name"]
    token = kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    config = derived_kubeconfig(kubeconfig, tmp_path / "sa.kubeconfig", token=token)
    whoami = Kubectl(kubectl.binary, str(config))("auth", "whoami", "-o", "json").stdout
    assert f"serviceaccount:{namespace}:{account}" in whoami
    return config


def assert_nothing_refused(controller: ControllerProcess) -> set[tuple[str, str]]:
    """No 401/403 counted on the controller's /metrics nor logged; returns the writes it made,
    (verb, resource) as stormservice_api_writes_total counts them."""
    assert controller.alive(), "the controller exited"
    samples = scrape(controller)
    refusals = {
        (labels["method"], labels["code"]): value
        for sample, labels, value in samples
        if sample == "rest_client_requests_total" and labels["code"] in ("401", "403") and value
    }
    assert not refusals, f"requests refused: {refusals}"
    refused_lines = [line for line in controller.log_text().splitlines() if FORBIDDEN.search(line)]
    assert not refused_lines, "\n".join(refused_lines)
    return {
        (labels["verb"], labels["resource"])
        for sample, labels, value in samples
        if sample == "stormservice_api_writes_total" and value
    }
