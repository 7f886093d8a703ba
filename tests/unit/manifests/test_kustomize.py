"""The kustomize layout of manifests/ holds together without a cluster or kustomize: every
listed resource exists, the CRD kustomization lists exactly the generated CRDs, and the objects
that find the controller's pods by label (PodDisruptionBudget, metrics Service, anti-affinity)
select the Deployment's pods. tests/integration/test_install.py renders and applies them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from apis.crdgen import render_all

MANIFESTS = Path(__file__).resolve().parents[3] / "manifests"
KUSTOMIZATIONS = sorted(MANIFESTS.glob("*/kustomization.yaml"))


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def only(path: Path, kind: str) -> dict[str, Any]:
    (obj,) = [doc for doc in load(path) if doc["kind"] == kind]
    return obj


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, f"only matchLabels expected here: {selector}"
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_the_install_directories_are_kustomizations() -> None:
    assert {p.parent.name for p in KUSTOMIZATIONS} >= {"crds", "rbac", "manager", "default", "namespaced"}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: p.parent.name)
def test_every_listed_resource_exists(kustomization: Path) -> None:
    spec = yaml.safe_load(kustomization.read_text())
    for entry in [*(spec.get("resources") or []), *(spec.get("components") or [])]:
        target = kustomization.parent / entry
        assert target.is_file() or (target / "kustomization.yaml").is_file(), (
            f"{kustomization.relative_to(MANIFESTS)} lists {entry}, which is neither a file "
            "nor a directory with a kustomization.yaml"
        )


def test_the_crd_kustomization_lists_exactly_the_generated_crds() -> None:
    spec = yaml.safe_load((MANIFESTS / "crds" / "kustomization.yaml").read_text())
    assert sorted(spec["resources"]) == sorted(render_all())


def test_the_pdb_the_metrics_service_and_the_anti_affinity_select_the_controllers_pods() -> None:
    deployment = only(MANIFESTS / "manager" / "deployment.yaml", "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    pod = deployment["spec"]["template"]["spec"]
    assert selects(deployment["spec"]["selector"], pod_labels)

    pdb = only(MANIFESTS / "manager" / "pdb.yaml", "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"], pod_labels)
    # With 2 replicas, maxUnavailable 1 lets a drain move them one at a time, and it does not
    # block a drain when the Deployment is scaled to 1 (minAvailable 1 would).
    assert deployment["spec"]["replicas"] == 2
    assert pdb["spec"] == {**pdb["spec"], "maxUnavailable": 1}
    assert "minAvailable" not in pdb["spec"]

    service = only(MANIFESTS / "manager" / "service.yaml", "Service")
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    (port,) = service["spec"]["ports"]
    (container,) = [c for c in pod["containers"] if c["name"] == "manager"]
    assert port["name"] == "metrics"
    assert port["targetPort"] in {p["name"] for p in container["ports"]}

    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert selects(term["podAffinityTerm"]["labelSelector"], pod_labels)


def test_the_pod_meets_pod_security_restricted() -> None:
    pod = only(MANIFESTS / "manager" / "deployment.yaml", "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert "memory" in container["resources"]["requests"]
        assert "memory" in container["resources"]["limits"]


def test_the_namespace_enforces_pod_security_restricted() -> None:
    labels = only(MANIFESTS / "default" / "namespace.yaml", "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
