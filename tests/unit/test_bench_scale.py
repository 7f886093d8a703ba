"""The pure parts of bench/scale.py: when each kind counts as converged, and the targets."""

from __future__ import annotations

from typing import Any

import pytest

from bench.scale import (
    Sizes,
    deployment_done,
    parse_args,
    replicaset_done,
    stormservice_done,
    targets,
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
