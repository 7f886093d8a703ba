"""The controller process under production conditions, on the local control plane: leader
election while thousands of pods are created, hand-over and fail-over between two replicas, a
namespace-scoped install under a ServiceAccount bound only to a Role, caches that cannot sync,
and a watch connection that dies without a reset.

Figures measured here (fail-over time, dead-watch detection time) are printed; run with `-s`
to see them.
"""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import (
    REPO_ROOT,
    ControllerProcess,
    Kubectl,
    api_server_address,
    derived_kubeconfig,
    service_account_kubeconfig,
)
from tests.proxy import BlackholeProxy
from tests.unit.apis.cases import minimal_storm_service

pytestmark = pytest.mark.integration

ControllerFactory = Callable[..., ControllerProcess]
UNSCHEDULED = "not-a-scheduler"  # pods nobody schedules: only the controller's own writes count


# ---------------------------------------------------------------------------------------------
# helpers


def wait_for(check: Callable[[], Any], what: str, timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def roleset(name: str, replicas: int, *, scheduler: str | None = UNSCHEDULED) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}]}
    if scheduler:
        spec["schedulerName"] = scheduler
    return {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "RoleSet",
        "metadata": {"name": name},
        "spec": {
            "roles": [
                {
                    "name": "w",
                    "replicas": replicas,
                    "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
                }
            ]
        },
    }


def scale_roleset(kubectl: Kubectl, namespace: str, name: str, replicas: int) -> None:
    roles = roleset(name, replicas)["spec"]["roles"]
    kubectl(
        "patch",
        "roleset",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"roles": roles}}),
    )


def pod_count(kubectl: Kubectl, namespace: str, selector: str = "roleset-name") -> int:
    """Pods in the namespace carrying `selector`. (A one-item page would not do: the server
    reports remainingItemCount only for lists without a selector.)"""
    raw = kubectl("get", "--raw", f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}").stdout
    return len(json.loads(raw)["items"])


def lease(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    proc = kubectl("get", "lease", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout)["spec"] if proc.returncode == 0 else None


def identity_of(controller: ControllerProcess) -> str:
    line = controller.wait_for_log('"became leader"', timeout=60)
    return str(json.loads(line)["identity"])


def health_port(controller: ControllerProcess) -> int:
    line = controller.wait_for_log(re.compile(r'"server":\s*"health'), timeout=60)
    address = json.loads(line)["addresses"][0]
    return int(address.rsplit(":", 1)[1])


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz?verbose", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def elected(*extra: str, namespace: str, lease_name: str) -> tuple[str, ...]:
    return (
        "--leader-elect=true",
        f"--leader-elect-namespace={namespace}",
        f"--leader-elect-id={lease_name}",
        *extra,
    )


def manifest_rules() -> list[dict[str, Any]]:
    """Every rule the shipped manifests grant (ClusterRole and leader-election Role)."""
    rules: list[dict[str, Any]] = []
    for name in ("role.yaml", "leader_election_role.yaml"):
        for doc in yaml.safe_load_all((REPO_ROOT / "manifests" / "rbac" / name).read_text()):
            if doc and doc.get("kind") in ("ClusterRole", "Role"):
                rules.extend(doc["rules"])
    return rules


def without(rules: list[dict[str, Any]], group: str, resource: str) -> list[dict[str, Any]]:
    out = []
    for rule in rules:
        if group in rule["apiGroups"] and resource in rule["resources"]:
            rest = [r for r in rule["resources"] if r != resource]
            if rest:
                out.append({**rule, "resources": rest})
        else:
            out.append(rule)
    return out


@pytest.fixture
def cleanup_pods(kubectl: Kubectl, namespace: str) -> Iterator[None]:
    """Thousands of pods go at once (no graceful deletion through kwok) when the test ends, so
    that they do not load the tests after this one."""
    yield
    kubectl("delete", "rolesets", "--all", "-n", namespace, "--wait=false", check=False)
    kubectl(
        "delete", "pods", "--all", "-n", namespace, "--grace-period=0", "--force", "--wait=false",
        check=False, timeout=300,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# leader election


def test_a_scale_up_of_3000_pods_keeps_the_leader(
    cleanup_pods: None, run_controller: ControllerFactory, kubectl: Kubectl, namespace: str, crds: list[str]
) -> None:
    """5 RoleSets x 600 pods at the default client QPS (50): the controller's own writes queue
    behind its rate limiter for a minute, and the Lease renewals (every 2 s, deadline 10 s) must
    not queue behind them."""
    lease_name = f"lease-{uuid.uuid4().hex[:6]}"
    leader = run_controller(*elected(namespace=namespace, lease_name=lease_name), name="leader")
    leader_identity = identity_of(leader)
    standby = run_controller(*elected(namespace=namespace, lease_name=lease_name), name="standby")
    standby.wait_for_log("lease held by another candidate", timeout=60)
    transitions = lease(kubectl, namespace, lease_name)["leaseTransitions"]  # type: ignore[index]

    for i in range(5):
        kubectl.apply(roleset(f"big-{i}", 600), "-n", namespace)
    started = time.monotonic()
    holders: set[str] = set()
    counted_at = 0.0
    while True:
        spec = lease(kubectl, namespace, lease_name)
        assert spec is not None
        holders.add(spec["holderIdentity"])
        assert holders == {leader_identity}, f"the lease changed hands: {holders}"
        assert leader.alive(), "the leader exited"
        assert time.monotonic() - started < 600, "3000 pods not created within 10 minutes"
        if time.monotonic() - counted_at > 3:  # a list of thousands of pods: not too often
            counted_at = time.monotonic()
            if pod_count(kubectl, namespace) >= 3000:
                break
        time.sleep(0.5)
    took = time.monotonic() - started
    spec = lease(kubectl, namespace, lease_name)
    assert spec is not None and spec["holderIdentity"] == leader_identity
    assert spec["leaseTransitions"] == transitions
    assert leader.alive() and "leader election lost" not in leader.log_text()
    print(f"\n3000 pods created in {took:.1f}s; lease held by the same leader throughout")


def test_sigterm_hands_over_within_seconds_and_sigkill_fails_over_at_lease_expiry(
    run_controller: ControllerFactory, kubectl: Kubectl, namespace: str, crds: list[str]
) -> None:
    lease_name = f"lease-{uuid.uuid4().hex[:6]}"
    first = run_controller(*elected(namespace=namespace, lease_name=lease_name), name="first")
    identity_of(first)
    second = run_controller(*elected(namespace=namespace, lease_name=lease_name), name="second")
    second.wait_for_log("lease held by another candidate", timeout=60)
    second.wait_for_log("caches synced", timeout=60)  # a warm standby
    kubectl.apply(roleset("rs", 1), "-n", namespace)
    wait_for(lambda: pod_count(kubectl, namespace) == 1, "the first pod", 60)

    # SIGTERM: the leader drains, releases the Lease; the standby, watching it, takes over.
    sent = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)
    second_identity = identity_of(second)
    wait_for(
        lambda: (lease(kubectl, namespace, lease_name) or {}).get("holderIdentity") == second_identity,
        "the standby to hold the lease",
        30,
        interval=0.05,
    )
    handover = time.monotonic() - sent
    scale_roleset(kubectl, namespace, "rs", 2)
    wait_for(lambda: pod_count(kubectl, namespace) == 2, "a pod made by the new leader", 60, interval=0.05)
    first_action = time.monotonic() - sent
    assert first.proc.wait(timeout=30) == 0, "a clean shutdown exits 0"
    assert "released the lease" in first.log_text()
    assert handover < 2.5, f"SIGTERM to the standby holding the lease took {handover:.2f}s"

    # SIGKILL: nothing is released; a third replica takes over when the lease expires (15 s).
    third = run_controller(*elected(namespace=namespace, lease_name=lease_name), name="third")
    third.wait_for_log("caches synced", timeout=60)
    third.wait_for_log("lease held by another candidate", timeout=60)
    killed = time.monotonic()
    second.proc.kill()
    scale_roleset(kubectl, namespace, "rs", 3)
    wait_for(lambda: pod_count(kubectl, namespace) == 3, "a pod made after the fail-over", 90, interval=0.05)
    failover = time.monotonic() - killed
    assert failover < 15.0 + 10.0, f"fail-over after SIGKILL took {failover:.1f}s (lease duration 15 s)"
    print(
        f"\nSIGTERM: lease taken over after {handover:.2f}s, first reconcile by the new leader after "
        f"{first_action:.2f}s; SIGKILL: first reconcile by the new leader after {failover:.1f}s"
    )


# ---------------------------------------------------------------------------------------------
# scope and startup


def test_a_namespace_scoped_install_runs_with_only_a_role(
    run_controller: ControllerFactory,
    kubectl: Kubectl,
    kubeconfig: str,
    namespace: str,
    crds: list[str],
    tmp_path: Path,
) -> None:
    """The shipped rules, granted by a Role in one namespace and nothing cluster-wide: the
    controller becomes ready, leads, and runs a StormService to Ready."""
    config = service_account_kubeconfig(
        kubectl, kubeconfig, namespace, "storm", manifest_rules(), tmp_path / "sa.kubeconfig"
    )
    controller = run_controller(
        "--kubeconfig", str(config), f"--namespace={namespace}",
        *elected(namespace=namespace, lease_name="stormservice-controller"),
    )  # fmt: skip
    port = health_port(controller)
    identity_of(controller)
    wait_for(lambda: readyz(port)[0] == 200, "/readyz to pass", 60)
    sample = minimal_storm_service("scoped")
    sample["metadata"]["namespace"] = namespace
    kubectl.apply(sample)
    name = sample["metadata"]["name"]

    def ready() -> bool:
        status = kubectl.get_json("stormservice", name, "-n", namespace).get("status") or {}
        return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])

    wait_for(ready, "the StormService to be Ready", 120)
    text = controller.log_text()
    assert "forbidden" not in text.lower(), "a request was forbidden:\n" + "\n".join(
        line for line in text.splitlines() if "forbidden" in line.lower()
    )


def test_a_cache_that_cannot_sync_is_reported_and_retried(
    run_controller: ControllerFactory,
    kubectl: Kubectl,
    kubeconfig: str,
    namespace: str,
    crds: list[str],
    tmp_path: Path,
) -> None:
    rules = without(manifest_rules(), "", "pods")
    config = service_account_kubeconfig(
        kubectl, kubeconfig, namespace, "storm", rules, tmp_path / "sa.kubeconfig"
    )
    controller = run_controller(
        "--kubeconfig", str(config), f"--namespace={namespace}", "--cache-sync-timeout=3s",
        *elected(namespace=namespace, lease_name="stormservice-controller"),
    )  # fmt: skip
    port = health_port(controller)
    line = json.loads(controller.wait_for_log("caches not synced; still retrying", timeout=60))
    assert line["level"] == "error"
    assert line["resources"] == ["pods.core/v1"]
    (reason,) = line["reasons"]
    assert f"pods in namespace {namespace}: forbidden" in reason
    assert "needs the verbs list and watch on pods" in reason
    status, body = readyz(port)
    assert status == 500 and f"pods in namespace {namespace}: forbidden" in body
    assert controller.log_text().count("caches not synced; still retrying") == 1, "said once"

    # Granted: the informer's retries get through and the process becomes ready, no restart.
    service_account_kubeconfig(kubectl, kubeconfig, namespace, "storm", manifest_rules(), tmp_path / "again")
    wait_for(lambda: readyz(port)[0] == 200, "/readyz to pass once pods may be listed", 120)
    assert controller.alive()


# ---------------------------------------------------------------------------------------------
# watches


def test_a_watch_that_dies_without_a_reset_is_noticed_within_about_a_minute(
    run_controller: ControllerFactory,
    kubectl: Kubectl,
    kubeconfig: str,
    namespace: str,
    crds: list[str],
    tmp_path: Path,
) -> None:
    """A proxy between the controller and the API server stops forwarding on every connection
    it holds, without closing any (a load balancer that lost its state). The controller must
    notice its dead watches and watch again on new connections."""
    with BlackholeProxy(api_server_address(kubeconfig)) as proxy:
        config = derived_kubeconfig(
            kubeconfig, tmp_path / "proxied", server=f"https://127.0.0.1:{proxy.port}"
        )
        controller = run_controller("--kubeconfig", str(config), f"--namespace={namespace}")
        controller.wait_for_log("caches synced", timeout=60)
        kubectl.apply(roleset("rs", 1), "-n", namespace)
        wait_for(lambda: pod_count(kubectl, namespace) == 1, "the first pod", 60)
        connections = proxy.connections_accepted

        silenced = proxy.blackhole()
        blackholed = time.monotonic()
        assert silenced >= 1
        scale_roleset(kubectl, namespace, "rs", 2)
        wait_for(lambda: pod_count(kubectl, namespace) == 2, "the controller to act again", 180, interval=0.5)
        recovered = time.monotonic() - blackholed
        assert proxy.connections_accepted > connections, "new connections were opened"
        noticed = [
            json.loads(line)
            for line in controller.log_text().splitlines()
            if "watch failed, resuming" in line and "rolesets" in line
        ]
        assert noticed, "the dead RoleSet watch was not reported"
        assert recovered < 120, f"the dead watch went unnoticed for {recovered:.0f}s"
        print(f"\ndead watch noticed and the controller acting again {recovered:.1f}s after the blackhole")
