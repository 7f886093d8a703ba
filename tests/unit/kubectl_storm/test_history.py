"""Revision history: the table's facts and the diff of role templates between revisions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.kubectl_storm.errors import CliError
from controller.kubectl_storm.history import (
    find_revision,
    format_history,
    history_report,
    predecessor,
    template_diff,
)
from controller.stormservice.revisions import revision_template
from tests.unit.kubectl_storm.helpers import revision, storm_service, template


def test_diff_shows_the_changed_lines_only_around_the_change() -> None:
    old, new = revision_template(template("img:1")), revision_template(template("img:2"))
    diff = template_diff(old, new, "revision 1", "revision 2")
    lines = diff.splitlines()
    assert lines[:2] == ["--- revision 1", "+++ revision 2"]
    changed = [line for line in lines[2:] if line[:1] in "+-"]
    assert changed == [
        "-        - image: img:1",
        "+        - image: img:2",
        "-        - image: img:1",
        "+        - image: img:2",
    ]


def test_equal_templates_have_no_diff() -> None:
    assert template_diff(template(), template(), "a", "b") == ""


def test_role_replicas_are_not_a_change() -> None:
    """Revisions do not record them (scaling is not a version)."""
    entries = history_report(
        storm_service(),
        [revision("pd-aaa", 1, template(prefill=1)), revision("pd-bbb", 2, template(prefill=5))],
    )
    assert entries[1]["diff"] == ""


@pytest.mark.parametrize(
    ("numbers", "of", "want"),
    [([1, 2, 3], 3, 2), ([1, 2, 3], 1, None), ([2, 5], 5, 2), ([4, 7, 9], 7, 4)],
)
def test_predecessor(numbers: list[int], of: int, want: int | None) -> None:
    revisions = [revision(f"pd-h{n}", n, template(f"img:{n}")) for n in numbers]
    prev = predecessor(revisions, find_revision(revisions, of))
    assert (None if prev is None else prev["revision"]) == want


def test_no_such_revision() -> None:
    with pytest.raises(CliError, match=r"^error: unable to find the specified revision 4 in history$"):
        find_revision([revision("pd-aaa", 1, template())], 4)


def test_history_table_marks_current_and_update() -> None:
    ss = storm_service(current="pd-aaa", update="pd-bbb")
    ss["metadata"]["annotations"] = {}
    revs = [
        revision("pd-aaa", 1, template("img:1"), created="2026-01-01T00:00:00Z"),
        revision("pd-bbb", 2, template("img:2"), created="2026-01-01T00:10:00Z"),
    ]
    revs[1]["metadata"]["annotations"] = {"kubernetes.io/change-cause": "new image"}
    entries = history_report(ss, revs)
    assert [(e["revision"], e["hash"], e["status"], e["changeCause"]) for e in entries] == [
        (1, "aaa", "current", ""),
        (2, "bbb", "update", "new image"),
    ]
    text = format_history("pd", entries, datetime(2026, 1, 1, 1, 0, 0, tzinfo=UTC))
    head = text.splitlines()[:4]
    assert head == [
        "pd:",
        "REVISION   HASH   AGE   STATUS    CHANGE-CAUSE",
        "1          aaa    60m   current   <none>",
        "2          bbb    50m   update    new image",
    ]
    assert "What changed in revision 2:" in text and "+        - image: img:2" in text
