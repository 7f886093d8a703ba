"""The shipped Deployment agrees with the controller's flags: its shutdown fits the pod's grace
period, and its probes point at the endpoints the controller serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from controller.runtime.options import SHUTDOWN_RESERVE, parse_args, parse_bind_address

DEPLOYMENT = Path(__file__).resolve().parents[3] / "manifests" / "manager" / "deployment.yaml"

# What SIGTERM -> exit may need beyond the controller's own shutdown budget: the interpreter's
# exit and the kubelet's own bookkeeping.
MARGIN_SECONDS = 5.0


def pod_spec() -> dict[str, Any]:
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def manager_container() -> dict[str, Any]:
    (container,) = [c for c in pod_spec()["containers"] if c["name"] == "manager"]
    assert isinstance(container, dict)
    return container


def test_the_whole_shutdown_fits_the_grace_period_with_a_margin() -> None:
    options = parse_args(manager_container()["args"], env={"POD_NAMESPACE": "x"})
    grace = float(pod_spec()["terminationGracePeriodSeconds"])
    assert options.graceful_shutdown_timeout > SHUTDOWN_RESERVE
    assert options.graceful_shutdown_timeout + MARGIN_SECONDS <= grace, (
        f"--graceful-shutdown-timeout {options.graceful_shutdown_timeout:g}s leaves less than "
        f"{MARGIN_SECONDS:g}s of terminationGracePeriodSeconds ({grace:g}s)"
    )


def test_probes_and_ports_match_the_flags() -> None:
    container = manager_container()
    options = parse_args(container["args"], env={"POD_NAMESPACE": "x"})
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    metrics = parse_bind_address(options.metrics_bind_address)
    health = parse_bind_address(options.health_probe_bind_address)
    assert metrics is not None and health is not None
    assert ports["metrics"] == metrics[1] and ports["health"] == health[1]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}


def test_leader_election_is_on_and_the_lease_lives_in_the_pods_namespace() -> None:
    container = manager_container()
    options = parse_args(container["args"], env={"POD_NAMESPACE": "stormservice-system"})
    assert options.leader_elect
    assert options.leader_elect_namespace == "stormservice-system"
    env = {e["name"]: e for e in container.get("env") or []}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
