"""A StormService pass reads only the revisions it may own, through two indexes, and finds the
same ones a scan of the namespace would."""

from __future__ import annotations

from typing import Any

import pytest

from apis.v1alpha1 import constants as c
from controller.runtime.revision import _owned_or_orphan
from controller.runtime.store import Store
from controller.stormservice.controller import (
    INDEX_ORPHAN_REVISION_BY_NAME,
    orphan_revision_index,
    revision_candidates,
)

OWNER = {"metadata": {"namespace": "ns", "name": "llm", "uid": "u-llm"}}


def rev(
    name: str, *, ns: str = "ns", label: str | None = "llm", owner_uid: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": ns, "name": name, "uid": f"r-{name}", "labels": {}}
    if label is not None:
        meta["labels"][c.LABEL_CONTROLLER_REVISION_NAME] = label
    if owner_uid is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": c.API_VERSION,
                "kind": "StormService",
                "name": "x",
                "uid": owner_uid,
                "controller": True,
            }
        ]
    return {"metadata": meta}


REVISIONS = [
    rev("owned", owner_uid="u-llm"),
    rev("owned-relabelled", label="other", owner_uid="u-llm"),
    rev("orphan"),
    rev("orphan-of-another", label="other"),
    rev("orphan-unlabelled", label=None),
    rev("another-owner", owner_uid="u-other"),
    rev("owned-elsewhere", ns="ns2", owner_uid="u-llm"),
    rev("orphan-elsewhere", ns="ns2"),
]


def ours(r: dict[str, Any]) -> bool:  # StormServiceSync._claim_revisions' match
    owned = any(ref.get("uid") == "u-llm" for ref in r["metadata"].get("ownerReferences") or ())
    return owned or r["metadata"]["labels"].get(c.LABEL_CONTROLLER_REVISION_NAME) == "llm"


@pytest.fixture
def store() -> Store:
    s = Store()
    s.add_indexers({INDEX_ORPHAN_REVISION_BY_NAME: orphan_revision_index})
    for r in REVISIONS:
        s.add(r)
    return s


def test_the_candidates_are_what_a_namespace_scan_claims(store: Store) -> None:
    scanned = {
        r["metadata"]["name"]
        for r in REVISIONS
        if r["metadata"]["namespace"] == "ns" and _owned_or_orphan(r, "u-llm") and ours(r)
    }
    candidates = {r["metadata"]["name"] for r in revision_candidates(store, OWNER) if ours(r)}
    assert candidates == scanned == {"owned", "owned-relabelled", "orphan"}


def test_the_candidates_leave_out_the_rest(store: Store) -> None:
    names = sorted(r["metadata"]["name"] for r in revision_candidates(store, OWNER))
    assert names == ["orphan", "owned", "owned-relabelled"]
