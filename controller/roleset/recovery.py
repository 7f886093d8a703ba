"""Pure decisions on failed members of pod groups: recovery grace and restart budget.

Only for grouped roles (podGroupSize > 1) that set `recoveryGracePeriodSeconds` or
`restartBudget`; without them `instances.build_view` decides as it always did.

What fails, as Kthena's ModelServing controller sees it:
- a member that is gone (deleted, or terminating) or Failed cannot come back: it is recovered
  at once, whatever the grace (Kthena rebuilds at once on a pod deletion; it also waits on a
  Failed pod, but a Failed phase is terminal, so waiting would only delay the recovery);
- a member that is running but not Ready while one of its containers has restarted (Kthena's
  "error pod": the container crashed and the kubelet restarted it) may come back: it gets
  `recoveryGracePeriodSeconds` from the moment it went not Ready. Ready again within the grace:
  nothing happens. Still not Ready when the grace ends: recovered. A pod that is only not Ready
  (a readiness probe, a node that missed heartbeats) is never a failure, as in Kthena. Without
  a grace such members are left to the kubelet, as before.

A recovery follows `recoveryPolicy`: Recreate deletes the whole group (its slot is then
refilled as a new group); ReplaceUnhealthy deletes the failed members and creates the missing
ones. With a `restartBudget` each recovery is recorded in the RoleSet status
(`status.groupRecoveries`, so a restarted controller still knows them): a Recreate when the
group is deleted, a ReplaceUnhealthy when its missing members are created (deleting a failed
member is the first half of that same recovery). Once `maxRestarts` recoveries of one group fall
within `windowSeconds`, the group is held: left as it is, reported, and looked at again when the
oldest of them leaves the window.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from controller.roleset import labels as L
from controller.roleset.instances import PodInfo, is_pod_ready
from controller.runtime.timestamps import format_time, parse_time

MemberState = Literal["ok", "failed", "unhealthy", "terminating"]


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    """A role's recovery settings."""

    recreate: bool  # recoveryPolicy Recreate (else ReplaceUnhealthy)
    grace_seconds: int | None = None
    max_restarts: int | None = None
    window_seconds: int | None = None

    @property
    def budgeted(self) -> bool:
        return self.max_restarts is not None and self.window_seconds is not None


@dataclass(frozen=True, slots=True)
class Member:
    uid: str
    member: int | None
    state: MemberState
    since: datetime | None = None  # unhealthy: when it went not Ready


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one group this pass.

    none: healthy, or a recovery under way; wait: a member may still recover, look again at
    `wake_at`; recover: recover now (`fail`: members whose grace ended, to treat as failed;
    `record`: count it in the budget); exhausted: leave the group as it is until `wake_at`."""

    action: Literal["none", "wait", "recover", "exhausted"]
    wake_at: datetime | None = None
    fail: tuple[str, ...] = ()
    record: bool = False
    recent: int = 0  # recoveries within the window (exhausted)


def policy_of(
    recreate: bool, grace_seconds: int | None, max_restarts: int | None, window_seconds: int | None
) -> RecoveryPolicy | None:
    """The role's policy, or None when it sets neither a grace nor a budget (build_view alone
    decides, as before these fields)."""
    if grace_seconds is None and (max_restarts is None or window_seconds is None):
        return None
    return RecoveryPolicy(recreate, grace_seconds, max_restarts, window_seconds)


def member_state(pod: Mapping[str, Any]) -> tuple[MemberState, datetime | None]:
    """How a member pod stands, and since when it is not Ready (unhealthy only)."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return "terminating", None
    status = pod.get("status") or {}
    if status.get("phase") in ("Failed", "Succeeded"):
        return "failed", None
    if is_pod_ready(pod) or status.get("phase") != "Running":
        return "ok", None
    if (meta.get("annotations") or {}).get(L.INPLACE_TARGET_HASH_ANNOTATION):
        return "ok", None  # an in-place update restarts the container on purpose
    restarted = any(
        isinstance(c, Mapping) and int(c.get("restartCount") or 0) > 0
        for c in status.get("containerStatuses") or ()
    )
    if not restarted:
        return "ok", None
    since = None
    for c in status.get("conditions") or ():
        if c.get("type") == "Ready":
            since = parse_time(c.get("lastTransitionTime"))
    return "unhealthy", since


def in_window(history: Iterable[datetime], now: datetime, window_seconds: int) -> list[datetime]:
    start = now - timedelta(seconds=window_seconds)
    return sorted(t for t in history if t > start)


def decide(
    size: int,
    members: Sequence[Member],
    policy: RecoveryPolicy,
    history: Sequence[datetime],
    now: datetime,
) -> Decision:
    """The decision for one group of `size` members of the role's current template."""
    present = [m for m in members if m.state != "terminating"]
    if not present:
        return Decision("none")  # gone as a whole: its slot is refilled as a new group
    have = {m.member for m in present}
    leaving = {m.member for m in members if m.state == "terminating"} - have
    missing = [k for k in range(size) if k not in have and k not in leaving]
    failed = [m for m in present if m.state == "failed"]
    expired: list[Member] = []
    waiting: list[datetime] = []
    if policy.grace_seconds is not None:
        grace = timedelta(seconds=policy.grace_seconds)
        for m in present:
            if m.state != "unhealthy":
                continue
            # A time the cache lacks cannot be waited from: the member is taken as failed.
            if m.since is None or m.since + grace <= now:
                expired.append(m)
            else:
                waiting.append(m.since + grace)
    wait = Decision("wait", wake_at=min(waiting)) if waiting else Decision("none")

    if policy.recreate:
        if not (failed or expired or missing or leaving):
            return wait
        record = True
    else:
        if not (failed or expired or missing):
            return wait  # a member on its way out: the rest of a recovery under way
        record = bool(missing)
    if policy.budgeted:
        assert policy.max_restarts is not None and policy.window_seconds is not None
        recent = in_window(history, now, policy.window_seconds)
        if len(recent) >= policy.max_restarts:
            free_at = recent[len(recent) - policy.max_restarts] + timedelta(seconds=policy.window_seconds)
            return Decision("exhausted", wake_at=free_at, recent=len(recent))
    return Decision(
        "recover",
        wake_at=wait.wake_at if not policy.recreate else None,
        fail=tuple(m.uid for m in expired),
        record=record and policy.budgeted,
    )


@dataclass(slots=True)
class RoleRecovery:
    """The decisions for a role's groups, as `instances.build_view` and the sync use them."""

    hold: set[str] = field(default_factory=set)  # groups left as they are (budget exhausted)
    fail: set[str] = field(default_factory=set)  # pod uids whose grace ended: failed now
    wake_at: datetime | None = None  # the earliest grace end or budget release
    history: dict[str, list[datetime]] = field(default_factory=dict)  # group -> recoveries kept
    exhausted: list[str] = field(default_factory=list)  # a message per held group
    recovered: list[str] = field(default_factory=list)  # groups recovered this pass
    recorded: dict[str, datetime] = field(default_factory=dict)  # group -> this pass's record

    def unrecorded(self, groups: Collection[str] | None = None) -> dict[str, list[datetime]]:
        """`history` without this pass's records of `groups` (all when None): for recoveries
        the pass did not carry out."""
        out: dict[str, list[datetime]] = {}
        for key, times in self.history.items():
            undone = key in self.recorded and (groups is None or key in groups)
            kept = [t for t in times if not (undone and t == self.recorded[key])]
            if kept:
                out[key] = kept
        return out

    def wake(self, t: datetime | None) -> None:
        if t is not None and (self.wake_at is None or t < self.wake_at):
            self.wake_at = t


def plan_recovery(
    role: str,
    group_size: int,
    replicas: int,
    target_hash: str,
    pods: Sequence[tuple[PodInfo, MemberState, datetime | None]],
    policy: RecoveryPolicy,
    history: Mapping[str, Sequence[datetime]],
    now: datetime,
) -> RoleRecovery:
    """Decide for every group of the role's current template and size in a slot below
    `replicas`; other groups (outdated, surplus, without a slot) are left to the rollout and the
    scale-down.
    `history`: recoveries per group, from the status; the result keeps those still within the
    window, plus the ones recorded now."""
    out = RoleRecovery()
    groups: dict[str, list[tuple[PodInfo, MemberState, datetime | None]]] = {}
    for entry in pods:
        if entry[0].group:
            groups.setdefault(entry[0].group, []).append(entry)
    for key in sorted(groups):
        entries = groups[key]
        info = entries[0][0]
        if info.hash != target_hash or info.index is None or info.index >= replicas:
            continue
        if info.group_size not in (0, group_size):
            continue  # made for another podGroupSize: the rollout replaces it
        members = [Member(p.uid, p.member, state, since) for p, state, since in entries]
        past = list(history.get(key, ()))
        d = decide(group_size, members, policy, past, now)
        out.wake(d.wake_at)
        if d.action == "exhausted":
            out.hold.add(key)
            assert policy.window_seconds is not None and policy.max_restarts is not None
            out.exhausted.append(
                f"role {role}: group {key} was recovered {d.recent} times within "
                f"{policy.window_seconds}s (restartBudget.maxRestarts {policy.max_restarts}); "
                f"left as it is until {format_time(d.wake_at or now)}"
            )
        elif d.action == "recover":
            out.fail.update(d.fail)
            out.recovered.append(key)
            if d.record:
                past.append(now)
                out.recorded[key] = now
        if policy.budgeted and past:
            assert policy.window_seconds is not None
            kept = in_window(past, now, policy.window_seconds)
            if kept:
                out.history[key] = kept
    # Groups not seen now (recreated under another hash, scaled away) keep their entries until
    # they leave the window: a group that comes back in the same slot is the same group.
    if policy.budgeted:
        assert policy.window_seconds is not None
        for key, times in history.items():
            if key not in out.history and key not in groups:
                kept = in_window(times, now, policy.window_seconds)
                if kept:
                    out.history[key] = kept
    return out


def read_history(status: Mapping[str, Any] | None) -> dict[str, dict[str, list[datetime]]]:
    """`status.groupRecoveries` as role -> group -> times."""
    out: dict[str, dict[str, list[datetime]]] = {}
    for entry in (status or {}).get("groupRecoveries") or ():
        if not isinstance(entry, Mapping) or not entry.get("group"):
            continue
        times = [t for t in (parse_time(v) for v in entry.get("times") or ()) if t is not None]
        out.setdefault(str(entry.get("role") or ""), {})[str(entry["group"])] = sorted(times)
    return out


def history_status(history: Mapping[str, Mapping[str, Sequence[datetime]]]) -> list[dict[str, Any]]:
    """role -> group -> times as `status.groupRecoveries` (sorted, so that equal histories
    compare equal)."""
    return [
        {"group": group, "role": role, "times": [format_time(t) for t in sorted(times)]}
        for role in sorted(history)
        for group, times in sorted(history[role].items())
        if times
    ]


def merge_history(
    a: Mapping[str, Mapping[str, Sequence[datetime]]], b: Mapping[str, Mapping[str, Sequence[datetime]]]
) -> dict[str, dict[str, list[datetime]]]:
    """Both histories: entries only ever leave by the window, so the union loses nothing. (A
    multiset union: two recoveries recorded within one second are two.)"""
    out: dict[str, dict[str, list[datetime]]] = {}
    for source in (a, b):
        for role, groups in source.items():
            for group, times in groups.items():
                merged = Counter(out.setdefault(role, {}).get(group, ())) | Counter(times)
                out[role][group] = sorted(merged.elements())
    return out
