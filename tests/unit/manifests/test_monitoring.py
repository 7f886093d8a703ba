"""manifests/monitoring: the kustomize Component renders onto an install, its ServiceMonitor
finds the metrics Service, every alert and dashboard panel is well formed, and the PromQL reader
that tests/integration/test_monitoring.py checks them with reads what it should."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.promql import problems, read

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "manifests" / "monitoring"
DEFAULT_INSTALL = ROOT / "manifests" / "default"
JOB = 'job="stormservice-controller"'


def rules() -> list[dict[str, Any]]:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((MONITORING / "dashboard.json").read_text())
    return loaded


def panel_targets() -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in dashboard()["panels"] for t in p.get("targets", ())]


# --- the PromQL reader ---------------------------------------------------------------------------


def test_reader_finds_series_matchers_and_grouping() -> None:
    parsed = read(
        'histogram_quantile(0.99, sum by (name, le) (rate(workqueue_queue_duration_seconds_bucket{job="j"}[5m])))'
        ' > 5 or max without (x) (workqueue_depth{name=~"a|b", other!="sum(by)"} offset 5m) > 1e3'
    )
    assert parsed.selectors == {
        "workqueue_queue_duration_seconds_bucket": {"job"},
        "workqueue_depth": {"name", "other"},
    }
    assert parsed.grouping == {"name", "le", "x"}
    bare = read("sum(rate(controller_runtime_reconcile_total[$__rate_interval])) / up")
    assert bare.selectors == {"controller_runtime_reconcile_total": set(), "up": set()}


def test_problems_name_missing_series_labels_and_values() -> None:
    scraped = {
        "a_total": {"controller": {"c"}, "result": {"success", "error"}},
        "h_bucket": {"name": {"q"}, "le": {"1.0", "+Inf"}},
        "g": {"name": {"q"}},
    }
    assert (
        list(problems("x", 'sum by (controller) (rate(a_total{job="j", result="error"}[5m]))', scraped)) == []
    )
    assert (
        list(problems("x", "histogram_quantile(0.9, sum by (name, le) (rate(h_bucket[5m])))", scraped)) == []
    )
    assert list(
        problems("x", 'sum by (controller) (rate(b_total[5m])) + g{state="x", name="$var"}', scraped)
    ) == [
        "x: b_total is not exported",
        "x: g has no label 'state'",
        "x: grouped by 'controller', which g does not have",
    ]
    typo = 'a_total{result="errors"}'
    assert list(problems("x", typo, scraped)) == [
        "x: a_total has no result='errors' (only ['error', 'success'])"
    ]
    assert list(problems("x", typo, scraped, unseen=frozenset({("a_total", "result", "errors")}))) == []


# --- PrometheusRule ------------------------------------------------------------------------------------


def test_every_alert_has_a_duration_severity_summary_description_and_runbook() -> None:
    alerts = rules()
    assert {r["alert"] for r in alerts} >= {
        "StormServiceRolloutStalled",
        "StormServiceReconcileErrors",
        "StormServiceControllerLeaderMissing",
        "StormServiceWorkqueueBackingUp",
        "StormServiceAPIThrottled",
    }
    readme = (ROOT / "README.md").read_text()
    for r in alerts:
        assert r.get("for"), r["alert"]
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
        assert "README.md" in r["annotations"]["runbook"], r["alert"]
        assert f"`{r['alert']}`" in readme, f"{r['alert']} is not in README's alert table"


def test_alerts_and_panels_select_the_controllers_job() -> None:
    """workqueue_*, rest_client_* and controller_runtime_* are shared with other controllers."""
    exprs = [(r["alert"], r["expr"]) for r in rules()]
    exprs += [(title, t["expr"]) for title, t in panel_targets()]
    for where, expr in exprs:
        for name, labels in read(expr).selectors.items():
            assert "job" in labels, f"{where}: {name} without the job matcher"
    assert all(JOB in expr for _, expr in exprs)


# --- dashboard ---------------------------------------------------------------------------------------


def test_dashboard_has_its_variables_and_every_panel_uses_the_datasource_variable() -> None:
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "stormservice"} <= variables.keys()
    assert "$namespace" in variables["stormservice"]["query"]["query"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
    titles = " ".join(p["title"] for p in d["panels"]).lower()
    for wanted in ("rollout progress", "ready vs desired", "reconcile latency", "reconcile errors",
                   "queue depth", "throttling"):  # fmt: skip
        assert wanted in titles, wanted


def test_domain_panels_follow_the_stormservice_variable() -> None:
    for title, t in panel_targets():
        for name, labels in read(t["expr"]).selectors.items():
            if name.startswith(
                ("stormservice_role_replicas", "stormservice_rolesets", "stormservice_rollout_stalled")
            ):
                assert "stormservice" in labels and "$stormservice" in t["expr"], title


# --- kustomize ---------------------------------------------------------------------------------------


def kubectl_binary() -> str:
    """The cached control-plane kubectl (kustomize built in), else one on PATH."""
    from tests.cluster import _load_localcluster

    explicit = os.environ.get("STORMSERVICE_KUBECTL")
    if explicit:
        return explicit
    try:
        return str(_load_localcluster().find_bin_dir(build=False) / "kubectl")
    except Exception:
        found = shutil.which("kubectl")
        if found is None:
            pytest.skip("no kubectl: run `make controlplane` (kubectl kustomize renders the component)")
        return found


def render(overlay: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [kubectl_binary(), "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def overlay(tmp_path: Path, resources: list[str]) -> Path:
    path = tmp_path / "overlay"
    path.mkdir()
    (path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": resources,
                "components": [os.path.relpath(MONITORING, path)],
            }
        )
    )
    return path


def check_monitoring_objects(objs: list[dict[str, Any]]) -> None:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    (monitor,) = by_kind["ServiceMonitor"]
    (rule,) = by_kind["PrometheusRule"]
    assert rule["spec"]["groups"][0]["rules"] == rules()
    # A ServiceMonitor without a namespaceSelector looks in its own namespace only.
    assert "namespaceSelector" not in monitor["spec"]
    wanted = monitor["spec"]["selector"]["matchLabels"]
    services = [
        s
        for s in by_kind["Service"]
        if s["metadata"]["namespace"] == monitor["metadata"]["namespace"]
        and wanted.items() <= (s["metadata"].get("labels") or {}).items()
    ]
    assert len(services) == 1, "the ServiceMonitor must select exactly the metrics Service"
    ports = {p.get("name") for p in services[0]["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    assert monitor["spec"]["jobLabel"] in services[0]["metadata"]["labels"]
    assert services[0]["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "stormservice-controller"
    (dashboards,) = [
        c for c in by_kind["ConfigMap"] if c["metadata"]["name"] == "stormservice-controller-dashboard"
    ]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards["metadata"]["namespace"] == monitor["metadata"]["namespace"] == "stormservice-system"
    assert json.loads(dashboards["data"]["stormservice-controller.json"]) == dashboard()


def test_the_component_renders_on_a_base_with_the_metrics_service(tmp_path: Path) -> None:
    """The Service as manifests/manager has it: the label and port name are the contract."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "service.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "stormservice-controller-metrics",
                    "namespace": "stormservice-system",
                    "labels": {"app.kubernetes.io/name": "stormservice-controller"},
                },
                "spec": {
                    "selector": {"app.kubernetes.io/name": "stormservice-controller"},
                    "ports": [{"name": "metrics", "port": 8080, "targetPort": "metrics"}],
                },
            }
        )
    )
    (base / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [service.yaml]\n"
    )
    check_monitoring_objects(render(overlay(tmp_path, ["../base"])))


def test_the_component_renders_on_the_default_install(tmp_path: Path) -> None:
    if not (DEFAULT_INSTALL / "kustomization.yaml").exists():
        pytest.skip("manifests/default (the kustomize install) is not in this tree")
    objs = render(overlay(tmp_path, [os.path.relpath(DEFAULT_INSTALL, tmp_path / "overlay")]))
    check_monitoring_objects(objs)
    assert {"Deployment", "CustomResourceDefinition"} <= {o["kind"] for o in objs}
