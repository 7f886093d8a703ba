"""The faults, each an async function `fault(env, iteration)` that injects its fault while the
driver rolls out and scales, and returns once the fault is over (everything restored). Every loop
is bounded in count and time; all traffic stays on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from typing import Any

from controller.runtime.client import create_client
from controller.runtime.errors import ApiError, NotFound
from controller.runtime.resources import NODES, PODS, STORMSERVICES
from tests.chaos.apiproxy import ApiFaultProxy
from tests.chaos.harness import ChaosEnv
from tests.chaos.invariants import PODSET_LABEL, STORM_LABEL
from tests.chaos.workload import IMAGES
from tests.cluster import ControllerProcess, _load_localcluster
from tests.proxy import BlackholeProxy

BLACKHOLE_SECONDS = float(os.environ.get("CHAOS_BLACKHOLE_SECONDS", "60"))


# --- 1. the controller process --------------------------------------------------------------


async def _kill(env: ChaosEnv, victim: ControllerProcess) -> None:
    env.expected_exits.add(victim.pid)
    victim.proc.kill()
    await asyncio.to_thread(victim.proc.wait, 10)


async def sigkill_repeatedly(env: ChaosEnv, iteration: int) -> None:
    """SIGKILL at random points of the rollout, three times; a new process each time."""
    for _ in range(3):
        await asyncio.sleep(env.rng.uniform(0.5, 5))
        for victim in env.live_controllers():
            await _kill(env, victim)
        env.start_controller(name="restarted")


def _leader(env: ChaosEnv) -> ControllerProcess | None:
    for c in env.live_controllers():
        if '"became leader"' in c.log_text():
            return c
    return None


async def sigterm_handover(env: ChaosEnv, iteration: int) -> None:
    """Two replicas with leader election: SIGTERM the leader mid-rollout (it releases the Lease,
    the standby takes over), then start a new standby; twice."""
    for _ in range(2):
        await asyncio.sleep(env.rng.uniform(0.5, 4))
        deadline = time.monotonic() + 60
        leader = _leader(env)
        while leader is None:
            assert time.monotonic() < deadline, "no replica became leader within 60s"
            await asyncio.sleep(0.2)
            leader = _leader(env)
        env.expected_exits.add(leader.pid)
        code = await asyncio.to_thread(leader.stop, 25)
        assert code == 0, f"the leader exited {code} on SIGTERM"
        env.start_controller(name="standby")


# --- 6. pods ------------------------------------------------------------------------------


def _workload_pods(env: ChaosEnv) -> list[dict[str, Any]]:
    return [p for p in env.monitor.live_pods() if STORM_LABEL in (p["metadata"].get("labels") or {})]


async def pod_deletions_and_not_ready(env: ChaosEnv, iteration: int) -> None:
    """For 20 s, every 0.5-2 s: a random pod of the workload is deleted or made NotReady (Ready
    again 2-6 s later); the first victim is a member of a group."""
    end = time.monotonic() + 20
    first = True
    while time.monotonic() < end:
        await asyncio.sleep(env.rng.uniform(0.5, 2))
        pods = _workload_pods(env)
        if first:
            pods = [p for p in pods if PODSET_LABEL in p["metadata"]["labels"]] or pods
            first = False
        if not pods:
            continue
        victim = env.rng.choice(sorted(pods, key=lambda p: p["metadata"]["name"]))
        env.monitor.excuse(victim)
        if env.rng.random() < 0.5:
            with contextlib.suppress(NotFound):
                await env.kube.delete(PODS, env.namespace, victim["metadata"]["name"], grace_period_seconds=0)
        else:
            await env.kubelet.make_not_ready(victim, env.rng.uniform(2, 6))


# --- 7. a burst of spec changes ------------------------------------------------------------


async def spec_burst(env: ChaosEnv, iteration: int, count: int = 500, concurrency: int = 20) -> None:
    """`count` spec changes within seconds, each to a random image and scale: many generations
    the controller never sees."""
    # A client of its own: the shared one's rate limiter (50 QPS) would spread the burst out.
    client = await create_client(env.kubeconfig, qps=1000, burst=1000)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)

    async def writer() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            image = env.rng.choice(IMAGES)
            if n % 2:
                name, patch = (
                    "replica",
                    [{"op": "replace", "path": "/spec/replicas", "value": env.rng.randint(1, 4)}],
                )
            else:
                name, patch = (
                    "pooled",
                    [
                        {
                            "op": "replace",
                            "path": "/spec/template/spec/roles/0/replicas",
                            "value": env.rng.randint(1, 4),
                        }
                    ],
                )
            patch.append(
                {
                    "op": "replace",
                    "path": "/spec/template/spec/roles/0/template/spec/containers/0/image",
                    "value": image,
                }
            )
            with contextlib.suppress(ApiError):
                await client.patch(STORMSERVICES, env.namespace, name, patch, patch_type="json")

    t0 = time.monotonic()
    try:
        await asyncio.gather(*(writer() for _ in range(concurrency)))
    finally:
        await client.close()
    took = time.monotonic() - t0
    await env.monitor.drain()
    reported = sum(len(g) for g in env.monitor.checker.observed_generations.values())
    env.notes.append(f"{count} changes in {took:.1f}s; {reported} generations reported in all")


# --- 8. node loss --------------------------------------------------------------------------


async def node_loss(env: ChaosEnv, iteration: int) -> None:
    """The fake node holding most of the workload's pods is deleted with its pods (as the pod
    garbage collector does for a node that is gone), and comes back 10 s later."""
    await asyncio.sleep(env.rng.uniform(1, 4))
    pods = _workload_pods(env)
    counts = Counter(p["spec"].get("nodeName") for p in pods if p["spec"].get("nodeName"))
    if not counts:
        return
    node, _ = counts.most_common(1)[0]
    node_obj = await env.kube.get(NODES, None, node)
    victims = [p for p in pods if p["spec"].get("nodeName") == node]
    for p in victims:
        env.monitor.excuse(p)
    await env.kube.delete(NODES, None, node)
    for p in victims:
        with contextlib.suppress(NotFound):
            await env.kube.delete(PODS, env.namespace, p["metadata"]["name"], grace_period_seconds=0)
    env.notes.append(f"lost {node} with {len(victims)} pods")
    await asyncio.sleep(10)
    index = int(node.rsplit("-", 1)[1])
    fresh = _load_localcluster().fake_node(node, index) if env.cluster and env.cluster.local else None
    body = fresh or {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {k: v for k, v in node_obj["metadata"].items() if k in ("name", "labels", "annotations")},
        "spec": {},
    }
    await env.retrying("recreate the node", lambda: env.kube.create(NODES, None, body))


# --- 4, 5. the connection between the controller and the API server -------------------------


async def blackhole(env: ChaosEnv, iteration: int) -> None:
    """The controller's API connections go silent, and new ones too, for 60 s; then new
    connections work again (the silent ones stay silent: the controller must notice)."""
    proxy: BlackholeProxy = env.proxy
    await asyncio.sleep(env.rng.uniform(1, 3))
    silenced = proxy.partition()
    await asyncio.sleep(BLACKHOLE_SECONDS)
    proxy.heal()
    env.notes.append(f"{silenced} connections blackholed for {BLACKHOLE_SECONDS:.0f}s")


async def latency(env: ChaosEnv, iteration: int) -> None:
    """200-500 ms added to every chunk either way, for 30 s."""
    proxy: BlackholeProxy = env.proxy
    proxy.latency = (0.2, 0.5)
    try:
        await asyncio.sleep(30)
    finally:
        proxy.latency = None


# --- 3, 5. answers of the API server (through tests/chaos/apiproxy.py) ----------------------


async def watches_expired(env: ChaosEnv, iteration: int) -> None:
    """Three times during the rollout: every open watch of the controller ends with 410 Expired
    and re-watches from a resourceVersion get 410 for 2 s, as when etcd's history was compacted."""
    proxy: ApiFaultProxy = env.proxy
    for _ in range(3):
        await asyncio.sleep(env.rng.uniform(1, 4))
        proxy.expire_watches(2)
    env.notes.append(f"{proxy.expired} watches answered 410")


async def throttled(env: ChaosEnv, iteration: int) -> None:
    """For 30 s, 30% of the controller's requests (watches excepted) are answered 429 with
    Retry-After: 1."""
    proxy: ApiFaultProxy = env.proxy
    proxy.throttle(0.3)
    try:
        await asyncio.sleep(30)
    finally:
        proxy.throttle(0)
    env.notes.append(f"{proxy.throttled} requests answered 429")


# --- 2. the control plane itself -----------------------------------------------------------


async def _restart(env: ChaosEnv, component: str, down_seconds: float) -> None:
    await asyncio.sleep(env.rng.uniform(1, 4))
    local = env.cluster.local
    t0 = time.monotonic()
    await asyncio.to_thread(local.restart_component, component, down_seconds=down_seconds)
    # Serving again means listing through the API server (for etcd: the API server reconnected).
    await env.retrying("the API server to serve again", lambda: env.kube.get(NODES, None, "kwok-node-0"), 120)
    env.notes.append(f"{component} down {time.monotonic() - t0:.1f}s")


async def apiserver_restart(env: ChaosEnv, iteration: int) -> None:
    """kube-apiserver stopped mid-rollout, left down 5 s, started again."""
    await _restart(env, "kube-apiserver", 5)


async def etcd_restart(env: ChaosEnv, iteration: int) -> None:
    """etcd stopped mid-rollout, left down 5 s, started again on the same data."""
    await _restart(env, "etcd", 5)
