"""RoleSet names, indexes, labels and annotations."""

from __future__ import annotations

from typing import Any

import pytest

from apis.v1alpha1 import constants as c
from controller.stormservice.labels import (
    RoleRevision,
    controller_revision_labels,
    render_roleset,
    roleset_index,
    roleset_revision,
    scaling_target_selector,
)
from controller.stormservice.naming import lowest_free_indexes, roleset_generate_name

P = "stormservice.orchestration.aibrix.ai/"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("llm", "llm-roleset-"),
        ("a" * 49, "a" * 49 + "-roleset-"),
        ("a" * 60, "a" * 49 + "-roleset-"),
        ("a" * 48 + "-bbbb", "a" * 48 + "-roleset-"),  # no "--" left at the cut
    ],
)
def test_generate_name_fits(name: str, expected: str) -> None:
    got = roleset_generate_name(name)
    assert got == expected
    assert len(got) + 5 <= 63


@pytest.mark.parametrize(
    ("used", "count", "expected"),
    [
        ([], 3, [0, 1, 2]),
        ([0, 1, 2], 2, [3, 4]),
        ([0, 2, 5], 3, [1, 3, 4]),
        ([1, None, 1], 2, [0, 2]),  # RoleSets without an index (or duplicates) are tolerated
        ([3], 0, []),
    ],
)
def test_lowest_free_indexes(used: list[int | None], count: int, expected: list[int]) -> None:
    assert lowest_free_indexes(used, count) == expected


def _ss() -> dict[str, Any]:
    return {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "StormService",
        "metadata": {"name": "llm", "namespace": "ns", "uid": "u-1"},
    }


def test_render_roleset_wire_format() -> None:
    template: dict[str, Any] = {
        "metadata": {"labels": {"app": "llm"}, "annotations": {"team": "a"}},
        "spec": {"roles": [{"name": "prefill", "replicas": 2}]},
    }
    body = render_roleset(
        _ss(),
        template,
        "llm-7d9f8c",
        {"prefill": RoleRevision(3, "llm-7d9f8c"), "decode": RoleRevision(1, "llm-55b6")},
        index=4,
    )
    assert body == {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "RoleSet",
        "metadata": {
            "generateName": "llm-roleset-",
            "namespace": "ns",
            "labels": {"app": "llm", "storm-service-name": "llm", "storm-service-revision": "llm-7d9f8c"},
            "annotations": {
                "team": "a",
                P + "revision": "llm-7d9f8c",
                P + "roleset-index": "4",
                P + "role-revision.prefill": "3",
                P + "role-revision-name.prefill": "llm-7d9f8c",
                P + "role-revision.decode": "1",
                P + "role-revision-name.decode": "llm-55b6",
            },
            "ownerReferences": [
                {
                    "apiVersion": "orchestration.aibrix.ai/v1alpha1",
                    "kind": "StormService",
                    "name": "llm",
                    "uid": "u-1",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"roles": [{"name": "prefill", "replicas": 2}]},
    }
    body["spec"]["roles"][0]["replicas"] = 9
    assert template["spec"]["roles"][0]["replicas"] == 2  # a copy


def test_reserved_labels_win_over_template() -> None:
    template = {"metadata": {"labels": {c.LABEL_STORM_SERVICE_NAME: "evil"}}, "spec": {}}
    body = render_roleset(_ss(), template, "rev", {}, index=None)
    assert body["metadata"]["labels"][c.LABEL_STORM_SERVICE_NAME] == "llm"
    assert c.ANNOTATION_ROLESET_INDEX not in body["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("meta", "revision", "index"),
    [
        ({"labels": {"storm-service-revision": "a"}, "annotations": {P + "revision": "b"}}, "a", None),
        ({"annotations": {P + "revision": "b", P + "roleset-index": "7"}}, "b", 7),
        ({"annotations": {P + "roleset-index": "x"}}, "", None),
        ({}, "", None),
    ],
)
def test_read_back(meta: dict[str, Any], revision: str, index: int | None) -> None:
    obj = {"metadata": meta}
    assert roleset_revision(obj) == revision
    assert roleset_index(obj) == index


def test_revision_labels_and_selector() -> None:
    assert controller_revision_labels("llm", "5c9d") == {
        "name": "llm",
        "controller.kubernetes.io/hash": "5c9d",
    }
    assert scaling_target_selector("llm") == "storm-service-name=llm"
