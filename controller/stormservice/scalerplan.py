"""Pure decisions for roles with `scaling: External`: what each role's RoleScaler should look like
and how many instances each role gets.

A RoleScaler's `spec.replicas` is what its autoscaler (HPA, KEDA, kubectl scale) asks for; once
the RoleScaler exists it, not the StormService's template, is the source of a role's replicas.
The controller writes the value it applies back into the template (so `kubectl get storm -o yaml`
shows it), from where it reaches the RoleSet in place like any change of role replicas.

Ratio bands: a role with `scalingBand: {follows: L, minRatio: a, maxRatio: b}` gets its request
moved into [ceil(a x L), floor(b x L)], L being the instances the followed role gets. So scaling
L moves the follower into the band, and a request of the follower outside the band is clamped
(the RoleScaler says so in its `Clamped` condition). A band narrower than one instance (say
1.5..1.6 of 1) holds no whole number: the lower bound wins, so the follower never has fewer
instances than `minRatio` asks. Bands never chain (admission refuses a band on a followed role),
so one pass over the roles settles everything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from apis.v1alpha1 import constants as c
from controller.stormservice.view import role_replicas

EXTERNAL = "External"
CONDITION_CLAMPED = "Clamped"
REASON_OUTSIDE_RATIO_BAND = "OutsideRatioBand"
REASON_WITHIN_RATIO_BAND = "WithinRatioBand"


@dataclass(frozen=True, slots=True)
class Band:
    follows: str
    min_ratio: Fraction | None = None
    max_ratio: Fraction | None = None

    def limits(self, leader: int) -> tuple[int, int | None]:
        """(lowest, highest or None) instances for `leader` instances of the followed role."""
        low = 0 if self.min_ratio is None else math.ceil(self.min_ratio * leader)
        high = None if self.max_ratio is None else math.floor(self.max_ratio * leader)
        return low, high

    def describe(self) -> str:
        low = "0" if self.min_ratio is None else _decimal(self.min_ratio)
        high = "inf" if self.max_ratio is None else _decimal(self.max_ratio)
        return f"{low}x..{high}x {self.follows}"


def _decimal(value: Fraction) -> str:
    return f"{float(value):g}"


def _ratio(value: Any) -> Fraction | None:
    if value is None:
        return None
    try:
        return Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return None


def band_of(role: Mapping[str, Any]) -> Band | None:
    raw = role.get("scalingBand")
    if not isinstance(raw, Mapping) or not raw.get("follows"):
        return None
    return Band(str(raw["follows"]), _ratio(raw.get("minRatio")), _ratio(raw.get("maxRatio")))


def is_external(role: Mapping[str, Any]) -> bool:
    return role.get("scaling") == EXTERNAL


def clamp(requested: int, low: int, high: int | None) -> int:
    value = requested if high is None else min(requested, high)
    return max(value, low)


@dataclass(frozen=True, slots=True)
class RoleDecision:
    """What one External role gets: `requested` by its RoleScaler (the template's replicas while
    it has none), `desired` after its band, and the band's limits when it has one."""

    role: str
    index: int
    requested: int
    desired: int
    band: Band | None = None
    limits: tuple[int, int | None] | None = None

    @property
    def clamped(self) -> bool:
        return self.requested != self.desired


def external_roles(spec: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    """(index, role) of the template's External roles; none unless in pooled mode (admission
    refuses the opt-in otherwise, but objects from before a CRD upgrade are not re-admitted)."""
    replicas = spec.get("replicas")
    if (1 if replicas is None else int(replicas)) != 1:
        return []
    roles = ((spec.get("template") or {}).get("spec") or {}).get("roles") or ()
    return [(i, role) for i, role in enumerate(roles) if isinstance(role, Mapping) and is_external(role)]


def plan_roles(spec: Mapping[str, Any], requests: Mapping[str, int]) -> list[RoleDecision]:
    """The decision for every External role. `requests`: role name -> its RoleScaler's
    spec.replicas, for the roles that have one."""
    roles = ((spec.get("template") or {}).get("spec") or {}).get("roles") or ()
    template_replicas = {str(r.get("name")): role_replicas(r) for r in roles if isinstance(r, Mapping)}
    externals = external_roles(spec)
    requested = {
        str(role.get("name")): requests.get(str(role.get("name")), role_replicas(role))
        for _, role in externals
    }
    out: list[RoleDecision] = []
    for index, role in externals:
        name = str(role.get("name"))
        band = band_of(role)
        want = requested[name]
        if band is None or band.follows not in template_replicas:
            out.append(RoleDecision(name, index, want, want))
            continue
        # The followed role has no band (admission), so what it gets is what it asks.
        leader = requested.get(band.follows, template_replicas[band.follows])
        low, high = band.limits(leader)
        out.append(RoleDecision(name, index, want, clamp(want, low, high), band, (low, high)))
    return out


def template_replicas_patch(
    spec: Mapping[str, Any], decisions: Sequence[RoleDecision]
) -> list[dict[str, Any]]:
    """JSON patch of the StormService writing each decided role's replicas into its template; []
    when all agree. Every write tests the role's name at its index, so a concurrent edit of the
    roles fails the patch instead of scaling the wrong role."""
    roles = ((spec.get("template") or {}).get("spec") or {}).get("roles") or ()
    ops: list[dict[str, Any]] = []
    for d in decisions:
        if d.index >= len(roles) or role_replicas(roles[d.index]) == d.desired:
            continue
        path = f"/spec/template/spec/roles/{d.index}"
        ops.append({"op": "test", "path": f"{path}/name", "value": d.role})
        ops.append({"op": "add", "path": f"{path}/replicas", "value": d.desired})
    return ops


def role_selector(storm_service: str, role: str) -> str:
    """Selects exactly the pods of one role of one StormService (the HPA's pods)."""
    return f"{c.LABEL_STORM_SERVICE_NAME}={storm_service},{c.LABEL_ROLE_NAME}={role}"


def current_instances(rolesets: Sequence[Mapping[str, Any]], role: str) -> int:
    """Instances of `role` its RoleSets report (status; counted in instances for grouped roles),
    over every RoleSet that is not being deleted."""
    total = 0
    for rs in rolesets:
        if (rs.get("metadata") or {}).get("deletionTimestamp"):
            continue
        for entry in (rs.get("status") or {}).get("roles") or ():
            if entry.get("name") == role:
                total += int(entry.get("replicas") or 0)
    return total


def clamped_condition(decision: RoleDecision) -> tuple[str, str, str] | None:
    """(status, reason, message) of the Clamped condition; None for a role without a band."""
    if decision.band is None or decision.limits is None:
        return None
    low, high = decision.limits
    bounds = f"[{low}, {'inf' if high is None else high}]"
    if decision.clamped:
        return (
            "True",
            REASON_OUTSIDE_RATIO_BAND,
            f"asked for {decision.requested}, outside the ratio band {decision.band.describe()} = "
            f"{bounds} instances; applying {decision.desired}",
        )
    return (
        "False",
        REASON_WITHIN_RATIO_BAND,
        f"{decision.requested} is within the ratio band {decision.band.describe()} = {bounds} instances",
    )
