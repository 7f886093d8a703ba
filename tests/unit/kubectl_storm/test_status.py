"""The status report and the rollout state, from StormService and RoleSet dicts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.kubectl_storm.status import RoleRow, build_report, format_report, role_rows, rollout_state
from tests.unit.kubectl_storm.helpers import cond, revision, roleset, storm_service, template

READY = cond("Ready", "True", "AllRoleSetsReady", "2 of 2 RoleSets ready")
COMPLETE = cond("Progressing", "True", "RolloutComplete", "2 of 2 RoleSets ready")
NOT_READY_ROLLING = cond("Ready", "False", "RolloutInProgress", "1 of 2 RoleSets updated to revision pd-bbb")
ROLLING = cond("Progressing", "True", "RolloutInProgress", "1 of 2 RoleSets updated to revision pd-bbb")


@pytest.mark.parametrize(
    ("ss", "state", "message"),
    [
        pytest.param(
            storm_service(conditions=[READY, COMPLETE]),
            "complete",
            "2 of 2 RoleSets ready",
            id="complete",
        ),
        pytest.param(
            storm_service(generation=2, observed=1, conditions=[READY, COMPLETE]),
            "progressing",
            "waiting for the controller to observe generation 2 (observed: 1)",
            id="status-older-than-spec-is-not-complete",
        ),
        pytest.param(
            storm_service(conditions=[NOT_READY_ROLLING, ROLLING], update="pd-bbb"),
            "progressing",
            "waiting for 1 of 2 RoleSets updated to revision pd-bbb",
            id="rolling",
        ),
        pytest.param(
            storm_service(
                conditions=[
                    NOT_READY_ROLLING,
                    cond(
                        "Progressing",
                        "False",
                        "RoleSetRolloutStalled",
                        "1 of 2 RoleSets updated; RoleSet pd-roleset-x: RolloutBlocked: role decode",
                    ),
                ],
                update="pd-bbb",
            ),
            "stalled",
            "RoleSetRolloutStalled: 1 of 2 RoleSets updated; RoleSet pd-roleset-x: "
            "RolloutBlocked: role decode",
            id="roleset-stalled-names-the-roleset",
        ),
        pytest.param(
            storm_service(
                conditions=[
                    NOT_READY_ROLLING,
                    cond("Progressing", "False", "RolloutBlocked", "revision pd-bbb is not rolled out"),
                    cond("ReplicaFailure", "True", "InvalidPodTemplate", "volumeMounts[0].name: Not found"),
                ],
                update="pd-bbb",
            ),
            "stalled",
            "RolloutBlocked: revision pd-bbb is not rolled out; "
            "ReplicaFailure InvalidPodTemplate: volumeMounts[0].name: Not found",
            id="invalid-pod-template",
        ),
        pytest.param(
            storm_service(
                paused=True,
                conditions=[
                    NOT_READY_ROLLING,
                    cond(
                        "Progressing",
                        "Unknown",
                        "Paused",
                        "paused: 1 of 2 RoleSets updated to revision pd-bbb",
                    ),
                ],
                update="pd-bbb",
            ),
            "paused",
            "spec.paused: 1 of 2 RoleSets updated to revision pd-bbb",
            id="paused",
        ),
        pytest.param(
            storm_service(paused=True, conditions=[READY, COMPLETE]),
            "complete",
            "2 of 2 RoleSets ready",
            id="paused-after-completion-is-complete",
        ),
        pytest.param(
            storm_service(
                conditions=[
                    cond("Ready", "False", "RoleSetsNotReady", "1 of 2 RoleSets ready"),
                    cond("Progressing", "True", "RoleSetsNotReady", "1 of 2 RoleSets ready"),
                    cond("ReplicaFailure", "True", "FailedCreate", "quota exceeded"),
                ]
            ),
            "progressing",
            "waiting for 1 of 2 RoleSets ready; ReplicaFailure FailedCreate: quota exceeded",
            id="a-failed-write-is-said",
        ),
        pytest.param(
            storm_service(generation=1, observed=0, conditions=[]) | {"status": {}},
            "progressing",
            "waiting for the controller to observe generation 1 (observed: 0)",
            id="no-status-yet",
        ),
    ],
)
def test_rollout_state(ss: dict[str, object], state: str, message: str) -> None:
    rollout = rollout_state(ss)
    assert (rollout.state, rollout.message) == (state, message)


def test_role_rows_count_ready_and_updated_per_roleset_and_role() -> None:
    rows = role_rows(
        [
            roleset("pd-roleset-a", "pd-aaa"),
            roleset(
                "pd-roleset-b",
                "pd-bbb",
                ready={"prefill": 0, "decode": 2},
                desired={"prefill": 1, "decode": 2},
            ),
            # A status older than its spec counts nothing as updated.
            roleset("pd-roleset-c", "pd-bbb", generation=2, observed=1),
            roleset("pd-roleset-d", "pd-zzz", terminating=True),
        ],
        {"pd-aaa": 1, "pd-bbb": 2},
    )
    assert rows == [
        RoleRow("pd-roleset-a", "prefill", 1, 1, 1, 1, "pd-aaa"),
        RoleRow("pd-roleset-a", "decode", 1, 1, 1, 1, "pd-aaa"),
        RoleRow("pd-roleset-b", "prefill", 1, 0, 1, 2, "pd-bbb"),
        RoleRow("pd-roleset-b", "decode", 2, 2, 2, 2, "pd-bbb"),
        RoleRow("pd-roleset-c", "prefill", 1, 1, 0, 2, "pd-bbb"),
        RoleRow("pd-roleset-c", "decode", 1, 1, 0, 2, "pd-bbb"),
        RoleRow("pd-roleset-d (terminating)", "prefill", 1, 1, 1, None, "pd-zzz"),
        RoleRow("pd-roleset-d (terminating)", "decode", 1, 1, 1, None, "pd-zzz"),
    ]


def test_report_and_table() -> None:
    ss = storm_service(conditions=[NOT_READY_ROLLING, ROLLING], current="pd-aaa", update="pd-bbb")
    revisions = [revision("pd-aaa", 1, template()), revision("pd-bbb", 2, template("img:2"))]
    rolesets = [
        roleset("pd-roleset-a", "pd-aaa"),
        roleset("pd-roleset-b", "pd-bbb", ready={"prefill": 0, "decode": 1}),
    ]
    report = build_report(ss, rolesets, revisions)
    assert report["currentRevision"] == {"name": "pd-aaa", "revision": 1}
    assert report["updateRevision"] == {"name": "pd-bbb", "revision": 2}
    assert report["rollout"] == {
        "state": "progressing",
        "message": "waiting for 1 of 2 RoleSets updated to revision pd-bbb",
        "rolesetsNotReady": ["pd-roleset-b (prefill 0/1 ready)"],
    }
    now = datetime(2026, 1, 1, 0, 5, 0, tzinfo=UTC)
    assert format_report(report, now) == "\n".join(
        [
            "Name:        pd",
            "Namespace:   ns",
            "Replicas:    2 desired | 2 total | 2 ready | 2 updated | 2 current",
            "Revisions:   current 1 (pd-aaa), update 2 (pd-bbb)",
            "Paused:      false",
            "",
            "ROLESET        ROLE      DESIRED   READY   UPDATED   REVISION",
            "pd-roleset-a   prefill   1         1       1         1",
            "pd-roleset-a   decode    1         1       1         1",
            "pd-roleset-b   prefill   1         0       1         2",
            "pd-roleset-b   decode    1         1       1         2",
            "",
            "TYPE          STATUS   REASON              AGE   MESSAGE",
            "Ready         False    RolloutInProgress   5m    1 of 2 RoleSets updated to revision pd-bbb",
            "Progressing   True     RolloutInProgress   5m    1 of 2 RoleSets updated to revision pd-bbb",
            "",
            "Rollout:     progressing: waiting for 1 of 2 RoleSets updated to revision pd-bbb",
            "Not ready:   pd-roleset-b (prefill 0/1 ready)",
        ]
    )


def test_a_partition_is_a_column_and_a_held_rollout_says_so() -> None:
    held = "RoleSet pd-roleset-a: role decode: 1 of 2 instances kept on the old revision by partition"
    ss = storm_service(
        conditions=[
            cond("Ready", "False", "RolloutInProgress", "0 of 1 RoleSets updated to revision pd-aaa"),
            cond("Progressing", "True", "PartitionHeld", held),
        ],
    )
    rs = roleset(
        "pd-roleset-a", "pd-aaa", desired={"prefill": 1, "decode": 2}, updated={"prefill": 1, "decode": 1}
    )
    rs["spec"]["roles"][1]["updateStrategy"] = {"type": "Recreate", "partition": 1}
    report = build_report(ss, [rs], [revision("pd-aaa", 1, template())])
    assert [r.get("partition") for r in report["roles"]] == [None, 1]
    assert "partition" not in report["roles"][0]
    assert report["rollout"]["message"] == f"held by partition: {held}"
    table = format_report(report, datetime(2026, 1, 1, 0, 5, 0, tzinfo=UTC)).splitlines()
    assert table[6:9] == [
        "ROLESET        ROLE      DESIRED   READY   UPDATED   REVISION   PARTITION",
        "pd-roleset-a   prefill   1         1       1         1",
        "pd-roleset-a   decode    2         2       1         1          1",
    ]
