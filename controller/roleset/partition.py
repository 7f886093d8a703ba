"""Pure decisions of a role's `updateStrategy.partition` (a canary): which instances a rollout
may update now, and how many it keeps on the old template.

- Slotted roles (stateful, or `podGroupSize > 1`), StatefulSet's semantics: instances in slots
  (ordinals) >= partition are updated, those below are kept. An instance without a slot
  (left from when the role was stateless) is replaced as always.
- Stateless roles: at most `replicas - partition` instances are updated; the `partition` kept
  are outdated instances chosen by the rollout's usual order, which updates not-ready ones first
  and then the newest: the oldest ready outdated instances are kept.

Only existing instances are held: an instance created now (scale-up, a lost pod replaced) runs
the role's template, which is the only one a RoleSet has. A partition >= replicas holds every
instance; 0 (or unset) is a rollout without partition.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from controller.roleset.instances import Instance, RoleParams


def updatable_count(replicas: int, partition: int) -> int:
    """Stateless roles: how many instances the rollout may have updated."""
    return max(0, replicas - partition)


def may_update_slot(index: int | None, partition: int) -> bool:
    """Slotted roles: whether the instance in slot `index` may be updated (None: no slot)."""
    return index is None or index >= partition


@dataclass(frozen=True, slots=True)
class Hold:
    kept: int  # outdated instances the partition keeps on the old template
    pending: int  # outdated instances the rollout may still update


def hold(role: RoleParams, outdated: Iterable[Instance], partition: int) -> Hold:
    """How the role's `outdated` instances split between kept and still to update."""
    outdated = list(outdated)
    if role.slotted:
        kept = sum(1 for i in outdated if not may_update_slot(i.index, partition))
    else:
        kept = min(len(outdated), partition)
    return Hold(kept=kept, pending=len(outdated) - kept)


def held(h: Hold, replicas: int, live: int, updated_ready: int) -> bool:
    """The role's rollout has gone as far as the partition lets it: the role has its instances,
    every one not kept is updated and ready, and some are kept. For the cross-role strategies
    such a role counts as done (its partition holds only it)."""
    return h.kept > 0 and h.pending == 0 and live == replicas and updated_ready + h.kept == replicas


def held_message(role: str, h: Hold, replicas: int) -> str:
    return f"role {role}: {h.kept} of {replicas} instances kept on the old revision by partition"
