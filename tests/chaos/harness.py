"""What every chaos scenario shares: the environment (namespace, monitor, kubelet, workload,
controller processes) and the loop that runs a fault during a rollout and a scale change, waits for
convergence and records the figures.

Knobs: CHAOS_ITERATIONS (iterations per fault, default 1: the smoke in `make test`), CHAOS_SEED
(the random seed; printed with the results so a run can be repeated), CHAOS_CONVERGE_SECONDS
(the bound on convergence after a fault ends, default 240), CHAOS_CONTROLLER_ARGS (more
controller flags, e.g. --log-level=debug).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.runtime.client import KubeClient
from controller.runtime.errors import ApiError
from tests.chaos.monitor import Monitor
from tests.chaos.workload import Kubelet, Workload
from tests.cluster import ControllerProcess

ITERATIONS = int(os.environ.get("CHAOS_ITERATIONS", "1"))
SEED = int(os.environ.get("CHAOS_SEED", str(random.SystemRandom().randrange(1 << 30))))
CONVERGE_SECONDS = float(os.environ.get("CHAOS_CONVERGE_SECONDS", "240"))


@dataclass
class FaultResult:
    fault: str
    iterations: int = 0
    violations: int = 0
    duplicates: int = 0
    max_convergence: float = 0.0  # from the end of the fault
    max_rollout: float = 0.0  # from the iteration's first spec change
    relists: int = 0
    events: int = 0
    seed: int = SEED
    details: list[str] = field(default_factory=list)
    error: str | None = None
    note: str = ""


@dataclass
class ChaosEnv:
    kube: KubeClient
    namespace: str
    kubeconfig: str
    tmp_path: Path
    monitor: Monitor
    kubelet: Kubelet
    workload: Workload
    run_controller: Callable[..., ControllerProcess]
    rng: random.Random
    cluster: Any = None  # tests.cluster.ClusterHandle
    controllers: list[ControllerProcess] = field(default_factory=list)
    # Set by a fault that stops a controller on purpose, so the liveness check does not flag it.
    expected_exits: set[int] = field(default_factory=set)
    controller_kubeconfig: str | None = None
    leader_elect: bool = False
    proxy: Any = None  # tests.proxy.BlackholeProxy between the controller and the API server
    notes: list[str] = field(default_factory=list)  # what the faults did, for the results table

    def controller_args(self) -> list[str]:
        args = [f"--namespace={self.namespace}", *os.environ.get("CHAOS_CONTROLLER_ARGS", "").split()]
        if self.controller_kubeconfig:
            args.append(f"--kubeconfig={self.controller_kubeconfig}")
        if self.leader_elect:
            args += [
                "--leader-elect=true",
                f"--leader-elect-namespace={self.namespace}",
                "--leader-elect-id=chaos",
            ]
        return args

    def start_controller(self, name: str = "controller") -> ControllerProcess:
        cp = self.run_controller(*self.controller_args(), name=name)
        self.controllers.append(cp)
        return cp

    def live_controllers(self) -> list[ControllerProcess]:
        return [c for c in self.controllers if c.alive()]

    async def check_controllers(self) -> None:
        for c in self.controllers:
            if not c.alive() and c.pid not in self.expected_exits:
                tail = "\n".join(c.log_text().splitlines()[-20:])
                raise AssertionError(f"controller {c.pid} exited ({c.proc.returncode}) on its own:\n{tail}")

    async def retrying(self, what: str, action: Callable[[], Awaitable[Any]], within: float = 90) -> Any:
        """The driver's writes go straight to the API server, which a fault may be restarting."""
        deadline = time.monotonic() + within
        while True:
            try:
                return await action()
            except ApiError as err:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{what}: {err}") from err
                await asyncio.sleep(0.5)


Fault = Callable[[ChaosEnv, int], Coroutine[Any, Any, None]]


async def run_fault(env: ChaosEnv, result: FaultResult, fault: Fault, iterations: int = ITERATIONS) -> None:
    """Creates the workload, then per iteration: starts the fault, rolls out and scales while it
    runs, waits for the fault to end and for convergence. Fills `result`; raises on a violation
    or when the workload does not converge within CONVERGE_SECONDS."""
    wl = env.workload
    await env.retrying("create the workload", wl.create)
    await wl.wait_converged(CONVERGE_SECONDS, env.check_controllers)
    for i in range(1, iterations + 1):
        wl.iteration = i
        task = asyncio.create_task(fault(env, i))
        await asyncio.sleep(env.rng.uniform(0, 1))
        started = time.monotonic()
        await env.retrying("roll out", lambda i=i: wl.rollout(i))  # type: ignore[misc]
        await asyncio.sleep(env.rng.uniform(1, 3))
        await env.retrying("scale", lambda i=i: wl.scale(i))  # type: ignore[misc]
        await task
        # Faults that write the spec themselves (the burst) leave it at their last write: the
        # iteration's target is written again; a no-op for every other fault.
        await env.retrying("roll out", lambda i=i: wl.rollout(i))  # type: ignore[misc]
        await env.retrying("scale", lambda i=i: wl.scale(i))  # type: ignore[misc]
        took = await wl.wait_converged(CONVERGE_SECONDS, env.check_controllers)
        await env.monitor.drain()
        result.iterations = i
        result.max_convergence = max(result.max_convergence, took)
        result.max_rollout = max(result.max_rollout, time.monotonic() - started)
        result.violations = len(env.monitor.violations)
        result.duplicates = sum(1 for v in env.monitor.violations if v.invariant == "duplicate")
        result.relists = env.monitor.relists
        result.events = env.monitor.checker.events
        if env.monitor.violations:
            break
    result.details = [str(v) for v in env.monitor.violations[:20]]
    if env.notes:
        result.note = env.notes[-1]
    # A monitor that saw nothing would find nothing: it must have checked the whole workload.
    assert env.monitor.checker.events > 50, f"the monitor checked only {env.monitor.checker.events} events"
    assert not env.monitor.violations, f"invariant violations (seed {SEED}):\n" + "\n".join(result.details)


def write_results(path: Path, results: list[FaultResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.__dict__ for r in results], indent=2))


def format_table(results: list[FaultResult]) -> str:
    header = f"{'fault':<34} {'iterations':>10} {'violations':>10} {'duplicates':>10} {'max converge':>13} {'max rollout':>12} {'events':>7}  note"
    lines = [header, "-" * len(header)]
    for r in results:
        note = r.error or r.note
        lines.append(
            f"{r.fault:<34} {r.iterations:>10} {r.violations:>10} {r.duplicates:>10} "
            f"{r.max_convergence:>12.1f}s {r.max_rollout:>11.1f}s {r.events:>7}  {note}"
        )
    if results:
        lines.append(f"seed {results[0].seed} (CHAOS_SEED={results[0].seed} repeats the random choices)")
    return "\n".join(lines)
