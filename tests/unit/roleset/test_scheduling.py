"""Pure scheduling objects of a RoleSet: the per-role PodDisruptionBudget of a standalone RoleSet,
the topology affinity term, and how in-place updates treat topology terms."""

from __future__ import annotations

from typing import Any

import pytest

from controller.roleset.inplace import inplace_diff
from controller.roleset.pods import PodSpecInputs, RoleSetInfo, render_pod
from controller.roleset.scheduling import PREFERRED_AFFINITY as PREFERRED
from controller.roleset.scheduling import REQUIRED_AFFINITY as REQUIRED
from controller.roleset.scheduling import is_topology_entry, pdb_object, topology_term

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


# ---------------------------------------------------------------------------------------------
# topology


SS, RS, ROLE = "storm-service-name", "roleset-name", "role-name"


POD_LABELS = {SS: "llm", RS: "rs", ROLE: "w", "app": "x"}


def preferred(selector: dict[str, str], key: str = "zone", weight: int = 100) -> dict[str, Any]:
    return {
        "weight": weight,
        "podAffinityTerm": {"labelSelector": {"matchLabels": selector}, "topologyKey": key},
    }


@pytest.mark.parametrize(
    ("key", "entry", "ours"),
    [
        # every selector any scope renders, today or before Role followed AIBrix
        (PREFERRED, preferred({RS: "rs", ROLE: "w"}), True),
        (PREFERRED, preferred({SS: "llm", ROLE: "w"}), True),
        (PREFERRED, preferred({SS: "llm"}, key="kubernetes.io/hostname"), True),
        (REQUIRED, preferred({RS: "rs"})["podAffinityTerm"], True),
        # not ours: another group, another weight, extra fields, user selectors, wrong list
        (PREFERRED, preferred({RS: "other", ROLE: "w"}), False),
        (PREFERRED, preferred({RS: "rs", ROLE: "w"}, weight=50), False),
        (PREFERRED, preferred({"app": "x"}), False),
        (PREFERRED, preferred({RS: "rs", "app": "x"}), False),
        (REQUIRED, {**preferred({RS: "rs"})["podAffinityTerm"], "namespaces": ["ns"]}, False),
        (
            REQUIRED,
            {"labelSelector": {"matchLabels": {RS: "rs"}, "matchExpressions": []}, "topologyKey": "zone"},
            False,
        ),
        (REQUIRED, preferred({RS: "rs"}), False),
        ("somethingElse", preferred({RS: "rs"})["podAffinityTerm"], False),
        (PREFERRED, "junk", False),
    ],
)
def test_is_topology_entry(key: str, entry: Any, ours: bool) -> None:
    assert is_topology_entry(key, entry, POD_LABELS) is ours


# ---------------------------------------------------------------------------------------------
# topology and in-place updates


RS_INFO = RoleSetInfo(name="rs", namespace="ns", uid="u1", labels={SS: "llm"})


def _template(image: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "x"}},
        "spec": {"containers": [{"name": "main", "image": image}], **spec},
    }


def _pod(image: str, term: tuple[str, dict[str, Any]] | None, **spec: Any) -> dict[str, Any]:
    return render_pod(
        RS_INFO,
        PodSpecInputs(role="w", template=_template(image, **spec), template_hash="h", affinity=term),
    )


ROLE_POLICY = {"scope": "Role", "key": "zone"}
BEFORE = (PREFERRED, preferred({RS: "rs", ROLE: "w"}))  # what Role scope rendered before


def test_a_pod_with_the_earlier_role_scope_term_is_still_updated_in_place() -> None:
    """Existing pods are never touched for a topology policy, so pods made before Role scope
    followed AIBrix keep {roleset-name, role-name}: an image change must still go in place
    rather than recreate every such pod."""
    now = topology_term(ROLE_POLICY, storm_service="llm", roleset="rs", role="w")
    assert now is not None and now != BEFORE
    live = _pod("vllm:v1", BEFORE)
    assert inplace_diff(live, _pod("vllm:v2", now), now[1]) is None


def test_in_place_still_sees_a_changed_affinity_of_the_users_template() -> None:
    """What the stale-term rule must not hide: the user's own affinity terms."""
    now = topology_term(ROLE_POLICY, storm_service="llm", roleset="rs", role="w")
    assert now is not None
    users = {
        "podAffinity": {REQUIRED: [{"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "zone"}]}
    }
    live = _pod("vllm:v1", now, affinity=users)
    assert inplace_diff(live, _pod("vllm:v2", now, affinity=users), now[1]) is None
    assert inplace_diff(live, _pod("vllm:v2", now), now[1]) is not None
