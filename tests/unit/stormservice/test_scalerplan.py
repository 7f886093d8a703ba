"""Pure decisions for External roles: requests, ratio bands, the template patch, the status."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from controller.stormservice.revisions import revision_data, revision_template
from controller.stormservice.scalerplan import (
    Band,
    clamped_condition,
    current_instances,
    plan_roles,
    role_selector,
    template_replicas_patch,
)


def spec(*roles: dict[str, Any], replicas: int = 1) -> dict[str, Any]:
    return {"replicas": replicas, "template": {"spec": {"roles": list(roles)}}}


def role(name: str, replicas: int = 1, **extra: Any) -> dict[str, Any]:
    return {"name": name, "replicas": replicas, **extra}


def band(follows: str, low: str | None = None, high: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"follows": follows}
    if low is not None:
        out["minRatio"] = low
    if high is not None:
        out["maxRatio"] = high
    return out


@pytest.mark.parametrize(
    ("leader", "low", "high", "expected"),
    [
        (2, "1.5", "3", (3, 6)),
        (3, "1.5", "3", (5, 9)),  # 4.5 rounds up, so the minimum ratio always holds
        (1, "1.5", "1.6", (2, 1)),  # narrower than one instance: no whole number inside
        (0, "1.5", "3", (0, 0)),
        (4, None, "0.5", (0, 2)),
        (4, "2", None, (8, None)),
    ],
)
def test_band_limits(
    leader: int, low: str | None, high: str | None, expected: tuple[int, int | None]
) -> None:
    b = Band("prefill", None if low is None else Fraction(low), None if high is None else Fraction(high))
    assert b.limits(leader) == expected


DECODE_BAND = band("prefill", "1.5", "3")


@pytest.mark.parametrize(
    ("prefill", "decode", "requests", "expected"),
    [
        # No RoleScalers yet: the template's replicas are the requests.
        (role("prefill", 2), role("decode", 4), {}, {"decode": (4, 4)}),
        # The follower's scaler asks within the band: applied as is.
        (role("prefill", 2), role("decode", 4), {"decode": 5}, {"decode": (5, 5)}),
        # Asks above the band: clamped to floor(3 x 2).
        (role("prefill", 2), role("decode", 4), {"decode": 9}, {"decode": (9, 6)}),
        # Asks below the band: raised to ceil(1.5 x 2).
        (role("prefill", 2), role("decode", 4), {"decode": 1}, {"decode": (1, 3)}),
        # The followed role (External) is scaled up: the follower moves into the new band.
        (
            role("prefill", 2, scaling="External"),
            role("decode", 4),
            {"prefill": 4, "decode": 4},
            {"prefill": (4, 4), "decode": (4, 6)},
        ),
        # ... and down.
        (
            role("prefill", 4, scaling="External"),
            role("decode", 12),
            {"prefill": 1, "decode": 12},
            {"prefill": (1, 1), "decode": (12, 3)},
        ),
        # A followed role that is not External: its template replicas count.
        (role("prefill", 3), role("decode", 4), {"decode": 4}, {"decode": (4, 5)}),
    ],
)
def test_plan_roles_applies_the_band(
    prefill: dict[str, Any],
    decode: dict[str, Any],
    requests: dict[str, int],
    expected: dict[str, tuple[int, int]],
) -> None:
    decode = {**decode, "scaling": "External", "scalingBand": DECODE_BAND}
    got = {d.role: (d.requested, d.desired) for d in plan_roles(spec(prefill, decode), requests)}
    assert got == expected


def test_only_external_roles_and_only_in_pooled_mode() -> None:
    roles = (role("prefill", 2, scaling="External"), role("router", 1))
    assert [d.role for d in plan_roles(spec(*roles), {"prefill": 3})] == ["prefill"]
    assert plan_roles(spec(*roles, replicas=2), {"prefill": 3}) == []


def test_template_patch_writes_only_what_differs_and_tests_the_role_name() -> None:
    s = spec(role("prefill", 2, scaling="External"), role("decode", 4, scaling="External"))
    decisions = plan_roles(s, {"prefill": 2, "decode": 7})
    assert template_replicas_patch(s, decisions) == [
        {"op": "test", "path": "/spec/template/spec/roles/1/name", "value": "decode"},
        {"op": "add", "path": "/spec/template/spec/roles/1/replicas", "value": 7},
    ]
    assert template_replicas_patch(s, plan_roles(s, {"prefill": 2, "decode": 4})) == []


def test_clamped_condition() -> None:
    s = spec(role("prefill", 2), role("decode", 4, scaling="External", scalingBand=DECODE_BAND))
    (clamped,) = plan_roles(s, {"decode": 9})
    status, reason, message = clamped_condition(clamped) or ("", "", "")
    assert (status, reason) == ("True", "OutsideRatioBand")
    assert "asked for 9" in message and "[3, 6]" in message and "applying 6" in message
    (within,) = plan_roles(s, {"decode": 4})
    assert (clamped_condition(within) or ("",))[0] == "False"
    no_band = plan_roles(spec(role("decode", 4, scaling="External")), {"decode": 9})
    assert clamped_condition(no_band[0]) is None


def test_selector_and_current_instances() -> None:
    assert role_selector("llama", "decode") == "storm-service-name=llama,role-name=decode"
    rolesets: list[dict[str, Any]] = [
        {
            "metadata": {},
            "status": {"roles": [{"name": "decode", "replicas": 3}, {"name": "prefill", "replicas": 1}]},
        },
        {
            "metadata": {"deletionTimestamp": "2026-12-01T00:00:00Z"},
            "status": {"roles": [{"name": "decode", "replicas": 5}]},
        },
    ]
    assert current_instances(rolesets, "decode") == 3


def test_scaling_fields_are_not_part_of_a_revision() -> None:
    plain = {"spec": {"roles": [role("decode", 4, template={"spec": {}})]}}
    opted_in = {
        "spec": {
            "roles": [role("decode", 9, template={"spec": {}}, scaling="External", scalingBand=DECODE_BAND)]
        }
    }
    assert (
        revision_template(opted_in)
        == revision_template(plain)
        == {"spec": {"roles": [{"name": "decode", "template": {"spec": {}}}]}}
    )
    assert revision_data(opted_in) == revision_data(plain)
