"""The promises a workload controller keeps while things break, as pure checks over the objects a
watch delivers: feed `InvariantChecker.apply` every StormService, RoleSet and pod event in the order
the API server wrote them (resourceVersion order), and it returns the violations that event made.

What is checked, and why it is checked on *actions* rather than on every snapshot:
- Surge. When a RoleSet (a pod) appears, the live RoleSets of its StormService (the live instances
  of its role in its RoleSet) are at most `replicas + maxSurge`. A scale-down legitimately leaves
  more than the new bound for a moment; only a creation can break the promise.
- Availability. When the controller takes a ready RoleSet or instance down (deletes it, or starts
  an in-place update of a pod), the ready ones afterwards are not below
  `replicas - maxUnavailable` (taking a not-ready one down never lowers availability).
  The controller acts on a cache, so it is judged on what it could have seen: a RoleSet or pod
  that went from ready to not ready (on its own: an in-place update is the controller's doing)
  counts as ready for `excuse_seconds` more, and pods the chaos suite deletes (its own pod
  deletions, lost nodes) are `excuse`d: their instance counts as ready for as long.
- Duplicates. Never two live pods for one stateful slot or group member of one template
  (a slot may hold an outdated and an updated instance, the surge pair, counted by the surge
  check), never two live RoleSets with one `roleset-index` in a StormService, never more live pods
  owned by a RoleSet than its roles' budgets allow.
- Which spec bounds an action. The controller may act on any generation from the one its status
  last reported (`observedGeneration`) to the newest: bounds are taken over those versions (the
  highest replicas and surge for the surge check, the lowest floor for availability).

Readiness is judged from the objects themselves, independently of the controller's code: a pod
is ready with its Ready condition True and no in-place update in flight; a group when all its
`podGroupSize` members are; a RoleSet when its status is current for its spec and every role has
`readyReplicas >= replicas`.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

PREFIX = "stormservice.orchestration.aibrix.ai/"
STORM_LABEL = "storm-service-name"
ROLE_LABEL = "role-name"
HASH_LABEL = "role-template-hash"
REPLICA_INDEX = PREFIX + "role-replica-index"
GROUP_INDEX_LABEL = PREFIX + "pod-group-index"
PODSET_LABEL = PREFIX + "podset-name"
ROLESET_INDEX_ANNOTATION = PREFIX + "roleset-index"
INPLACE_TARGET_ANNOTATION = PREFIX + "in-place-update-target-hash"

DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Violation:
    invariant: str  # "surge", "availability" or "duplicate"
    where: str  # namespace/name of the StormService or RoleSet (and role)
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant} {self.where}: {self.detail}"


# ---------------------------------------------------------------------------------------------
# budgets (the Deployment fenceposts, written out again here so that the monitor does not share
# the controller's arithmetic)


def scaled(value: int | str | None, total: int, *, round_up: bool) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    pct = int(value.rstrip("%"))
    return -((-pct * total) // 100) if round_up else (pct * total) // 100


def fenceposts(max_surge: int | str | None, max_unavailable: int | str | None, total: int) -> tuple[int, int]:
    surge = scaled(max_surge, total, round_up=True)
    unavailable = scaled(max_unavailable, total, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


@dataclass(frozen=True)
class Budget:
    max_live: int
    min_ready: int


def storm_budget(specs: Sequence[Mapping[str, Any]]) -> Budget:
    """Over every StormService spec the controller may be acting on."""
    max_live, min_ready = 0, 10**9
    for spec in specs:
        replicas = int(spec.get("replicas", 1))
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type") == "InPlaceUpdate":
            # RoleSets are rewritten, never surged; availability is the RoleSet controller's,
            # per role.
            surge, unavailable = 0, replicas
        else:
            surge, unavailable = fenceposts(
                strategy.get("maxSurge"), strategy.get("maxUnavailable"), replicas
            )
        max_live = max(max_live, replicas + surge)
        min_ready = min(min_ready, replicas - min(unavailable, replicas))
    return Budget(max_live, min_ready)


def role_budget(roles: Sequence[Mapping[str, Any]]) -> Budget:
    """Over every version of one role the controller may be acting on."""
    max_live, min_ready = 0, 10**9
    for role in roles:
        replicas = int(role.get("replicas", 1))
        strategy = role.get("updateStrategy") or {}
        surge, unavailable = fenceposts(strategy.get("maxSurge"), strategy.get("maxUnavailable"), replicas)
        max_live = max(max_live, replicas + surge)
        min_ready = min(min_ready, replicas - min(unavailable, max(replicas, 1)))
    return Budget(max_live, min_ready)


# ---------------------------------------------------------------------------------------------
# object views


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return meta(obj).get("labels") or {}


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return meta(obj).get("annotations") or {}


def uid(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("uid") or meta(obj).get("name"))


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    for ref in meta(obj).get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def pod_live(pod: Mapping[str, Any]) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return not meta(pod).get("deletionTimestamp") and phase not in ("Succeeded", "Failed")


def pod_available(pod: Mapping[str, Any]) -> bool:
    if INPLACE_TARGET_ANNOTATION in annotations_of(pod):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or ()
    )


def replica_index(pod: Mapping[str, Any]) -> str | None:
    return annotations_of(pod).get(REPLICA_INDEX) or labels_of(pod).get(REPLICA_INDEX)


def instance_key(pod: Mapping[str, Any]) -> str:
    """What a role's `replicas` counts: a group (by its name, which carries the template hash and
    the slot), a stateful slot of one template, or a stateless pod."""
    lbl = labels_of(pod)
    group = lbl.get(PODSET_LABEL)
    if group:
        return f"group/{group}"
    index = replica_index(pod)
    if index is not None:
        return f"slot/{index}/{lbl.get(HASH_LABEL, '')}"
    return f"pod/{meta(pod).get('name')}"


def member_key(pod: Mapping[str, Any]) -> tuple[str, str, str, str] | None:
    """The one place a slotted pod may hold: (slot, member, template hash); None if stateless."""
    lbl = labels_of(pod)
    index = replica_index(pod)
    if index is None:
        return None
    return (lbl.get(ROLE_LABEL, ""), index, lbl.get(GROUP_INDEX_LABEL, ""), lbl.get(HASH_LABEL, ""))


def roleset_live(rs: Mapping[str, Any]) -> bool:
    return not meta(rs).get("deletionTimestamp")


def roleset_ready(rs: Mapping[str, Any]) -> bool:
    status = rs.get("status") or {}
    if not roleset_live(rs):
        return False
    if int(status.get("observedGeneration") or 0) < int(meta(rs).get("generation") or 0):
        return False
    reported = {r.get("name"): r for r in status.get("roles") or ()}
    return all(
        int((reported.get(r["name"]) or {}).get("readyReplicas") or 0) >= int(r.get("replicas", 1))
        for r in (rs.get("spec") or {}).get("roles") or ()
    )


def ready_instances(
    pods: Iterable[Mapping[str, Any]],
    group_size: int,
    available: Callable[[Mapping[str, Any]], bool] = pod_available,
) -> set[str]:
    members: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods:
        if pod_live(pod):
            members.setdefault(instance_key(pod), []).append(pod)
    return {
        key
        for key, ps in members.items()
        if all(available(p) for p in ps) and (len(ps) >= group_size if key.startswith("group/") else True)
    }


def live_instances(pods: Iterable[Mapping[str, Any]]) -> set[str]:
    return {instance_key(p) for p in pods if pod_live(p)}


# ---------------------------------------------------------------------------------------------
# spec versions


def resource_version(obj: Mapping[str, Any]) -> int | None:
    """An object's resourceVersion as a number: one etcd revision orders the writes of every kind
    (opaque by contract, a number on every API server this suite runs against)."""
    value = meta(obj).get("resourceVersion")
    return int(value) if isinstance(value, str) and value.isdigit() else None


@dataclass
class Versions:
    """Specs by generation of one object, and the generations its controller reported, by the
    resourceVersion that reported them."""

    specs: dict[int, Obj] = field(default_factory=dict)
    observed: int = 0
    # (resourceVersion, highest observedGeneration so far), in the API server's order. Watches
    # of different kinds are not ordered with each other: a RoleSet the controller deleted while
    # acting on generation 7 can arrive after the StormService reporting generation 9, and must
    # still be judged against generation 7.
    reports: list[tuple[int, int]] = field(default_factory=list)

    def record(self, obj: Mapping[str, Any]) -> None:
        generation = int(meta(obj).get("generation") or 0)
        self.specs[generation] = obj.get("spec") or {}
        self.observed = max(self.observed, int((obj.get("status") or {}).get("observedGeneration") or 0))
        rv = resource_version(obj)
        if rv is not None and (not self.reports or rv > self.reports[-1][0]):
            self.reports.append((rv, self.observed))

    def observed_before(self, rv: int | None) -> int:
        """The highest generation reported by a write older than `rv` (unknown: the latest)."""
        if rv is None:
            return self.observed
        index = bisect.bisect_left(self.reports, (rv, -1))
        return self.reports[index - 1][1] if index else 0

    def candidates(self, at: int | None = None) -> list[Obj]:
        """Every spec the controller may have been acting on when the write with resourceVersion
        `at` was made (None: now); the newest at least."""
        if not self.specs:
            return []
        newest = max(self.specs)
        floor = min(self.observed_before(at), newest)
        return [s for g, s in self.specs.items() if g >= floor]


def roles_named(specs: Iterable[Mapping[str, Any]], role: str) -> list[Obj]:
    return [r for s in specs for r in s.get("roles") or () if r.get("name") == role]


# ---------------------------------------------------------------------------------------------
# the checker


@dataclass
class _Excuse:
    at: float
    roleset: str | None
    role: str
    instance: str


@dataclass
class InvariantChecker:
    excuse_seconds: float = 10.0
    storms: dict[str, Obj] = field(default_factory=dict)  # by name
    storm_versions: dict[str, Versions] = field(default_factory=dict)
    rolesets: dict[str, Obj] = field(default_factory=dict)  # by uid
    roleset_versions: dict[str, Versions] = field(default_factory=dict)
    pods: dict[str, Obj] = field(default_factory=dict)  # by uid
    excuses: dict[str, _Excuse] = field(default_factory=dict)  # by pod uid
    # RoleSets and pods (by uid) that went from ready to not ready, and when.
    went_unready: dict[str, float] = field(default_factory=dict)
    events: int = 0
    # Generations each StormService's status reported: how many of its spec changes the
    # controller acted on.
    observed_generations: dict[str, set[int]] = field(default_factory=dict)

    # --- faults ---------------------------------------------------------------------------

    def excuse(self, pod: Mapping[str, Any], now: float) -> None:
        """The chaos suite is about to delete this pod or make it NotReady (or lose its node)."""
        self.excuses[uid(pod)] = _Excuse(
            now, controller_uid(pod), labels_of(pod).get(ROLE_LABEL, ""), instance_key(pod)
        )

    def excuse_all(self, pods: Iterable[Mapping[str, Any]], now: float) -> None:
        for pod in pods:
            self.excuse(pod, now)

    def _excused(self, roleset: str, role: str | None, now: float) -> set[str]:
        return {
            e.instance
            for e in self.excuses.values()
            if e.roleset == roleset and (role is None or e.role == role) and now - e.at <= self.excuse_seconds
        }

    # --- events ---------------------------------------------------------------------------

    def apply(self, kind: str, event_type: str, obj: Obj, now: float) -> list[Violation]:
        self.events += 1
        if kind == "StormService":
            return self._storm(event_type, obj)
        if kind == "RoleSet":
            return self._roleset(event_type, obj, now)
        if kind == "Pod":
            return self._pod(event_type, obj, now)
        raise ValueError(f"unknown kind {kind}")

    def _storm(self, event_type: str, obj: Obj) -> list[Violation]:
        name = str(meta(obj).get("name"))
        if event_type == "DELETED":
            self.storms.pop(name, None)
            self.storm_versions.pop(name, None)
            return []
        self.storms[name] = obj
        self.storm_versions.setdefault(name, Versions()).record(obj)
        observed = (obj.get("status") or {}).get("observedGeneration")
        if observed is not None:
            self.observed_generations.setdefault(name, set()).add(int(observed))
        return []

    def _storm_rolesets(self, storm: str) -> list[Obj]:
        return [rs for rs in self.rolesets.values() if labels_of(rs).get(STORM_LABEL) == storm]

    def _in_grace(self, key: str, now: float) -> bool:
        since = self.went_unready.get(key)
        return since is not None and now - since <= self.excuse_seconds

    def _track_readiness(self, key: str, was_ready: bool, is_ready: bool, now: float) -> None:
        if is_ready:
            self.went_unready.pop(key, None)
        elif was_ready:
            self.went_unready[key] = now

    def _roleset_effectively_ready(self, rs: Obj, now: float) -> bool:
        return roleset_ready(rs) or bool(self._excused(uid(rs), None, now)) or self._in_grace(uid(rs), now)

    def _pod_effectively_available(self, pod: Mapping[str, Any], now: float) -> bool:
        if pod_available(pod):
            return True
        # An in-place update is the controller's own doing: no grace for it.
        return INPLACE_TARGET_ANNOTATION not in annotations_of(pod) and self._in_grace(uid(pod), now)

    def _roleset(self, event_type: str, obj: Obj, now: float) -> list[Violation]:
        key = uid(obj)
        prev = self.rolesets.get(key)
        storm = labels_of(obj).get(STORM_LABEL)
        where = f"{meta(obj).get('namespace')}/{storm}"
        was_live = prev is not None and roleset_live(prev)
        is_live = event_type != "DELETED" and roleset_live(obj)
        out: list[Violation] = []
        before = self._storm_rolesets(storm) if storm else []
        # Only taking down what is really ready lowers availability; grace and excuses are for
        # judging what is left.
        took_ready = was_live and prev is not None and roleset_ready(prev)
        if event_type == "DELETED":
            self.rolesets.pop(key, None)
            self.roleset_versions.pop(key, None)
            self.went_unready.pop(key, None)
        else:
            self._track_readiness(key, prev is not None and roleset_ready(prev), roleset_ready(obj), now)
            self.rolesets[key] = obj
            self.roleset_versions.setdefault(key, Versions()).record(obj)
        if storm is None or storm not in self.storm_versions:
            return out
        storm_obj = self.storms.get(storm)
        if storm_obj is not None and meta(storm_obj).get("deletionTimestamp"):
            return out
        budget = storm_budget(self.storm_versions[storm].candidates(resource_version(obj)))
        after = [rs for rs in self._storm_rolesets(storm) if roleset_live(rs)]
        if is_live and not was_live:
            if len(after) > budget.max_live:
                out.append(
                    Violation(
                        "surge",
                        where,
                        f"RoleSet {meta(obj).get('name')} made {len(after)} live RoleSets > {budget.max_live}",
                    )
                )
            index = annotations_of(obj).get(ROLESET_INDEX_ANNOTATION)
            same = [rs for rs in after if annotations_of(rs).get(ROLESET_INDEX_ANNOTATION) == index]
            if index is not None and len(same) > 1:
                out.append(
                    Violation(
                        DUPLICATE,
                        where,
                        f"roleset-index {index} held by {sorted(str(meta(rs).get('name')) for rs in same)}",
                    )
                )
        if was_live and not is_live:
            ready_after = sum(1 for rs in after if self._roleset_effectively_ready(rs, now))
            if took_ready and ready_after < budget.min_ready:
                out.append(
                    Violation(
                        "availability",
                        where,
                        f"deleting RoleSet {meta(obj).get('name')} left {ready_after} ready < {budget.min_ready}"
                        f" (before: {self._describe_rolesets(before, now)})",
                    )
                )
        return out

    def _describe_rolesets(self, rolesets: Iterable[Obj], now: float) -> str:
        def one(rs: Obj) -> str:
            state = (
                "ready"
                if roleset_ready(rs)
                else "excused"
                if self._excused(uid(rs), None, now)
                else "not-ready"
            )
            revision = labels_of(rs).get("storm-service-revision", "")[-5:]
            gone = "" if roleset_live(rs) else ",terminating"
            return f"{meta(rs).get('name')}[{revision},{state}{gone}]"

        return " ".join(one(rs) for rs in rolesets)

    def _role_pods(self, roleset: str, role: str) -> list[Obj]:
        return [
            p
            for p in self.pods.values()
            if controller_uid(p) == roleset and labels_of(p).get(ROLE_LABEL) == role
        ]

    def _ready_count(self, roleset: str, role: str, group_size: int, now: float) -> int:
        ready = ready_instances(
            self._role_pods(roleset, role), group_size, lambda p: self._pod_effectively_available(p, now)
        )
        return len(ready | self._excused(roleset, role, now))

    def _pod(self, event_type: str, obj: Obj, now: float) -> list[Violation]:
        key = uid(obj)
        prev = self.pods.get(key)
        rs_uid = controller_uid(obj)
        role = labels_of(obj).get(ROLE_LABEL, "")
        rs = self.rolesets.get(rs_uid) if rs_uid else None
        was_live = prev is not None and pod_live(prev)
        is_live = event_type != "DELETED" and pod_live(obj)
        if rs is None or rs_uid is None or not roleset_live(rs):
            # Not ours to judge: no RoleSet (yet, or any more), or one on its way out whose pods
            # the garbage collector removes.
            self._store_pod(event_type, key, obj, now)
            return []
        where = f"{meta(rs).get('namespace')}/{meta(rs).get('name')}/{role}"
        role_specs = roles_named(self.roleset_versions[rs_uid].candidates(resource_version(obj)), role)
        group_size = max((int(r.get("podGroupSize", 1)) for r in role_specs), default=1)
        # Only taking down a really ready instance lowers availability; grace and excuses are
        # for judging what is left.
        was_available = (
            prev is not None
            and was_live
            and instance_key(prev) in ready_instances(self._role_pods(rs_uid, role), group_size)
        )
        self._store_pod(event_type, key, obj, now)
        out: list[Violation] = []
        if not role_specs:
            return out  # a role removed from the spec: its pods go whatever the budget
        budget = role_budget(role_specs)
        if is_live and not was_live:
            live = live_instances(self._role_pods(rs_uid, role))
            if len(live) > budget.max_live:
                out.append(
                    Violation(
                        "surge",
                        where,
                        f"pod {meta(obj).get('name')} made {len(live)} live instances > {budget.max_live}",
                    )
                )
            out += self._duplicates(rs_uid, where, obj)
        disrupted = was_available and (not is_live or (INPLACE_TARGET_ANNOTATION in annotations_of(obj)))
        if disrupted and key not in self.excuses:
            ready_after = self._ready_count(rs_uid, role, group_size, now)
            if ready_after < budget.min_ready:
                how = "an in-place update of" if is_live else "deleting"
                out.append(
                    Violation(
                        "availability",
                        where,
                        f"{how} pod {meta(obj).get('name')} left {ready_after} ready instances < {budget.min_ready}",
                    )
                )
        return out

    def _store_pod(self, event_type: str, key: str, obj: Obj, now: float) -> None:
        if event_type == "DELETED":
            self.pods.pop(key, None)
            self.went_unready.pop(key, None)
        else:
            prev = self.pods.get(key)
            was_ready = prev is not None and pod_available(prev)
            self._track_readiness(
                key, was_ready, pod_available(obj) or INPLACE_TARGET_ANNOTATION in annotations_of(obj), now
            )
            self.pods[key] = obj

    def _duplicates(self, rs_uid: str, where: str, pod: Obj) -> list[Violation]:
        out: list[Violation] = []
        owned = [p for p in self.pods.values() if controller_uid(p) == rs_uid and pod_live(p)]
        slot = member_key(pod)
        if slot is not None:
            holders = sorted(str(meta(p).get("name")) for p in owned if member_key(p) == slot)
            if len(holders) > 1:
                out.append(Violation(DUPLICATE, where, f"slot {slot[1:]} held by live pods {holders}"))
        specs = self.roleset_versions[rs_uid].candidates(resource_version(pod))
        allowed = 0
        for name in {r.get("name") for s in specs for r in s.get("roles") or ()}:
            versions = roles_named(specs, str(name))
            size = max(int(r.get("podGroupSize", 1)) for r in versions)
            allowed += role_budget(versions).max_live * size
        if len(owned) > allowed:
            out.append(Violation("surge", where, f"{len(owned)} live pods owned by the RoleSet > {allowed}"))
        return out
