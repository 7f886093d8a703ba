"""The chaos suite: each test runs the workload (tests/chaos/workload.py) through CHAOS_ITERATIONS
rollouts and scale changes while one fault is injected, with the invariant monitor watching from
before the first object is created, and checks that nothing was violated and that everything
converged within CHAOS_CONVERGE_SECONDS after the fault ended. `make chaos` prints the table.

Faults that restart parts of the control plane come last in the file, so that in one pytest
session every other test has run before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controller.runtime.resources import ROLESETS, STORMSERVICES
from tests.chaos import faults
from tests.chaos.apiproxy import ApiFaultProxy
from tests.chaos.harness import CONVERGE_SECONDS, ITERATIONS, ChaosEnv, FaultResult, run_fault
from tests.chaos.invariants import ROLESET_INDEX_ANNOTATION
from tests.chaos.workload import target
from tests.cluster import api_server_address, derived_kubeconfig
from tests.proxy import BlackholeProxy

# Per iteration: a fault of up to about a minute, then convergence within CONVERGE_SECONDS.
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300 + ITERATIONS * (90 + int(CONVERGE_SECONDS)))]


async def test_the_monitor_catches_a_violation_on_the_api_server(chaos_env: ChaosEnv) -> None:
    """No controller: the test plays a bad one, creating a RoleSet over replicas + maxSurge and a
    second one with a taken roleset-index, so the monitor is seen to fail through its real watches."""
    manifest = target(0)[0]  # replicas 3, maxSurge 1
    storm = await chaos_env.kube.create(STORMSERVICES, chaos_env.namespace, manifest)
    owner = {"apiVersion": storm["apiVersion"], "kind": "StormService", "name": storm["metadata"]["name"]}
    owner |= {"uid": storm["metadata"]["uid"], "controller": True}
    for index in (0, 1, 2, 3, 3):
        await chaos_env.kube.create(
            ROLESETS,
            chaos_env.namespace,
            {
                "apiVersion": storm["apiVersion"],
                "kind": "RoleSet",
                "metadata": {
                    "generateName": "bad-",
                    "labels": {"storm-service-name": storm["metadata"]["name"], "app": "replica"},
                    "annotations": {ROLESET_INDEX_ANNOTATION: str(index)},
                    "ownerReferences": [owner],
                },
                "spec": manifest["spec"]["template"]["spec"],
            },
        )
    await chaos_env.monitor.drain()
    assert [v.invariant for v in chaos_env.monitor.violations] == ["surge", "duplicate"]


async def test_controller_sigkill_repeated(chaos_env: ChaosEnv, chaos_result: FaultResult) -> None:
    chaos_env.start_controller()
    await run_fault(chaos_env, chaos_result, faults.sigkill_repeatedly)


async def test_controller_sigterm_standby_takes_over(chaos_env: ChaosEnv, chaos_result: FaultResult) -> None:
    chaos_env.leader_elect = True
    chaos_env.start_controller(name="first")
    chaos_env.start_controller(name="second")
    await run_fault(chaos_env, chaos_result, faults.sigterm_handover)


async def test_pod_deletions_and_not_ready(chaos_env: ChaosEnv, chaos_result: FaultResult) -> None:
    chaos_env.start_controller()
    await run_fault(chaos_env, chaos_result, faults.pod_deletions_and_not_ready)


async def test_burst_of_500_spec_changes(chaos_env: ChaosEnv, chaos_result: FaultResult) -> None:
    chaos_env.start_controller()
    await run_fault(chaos_env, chaos_result, faults.spec_burst)


async def test_node_loss(chaos_env: ChaosEnv, chaos_result: FaultResult) -> None:
    chaos_env.start_controller()
    await run_fault(chaos_env, chaos_result, faults.node_loss)


def _through_proxy(env: ChaosEnv) -> BlackholeProxy:
    proxy = BlackholeProxy(api_server_address(env.kubeconfig)).start()
    env.proxy = proxy
    env.controller_kubeconfig = str(
        derived_kubeconfig(
            env.kubeconfig, env.tmp_path / "proxied.kubeconfig", server=f"https://127.0.0.1:{proxy.port}"
        )
    )
    return proxy


async def test_api_connection_blackholed(chaos_env: ChaosEnv, chaos_result: FaultResult) -> None:
    proxy = _through_proxy(chaos_env)
    try:
        chaos_env.start_controller()
        await run_fault(chaos_env, chaos_result, faults.blackhole)
    finally:
        proxy.stop()


async def test_api_latency(chaos_env: ChaosEnv, chaos_result: FaultResult) -> None:
    proxy = _through_proxy(chaos_env)
    try:
        chaos_env.start_controller()
        await run_fault(chaos_env, chaos_result, faults.latency)
    finally:
        proxy.stop()


@pytest.fixture
async def api_proxy(chaos_env: ChaosEnv) -> AsyncIterator[ApiFaultProxy]:
    if chaos_env.cluster.local is None:
        pytest.skip("needs the local control plane's certificates (no KUBECONFIG)")
    proxy = await ApiFaultProxy(chaos_env.cluster.local.server, chaos_env.cluster.local.pki).start()
    chaos_env.proxy = proxy
    chaos_env.controller_kubeconfig = str(
        derived_kubeconfig(chaos_env.kubeconfig, chaos_env.tmp_path / "proxied.kubeconfig", server=proxy.url)
    )
    try:
        yield proxy
    finally:
        await proxy.stop()


async def test_watch_history_compacted(
    chaos_env: ChaosEnv, chaos_result: FaultResult, api_proxy: ApiFaultProxy
) -> None:
    controller = chaos_env.start_controller()
    await run_fault(chaos_env, chaos_result, faults.watches_expired)
    assert api_proxy.expired > 0
    assert "watch expired, relisting" in controller.log_text(), "the controller never relisted"


async def test_api_throttled_429(
    chaos_env: ChaosEnv, chaos_result: FaultResult, api_proxy: ApiFaultProxy
) -> None:
    chaos_env.start_controller()
    await run_fault(chaos_env, chaos_result, faults.throttled)
    assert api_proxy.throttled > 0


def _local(env: ChaosEnv) -> None:
    if env.cluster.local is None:
        pytest.skip("restarts a component of the local control plane (no KUBECONFIG)")


async def test_apiserver_restarted(chaos_env: ChaosEnv, chaos_result: FaultResult) -> None:
    _local(chaos_env)
    chaos_env.start_controller()
    await run_fault(chaos_env, chaos_result, faults.apiserver_restart)


async def test_etcd_restarted(chaos_env: ChaosEnv, chaos_result: FaultResult) -> None:
    _local(chaos_env)
    chaos_env.start_controller()
    await run_fault(chaos_env, chaos_result, faults.etcd_restart)
