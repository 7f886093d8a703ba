"""int-or-percent arithmetic, as Kubernetes' ``intstr`` package and the Deployment controller do it.

``maxSurge``/``maxUnavailable`` are either a non-negative integer or a string ``"<n>%"``. A percent
is scaled against a total; surge rounds up, unavailable rounds down, and when both come to zero
unavailable becomes 1 so a rollout can always make progress.

All arithmetic is integer/rational, so results never depend on float rounding.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Final

from apis.v1alpha1.defaults import DEFAULT_MAX_SURGE, DEFAULT_MAX_UNAVAILABLE

IntOrStr = int | str

#: A valid percent: digits then "%". "50" (no sign) is NOT a percent and is rejected
#: (the reference silently read it as 0 and stalled the rollout).
PERCENT_PATTERN: Final = r"^[0-9]+%$"
_PERCENT_RE: Final = re.compile(PERCENT_PATTERN)


def is_valid_int_or_percent(value: object) -> bool:
    """True for a non-negative int (not bool) or a string like "25%"."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    if isinstance(value, str):
        return _PERCENT_RE.fullmatch(value) is not None
    return False


def parse_percent(value: str) -> int:
    """The number in "25%"; ValueError for anything else."""
    if _PERCENT_RE.fullmatch(value) is None:
        raise ValueError(f"invalid percent {value!r}: must be digits followed by '%', e.g. \"25%\"")
    return int(value[:-1])


def scaled_value(value: IntOrStr | None, total: int, *, round_up: bool) -> int:
    """Resolve an int-or-percent against `total` (None counts as 0).

    An int is returned as is; "p%" gives ceil(p*total/100) when `round_up`, else floor.
    """
    if value is None:
        return 0
    if isinstance(value, bool):
        raise TypeError("int-or-string value must be an int or a string, not a bool")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        pct = parse_percent(value)
        if round_up:
            return -((-pct * total) // 100)
        return (pct * total) // 100
    raise TypeError(f"int-or-string value must be an int or a string, got {type(value).__name__}")


def resolve_fenceposts(
    max_surge: IntOrStr | None,
    max_unavailable: IntOrStr | None,
    total: int,
    *,
    default_surge: IntOrStr = DEFAULT_MAX_SURGE,
    default_unavailable: IntOrStr = DEFAULT_MAX_UNAVAILABLE,
) -> tuple[int, int]:
    """(surge, unavailable) for `total` replicas, Deployment style.

    Unset values take the defaults, which follow AIBrix: both 0, i.e. one-at-a-time replacement
    (surge 0, unavailable 1 after the fencepost rule). If both resolve to 0 (a small percent of a
    small total, or explicit zeros), unavailable becomes 1, on the theory that surge may be
    blocked by quota while taking one down always progresses.
    """
    surge = scaled_value(default_surge if max_surge is None else max_surge, total, round_up=True)
    unavailable = scaled_value(
        default_unavailable if max_unavailable is None else max_unavailable, total, round_up=False
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def pdb_min_available(max_unavailable: IntOrStr, *, instances: int, group_size: int) -> int:
    """The integer `minAvailable` of a PodDisruptionBudget over `instances` role instances of
    `group_size` pods each that tolerates `max_unavailable` of them down (disruptionTolerance).

    The tolerance counts instances: an int as is, a percent of `instances` rounded up (as the
    disruption controller rounds a percent maxUnavailable). An instance of a grouped role is
    broken as soon as any one of its pods is gone, and a PDB only counts pods, so tolerating N
    instances means letting at most N pods go: `pods - N` (with N a whole group's worth of pods,
    a drain could take one member of each of N x group_size groups). When the tolerance covers
    every instance there is nothing to protect: 0.

    PDBs over our pods must use an integer minAvailable: for maxUnavailable (or a percent
    minAvailable) the disruption controller needs a scale subresource on the pods' controller,
    and a RoleSet has none, so such a PDB never allows an eviction. ValueError for a malformed
    percent.
    """
    if isinstance(max_unavailable, bool):
        raise TypeError("disruption tolerance must be an int or a percent string, not a bool")
    instances = max(0, instances)
    pods = instances * max(1, group_size)
    down = scaled_value(max_unavailable, instances, round_up=True)
    if down >= instances:
        return 0
    return max(0, pods - down)


def round_half_away_from_zero(x: float | int | Fraction) -> int:
    """Round to the nearest integer, halves away from zero (Go's math.Round): 2.5 -> 3, -2.5 -> -3.

    Floats are handled without the classic `floor(x + 0.5)` error (0.49999999999999994 -> 0).
    Pass a Fraction for exact ratios such as `Fraction(replicas * part, whole)`.
    """
    if isinstance(x, bool):
        raise TypeError("cannot round a bool")
    if isinstance(x, int):
        return x
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError(f"cannot round {x!r}")
    q = Fraction(x)  # exact for floats
    t = math.trunc(q)
    frac = q - t
    if frac >= Fraction(1, 2):
        return t + 1
    if frac <= Fraction(-1, 2):
        return t - 1
    return t
