"""Pure scheduling objects of a RoleSet: the per-role PodDisruptionBudget of a standalone RoleSet."""

from __future__ import annotations

from typing import Any

import pytest

from controller.roleset.scheduling import pdb_object

OWNER = {"apiVersion": "orchestration.aibrix.ai/v1alpha1", "kind": "RoleSet", "name": "rs", "uid": "u"}


@pytest.mark.parametrize(
    ("tolerance", "instances", "group_size", "want"),
    [
        (1, 4, 1, 3),
        # A group is broken when any one member is gone: tolerating N instances is N pods.
        # The case: 4 groups of 8 and a tolerance of 1 said 24 of 32 (one member of
        # each of the four groups could be evicted, breaking all of them).
        (1, 4, 8, 31),
        (3, 4, 8, 29),
        (0, 4, 8, 32),
        (4, 4, 8, 0),  # every instance may break: nothing to protect
        (9, 4, 8, 0),
        ("50%", 4, 8, 30),  # a percent of instances: 2 of 4, so 2 pods
        ("10%", 4, 8, 31),  # 0.4 rounds up to 1, as the disruption controller rounds
        ("50%", 4, 1, 2),
        (1, 0, 8, 0),  # a role scaled to zero
    ],
)
def test_pdb_min_available_of_a_grouped_role(
    tolerance: int | str, instances: int, group_size: int, want: int
) -> None:
    body = pdb_object(
        roleset="rs",
        namespace="ns",
        role="w",
        max_unavailable=tolerance,
        instances=instances,
        group_size=group_size,
        owner_ref=OWNER,
    )
    spec: dict[str, Any] = body["spec"]
    assert spec == {
        "minAvailable": want,
        "selector": {"matchLabels": {"roleset-name": "rs", "role-name": "w"}},
    }
