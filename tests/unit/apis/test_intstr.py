from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apis.v1alpha1.intstr import (
    is_valid_int_or_percent,
    parse_percent,
    pdb_min_available,
    resolve_fenceposts,
    round_half_away_from_zero,
    scaled_value,
)

# (value, total, round_up, expected) — the same numbers intstr.GetScaledValueFromIntOrPercent gives.
SCALED = [
    (None, 10, True, 0),
    (None, 10, False, 0),
    (0, 10, True, 0),
    (3, 10, True, 3),
    (3, 10, False, 3),
    (30, 10, False, 30),  # ints are not capped
    ("0%", 10, True, 0),
    ("0%", 10, False, 0),
    ("25%", 4, True, 1),
    ("25%", 4, False, 1),
    ("25%", 10, True, 3),
    ("25%", 10, False, 2),
    ("25%", 1, True, 1),
    ("25%", 1, False, 0),
    ("25%", 0, True, 0),
    ("25%", 0, False, 0),
    ("50%", 3, True, 2),
    ("50%", 3, False, 1),
    ("1%", 99, True, 1),
    ("1%", 99, False, 0),
    ("1%", 100, True, 1),
    ("1%", 100, False, 1),
    ("1%", 101, True, 2),
    ("1%", 101, False, 1),
    ("33%", 3, True, 1),
    ("33%", 3, False, 0),
    ("34%", 3, True, 2),
    ("34%", 3, False, 1),
    ("100%", 7, True, 7),
    ("100%", 7, False, 7),
    ("200%", 7, True, 14),
    ("150%", 3, True, 5),
    ("150%", 3, False, 4),
    ("10%", 1000, True, 100),
    ("10%", 1001, True, 101),
    ("10%", 1001, False, 100),
]


@pytest.mark.parametrize(("value", "total", "round_up", "expected"), SCALED)
def test_scaled_value(value: int | str | None, total: int, round_up: bool, expected: int) -> None:
    assert scaled_value(value, total, round_up=round_up) == expected


@pytest.mark.parametrize("bad", ["50", "", "%", "-5%", "5.5%", " 5%", "5% ", "5 %", "five%", "0x10%"])
def test_invalid_percents_are_errors(bad: str) -> None:
    assert not is_valid_int_or_percent(bad)
    with pytest.raises(ValueError):
        scaled_value(bad, 10, round_up=True)
    with pytest.raises(ValueError):
        parse_percent(bad)


@pytest.mark.parametrize("bad", [True, False, 1.0, [], None])
def test_wrong_types(bad: object) -> None:
    assert not is_valid_int_or_percent(bad)
    if bad is not None:
        with pytest.raises(TypeError):
            scaled_value(bad, 10, round_up=True)  # type: ignore[arg-type]


def test_valid_int_or_percent() -> None:
    assert is_valid_int_or_percent(0)
    assert is_valid_int_or_percent(7)
    assert not is_valid_int_or_percent(-1)
    assert is_valid_int_or_percent("0%")
    assert is_valid_int_or_percent("250%")
    assert parse_percent("007%") == 7


# (surge, unavailable, total, expected) — Deployment's resolveFenceposts cases plus AIBrix defaults.
FENCEPOSTS = [
    # unset: AIBrix resolves both to 0, then the fencepost rule makes unavailable 1
    (None, None, 0, (0, 1)),
    (None, None, 1, (0, 1)),
    (None, None, 10, (0, 1)),
    (0, 0, 5, (0, 1)),
    ("0%", "0%", 5, (0, 1)),
    # explicit
    (1, 0, 5, (1, 0)),
    (0, 1, 5, (0, 1)),
    (2, 3, 5, (2, 3)),
    (None, 2, 5, (0, 2)),
    (2, None, 5, (2, 0)),
    # percents: surge rounds up, unavailable down
    ("25%", "25%", 10, (3, 2)),
    ("25%", "25%", 4, (1, 1)),
    ("25%", "25%", 1, (1, 0)),
    ("25%", "25%", 0, (0, 1)),
    ("0%", "25%", 3, (0, 1)),  # floor(0.75) = 0 -> fencepost
    ("0%", "1%", 2, (0, 1)),
    ("1%", "25%", 2, (1, 0)),
    ("1%", "0%", 1, (1, 0)),
    ("50%", "50%", 3, (2, 1)),
    ("100%", "0%", 4, (4, 0)),
    ("0%", "100%", 4, (0, 4)),
    (1, "10%", 30, (1, 3)),
]


@pytest.mark.parametrize(("surge", "unavailable", "total", "expected"), FENCEPOSTS)
def test_resolve_fenceposts(
    surge: int | str | None, unavailable: int | str | None, total: int, expected: tuple[int, int]
) -> None:
    assert resolve_fenceposts(surge, unavailable, total) == expected


def test_resolve_fenceposts_custom_defaults() -> None:
    assert resolve_fenceposts(None, None, 10, default_surge="25%", default_unavailable="25%") == (3, 2)
    assert resolve_fenceposts("0%", None, 10, default_surge="25%", default_unavailable="25%") == (0, 2)
    assert resolve_fenceposts(None, 0, 3, default_surge="25%", default_unavailable="25%") == (1, 0)


ROUNDING = [
    (0.0, 0),
    (0.4, 0),
    (0.5, 1),
    (0.6, 1),
    (1.5, 2),
    (2.5, 3),
    (-0.5, -1),
    (-1.5, -2),
    (-2.5, -3),
    (-0.4, 0),
    (0.49999999999999994, 0),  # floor(x + 0.5) gets this one wrong
    (-0.49999999999999994, 0),
    (4503599627370495.5, 4503599627370496),
    (1e20, 10**20),
    (7, 7),
    (-7, -7),
    (Fraction(5, 2), 3),
    (Fraction(-5, 2), -3),
    (Fraction(7, 3), 2),
    (Fraction(8, 3), 3),
]


@pytest.mark.parametrize(("x", "expected"), ROUNDING)
def test_round_half_away_from_zero(x: float | int | Fraction, expected: int) -> None:
    assert round_half_away_from_zero(x) == expected


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_round_rejects_non_finite(bad: float) -> None:
    with pytest.raises(ValueError):
        round_half_away_from_zero(bad)


def test_round_rejects_bool() -> None:
    with pytest.raises(TypeError):
        round_half_away_from_zero(True)


# --- properties ------------------------------------------------------------------------------------

totals = st.integers(min_value=0, max_value=100_000)
percents = st.integers(min_value=0, max_value=1_000)
int_or_pct = st.one_of(st.none(), st.integers(min_value=0, max_value=1_000), percents.map(lambda p: f"{p}%"))


@given(percents, totals)
def test_percent_bounds(p: int, total: int) -> None:
    up = scaled_value(f"{p}%", total, round_up=True)
    down = scaled_value(f"{p}%", total, round_up=False)
    exact = Fraction(p * total, 100)
    assert down <= exact <= up
    assert up - down <= 1
    assert (up == down) == (exact.denominator == 1)


@given(percents, totals, totals)
def test_percent_is_monotonic_in_total(p: int, a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    for round_up in (True, False):
        assert scaled_value(f"{p}%", lo, round_up=round_up) <= scaled_value(f"{p}%", hi, round_up=round_up)


@given(int_or_pct, int_or_pct, totals)
def test_fenceposts_always_progress(
    surge: int | str | None, unavailable: int | str | None, total: int
) -> None:
    s, u = resolve_fenceposts(surge, unavailable, total)
    assert s >= 0 and u >= 0
    assert s + u >= 1  # a rollout can always move
    raw_u = scaled_value(unavailable, total, round_up=False)
    raw_s = scaled_value(surge, total, round_up=True)
    assert s == raw_s
    assert u == (1 if raw_s == 0 and raw_u == 0 else raw_u)
    if isinstance(unavailable, str) and parse_percent(unavailable) <= 100 and total > 0:
        assert u <= total  # a percent up to 100% never asks for more than the total


@given(st.integers(min_value=-(10**6), max_value=10**6), st.integers(min_value=1, max_value=10**6))
def test_round_fraction_matches_definition(n: int, dnm: int) -> None:
    q = Fraction(n, dnm)
    got = round_half_away_from_zero(q)
    assert abs(q - got) <= Fraction(1, 2)
    if abs(q - got) == Fraction(1, 2):
        assert abs(got) > abs(q)  # halves go away from zero


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15))
def test_round_float_matches_exact_rational(x: float) -> None:
    got = round_half_away_from_zero(x)
    q = Fraction(x)
    assert abs(q - got) <= Fraction(1, 2)
    assert got == -round_half_away_from_zero(-x)


@pytest.mark.parametrize(
    ("tolerance", "instances", "group_size", "want"),
    [
        (1, 4, 1, 3),  # one instance of four
        # A group breaks when any one member is gone, so N instances tolerated are N pods, not
        # N groups: one group of two pods is down as soon as one pod is.
        (1, 4, 2, 7),
        (1, 4, 8, 31),  # 4 groups of 8: one eviction per group would break all four
        (2, 4, 8, 30),
        (0, 3, 1, 3),  # nothing may be down
        (0, 3, 4, 12),
        (5, 2, 1, 0),  # tolerating more than exist: never negative
        (5, 2, 4, 0),  # every instance may break: nothing to protect
        ("50%", 2, 1, 1),
        ("25%", 3, 1, 2),  # ceil(0.75) = 1 pod down
        ("25%", 2, 2, 3),  # a percent counts instances: ceil(25% of 2) = 1, one pod
        ("50%", 4, 8, 30),  # 2 of 4 instances: 2 pods of 32
        ("100%", 4, 8, 0),  # every instance may break: nothing to protect
        ("75%", 4, 8, 29),  # 3 of 4 instances: 3 pods
        ("10%", 4, 8, 31),  # ceil(0.4) = 1 instance, rounded up as the disruption controller does
        ("100%", 4, 1, 0),
        ("0%", 4, 1, 4),
        (1, 0, 4, 0),  # a role scaled to zero
    ],
)
def test_pdb_min_available(tolerance: int | str, instances: int, group_size: int, want: int) -> None:
    assert pdb_min_available(tolerance, instances=instances, group_size=group_size) == want


def test_pdb_min_available_rejects_malformed_percent() -> None:
    with pytest.raises(ValueError):
        pdb_min_available("50", instances=2, group_size=1)
