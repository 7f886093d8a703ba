"""The RoleSet controller as shipped: `python -m controller` in a subprocess, read through its
/metrics endpoint. An idle RoleSet must cost no API writes."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from typing import Any

import pytest

from tests.cluster import ControllerFactory, Kubectl, wait_until

pytestmark = pytest.mark.integration

IMAGE = "registry.k8s.io/pause:3.10"


def scrape(port: int) -> dict[str, float]:
    """Sums of each sample name (labels folded) from /metrics, plus labelled RoleSet samples."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        out[name] = out.get(name, 0.0) + float(value)
        if name.startswith("stormservice_roleset_"):
            out[name_labels] = float(value)
    return out


def metrics_port(log_line: str) -> int:
    match = re.search(r"127\.0\.0\.1:(\d+)", log_line)
    assert match, log_line
    return int(match.group(1))


def test_idle_roleset_makes_no_api_writes(
    run_controller: ControllerFactory, kubectl: Kubectl, namespace: str, crds: list[str]
) -> None:
    proc = run_controller("--namespace", namespace)
    port = metrics_port(proc.wait_for_log(re.compile(r'"server": ?"metrics"'), timeout=60))
    rs: dict[str, Any] = {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "RoleSet",
        "metadata": {"name": "idle", "namespace": namespace},
        "spec": {
            "roles": [
                {
                    "name": "prefill",
                    "replicas": 2,
                    "template": {"spec": {"containers": [{"name": "c", "image": IMAGE}]}},
                },
                {
                    "name": "decode",
                    "replicas": 1,
                    "podGroupSize": 2,
                    "stateful": True,
                    "template": {"spec": {"containers": [{"name": "c", "image": IMAGE}]}},
                },
            ]
        },
    }
    kubectl.apply(rs)

    def ready() -> bool:
        obj = json.loads(kubectl("get", "roleset", "idle", "-n", namespace, "-o", "json").stdout)
        conds = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}
        return (
            conds.get("Ready") == "True"
            and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
        )

    wait_until(ready, 90, "RoleSet Ready")
    time.sleep(3)  # the last status write and its echo
    before = scrape(port)
    assert before.get("stormservice_roleset_pods_created_total", 0) == 4
    assert before.get('stormservice_roleset_pods_created_total{reason="scale-up",role="prefill"}') == 2
    time.sleep(30)
    after = scrape(port)
    assert after.get("stormservice_api_writes_total", 0) == before.get("stormservice_api_writes_total", 0), (
        "an idle RoleSet caused API writes"
    )
    assert proc.alive()
