from __future__ import annotations

import pytest

from controller.runtime import metrics

EXPECTED = {
    # client-go workqueue
    "workqueue_depth": "gauge",
    "workqueue_adds": "counter",
    "workqueue_queue_duration_seconds": "histogram",
    "workqueue_work_duration_seconds": "histogram",
    "workqueue_unfinished_work_seconds": "gauge",
    "workqueue_longest_running_processor_seconds": "gauge",
    "workqueue_retries": "counter",
    # client-go rest client
    "rest_client_requests": "counter",
    "rest_client_request_duration_seconds": "histogram",
    # controller-runtime reconcile
    "controller_runtime_reconcile": "counter",
    "controller_runtime_reconcile_errors": "counter",
    "controller_runtime_reconcile_time_seconds": "histogram",
    "controller_runtime_active_workers": "gauge",
    "controller_runtime_max_concurrent_reconciles": "gauge",
    # ours
    "stormservice_api_writes": "counter",
    "stormservice_informer_cached_objects": "gauge",
}


def test_registry_has_the_agreed_metrics() -> None:
    families = {m.name: m.type for m in metrics.REGISTRY.collect()}
    for name, kind in EXPECTED.items():
        assert families.get(name) == kind, name


@pytest.mark.parametrize(
    ("metric", "labels"),
    [
        (metrics.WORKQUEUE_DEPTH, {"name": "q"}),
        (metrics.REST_CLIENT_REQUESTS, {"code": "200", "method": "GET", "host": "h"}),
        (metrics.REST_CLIENT_REQUEST_DURATION, {"verb": "GET", "host": "h"}),
        (metrics.API_WRITES, {"verb": "create", "resource": "pods"}),
        (metrics.RECONCILE_TOTAL, {"controller": "c", "result": "success"}),
        (metrics.RECONCILE_ERRORS, {"controller": "c"}),
        (metrics.RECONCILE_TIME, {"controller": "c"}),
        (metrics.ACTIVE_WORKERS, {"controller": "c"}),
        (metrics.MAX_CONCURRENT_RECONCILES, {"controller": "c"}),
    ],
)
def test_label_names(metric: object, labels: dict[str, str]) -> None:
    metric.labels(**labels)  # type: ignore[attr-defined]  # raises on wrong label names


def test_render_latest_exposes_text_format() -> None:
    metrics.RECONCILE_TOTAL.labels(controller="render-test", result="requeue").inc()
    metrics.API_WRITES.labels(verb="patch", resource="render-test").inc(2)
    text = metrics.render_latest().decode()
    assert 'controller_runtime_reconcile_total{controller="render-test",result="requeue"} 1.0' in text
    assert 'stormservice_api_writes_total{resource="render-test",verb="patch"} 2.0' in text
    assert "# TYPE workqueue_depth gauge" in text
    assert "process_" in text or "python_info" in text
    assert metrics.CONTENT_TYPE.startswith("text/plain")
    assert (
        metrics.sample_value("stormservice_api_writes_total", {"verb": "patch", "resource": "render-test"})
        == 2.0
    )
    assert metrics.sample_value("no_such_metric") is None


def test_cached_objects_sum_the_tracked_caches_per_resource_until_untracked() -> None:
    counter = metrics.CachedObjects()
    untrack_a = counter.track("pods.core/v1", [1, 2, 3])
    counter.track("pods.core/v1", [4])
    counter.track("rolesets.orchestration.aibrix.ai/v1alpha1", [])

    def samples() -> dict[str, float]:
        return {s.labels["resource"]: s.value for family in counter.collect() for s in family.samples}

    assert samples() == {"pods.core/v1": 4, "rolesets.orchestration.aibrix.ai/v1alpha1": 0}
    untrack_a()
    untrack_a()  # twice is harmless
    assert samples() == {"pods.core/v1": 1, "rolesets.orchestration.aibrix.ai/v1alpha1": 0}


def test_an_old_untrack_leaves_a_newer_tracking_of_the_same_cache() -> None:
    counter = metrics.CachedObjects()
    cache = [1, 2]
    untrack_old = counter.track("pods.core/v1", cache)
    counter.track("pods.core/v1", cache)  # a restarted informer, before the old run ended
    untrack_old()
    assert [s.value for family in counter.collect() for s in family.samples] == [2]


def test_cached_objects_are_on_the_registry() -> None:
    untrack = metrics.CACHED_OBJECTS.track("registry-test", ["a", "b"])
    try:
        assert (
            metrics.sample_value("stormservice_informer_cached_objects", {"resource": "registry-test"}) == 2
        )
    finally:
        untrack()
    assert metrics.sample_value("stormservice_informer_cached_objects", {"resource": "registry-test"}) is None
