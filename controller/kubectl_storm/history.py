"""`kubectl storm history`: the StormService's revisions and what changed between them.

A revision records `spec.template` without role replicas (controller/stormservice/revisions.py):
replicas are scaling, not versions, so they never show up as a change here.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from controller.kubectl_storm.errors import EXIT_OK, CliError
from controller.kubectl_storm.lookup import Target, get_storm_service, owned_revisions
from controller.kubectl_storm.output import age, render, table, to_yaml
from controller.runtime.revision import HASH_LABEL
from controller.stormservice.revisions import revision_name, revision_number, template_of

Obj = dict[str, Any]

CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"


def revision_hash(revision: Mapping[str, Any]) -> str:
    return str(((revision.get("metadata") or {}).get("labels") or {}).get(HASH_LABEL) or "")


def change_cause(revision: Mapping[str, Any]) -> str:
    return str(((revision.get("metadata") or {}).get("annotations") or {}).get(CHANGE_CAUSE_ANNOTATION) or "")


def template_diff(
    old: Mapping[str, Any] | None, new: Mapping[str, Any], old_label: str, new_label: str
) -> str:
    """Unified diff of two role templates as sorted YAML; empty when they read the same."""
    before = to_yaml(dict(old)).splitlines(keepends=True) if old is not None else []
    after = to_yaml(dict(new)).splitlines(keepends=True)
    return "".join(difflib.unified_diff(before, after, fromfile=old_label, tofile=new_label, n=3))


def find_revision(revisions: Sequence[Obj], number: int) -> Obj:
    for rev in revisions:
        if revision_number(rev) == number:
            return rev
    raise CliError(f"error: unable to find the specified revision {number} in history")


def predecessor(revisions: Sequence[Obj], rev: Mapping[str, Any]) -> Obj | None:
    """The newest revision numbered below `rev` (`revisions` oldest first)."""
    older = [r for r in revisions if revision_number(r) < revision_number(rev)]
    return older[-1] if older else None


def revision_marks(status: Mapping[str, Any], rev: Mapping[str, Any]) -> str:
    name = revision_name(rev)
    marks = [
        label
        for label, field in (("current", "currentRevision"), ("update", "updateRevision"))
        if status.get(field) == name
    ]
    return ",".join(marks)


def history_report(storm_service: Mapping[str, Any], revisions: Sequence[Obj]) -> list[Obj]:
    """Per revision, oldest first: number, name, hash, creation time, change-cause, whether it is
    the current/update revision, its template and the diff from its predecessor."""
    status = storm_service.get("status") or {}
    out: list[Obj] = []
    for rev in revisions:
        prev = predecessor(revisions, rev)
        number = revision_number(rev)
        out.append(
            {
                "revision": number,
                "name": revision_name(rev),
                "hash": revision_hash(rev),
                "created": (rev.get("metadata") or {}).get("creationTimestamp"),
                "changeCause": change_cause(rev),
                "status": revision_marks(status, rev),
                "template": template_of(rev),
                "diff": template_diff(
                    template_of(prev) if prev is not None else None,
                    template_of(rev),
                    f"revision {revision_number(prev)}" if prev is not None else "(none)",
                    f"revision {number}",
                ),
            }
        )
    return out


def format_history(name: str, entries: Sequence[Mapping[str, Any]], now: datetime) -> str:
    lines = [f"{name}:"]
    lines.append(
        table(
            ["REVISION", "HASH", "AGE", "STATUS", "CHANGE-CAUSE"],
            [
                [e["revision"], e["hash"], age(e["created"], now), e["status"], e["changeCause"] or "<none>"]
                for e in entries
            ],
        )
    )
    for e in entries[1:]:
        lines.append("")
        lines.append(f"What changed in revision {e['revision']}:")
        lines.append(e["diff"].rstrip("\n") or "  (no change in the role templates)")
    return "\n".join(lines)


def format_revision(entry: Mapping[str, Any]) -> str:
    lines = [f"revision {entry['revision']} ({entry['name']}), template:"]
    lines.append(to_yaml(entry["template"]).rstrip("\n"))
    if entry["diff"] and not entry["diff"].startswith("--- (none)"):
        lines.append("")
        lines.append("What changed:")
        lines.append(entry["diff"].rstrip("\n"))
    return "\n".join(lines)


async def show(t: Target, revision: int | None, output: str | None) -> int:
    ss = await get_storm_service(t)
    revisions = await owned_revisions(t, ss)
    entries = history_report(ss, revisions)
    if revision is not None:
        find_revision(revisions, revision)
        entry = next(e for e in entries if e["revision"] == revision)
        print(render(entry, output) if output else format_revision(entry))
        return EXIT_OK
    if output:
        print(render(entries, output))
    elif not entries:
        print(f"No rollout history found for {t.name}.")
    else:
        print(format_history(t.name, entries, datetime.now(UTC)))
    return EXIT_OK
