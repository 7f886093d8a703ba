"""The generated CRDs on a real kube-apiserver: accepted (structural schema, CEL compiles within
the cost budget), fixtures admitted, every invalid case rejected with the rule's message.

Runs only when STORMSERVICE_ADMISSION_KUBECONFIG names a kubeconfig of a cluster where it may
install the two CRDs (e.g. `make cluster-up`); everything else is a server-side dry run. kubectl
is taken from STORMSERVICE_KUBECTL, then the control-plane build cache, then PATH.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.apis import cases

KUBECONFIG = os.environ.get("STORMSERVICE_ADMISSION_KUBECONFIG")
CRD_DIR = Path(__file__).resolve().parents[3] / "manifests" / "crds"
NAMESPACE = f"apis-admission-{uuid.uuid4().hex[:8]}"  # dry runs in a fresh namespace never collide

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not KUBECONFIG, reason="set STORMSERVICE_ADMISSION_KUBECONFIG to run against a cluster"
    ),
]


def _kubectl_bin() -> str:
    explicit = os.environ.get("STORMSERVICE_KUBECTL")
    if explicit:
        return explicit
    cached = sorted(glob.glob(os.path.expanduser("~/.cache/stormservice-controller/*/bin/kubectl")))
    if cached:
        return cached[-1]
    found = shutil.which("kubectl")
    if not found:
        pytest.skip("no kubectl")
    return found


def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(KUBECONFIG)}
    return subprocess.run(
        [_kubectl_bin(), *args], input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False
    )


@pytest.fixture(scope="module", autouse=True)
def installed_crds() -> Iterator[None]:
    p = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    assert p.returncode == 0, p.stderr
    p = kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/stormservices.orchestration.aibrix.ai",
        "crd/rolesets.orchestration.aibrix.ai",
    )
    assert p.returncode == 0, p.stderr
    p = kubectl("create", "namespace", NAMESPACE)
    assert p.returncode == 0, p.stderr
    yield
    kubectl("delete", "namespace", NAMESPACE, "--wait=false")


def dry_run(obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    obj = json.loads(json.dumps(obj))
    obj.pop("status", None)
    meta = obj.setdefault("metadata", {})
    for key in ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields"):
        meta.pop(key, None)
    meta["namespace"] = NAMESPACE
    return kubectl(
        "create", "--dry-run=server", "--validate=strict", "-o", "json", "-f", "-", stdin=json.dumps(obj)
    )


@pytest.mark.parametrize("name", cases.fixture_names())
def test_fixtures_are_admitted(name: str) -> None:
    p = dry_run(cases.load(name))
    assert p.returncode == 0, p.stderr


def test_defaults_are_applied() -> None:
    p = dry_run(cases.minimal_storm_service())
    assert p.returncode == 0, p.stderr
    spec = json.loads(p.stdout)["spec"]
    assert spec["replicas"] == 1 and spec["revisionHistoryLimit"] == 10
    assert spec["updateStrategy"] == {"type": "RollingUpdate"}
    assert spec["template"]["spec"]["updateStrategy"] == "Sequential"
    role = spec["template"]["spec"]["roles"][0]
    assert (role["replicas"], role["podGroupSize"], role["podRecoveryPolicy"]) == (1, 1, "ReplaceUnhealthy")
    assert role["updateStrategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("case", cases.INVALID, ids=lambda x: x.id)
def test_invalid_manifests_are_rejected(case: cases.Invalid) -> None:
    p = dry_run(case.build())
    assert p.returncode != 0, f"{case.id} was admitted"
    if case.cel:
        assert case.message in p.stderr


@pytest.mark.parametrize(
    ("name", "kind", "mutate"), cases.VALID_MUTATIONS, ids=[m[0] for m in cases.VALID_MUTATIONS]
)
def test_edge_values_are_admitted(name: str, kind: str, mutate: Any) -> None:
    obj = cases.minimal_storm_service() if kind == "StormService" else cases.minimal_role_set()
    mutate(obj)
    p = dry_run(obj)
    assert p.returncode == 0, p.stderr


def test_pod_template_is_validated() -> None:
    obj = cases.minimal_role_set()
    obj["spec"]["roles"][0]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"memory": "16Gx"}}
    p = dry_run(obj)
    assert p.returncode != 0 and "resources.limits.memory" in p.stderr
    obj = cases.minimal_role_set()
    obj["spec"]["roles"][0]["template"]["spec"]["containers"][0].pop("name")
    p = dry_run(obj)
    assert p.returncode != 0 and "containers[0].name: Required value" in p.stderr
