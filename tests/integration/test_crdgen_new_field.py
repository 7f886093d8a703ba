"""A field added to a model, and nothing else, is enforced by a real API server: the CRD of a
fixture kind generated from WarmRoleSpec (RoleSpec plus one field, tests/unit/apis) applies its
default, its bounds and its CEL rules (message, messageExpression, fieldPath)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from pydantic import Field

from apis.crdgen.schema import kind_schema
from apis.v1alpha1.types import WireModel
from tests.cluster import Kubectl, wait_until
from tests.unit.apis.test_crdgen_models import WarmRoleSpec

pytestmark = pytest.mark.integration

GROUP = f"t{uuid.uuid4().hex[:8]}.crdgen.stormservice.test"


class Gadget(WireModel):
    """Gadget is a fixture kind whose spec is a role with one field more."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["Gadget"] = "Gadget"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: WarmRoleSpec


def gadget_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"gadgets.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"kind": "Gadget", "listKind": "GadgetList", "plural": "gadgets", "singular": "gadget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": kind_schema(Gadget)},
                }
            ],
        },
    }


@pytest.fixture
def gadgets(kubectl: Kubectl) -> Iterator[None]:
    kubectl("create", "-f", "-", input=json.dumps(gadget_crd()))

    def listable() -> bool:
        return kubectl("get", f"gadgets.{GROUP}", "-A", "-o", "name", check=False).returncode == 0

    try:
        wait_until(listable, 90, f"gadgets.{GROUP} served")
        yield
    finally:
        kubectl("delete", "crd", f"gadgets.{GROUP}", "--wait=false", "--ignore-not-found", check=False)


def create(kubectl: Kubectl, **spec: Any) -> subprocess.CompletedProcess[str]:
    """A server-side dry run: nothing is stored, so the default namespace does."""
    role = {"name": "warm", "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    obj = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Gadget",
        "metadata": {"name": "g", "namespace": "default"},
        "spec": {**role, **spec},
    }
    return kubectl(
        "create", "--dry-run=server", "--validate=strict", "-o", "json", "-f", "-",
        input=json.dumps(obj), check=False,
    )  # fmt: skip


def test_a_new_model_field_is_enforced_by_the_api_server(kubectl: Kubectl, gadgets: None) -> None:
    p = create(kubectl)
    assert p.returncode == 0, p.stderr
    spec = json.loads(p.stdout)["spec"]
    assert (spec["warmupSeconds"], spec["replicas"], spec["podGroupSize"]) == (30, 1, 1)

    p = create(kubectl, warmupSeconds=1200)
    assert p.returncode == 0, p.stderr

    p = create(kubectl, warmupSeconds=3601)
    assert p.returncode != 0
    assert "spec.warmupSeconds in body should be less than or equal to 3600" in p.stderr

    p = create(kubectl, warmupSeconds=610)
    assert p.returncode != 0
    assert "spec.warmupSeconds: Invalid value" in p.stderr
    assert "a warm-up over 10 minutes is whole minutes" in p.stderr  # the messageExpression

    p = create(kubectl, warmupSeconds=60, replicas=0)
    assert p.returncode != 0
    assert "spec.warmupSeconds: Invalid value" in p.stderr and "a warm-up needs replicas" in p.stderr

    # The role's own rules came along with it.
    p = create(kubectl, name="Warm")
    assert p.returncode != 0 and "role name must be a DNS-1123 label" in p.stderr
