"""revision_content is computed once per object version, and a new version is computed again."""

from __future__ import annotations

from typing import Any

import pytest

from controller.stormservice import revisions
from controller.stormservice.revisions import ContentMemo, revision_content, revision_data

TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"app": "x"}},
    "spec": {"roles": [{"name": "w", "replicas": 2, "template": {"spec": {"containers": [{"name": "c"}]}}}]},
}


def storm(uid: str | None, generation: int | None, image: str = "img:1") -> dict[str, Any]:
    template = {**TEMPLATE, "spec": {"roles": [{**TEMPLATE["spec"]["roles"][0], "image": image}]}}
    meta: dict[str, Any] = {"name": "s"}
    if uid:
        meta["uid"] = uid
    if generation:
        meta["generation"] = generation
    return {"metadata": meta, "spec": {"template": template}}


def revision(uid: str | None, rv: str | None, image: str = "img:1") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "s-1"}
    if uid:
        meta["uid"] = uid
    if rv:
        meta["resourceVersion"] = rv
    return {"metadata": meta, "data": revision_data(storm(None, None, image)["spec"]["template"])}


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = revisions.revision_content

    def counting(data: Any) -> bytes:
        calls.append(1)
        return real(data)

    monkeypatch.setattr(revisions, "revision_content", counting)
    return calls


@pytest.mark.parametrize(
    ("first", "second", "computations"),
    [
        (storm("u1", 1), storm("u1", 1), 1),  # same generation: remembered
        (storm("u1", 1), storm("u1", 2, "img:2"), 2),  # a new generation
        (storm("u1", 1), storm("u2", 1), 2),  # another StormService of the same name
        (storm(None, 1), storm(None, 1), 2),  # no uid: not remembered
        (storm("u1", None), storm("u1", None), 2),
    ],
)
def test_template_content_once_per_generation(
    computed: list[int], first: dict[str, Any], second: dict[str, Any], computations: int
) -> None:
    memo = ContentMemo()
    for obj in (first, second):
        assert memo.of_template(obj) == revision_content(revision_data(obj["spec"]["template"]))
    assert len(computed) == computations


@pytest.mark.parametrize(
    ("first", "second", "computations"),
    [
        (revision("r1", "10"), revision("r1", "10"), 1),
        (revision("r1", "10"), revision("r1", "11"), 2),  # renumbered (a rollback): new version
        (revision("r1", "10"), revision("r2", "10"), 2),
        (revision(None, "10"), revision(None, "10"), 2),
        (revision("r1", None), revision("r1", None), 2),
    ],
)
def test_revision_content_once_per_resource_version(
    computed: list[int], first: dict[str, Any], second: dict[str, Any], computations: int
) -> None:
    memo = ContentMemo()
    for rev in (first, second):
        assert memo.of_revision(rev) == revision_content(rev["data"])
    assert len(computed) == computations


def test_the_memo_is_bounded(computed: list[int]) -> None:
    memo = ContentMemo(size=2)
    for rv in ("1", "2", "3"):
        memo.of_revision(revision("r", rv))
    memo.of_revision(revision("r", "1"))  # evicted: computed again
    memo.of_revision(revision("r", "3"))  # kept
    assert len(computed) == 4
