"""The patches each mutation builds, and when it builds none."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.kubectl_storm.errors import CliError
from controller.kubectl_storm.mutate import (
    RESTARTED_AT_ANNOTATION,
    pause_patch,
    restart_patch,
    scale_patch,
    undo_plan,
)
from controller.stormservice.revisions import revision_template
from tests.unit.kubectl_storm.helpers import revision, storm_service, template

RV_TEST = {"op": "test", "path": "/metadata/resourceVersion", "value": "42"}
HISTORY = [
    revision("pd-aaa", 1, revision_template(template("img:1"))),
    revision("pd-bbb", 2, revision_template(template("img:2"))),
    revision("pd-ccc", 3, revision_template(template("img:3"))),
]


@pytest.mark.parametrize(
    ("present", "to_revision", "want_image", "want_number"),
    [
        pytest.param("img:3", None, "img:2", 2, id="default-is-the-one-before-the-present"),
        pytest.param("img:2", None, "img:1", 1, id="before-an-older-present"),
        pytest.param("img:3", 1, "img:1", 1, id="to-revision"),
        pytest.param("img:9", None, "img:3", 3, id="template-not-yet-a-revision-goes-to-the-newest"),
    ],
)
def test_undo_writes_the_revision_template_back(
    present: str, to_revision: int | None, want_image: str, want_number: int
) -> None:
    # Role replicas are not versioned: the present ones stay.
    ss = storm_service(tmpl=template(present, prefill=3, decode=2))
    plan = undo_plan(ss, HISTORY, to_revision)
    assert plan.revision == want_number
    assert plan.patch == [
        RV_TEST,
        {"op": "replace", "path": "/spec/template", "value": template(want_image, prefill=3, decode=2)},
    ]


def test_undo_keeps_every_role_field_revisions_do_not_record() -> None:
    # Revisions leave out a role's scaling, Service, dependencies, policies and partition: an
    # undo that took the revision's template alone would opt the role out of its RoleScaler and
    # delete its Service.
    unversioned = {
        "scaling": "External",
        "scalingBand": {"minReplicas": 1, "maxReplicas": 8},
        "service": {"type": "ClusterIP"},
        "dependsOn": ["prefill"],
        "recoveryGracePeriodSeconds": 30,
        "restartBudget": {"maxRestarts": 3, "windowSeconds": 600},
    }
    present = template("img:3", prefill=3, decode=2)
    present["spec"]["roles"][1].update(copy.deepcopy(unversioned))
    present["spec"]["roles"][1]["updateStrategy"] = {"partition": 1}
    plan = undo_plan(storm_service(tmpl=present), HISTORY, None)
    assert plan.patch is not None
    want = template("img:2", prefill=3, decode=2)
    want["spec"]["roles"][1].update(unversioned)
    want["spec"]["roles"][1]["updateStrategy"] = {"partition": 1}
    assert plan.patch[1] == {"op": "replace", "path": "/spec/template", "value": want}


def test_undo_to_the_present_revision_is_skipped() -> None:
    plan = undo_plan(storm_service(tmpl=template("img:2", prefill=4)), HISTORY, 2)
    assert (plan.revision, plan.patch) == (2, None)


@pytest.mark.parametrize(
    ("history", "present", "to_revision", "error"),
    [
        ([], "img:1", None, 'error: no rollout history found for stormservice "pd"'),
        (
            HISTORY[:1],
            "img:1",
            None,
            'error: no revision of stormservice "pd" before the present one to roll back to',
        ),
        (HISTORY, "img:3", 5, "error: unable to find the specified revision 5 in history"),
    ],
)
def test_undo_errors(
    history: list[dict[str, Any]], present: str, to_revision: int | None, error: str
) -> None:
    with pytest.raises(CliError) as err:
        undo_plan(storm_service(tmpl=template(present)), history, to_revision)
    assert err.value.message == error


@pytest.mark.parametrize(
    ("paused", "want", "patch"),
    [
        (False, True, {"spec": {"paused": True}}),
        (True, True, None),
        (True, False, {"spec": {"paused": False}}),
        (False, False, None),
    ],
)
def test_pause_patch(paused: bool, want: bool, patch: dict[str, Any] | None) -> None:
    assert pause_patch(storm_service(paused=paused), want) == patch


def test_restart_annotates_every_role_template_and_tests_what_it_read() -> None:
    tmpl = template()
    tmpl["spec"]["roles"][1]["template"]["metadata"]["annotations"] = {"keep": "me"}
    ss = storm_service(tmpl=tmpl)
    original = copy.deepcopy(ss)
    at = "2026-12-01T08:00:00Z"
    assert restart_patch(ss, at) == [
        RV_TEST,
        {"op": "test", "path": "/spec/template/spec/roles/0/name", "value": "prefill"},
        {
            "op": "add",
            "path": "/spec/template/spec/roles/0/template/metadata",
            "value": {"labels": {"component": "prefill"}, "annotations": {RESTARTED_AT_ANNOTATION: at}},
        },
        {"op": "test", "path": "/spec/template/spec/roles/1/name", "value": "decode"},
        {
            "op": "add",
            "path": "/spec/template/spec/roles/1/template/metadata",
            "value": {
                "labels": {"component": "decode"},
                "annotations": {"keep": "me", RESTARTED_AT_ANNOTATION: at},
            },
        },
    ]
    assert ss == original


def test_restart_annotates_the_entry_template_too() -> None:
    tmpl = template()
    tmpl["spec"]["roles"][1]["entryTemplate"] = {"spec": {"containers": [{"name": "c", "image": "e"}]}}
    at = "2026-12-01T08:00:00Z"
    ops = restart_patch(storm_service(tmpl=tmpl), at)
    assert [op["path"] for op in ops if op["op"] == "add"] == [
        "/spec/template/spec/roles/0/template/metadata",
        "/spec/template/spec/roles/1/template/metadata",
        "/spec/template/spec/roles/1/entryTemplate/metadata",
    ]
    assert ops[-1]["value"] == {"annotations": {RESTARTED_AT_ANNOTATION: at}}


def test_restart_of_a_paused_stormservice_is_refused() -> None:
    with pytest.raises(CliError, match="cannot restart paused stormservice"):
        restart_patch(storm_service(paused=True), "2026-12-01T08:00:00Z")


@pytest.mark.parametrize(
    ("role", "replicas", "patch"),
    [
        (
            "decode",
            3,
            [
                {"op": "test", "path": "/spec/template/spec/roles/1/name", "value": "decode"},
                {"op": "add", "path": "/spec/template/spec/roles/1/replicas", "value": 3},
            ],
        ),
        (
            "prefill",
            0,
            [
                {"op": "test", "path": "/spec/template/spec/roles/0/name", "value": "prefill"},
                {"op": "add", "path": "/spec/template/spec/roles/0/replicas", "value": 0},
            ],
        ),
        ("decode", 1, None),
    ],
)
def test_scale_patch(role: str, replicas: int, patch: list[dict[str, Any]] | None) -> None:
    assert scale_patch(storm_service(), role, replicas) == patch


@pytest.mark.parametrize(
    ("role", "replicas", "error"),
    [
        ("router", 1, 'error: stormservice "pd" has no role "router" (roles: prefill, decode)'),
        ("decode", -1, "error: --replicas must be 0 or more, not -1"),
    ],
)
def test_scale_errors(role: str, replicas: int, error: str) -> None:
    with pytest.raises(CliError) as err:
        scale_patch(storm_service(), role, replicas)
    assert err.value.message == error


def test_scale_refuses_a_role_scaled_through_its_role_scaler() -> None:
    ss = storm_service()
    ss["spec"]["template"]["spec"]["roles"][1]["scaling"] = "External"
    with pytest.raises(CliError) as err:
        scale_patch(ss, "decode", 3)
    assert err.value.message == (
        'error: role "decode" of stormservice "pd" is scaled through its RoleScaler: '
        "kubectl scale rolescaler/pd-decode --replicas=3"
    )
    assert scale_patch(ss, "prefill", 3) is not None
