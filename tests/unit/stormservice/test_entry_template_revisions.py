"""A role's entryTemplate is part of the StormService revision and of the role's own revision;
a StormService without one keeps its revisions as they were (the golden hash is pinned in
test_revisions.py)."""

from __future__ import annotations

from typing import Any

from controller.runtime.revision import hash_revision_data
from controller.stormservice.labels import RoleRevision
from controller.stormservice.revisions import revision_content, revision_data, role_revisions
from tests.unit.stormservice.test_revisions import cr, role, template


def entry(image: str) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "c", "image": image}]}}


def test_an_entry_template_is_a_new_revision_and_its_change_too() -> None:
    plain = template(role("decode", "w1", podGroupSize=3))
    with_entry = template(role("decode", "w1", podGroupSize=3, entryTemplate=entry("e1")))
    changed = template(role("decode", "w1", podGroupSize=3, entryTemplate=entry("e2")))
    hashes = {hash_revision_data(revision_data(t), 0) for t in (plain, with_entry, changed)}
    assert len(hashes) == 3
    contents = {revision_content(revision_data(t)) for t in (plain, with_entry, changed)}
    assert len(contents) == 3


def test_entry_template_content_is_normalized_like_the_template() -> None:
    """API-server defaults in a stored entryTemplate are not a change of revision."""
    bare = template(role("decode", "w1", podGroupSize=3, entryTemplate=entry("e1")))
    defaulted_entry = entry("e1")
    defaulted_entry["spec"]["restartPolicy"] = "Always"
    defaulted_entry["spec"]["dnsPolicy"] = "ClusterFirst"
    defaulted = template(role("decode", "w1", podGroupSize=3, entryTemplate=defaulted_entry))
    assert revision_content(revision_data(bare)) == revision_content(revision_data(defaulted))


def test_changing_only_the_entry_template_moves_only_that_role_revision() -> None:
    r1 = cr(
        "ss-1",
        1,
        template(role("prefill", "p1"), role("decode", "d1", podGroupSize=2, entryTemplate=entry("e1"))),
    )
    r2 = cr(
        "ss-2",
        2,
        template(role("prefill", "p1"), role("decode", "d1", podGroupSize=2, entryTemplate=entry("e2"))),
    )
    assert role_revisions([r1, r2], r2) == {
        "prefill": RoleRevision(1, "ss-1"),
        "decode": RoleRevision(2, "ss-2"),
    }
