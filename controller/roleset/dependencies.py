"""Role dependencies (`dependsOn`): which roles of a RoleSet may create their first pods now.

A role that has not started (it has no pod in the RoleSet) waits until every role it depends on
has all its instances ready (ready >= replicas, counted as the status counts them: instances for
grouped roles, so a dependency with replicas 0 is ready at once). A role that has pods is never
held: a later unreadiness of a dependency neither stops nor deletes it, and its scale-up and
replacements go on. A role whose pods are all gone (scaled to 0, or every pod lost) starts
again, and waits again, as in a new RoleSet.

A name that is no role of the RoleSet is no dependency (the CRD refuses it; a RoleSet admitted
before the rule is not held for a role it cannot have). Roles on a dependency cycle, or waiting
for one, could never start: the CRD refuses cycles, and should one get through (a CRD without
the rule), they are held and the condition says so, rather than waiting silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from apis.v1alpha1 import constants as C
from apis.v1alpha1.types import dependency_cycle

COND_WAITING_FOR_DEPENDENCIES = C.CONDITION_WAITING_FOR_DEPENDENCIES
REASON_DEPENDENCIES_NOT_READY = C.REASON_DEPENDENCIES_NOT_READY
REASON_DEPENDENCY_CYCLE = C.REASON_DEPENDENCY_CYCLE
EVENT_DEPENDENCIES_READY = "DependenciesReady"


@dataclass(frozen=True, slots=True)
class RoleState:
    name: str
    depends_on: tuple[str, ...]
    replicas: int  # spec
    ready: int  # ready instances, as the status counts them
    started: bool  # the role has pods in this RoleSet


@dataclass(frozen=True, slots=True)
class Unmet:
    """A dependency that is not ready yet."""

    role: str
    ready: int
    replicas: int


@dataclass(frozen=True, slots=True)
class Decision:
    #: Role -> the dependencies it waits for (in its dependsOn order); only roles not started.
    waiting: Mapping[str, tuple[Unmet, ...]] = field(default_factory=dict)
    #: Roles not started that are on a dependency cycle or wait for one, sorted.
    cyclic: tuple[str, ...] = ()
    #: Roles not started, with dependencies, all ready: they create their first pods now.
    released: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def holds(self, role: str) -> bool:
        return role in self.waiting or role in self.cyclic


def decide(roles: Sequence[RoleState]) -> Decision:
    by_name = {r.name: r for r in roles}
    on_cycle = set(dependency_cycle({r.name: r.depends_on for r in roles}))
    waiting: dict[str, tuple[Unmet, ...]] = {}
    released: dict[str, tuple[str, ...]] = {}
    cyclic: list[str] = []
    for role in roles:
        deps = tuple(d for d in role.depends_on if d in by_name)
        if role.started or not deps:
            continue
        if role.name in on_cycle:
            cyclic.append(role.name)
            continue
        unmet = tuple(
            Unmet(d, by_name[d].ready, by_name[d].replicas)
            for d in deps
            if by_name[d].ready < by_name[d].replicas
        )
        if unmet:
            waiting[role.name] = unmet
        else:
            released[role.name] = deps
    return Decision(waiting=waiting, cyclic=tuple(sorted(cyclic)), released=released)


def condition(decision: Decision) -> tuple[str, str, str] | None:
    """(status, reason, message) of the WaitingForDependencies condition; None (absent) while no
    role waits, as for a RoleSet without dependsOn."""
    waits = [
        f'role "{role}" waits for ' + ", ".join(f'"{u.role}" ({u.ready}/{u.replicas} ready)' for u in unmet)
        for role, unmet in decision.waiting.items()
    ]
    if decision.cyclic:
        names = ", ".join(f'"{r}"' for r in decision.cyclic)
        cycle = (
            f"roles {names} are on a dependency cycle or wait for one: their pods are not created "
            "until dependsOn is fixed"
        )
        return "True", REASON_DEPENDENCY_CYCLE, "; ".join([cycle, *waits])
    if waits:
        return "True", REASON_DEPENDENCIES_NOT_READY, "; ".join(waits)
    return None


def released_message(role: str, deps: Sequence[str]) -> str:
    names = ", ".join(f'"{d}"' for d in deps)
    return f'role "{role}": {names} ready, creating its pods'
