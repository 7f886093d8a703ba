"""Fixtures of the chaos suite, and the table of results printed at the end of the session (also
written to .cluster/chaos-results.json, or CHAOS_RESULTS)."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from controller.runtime.client import KubeClient
from tests.chaos.harness import SEED, ChaosEnv, FaultResult, format_table, write_results
from tests.chaos.monitor import Monitor
from tests.chaos.workload import Kubelet, Workload
from tests.cluster import REPO_ROOT, ClusterHandle, ControllerProcess

RESULTS = pytest.StashKey[list[FaultResult]]()
RESULTS_PATH = Path(os.environ.get("CHAOS_RESULTS", REPO_ROOT / ".cluster" / "chaos-results.json"))


@pytest.fixture
def chaos_result(request: pytest.FixtureRequest) -> Any:
    callspec = getattr(request.node, "callspec", None)
    name = callspec.id if callspec is not None else request.node.name.removeprefix("test_")
    result = FaultResult(fault=name)
    request.config.stash.setdefault(RESULTS, []).append(result)
    yield result
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed and result.error is None:
        crash = getattr(rep.longrepr, "reprcrash", None)
        message = str(crash.message if crash is not None else "failed")
        result.error = "FAILED: " + message.splitlines()[0][:120]


@pytest.fixture
async def chaos_env(
    kube: KubeClient,
    namespace: str,
    crds: list[str],
    kubeconfig: str,
    cluster: ClusterHandle,
    run_controller: Callable[..., ControllerProcess],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[ChaosEnv]:
    monitor = Monitor(kube, namespace)
    await monitor.start()
    kubelet = Kubelet(kube, monitor, namespace)
    kubelet.start()
    env = ChaosEnv(
        kube=kube,
        namespace=namespace,
        kubeconfig=kubeconfig,
        tmp_path=tmp_path,
        monitor=monitor,
        kubelet=kubelet,
        workload=Workload(kube, namespace),
        run_controller=run_controller,
        rng=random.Random(f"{SEED}-{request.node.name}"),
        cluster=cluster,
    )
    try:
        yield env
    finally:
        await kubelet.stop()
        await monitor.stop()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS, [])
    if not results:
        return
    write_results(RESULTS_PATH, results)
    terminalreporter.section("chaos results")
    terminalreporter.write_line(format_table(results))
    terminalreporter.write_line(f"(written to {RESULTS_PATH})")
