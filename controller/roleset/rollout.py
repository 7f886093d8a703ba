"""Pure cross-role rollout planning: which roles may roll this pass, and how far.

- Sequential: roles in `upgradeOrder` (unset last, ties in list order); a role may roll only
  when every role before it is fully updated and ready.
- Parallel: every role rolls within its own budget.
- Interleave: every role advances one step of `max(1, surge + unavailable)` instances; step k+1
  starts only when every unfinished role has k steps' worth of updated, ready instances.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controller.roleset.scale import Gate

SEQUENTIAL = "Sequential"
PARALLEL = "Parallel"
INTERLEAVE = "Interleave"


@dataclass(frozen=True, slots=True)
class RoleRollout:
    name: str
    position: int  # index in spec.roles
    upgrade_order: int | None
    replicas: int
    surge: int
    unavailable: int
    updated_ready: int
    done: bool

    @property
    def step(self) -> int:
        return max(1, self.surge + self.unavailable)


def sequential_order(roles: Sequence[RoleRollout]) -> list[RoleRollout]:
    return sorted(
        roles,
        key=lambda r: (r.upgrade_order is None, r.upgrade_order or 0, r.position),
    )


def interleave_step(roles: Sequence[RoleRollout]) -> int:
    """The global step (1-based) under way: one more than the fewest steps any unfinished role
    has completed. 0 when every role is done."""
    unfinished = [r for r in roles if not r.done]
    if not unfinished:
        return 0
    return 1 + min(min(r.updated_ready, r.replicas) // r.step for r in unfinished)


def plan_gates(strategy: str | None, roles: Sequence[RoleRollout]) -> dict[str, Gate]:
    if strategy == PARALLEL:
        return {r.name: Gate() for r in roles}
    if strategy == INTERLEAVE:
        k = interleave_step(roles)
        return {
            r.name: Gate(
                allowed=True, max_updated=r.replicas if r.done or k == 0 else min(r.replicas, k * r.step)
            )
            for r in roles
        }
    gates: dict[str, Gate] = {}
    blocked = False
    for r in sequential_order(roles):
        gates[r.name] = Gate(allowed=not blocked)
        if not r.done:
            blocked = True
    return gates
