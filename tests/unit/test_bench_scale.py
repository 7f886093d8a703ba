"""The pure parts of bench/scale.py: when each kind counts as converged, and the targets."""

from __future__ import annotations

from typing import Any

import pytest

import bench.scale
from bench.pods import PodFactory
from bench.scale import (
    REALISTIC_LABEL,
    Sizes,
    deployment_done,
    minimum_writes,
    parse_args,
    poll_until,
    realistic_pod,
    replicaset_done,
    stormservice_done,
    targets,
    writes_table,
)


def _storm(**status: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "observedGeneration": 2,
        "readyReplicas": 1,
        "updatedReplicas": 1,
        "currentRevision": "r2",
        "updateRevision": "r2",
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    return {"metadata": {"generation": 2}, "spec": {"replicas": 1}, "status": base | status}


@pytest.mark.parametrize(
    ("obj", "done"),
    [
        (_storm(), True),
        (_storm(observedGeneration=1), False),
        (_storm(currentRevision="r1"), False),
        (_storm(updatedReplicas=0), False),
        (_storm(readyReplicas=0), False),
        (_storm(conditions=[{"type": "Ready", "status": "False"}]), False),
        (_storm(conditions=[]), False),
    ],
)
def test_stormservice_done(obj: dict[str, Any], done: bool) -> None:
    assert stormservice_done(obj) is done


def _deploy(**status: Any) -> dict[str, Any]:
    base = {
        "observedGeneration": 3,
        "replicas": 10,
        "updatedReplicas": 10,
        "readyReplicas": 10,
        "availableReplicas": 10,
    }
    return {"metadata": {"generation": 3}, "spec": {"replicas": 10}, "status": base | status}


@pytest.mark.parametrize(
    ("obj", "done"),
    [
        (_deploy(), True),
        (_deploy(replicas=12), False),  # old pods still there (surge)
        (_deploy(updatedReplicas=8), False),
        (_deploy(availableReplicas=9), False),
        (_deploy(observedGeneration=2), False),
    ],
)
def test_deployment_done(obj: dict[str, Any], done: bool) -> None:
    assert deployment_done(obj) is done


def test_replicaset_done_needs_every_pod_ready_and_no_extra() -> None:
    rs = {"metadata": {"generation": 1}, "spec": {"replicas": 10}}
    assert replicaset_done(rs | {"status": {"observedGeneration": 1, "replicas": 10, "readyReplicas": 10}})
    assert not replicaset_done(rs | {"status": {"observedGeneration": 1, "replicas": 10, "readyReplicas": 9}})
    assert not replicaset_done(
        rs | {"status": {"observedGeneration": 1, "replicas": 11, "readyReplicas": 10}}
    )


def test_targets_flag_what_is_missed() -> None:
    figures: dict[str, Any] = {
        "s1": {"ratio": 1.3, "cpu_ratio": 1.2},
        "s2": {"ratio": 0.9},
        "memory": {"kib_per_cached_small_pod": 12.0, "rss_empty_mib": 55.0},
        "idle": {"writes": 0},
    }
    missed = {name for name, value, _, target in targets(figures) if value > target}
    assert missed == {"ratio_create (S1 seconds ours / kcm)", "KiB RSS per cached small pod"}
    assert not any("in place" in name for name, *_ in targets(figures))


def test_targets_include_the_in_place_ratio_when_s3_ran() -> None:
    figures: dict[str, Any] = {
        "s1": {"ratio": 0.9, "cpu_ratio": 1.2},
        "s2": {"ratio": 0.9},
        "s3": {"ratio": 1.4},
        "memory": {"kib_per_cached_small_pod": 8.0, "rss_empty_mib": 55.0},
        "idle": {"writes": 0},
    }
    missed = {name for name, value, _, target in targets(figures) if value > target}
    assert missed == {"ratio in place (S3 seconds ours / kcm)"}


@pytest.mark.parametrize(
    ("argv", "in_place"),
    [([], True), (["--smoke"], True), (["--no-in-place"], False), (["--smoke", "--no-in-place"], False)],
)
def test_s3_runs_unless_skipped(argv: list[str], in_place: bool) -> None:
    assert parse_args(argv).in_place is in_place
    assert Sizes().in_place and Sizes.smoke().in_place


def test_targets_include_the_realistic_pod_at_the_largest_count() -> None:
    figures: dict[str, Any] = {
        "s1": {"ratio": 0.9, "cpu_ratio": 1.2},
        "s2": {"ratio": 0.9},
        "memory": {
            "kib_per_cached_small_pod": 8.0,
            "rss_empty_mib": 55.0,
            "realistic": [{"pods": 1000, "kib_per_pod": 9.0}, {"pods": 10000, "kib_per_pod": 11.0}],
        },
        "idle": {"writes": 0},
    }
    missed = {name for name, value, _, target in targets(figures) if value > target}
    assert missed == {"KiB RSS per cached realistic pod (10,000)"}


def test_realistic_pod_is_creatable_cached_and_owned_by_nothing() -> None:
    factory = PodFactory()
    cached = factory.pod(7)
    pod = realistic_pod(factory, 7, "kwok-node-3")
    meta = pod["metadata"]
    assert (
        not {"uid", "resourceVersion", "creationTimestamp", "managedFields", "ownerReferences"} & meta.keys()
    )
    assert "status" not in pod
    assert pod["spec"]["nodeName"] == "kwok-node-3"
    assert meta["labels"][REALISTIC_LABEL] == "realistic"
    # Still in the pod informer's cache (its selector is the roleset-name label), still the pod
    # of bench/pods.py otherwise.
    assert meta["labels"]["roleset-name"] == cached["metadata"]["labels"]["roleset-name"]
    assert (meta["name"], meta["namespace"]) == (cached["metadata"]["name"], cached["metadata"]["namespace"])
    assert pod["spec"]["containers"] == cached["spec"]["containers"]
    assert realistic_pod(factory, 8, "n")["metadata"]["name"] != meta["name"]


@pytest.mark.parametrize(
    ("scenario", "sizes", "expected"),
    [
        (
            "create",
            {"stormservices": 50, "rolesets": 50, "pods": 1000},
            {
                "create pods": 1000,
                "create rolesets": 50,
                "create controllerrevisions": 50,
                "create services": 50,
                "patch rolesets/status": 50,
                "patch stormservices/status": 50,
            },
        ),
        (
            "create",
            {"stormservices": 0, "rolesets": 100, "pods": 1000},
            {"create pods": 1000, "patch rolesets/status": 100},
        ),
        (
            "rolling",
            {"stormservices": 50, "rolesets": 50, "pods": 1000},
            {
                "create controllerrevisions": 50,
                "create rolesets": 50,
                "delete rolesets": 50,
                "create pods": 1000,
                "patch rolesets/status": 50,
                "patch stormservices/status": 50,
            },
        ),
        (
            "in-place",
            {"stormservices": 50, "rolesets": 50, "pods": 1000},
            {
                "create controllerrevisions": 50,
                "patch rolesets": 50,
                "patch pods": 1000,
                "patch rolesets/status": 50,
                "patch stormservices/status": 50,
            },
        ),
        (
            "scale",
            {"stormservices": 10, "rolesets": 20, "pods": 400},
            {
                "create rolesets": 20,
                "create pods": 400,
                "patch rolesets/status": 20,
                "patch stormservices/status": 10,
            },
        ),
    ],
)
def test_minimum_writes(scenario: str, sizes: dict[str, int], expected: dict[str, int]) -> None:
    assert minimum_writes(scenario, **sizes) == expected


def test_minimum_writes_refuses_an_unknown_scenario() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        minimum_writes("teleport", stormservices=1, rolesets=1, pods=1)


def test_writes_table_shows_what_is_beyond_the_minimum() -> None:
    figures: dict[str, Any] = {
        "s1": {
            "writes_ours": {"create pods": 10, "create events": 3, "patch rolesets/status": 4},
            "writes_minimum": {"create pods": 10, "patch rolesets/status": 1, "create services": 1},
        },
        "s2": {"writes_ours": {"create pods": 10}, "writes_minimum": {"create pods": 10}},
    }
    header, s1, s2 = writes_table(figures)
    assert header.split()[:3] == ["writes", "ours", "minimum"]
    assert s1.split()[:4] == ["S1", "create", "17", "12"]
    assert s1.endswith("create events +3, create services -1, patch rolesets/status +3")
    assert s2.endswith("-")


async def test_poll_until_returns_once_progress_says_done() -> None:
    answers = iter(["1/3 done", "2/3 done", None])
    calls = 0

    async def progress() -> str | None:
        nonlocal calls
        calls += 1
        return next(answers)

    await poll_until(progress, every=0)
    assert calls == 3


async def test_poll_until_raises_with_the_last_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench.scale, "CONVERGE_TIMEOUT", 0.0)

    async def progress() -> str | None:
        return "S1 StormServices: 4/50 done"

    with pytest.raises(TimeoutError, match=r"^S1 StormServices: 4/50 done after 0s$"):
        await poll_until(progress, every=0)
