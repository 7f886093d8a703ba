"""The alerts and dashboard of manifests/monitoring use only series and labels a running
controller really exports: a controller (leader election on, scoped to the test's namespace)
takes a StormService through creation, an update rollout and a role scale-down, so that the
domain series exist; then every PrometheusRule expression and dashboard target is read and
checked against its /metrics. A second replica, the standby, reports itself as one."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster import ControllerProcess, Kubectl
from tests.promql import problems, scraped_labels

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MONITORING = Path(__file__).resolve().parents[2] / "manifests" / "monitoring"
LEASE = "stormservice-controller"  # the default --leader-elect-id, which the alerts name
#: Label values the alerts and panels select that this scenario cannot produce.
UNSEEN = frozenset(
    {
        ("stormservice_events_total", "type", "Warning"),  # nothing fails here
        ("stormservice_roleset_rollout_stalled", "stormservice", ""),  # every RoleSet has a StormService
    }
)
IMAGE_V1 = "registry.k8s.io/pause:3.10"
IMAGE_V2 = "registry.k8s.io/pause:3.9"


def storm(name: str, image: str, prefill: int) -> dict[str, Any]:
    def role(role_name: str, replicas: int, group: int) -> dict[str, Any]:
        return {
            "name": role_name,
            "replicas": replicas,
            "podGroupSize": group,
            "template": {
                "metadata": {"labels": {"component": role_name}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "engine", "image": image}],
                },
            },
        }

    return {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "StormService",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": {"type": "RollingUpdate", "maxSurge": 1, "maxUnavailable": 1},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"roles": [role("prefill", prefill, 1), role("decode", 1, 2)]},
            },
        },
    }


def scrape(controller: ControllerProcess) -> str:
    line = controller.wait_for_log(re.compile(r'"server": ?"metrics"'), timeout=120)
    address = json.loads(line)["addresses"][0]
    body: bytes = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read()
    return body.decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, metric: str, /, **labels: str) -> float | None:
    return samples(text).get((metric, frozenset(labels.items())))


def wait_for(check: Callable[[], Any], what: str, controller: ControllerProcess, within: float = 300) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if not controller.alive():
            raise AssertionError(f"the controller exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what} (last: {result!r})")
        time.sleep(0.5)


def settled(kubectl: Kubectl, namespace: str, name: str, image: str, prefill: int) -> bool:
    """Ready on its latest generation, and every live pod of the StormService runs `image`."""
    ss = kubectl.get_json("-n", namespace, "storm", name)
    status = ss.get("status") or {}
    ready: dict[str, Any] = next((c for c in status.get("conditions") or () if c["type"] == "Ready"), {})
    if status.get("observedGeneration") != ss["metadata"]["generation"] or ready.get("status") != "True":
        return False
    if status.get("currentRevision") != status.get("updateRevision"):
        return False
    pods = kubectl.get_json("-n", namespace, "pods", "-l", f"storm-service-name={name}")["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    want = 2 * (prefill + 2)
    return len(pods) == want and all(p["spec"]["containers"][0]["image"] == image for p in live)


def expressions() -> list[tuple[str, str]]:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    out = [
        (f"alert {r['alert']}", str(r["expr"])) for group in rule["spec"]["groups"] for r in group["rules"]
    ]
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    out += [
        (f"panel {p['title']!r} {t['refId']}", str(t["expr"]))
        for p in dashboard["panels"]
        for t in p.get("targets", ())
    ]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            # label_values(<selector>, <label>): the selector is an expression of its own.
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query["query"])
            assert match is not None, query
            selector, label = match.groups()
            out.append((f"variable {variable['name']}", f"sum by ({label}) ({selector})"))
    return out


def test_every_alert_and_panel_uses_series_the_controller_exports(
    kubectl: Kubectl, namespace: str, crds: list[str], run_controller: Callable[..., ControllerProcess]
) -> None:
    scope = ("--namespace", namespace, "--leader-elect=true", "--leader-elect-namespace", namespace)
    leader = run_controller(*scope, "--metrics-bind-address=127.0.0.1:0", name="leader")
    wait_for(
        lambda: value(scrape(leader), "leader_election_master_status", name=LEASE) == 1.0,
        "the first replica to lead",
        leader,
    )
    standby = run_controller(*scope, "--metrics-bind-address=127.0.0.1:0", name="standby")
    standby.wait_for_log("lease held by another candidate", timeout=120)
    assert value(scrape(standby), "leader_election_master_status", name=LEASE) == 0.0

    kubectl.apply(storm("mon", IMAGE_V1, prefill=2), "-n", namespace)
    wait_for(lambda: settled(kubectl, namespace, "mon", IMAGE_V1, 2), "mon to be ready", leader)
    kubectl.apply(storm("mon", IMAGE_V2, prefill=2), "-n", namespace)
    wait_for(lambda: settled(kubectl, namespace, "mon", IMAGE_V2, 2), "the update rollout", leader)
    # Fewer prefill pods per RoleSet: the RoleSet controller deletes some (pods_deleted_total).
    kubectl.apply(storm("mon", IMAGE_V2, prefill=1), "-n", namespace)
    wait_for(lambda: settled(kubectl, namespace, "mon", IMAGE_V2, 1), "the role scale-down", leader)

    key = f"{namespace}/mon"

    def caught_up() -> str | None:
        """The gauges follow the RoleSets' status, which the test's check above may see first."""
        t = scrape(leader)
        ready = value(t, "stormservice_role_replicas", stormservice=key, role="prefill", state="ready")
        return t if ready == 2.0 else None

    text = wait_for(
        caught_up,
        "the role gauges to catch up",
        leader,
    )
    # The domain series the panels and alerts read, with the values this StormService has.
    assert value(text, "stormservice_rollouts_total", result="complete") == 1.0
    assert value(text, "stormservice_rollout_duration_seconds_count") == 1.0
    for role_name, desired in (("prefill", 2.0), ("decode", 4.0)):
        for state in ("desired", "current", "ready", "updated", "updated_ready"):
            got = value(text, "stormservice_role_replicas", stormservice=key, role=role_name, state=state)
            assert got == desired, (role_name, state, got)
    assert value(text, "stormservice_rollout_stalled", stormservice=key) == 0.0
    rolesets = kubectl.get_json("-n", namespace, "rolesets", "-l", "storm-service-name=mon")["items"]
    assert len(rolesets) == 2
    for rs in rolesets:
        rs_key = f"{namespace}/{rs['metadata']['name']}"
        assert value(text, "stormservice_roleset_rollout_stalled", stormservice=key, roleset=rs_key) == 0.0
        assert (
            value(text, "stormservice_roleset_broken_groups", stormservice=key, roleset=rs_key, role="decode")
            == 0.0
        )
    assert (
        value(text, "stormservice_roleset_pods_deleted_total", role="prefill", reason="scale-down") or 0
    ) >= 2

    scraped = scraped_labels(text)
    checked = expressions()
    assert len(checked) > 25
    found = [p for where, expr in checked for p in problems(where, expr, scraped, UNSEEN)]
    assert not found, "\n".join(found)
