"""PodInfoCache: pod_info computed once per pod version, per RoleSet, and never stale."""

from __future__ import annotations

import copy
from typing import Any

from controller.roleset.instances import PodInfoCache, pod_info
from tests.unit.roleset.factories import mkpod


def versioned(name: str, uid: str, rv: str, **kw: Any) -> dict[str, Any]:
    pod = mkpod(name, **kw)
    pod["metadata"].update(uid=uid, resourceVersion=rv)
    return pod


def test_same_version_reuses_the_info_and_a_new_version_reads_the_pod_again() -> None:
    cache = PodInfoCache()
    a1 = versioned("a", "u-a", "1", ready=False)
    b1 = versioned("b", "u-b", "1", ready=True)
    first = cache.refresh("ns/rs", [a1, b1])
    assert first == {"u-a": pod_info(a1), "u-b": pod_info(b1)}
    a2 = versioned("a", "u-a", "2", ready=True)
    second = cache.refresh("ns/rs", [a2, b1])
    assert second["u-a"] == pod_info(a2) and second["u-a"].ready
    assert second["u-b"] is first["u-b"]  # unchanged pod: the same object, not recomputed


def test_an_empty_version_is_never_trusted() -> None:
    cache = PodInfoCache()
    pod = versioned("a", "u-a", "", ready=False)
    cache.refresh("ns/rs", [pod])
    changed = copy.deepcopy(pod)
    changed["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    assert cache.refresh("ns/rs", [changed])["u-a"].ready


def test_departed_pods_are_dropped_and_owners_are_separate() -> None:
    cache = PodInfoCache()
    a = versioned("a", "u-a", "1")
    b = versioned("b", "u-b", "1")
    cache.refresh("ns/one", [a, b])
    cache.refresh("ns/two", [b])
    assert set(cache.refresh("ns/one", [b])) == {"u-b"}
    # "a" left ns/one: when it comes back (same uid and version) it is read again, not kept.
    assert cache.refresh("ns/one", [a, b])["u-a"] == pod_info(a)
    cache.forget("ns/one")
    assert set(cache.refresh("ns/two", [b])) == {"u-b"}


def test_pods_without_uid_are_left_to_the_caller() -> None:
    cache = PodInfoCache()
    pod = mkpod("no-uid")
    del pod["metadata"]["uid"]
    assert cache.refresh("ns/rs", [pod]) == {}
