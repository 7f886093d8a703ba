"""One pass of decisions: scale first; roll out only when not paused and no scaling is needed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from controller.stormservice.inplace import to_rewrite
from controller.stormservice.rolling import plan_rolling_update
from controller.stormservice.scale import IN_PLACE_UPDATE, Budget, ScalePlan, plan_scale
from controller.stormservice.view import RoleSetView


@dataclass(frozen=True, slots=True)
class PassPlan:
    phase: Literal["none", "scale", "rollout"]
    changes: ScalePlan = field(default_factory=ScalePlan)
    rewrite: tuple[RoleSetView, ...] = ()


def plan_pass(
    rolesets: Sequence[RoleSetView], budget: Budget, update_revision: str, *, paused: bool, strategy: str
) -> PassPlan:
    scale = plan_scale(rolesets, budget, update_revision, paused=paused)
    if not scale.empty:
        return PassPlan("scale", scale)
    if paused:
        return PassPlan("none")
    if strategy == IN_PLACE_UPDATE:
        rewrite = tuple(to_rewrite(rolesets, update_revision))
        return PassPlan("rollout", rewrite=rewrite) if rewrite else PassPlan("none")
    rolling = plan_rolling_update(rolesets, budget, update_revision)
    return PassPlan("rollout", rolling) if not rolling.empty else PassPlan("none")
