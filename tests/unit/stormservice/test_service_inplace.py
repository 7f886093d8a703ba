"""Headless Service repair decisions and in-place RoleSet rewrites."""

from __future__ import annotations

from typing import Any

import pytest

from controller.stormservice.inplace import merge_patch, rewrite_patch, to_rewrite
from controller.stormservice.service import desired_service, plan_service
from tests.unit.stormservice.helpers import names, rs

SS: dict[str, Any] = {
    "apiVersion": "orchestration.aibrix.ai/v1alpha1",
    "kind": "StormService",
    "metadata": {"name": "llm", "namespace": "ns", "uid": "u1"},
}
OWNED = [
    {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "StormService",
        "name": "llm",
        "uid": "u1",
        "controller": True,
    }
]


def svc(
    spec: dict[str, Any],
    owners: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
    **meta: Any,
) -> dict[str, Any]:
    """Our Service as the API server returns it; `labels` None: a Service with no labels."""
    metadata = {"name": "llm", "ownerReferences": OWNED if owners is None else owners, **meta}
    if labels is not None:
        metadata["labels"] = labels
    return {"metadata": metadata, "spec": spec}


GOOD = {
    "clusterIP": "None",
    "selector": {"storm-service-name": "llm"},
    "publishNotReadyAddresses": True,
    "type": "ClusterIP",
}


LABELLED = {**SS, "metadata": {**SS["metadata"], "labels": {"app": "llm", "team": "serving"}}}
OWN_LABELS = {"app": "llm", "team": "serving", "storm-service-name": "llm"}


def test_desired_service_carries_the_stormservice_labels() -> None:
    """As AIBrix's does (its Service takes the StormService's metadata.labels), plus the label
    the Service selects by."""
    assert desired_service(LABELLED)["metadata"]["labels"] == OWN_LABELS
    assert desired_service(SS)["metadata"]["labels"] == {"storm-service-name": "llm"}
    # Ours wins over a StormService label of the same key.
    clash = {**SS, "metadata": {**SS["metadata"], "labels": {"storm-service-name": "other"}}}
    assert desired_service(clash)["metadata"]["labels"] == {"storm-service-name": "llm"}


@pytest.mark.parametrize(
    ("labels", "patch"),
    [
        pytest.param(OWN_LABELS, None, id="in-sync"),
        pytest.param({**OWN_LABELS, "added-by-hand": "x"}, None, id="other-labels-left-alone"),
        pytest.param(
            {"storm-service-name": "llm"},
            {"metadata": {"labels": {"app": "llm", "team": "serving"}}},
            id="made-before-labels-were-copied",
        ),
        pytest.param(
            {**OWN_LABELS, "team": "other", "storm-service-name": "x"},
            {"metadata": {"labels": {"team": "serving", "storm-service-name": "llm"}}},
            id="drifted",
        ),
        pytest.param(None, {"metadata": {"labels": OWN_LABELS}}, id="no-labels"),
    ],
)
def test_plan_service_repairs_label_drift(
    labels: dict[str, str] | None, patch: dict[str, Any] | None
) -> None:
    existing = svc(GOOD, labels=labels)
    got = plan_service(LABELLED, existing)
    assert (got.action, got.patch) == (("none", None) if patch is None else ("patch", patch))


def test_plan_service_repairs_labels_and_spec_in_one_patch() -> None:
    got = plan_service(LABELLED, svc({**GOOD, "publishNotReadyAddresses": False}, labels={}))
    assert (got.action, got.patch) == (
        "patch",
        {"metadata": {"labels": OWN_LABELS}, "spec": {"publishNotReadyAddresses": True}},
    )


def test_desired_service() -> None:
    want = desired_service(SS)
    assert want["spec"] == {
        "clusterIP": "None",
        "selector": {"storm-service-name": "llm"},
        "publishNotReadyAddresses": True,
    }
    assert want["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert want["metadata"]["ownerReferences"][0]["controller"] is True
    assert (want["metadata"]["name"], want["metadata"]["namespace"]) == ("llm", "ns")


@pytest.mark.parametrize(
    ("existing", "action", "patch"),
    [
        pytest.param(None, "create", None, id="missing"),
        pytest.param(svc(GOOD), "none", None, id="good"),
        pytest.param(
            svc({**GOOD, "publishNotReadyAddresses": False}),
            "patch",
            {"spec": {"publishNotReadyAddresses": True}},
            id="publish",
        ),
        pytest.param(
            svc({**GOOD, "selector": {"storm-service-name": "x", "extra": "y"}}),
            "patch",
            {"spec": {"selector": {"storm-service-name": "llm", "extra": None}}},
            id="selector",
        ),
        pytest.param(svc({**GOOD, "clusterIP": "10.0.0.1"}), "recreate", None, id="not-headless"),
        pytest.param(svc(GOOD, owners=[]), "conflict", None, id="not-ours"),
        pytest.param(
            svc(GOOD, owners=[{**OWNED[0], "uid": "other"}]), "conflict", None, id="older-incarnation"
        ),
        pytest.param(svc(GOOD, deletionTimestamp="2024-01-01T00:00:00Z"), "none", None, id="terminating"),
    ],
)
def test_plan_service(existing: dict[str, Any] | None, action: str, patch: dict[str, Any] | None) -> None:
    if existing is not None:
        existing["metadata"].setdefault("labels", {"storm-service-name": "llm"})
    got = plan_service(SS, existing)
    assert (got.action, got.patch) == (action, patch)


def test_to_rewrite() -> None:
    views = [rs("c", "old"), rs("a", "older"), rs("b"), rs("t", "old", terminating=True)]
    assert names(to_rewrite(views, "new")) == ["a", "c"]


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        ({"a": 1}, {"a": 1}, {}),
        ({"a": 1, "b": 2}, {"a": 1}, {"b": None}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"x": 1}}, {"a": {"y": None}}),
        ({"a": [1, 2]}, {"a": [1]}, {"a": [1]}),
        ({}, {"a": {"b": 1}}, {"a": {"b": 1}}),
        ({"a": 1}, {"a": {"b": 1}}, {"a": {"b": 1}}),
    ],
)
def test_merge_patch(old: dict[str, Any], new: dict[str, Any], patch: dict[str, Any]) -> None:
    assert merge_patch(old, new) == patch


P = "stormservice.orchestration.aibrix.ai/"


def test_rewrite_patch_keeps_index_and_name() -> None:
    current = {
        "metadata": {
            "name": "llm-roleset-abcde",
            "resourceVersion": "42",
            "labels": {"app": "x", "storm-service-name": "llm", "storm-service-revision": "old", "gone": "1"},
            "annotations": {P + "revision": "old", P + "roleset-index": "3", P + "role-revision.p": "1"},
        },
        "spec": {
            "roles": [{"name": "p", "replicas": 2, "template": {"image": "a"}}],
            "updateStrategy": "Sequential",
        },
    }
    target = {
        "metadata": {
            "labels": {"app": "x", "storm-service-name": "llm", "storm-service-revision": "new"},
            "annotations": {P + "revision": "new", P + "role-revision.p": "2"},
        },
        "spec": {"roles": [{"name": "p", "replicas": 2, "template": {"image": "b"}}]},
    }
    assert rewrite_patch(current, target) == {
        "metadata": {
            "resourceVersion": "42",
            "labels": {"storm-service-revision": "new", "gone": None},
            "annotations": {P + "revision": "new", P + "role-revision.p": "2"},
        },
        "spec": {"roles": [{"name": "p", "replicas": 2, "template": {"image": "b"}}], "updateStrategy": None},
    }


def test_rewrite_patch_none_when_equal() -> None:
    current = {
        "metadata": {"labels": {"a": "1"}, "annotations": {P + "roleset-index": "0"}},
        "spec": {"roles": []},
    }
    target = {"metadata": {"labels": {"a": "1"}, "annotations": {}}, "spec": {"roles": []}}
    assert rewrite_patch(current, target) is None
