"""A role's updateStrategy.partition at the StormService level: not part of a revision, carried
to RoleSets in place, admitted only with InPlaceUpdate, and reported as PartitionHeld."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from pydantic import ValidationError

from apis.v1alpha1 import constants as c
from apis.v1alpha1 import rules as r
from apis.v1alpha1.types import StormServiceSpec
from controller.runtime.revision import hash_revision_data
from controller.stormservice.partition import role_partition_patch
from controller.stormservice.revisions import revision_content, revision_data
from controller.stormservice.status import compute_status, partition_held
from controller.stormservice.view import RoleSetView, view_of
from tests.unit.stormservice.test_revisions import GOLDEN_TEMPLATE


def with_partition(template: dict[str, Any], role: int, value: int) -> dict[str, Any]:
    out = copy.deepcopy(template)
    out["spec"]["roles"][role].setdefault("updateStrategy", {"type": "Recreate"})["partition"] = value
    return out


def test_partition_is_not_part_of_a_revision() -> None:
    plain = copy.deepcopy(GOLDEN_TEMPLATE)
    plain["spec"]["roles"][0]["updateStrategy"] = {"type": "Recreate"}
    held = with_partition(plain, 0, 3)
    assert hash_revision_data(revision_data(held), 0) == hash_revision_data(revision_data(plain), 0)
    assert revision_content(revision_data(held)) == revision_content(revision_data(plain))
    # The template itself is left as it was.
    assert held["spec"]["roles"][0]["updateStrategy"]["partition"] == 3


def roleset(*roles: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "rs"}, "spec": {"roles": list(roles)}}


def tmpl(*roles: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"roles": list(roles)}}


@pytest.mark.parametrize(
    ("current", "desired", "ops"),
    [
        pytest.param(
            [{"name": "a", "updateStrategy": {"type": "Recreate"}}],
            [{"name": "a", "updateStrategy": {"type": "Recreate"}}],
            [],
            id="no partition anywhere: no write",
        ),
        pytest.param(
            [{"name": "a", "updateStrategy": {"type": "Recreate"}}],
            [{"name": "a", "updateStrategy": {"type": "Recreate", "partition": 0}}],
            [],
            id="0 is unset",
        ),
        pytest.param(
            [{"name": "x"}, {"name": "a", "updateStrategy": {"type": "Recreate"}}],
            [{"name": "a", "updateStrategy": {"partition": 2}}],
            [
                {"op": "test", "path": "/spec/roles/1/name", "value": "a"},
                {"op": "add", "path": "/spec/roles/1/updateStrategy/partition", "value": 2},
            ],
            id="set, at the role's index",
        ),
        pytest.param(
            [{"name": "a", "updateStrategy": {"type": "Recreate", "partition": 2}}],
            [{"name": "a", "updateStrategy": {"type": "Recreate"}}],
            [
                {"op": "test", "path": "/spec/roles/0/name", "value": "a"},
                {"op": "remove", "path": "/spec/roles/0/updateStrategy/partition"},
            ],
            id="removed",
        ),
        pytest.param(
            [{"name": "a"}],
            [{"name": "a", "updateStrategy": {"partition": 1}}],
            [
                {"op": "test", "path": "/spec/roles/0/name", "value": "a"},
                {"op": "add", "path": "/spec/roles/0/updateStrategy", "value": {"partition": 1}},
            ],
            id="no updateStrategy object yet",
        ),
        pytest.param(
            [{"name": "gone", "updateStrategy": {"partition": 1}}],
            [{"name": "a", "updateStrategy": {"partition": 1}}],
            [],
            id="a role the template no longer has is left alone",
        ),
    ],
)
def test_role_partition_patch(
    current: list[dict[str, Any]], desired: list[dict[str, Any]], ops: list[dict[str, Any]]
) -> None:
    assert role_partition_patch(roleset(*current), tmpl(*desired)) == ops


def spec(strategy: str | None, cut: int | None) -> dict[str, Any]:
    role: dict[str, Any] = {
        "name": "decode",
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
    }
    if cut is not None:
        role["updateStrategy"] = {"partition": cut}
    out: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "x"}},
        "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"roles": [role]}},
    }
    if strategy is not None:
        out["updateStrategy"] = {"type": strategy}
    return out


@pytest.mark.parametrize(
    ("strategy", "cut", "ok"),
    [("InPlaceUpdate", 2, True), (None, 2, False), ("RollingUpdate", 1, False), ("RollingUpdate", 0, True)],
)
def test_the_model_admits_a_partition_only_with_in_place_update(
    strategy: str | None, cut: int, ok: bool
) -> None:
    if ok:
        StormServiceSpec.model_validate(spec(strategy, cut))
    else:
        with pytest.raises(ValidationError, match=re.escape(r.MSG_PARTITION_NEEDS_IN_PLACE_UPDATE)):
            StormServiceSpec.model_validate(spec(strategy, cut))


def rs_obj(name: str, *, updated: int, progressing: tuple[str, str, str] | None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "observedGeneration": 1,
        "roles": [
            {
                "name": "decode",
                "replicas": 6,
                "readyReplicas": 6,
                "updatedReplicas": updated,
                "updatedReadyReplicas": updated,
            }
        ],
    }
    if progressing is not None:
        s, reason, message = progressing
        status["conditions"] = [{"type": "Progressing", "status": s, "reason": reason, "message": message}]
    return {
        "metadata": {
            "name": name,
            "generation": 1,
            "labels": {c.LABEL_STORM_SERVICE_REVISION: "new"},
        },
        "spec": {"roles": [{"name": "decode", "replicas": 6}]},
        "status": status,
    }


HELD = ("True", "PartitionHeld", "role decode: 2 of 6 instances kept on the old revision by partition")


def views(*objs: dict[str, Any]) -> list[RoleSetView]:
    return [view_of(o) for o in objs]


def test_a_held_roleset_makes_the_storm_service_partition_held() -> None:
    vs = views(rs_obj("rs-a", updated=4, progressing=HELD))
    assert vs[0].partition_held == HELD[2]
    rev = vs[0].revision
    assert rev == "new"
    ss = {"metadata": {"name": "llm", "namespace": "ns", "generation": 2}, "spec": {"replicas": 1}}
    st = compute_status(ss, vs, current_revision=rev, update_revision=rev, collision_count=0, now="t")
    conds = {c["type"]: c for c in st["conditions"]}
    assert (conds["Progressing"]["status"], conds["Progressing"]["reason"]) == ("True", "PartitionHeld")
    assert conds["Progressing"]["message"] == f"RoleSet rs-a: {HELD[2]}"
    assert conds["Ready"]["status"] == "False"  # the rollout is not complete
    assert st["updatedReplicas"] == 0


def test_partition_held_only_when_nothing_else_rolls() -> None:
    held = view_of(rs_obj("rs-a", updated=4, progressing=HELD))
    rolling = view_of(
        rs_obj("rs-b", updated=3, progressing=("True", "RollingUpdate", "updating roles: decode"))
    )
    done = view_of(rs_obj("rs-c", updated=6, progressing=("True", "RolloutComplete", "")))
    rev = held.revision
    assert partition_held([held, done], rev, rev) == [f"RoleSet rs-a: {HELD[2]}"]
    assert partition_held([held, rolling], rev, rev) == []
    assert partition_held([done], rev, rev) == []
    assert partition_held([held], "older", rev) == []
