"""The generated CRDs on a real kube-apiserver: accepted (structural schema, CEL compiles within
the cost budget), fixtures admitted, every invalid case rejected with the rule's message, and
the role-template cases checked against pod validation itself (refused at admission only if the
API server refuses the pod too). Everything is a server-side dry run in a fresh namespace.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.cluster import Kubectl
from tests.unit.apis import cases

pytestmark = pytest.mark.integration

_kubectl: Kubectl | None = None
NAMESPACE = ""


def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert _kubectl is not None, "the module fixture sets up kubectl"
    return _kubectl(*args, input=stdin, check=False)


@pytest.fixture(autouse=True)
def admission_namespace(kubectl: Kubectl, crds: list[str], namespace: str) -> None:
    """Binds the session's kubectl and a fresh namespace for the dry runs below."""
    global _kubectl, NAMESPACE
    _kubectl, NAMESPACE = kubectl, namespace


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
    assert (role["replicas"], role["podGroupSize"], role["recoveryPolicy"]) == (1, 1, "ReplaceUnhealthy")
    assert role["updateStrategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("case", cases.INVALID, ids=lambda x: x.id)
def test_invalid_manifests_are_rejected(case: cases.Invalid) -> None:
    p = dry_run(case.build())
    assert p.returncode != 0, f"{case.id} was admitted"
    if case.cel:
        assert case.message in p.stderr
    if case.server_message is not None:
        assert case.server_message in p.stderr


def _mutated(kind: str, mutate: Any) -> dict[str, Any]:
    obj = cases.minimal_storm_service() if kind == "StormService" else cases.minimal_role_set()
    mutate(obj)
    return obj


@pytest.mark.parametrize(
    ("name", "kind", "mutate"), cases.VALID_MUTATIONS, ids=[m[0] for m in cases.VALID_MUTATIONS]
)
def test_edge_values_are_admitted(name: str, kind: str, mutate: Any) -> None:
    p = dry_run(_mutated(kind, mutate))
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


def _role0_template(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj["spec"]["template"]["spec"] if obj["kind"] == "StormService" else obj["spec"]
    roles: list[dict[str, Any]] = spec["roles"]
    return roles[0]["template"] if roles else None


def _changed_pod_template(kind: str, obj: dict[str, Any]) -> dict[str, Any] | None:
    """Role 0's template when the case changed it, else None."""
    base = cases.minimal_storm_service() if kind == "StormService" else cases.minimal_role_set()
    template = _role0_template(obj)
    return template if template is not None and template != _role0_template(base) else None


def pod_dry_run(template: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template.get("metadata", {}), "name": "probe", "namespace": NAMESPACE},
        "spec": template["spec"],
    }
    return kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(pod))


_POD_TEMPLATE_INVALID = [c for c in cases.INVALID if _changed_pod_template(c.kind, c.build()) is not None]
_POD_TEMPLATE_VALID = [
    m for m in cases.VALID_MUTATIONS if _changed_pod_template(m[1], _mutated(m[1], m[2])) is not None
]


@pytest.mark.parametrize("case", _POD_TEMPLATE_INVALID, ids=lambda x: x.id)
def test_pod_templates_refused_at_admission_are_pods_the_api_server_refuses(case: cases.Invalid) -> None:
    """The admission rules on role templates are no stricter than pod validation."""
    template = _changed_pod_template(case.kind, case.build())
    assert template is not None
    p = pod_dry_run(template)
    assert p.returncode != 0, f"the API server creates a pod of {case.id}, but the CRD refuses it"


@pytest.mark.parametrize(
    ("name", "kind", "mutate"), _POD_TEMPLATE_VALID, ids=[m[0] for m in _POD_TEMPLATE_VALID]
)
def test_pod_templates_admitted_at_the_edges_are_pods_the_api_server_creates(
    name: str, kind: str, mutate: Any
) -> None:
    template = _changed_pod_template(kind, _mutated(kind, mutate))
    assert template is not None
    p = pod_dry_run(template)
    assert p.returncode == 0, p.stderr
