"""Every unit test runs with a guard on the informers' cached objects: they share their equal
parts (controller/runtime/slim.py), so a write into one, even one that the code making it
catches, fails the test. The controllers' sync tests run on real informers over a FakeClient,
so this covers what the syncs read from their caches."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.cache_guard import recording_cache_writes


@pytest.fixture(autouse=True)
def cached_objects_stay_unchanged(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    with recording_cache_writes(monkeypatch) as writes:
        yield
    if request.node.get_closest_marker("writes_cached_objects") is None:
        assert not writes, "a write into a cached (shared, read-only) object:\n" + writes[0]
