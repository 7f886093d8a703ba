"""`kubectl storm status`: per-role counts, revisions, conditions, and why a rollout waits.

Everything here but `show` and `watch` is pure: dicts in, a report out (unit-tested).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from apis.v1alpha1 import constants as c
from controller.kubectl_storm.errors import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PAUSED,
    EXIT_STALLED,
    CliError,
    one_line,
)
from controller.kubectl_storm.lookup import (
    Target,
    get_storm_service,
    object_ref,
    owned_revisions,
    owned_rolesets,
)
from controller.kubectl_storm.output import age, render, table
from controller.runtime.errors import Gone
from controller.runtime.resources import STORMSERVICES
from controller.stormservice.labels import roleset_revision
from controller.stormservice.revisions import revision_name, revision_number
from controller.stormservice.scale import budget_for
from controller.stormservice.status import get_condition
from controller.stormservice.view import role_replicas, status_is_fresh

Obj = dict[str, Any]
State = Literal["complete", "progressing", "stalled", "paused"]


@dataclass(frozen=True, slots=True)
class RoleRow:
    roleset: str
    role: str
    desired: int
    ready: int
    updated: int
    #: The StormService revision the RoleSet was made from: its number when the revision
    #: still exists, and its name.
    revision: int | None
    revision_name: str
    #: The role's updateStrategy.partition; None when unset.
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class Rollout:
    state: State
    message: str


def role_rows(rolesets: Sequence[Mapping[str, Any]], numbers: Mapping[str, int]) -> list[RoleRow]:
    """One row per role of each RoleSet: desired from its spec, ready and updated from its status
    (instances, like the RoleSet counts them; a status older than the spec counts nothing as
    updated), revision as the StormService revision number the RoleSet was made from."""
    rows: list[RoleRow] = []
    for rs in rolesets:
        meta = rs.get("metadata") or {}
        name = str(meta.get("name", ""))
        if meta.get("deletionTimestamp"):
            name += " (terminating)"
        fresh = status_is_fresh(rs)
        reported = {r.get("name"): r for r in (rs.get("status") or {}).get("roles") or ()}
        revision = roleset_revision(rs)
        for role in (rs.get("spec") or {}).get("roles") or ():
            got = reported.get(role.get("name")) or {}
            rows.append(
                RoleRow(
                    roleset=name,
                    role=str(role.get("name", "")),
                    desired=role_replicas(role),
                    ready=int(got.get("readyReplicas") or 0),
                    updated=int(got.get("updatedReplicas") or 0) if fresh else 0,
                    revision=numbers.get(revision),
                    revision_name=revision,
                    partition=(role.get("updateStrategy") or {}).get("partition"),
                )
            )
    return rows


def _cond_text(cond: Mapping[str, Any]) -> str:
    message = str(cond.get("message") or "")
    return f"{cond.get('reason')}: {message}" if message else str(cond.get("reason"))


def rollout_state(storm_service: Mapping[str, Any]) -> Rollout:
    """Where the rollout stands, from the StormService's own status and conditions (README,
    "When a rollout does not finish"). A status older than the spec says nothing yet."""
    meta = storm_service.get("metadata") or {}
    spec = storm_service.get("spec") or {}
    status = storm_service.get("status") or {}
    generation = int(meta.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    if observed < generation:
        return Rollout(
            "progressing",
            f"waiting for the controller to observe generation {generation} (observed: {observed})",
        )
    progressing = get_condition(status, c.CONDITION_PROGRESSING)
    ready = get_condition(status, c.CONDITION_READY)
    failure = get_condition(status, c.CONDITION_REPLICA_FAILURE)
    failure_text = f"; ReplicaFailure {_cond_text(failure)}" if failure else ""
    if progressing is not None and progressing.get("status") == "False":
        return Rollout("stalled", f"{_cond_text(progressing)}{failure_text}")
    current, update = status.get("currentRevision"), status.get("updateRevision")
    if ready is not None and ready.get("status") == "True" and current == update:
        return Rollout("complete", str(ready.get("message") or "every RoleSet ready and updated"))
    if spec.get("paused"):
        why = (ready or {}).get("message") or ""
        return Rollout("paused", f"spec.paused{': ' + str(why) if why else ''}")
    if progressing is not None and progressing.get("reason") == c.REASON_PARTITION_HELD:
        # Nothing moves until a partition is lowered; `--watch` waits for that (or --timeout).
        return Rollout("progressing", f"held by partition: {progressing.get('message') or ''}{failure_text}")
    why = (ready or progressing or {}).get("message") or "the controller to report status"
    return Rollout("progressing", f"waiting for {why}{failure_text}")


def not_ready_rolesets(rows: Sequence[RoleRow]) -> list[str]:
    """`name (role ready/desired, ...)` for every RoleSet with a role short of ready."""
    short: dict[str, list[str]] = {}
    for r in rows:
        if r.ready < r.desired:
            short.setdefault(r.roleset, []).append(f"{r.role} {r.ready}/{r.desired} ready")
    return [f"{name} ({', '.join(parts)})" for name, parts in short.items()]


def build_report(
    storm_service: Mapping[str, Any], rolesets: Sequence[Mapping[str, Any]], revisions: Sequence[Obj]
) -> Obj:
    """What `status` shows, as data (`-o json|yaml` prints it as it is)."""
    meta = storm_service.get("metadata") or {}
    spec = storm_service.get("spec") or {}
    status = storm_service.get("status") or {}
    numbers = {revision_name(r): revision_number(r) for r in revisions}
    rows = role_rows(rolesets, numbers)
    rollout = rollout_state(storm_service)
    waiting = not_ready_rolesets(rows) if rollout.state != "complete" else []

    def revision(name: str | None) -> Obj:
        return {"name": name or "", "revision": numbers.get(name or "")}

    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "generation": int(meta.get("generation") or 0),
        "observedGeneration": int(status.get("observedGeneration") or 0),
        "paused": bool(spec.get("paused")),
        "replicas": budget_for(spec).replicas,
        "totalReplicas": int(status.get("replicas") or 0),
        "readyReplicas": int(status.get("readyReplicas") or 0),
        "updatedReplicas": int(status.get("updatedReplicas") or 0),
        "currentReplicas": int(status.get("currentReplicas") or 0),
        "currentRevision": revision(status.get("currentRevision")),
        "updateRevision": revision(status.get("updateRevision")),
        "roles": [
            {
                "roleSet": r.roleset,
                "role": r.role,
                "desired": r.desired,
                "ready": r.ready,
                "updated": r.updated,
                "revision": r.revision,
                "revisionName": r.revision_name,
                **({} if r.partition is None else {"partition": r.partition}),
            }
            for r in rows
        ],
        "conditions": [dict(cond) for cond in status.get("conditions") or ()],
        "rollout": {"state": rollout.state, "message": rollout.message, "rolesetsNotReady": waiting},
    }


def _revision_text(rev: Mapping[str, Any]) -> str:
    if not rev.get("name"):
        return "<none>"
    number = rev.get("revision")
    return f"{number} ({rev['name']})" if number is not None else str(rev["name"])


def format_report(report: Mapping[str, Any], now: datetime) -> str:
    lines = [
        f"Name:        {report['name']}",
        f"Namespace:   {report['namespace']}",
        f"Replicas:    {report['replicas']} desired | {report['totalReplicas']} total | "
        f"{report['readyReplicas']} ready | {report['updatedReplicas']} updated | "
        f"{report['currentReplicas']} current",
        f"Revisions:   current {_revision_text(report['currentRevision'])}, "
        f"update {_revision_text(report['updateRevision'])}",
        f"Paused:      {str(report['paused']).lower()}",
        "",
    ]
    roles = report["roles"]
    if roles:
        # Only when a role has one: the table of a StormService without partitions is unchanged.
        partitioned = any("partition" in r for r in roles)
        lines.append(
            table(
                ["ROLESET", "ROLE", "DESIRED", "READY", "UPDATED", "REVISION"]
                + (["PARTITION"] if partitioned else []),
                [
                    [
                        r["roleSet"],
                        r["role"],
                        r["desired"],
                        r["ready"],
                        r["updated"],
                        r["revision"] if r["revision"] is not None else r["revisionName"] or "<none>",
                    ]
                    + ([r.get("partition", "")] if partitioned else [])
                    for r in roles
                ],
            )
        )
    else:
        lines.append("No RoleSets.")
    lines.append("")
    conditions = report["conditions"]
    if conditions:
        lines.append(
            table(
                ["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"],
                [
                    [
                        cond.get("type"),
                        cond.get("status"),
                        cond.get("reason"),
                        age(cond.get("lastTransitionTime"), now),
                        cond.get("message", ""),
                    ]
                    for cond in conditions
                ],
            )
        )
    else:
        lines.append("No conditions.")
    lines.append("")
    rollout = report["rollout"]
    lines.append(f"Rollout:     {rollout['state']}: {rollout['message']}")
    if rollout["rolesetsNotReady"]:
        lines.append(f"Not ready:   {'; '.join(rollout['rolesetsNotReady'])}")
    return "\n".join(lines)


async def collect(t: Target) -> Obj:
    ss = await get_storm_service(t)
    rolesets = await owned_rolesets(t, ss)
    revisions = await owned_revisions(t, ss)
    return build_report(ss, rolesets, revisions)


async def show(t: Target, output: str | None) -> int:
    report = await collect(t)
    if output:
        print(render(report, output))
    else:
        print(format_report(report, datetime.now(UTC)))
    return EXIT_OK


#: Exit code of `status --watch` per final state.
WATCH_EXIT: dict[State, int] = {"complete": EXIT_OK, "stalled": EXIT_STALLED, "paused": EXIT_PAUSED}


async def watch(t: Target, give_up_after: float | None) -> int:
    """Follow the StormService until its rollout completes (0), stalls (2) or is paused (3),
    printing each new state, like `kubectl rollout status`. Woken by a watch on the one object;
    every watch is short, so a lost connection costs at most its length."""
    deadline = None if give_up_after is None else time.monotonic() + give_up_after
    last = ""

    def report_state(ss: Mapping[str, Any]) -> int | None:
        nonlocal last
        rollout = rollout_state(ss)
        if rollout.state == "complete":
            print(f"{object_ref(t.name)} successfully rolled out ({rollout.message})", flush=True)
            return EXIT_OK
        if rollout.state in WATCH_EXIT:
            print(
                f"error: {object_ref(t.name)} rollout {rollout.state}: {one_line(rollout.message)}",
                file=sys.stderr,
                flush=True,
            )
            return WATCH_EXIT[rollout.state]
        if rollout.message != last:
            print(f"Rollout progressing: {rollout.message}", flush=True)
            last = rollout.message
        return None

    async def follow() -> int:
        while True:
            ss = await get_storm_service(t)
            code = report_state(ss)
            if code is not None:
                return code
            rv = ss["metadata"].get("resourceVersion")
            with contextlib.suppress(Gone):
                async for event in t.client.watch(
                    STORMSERVICES,
                    t.namespace,
                    resource_version=rv,
                    field_selector=f"metadata.name={t.name}",
                    timeout_seconds=30,
                ):
                    kind = event.get("type")
                    if kind == "DELETED":
                        raise CliError(f"error: {object_ref(t.name)} was deleted while watching")
                    if kind in ("ADDED", "MODIFIED"):
                        code = report_state(event.get("object") or {})
                        if code is not None:
                            return code

    if deadline is None:
        return await follow()
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            return await follow()
    except TimeoutError:
        print(
            f"error: timed out waiting for the rollout of {object_ref(t.name)} ({last or 'no progress'})",
            file=sys.stderr,
        )
        return EXIT_ERROR
