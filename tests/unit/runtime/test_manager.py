from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import types
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
import uvloop

import controller.__main__ as controller_main
from controller.__main__ import build_controllers
from controller.runtime.client import KubeClient, object_key
from controller.runtime.errors import Forbidden
from controller.runtime.fake import FakeClient
from controller.runtime.health import HealthChecks, HttpServer
from controller.runtime.informer import FuncHandler
from controller.runtime.leaderelection import LeaderElector
from controller.runtime.manager import LeadershipLost, Manager
from controller.runtime.options import SHUTDOWN_RESERVE, Options
from controller.runtime.ratelimit import ItemExponentialFailureRateLimiter
from controller.runtime.resources import EVENTS, LEASES, PODS
from controller.runtime.workqueue import RateLimitingQueue

# Upper bounds only: a loaded machine (the CI box shares its cores with a Go build) can be slow.
PATIENCE = 30

LOCAL = "127.0.0.1:0"


def options(**kw: object) -> Options:
    base: dict[str, object] = {
        "leader_elect": False,
        "leader_elect_namespace": "ops",
        "metrics_bind_address": LOCAL,
        "health_probe_bind_address": LOCAL,
    }
    base.update(kw)
    return Options(**base)  # type: ignore[arg-type]


def fast_elector(
    client: KubeClient, opts: Options, identity: str, renew_deadline: float = 3.0
) -> LeaderElector:
    return LeaderElector(
        client,
        opts.leader_elect_namespace,
        opts.leader_elect_id,
        identity,
        lease_duration=5.0,
        renew_deadline=renew_deadline,
        retry_period=0.02,
    )


def quickly_losing_elector(client: KubeClient, opts: Options, identity: str) -> LeaderElector:
    return fast_elector(client, opts, identity, renew_deadline=0.5)


class PodController:
    """A small reconciler: pods → keys; sync records the key, waits on `gate`, emits an event."""

    def __init__(self, manager: Manager) -> None:
        self.name = f"pods-{uuid.uuid4().hex[:6]}"
        self.queue = RateLimitingQueue(self.name, ItemExponentialFailureRateLimiter(0.001, 0.01))
        self.manager = manager
        self.informer = manager.informers.informer(PODS)
        self.informer.add_event_handler(FuncHandler(on_add=lambda obj: self.queue.add(object_key(obj))))
        self.synced: list[str] = []
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    async def sync(self, key: str) -> float | None:
        self.started.set()
        await self.gate.wait()
        pod = self.informer.store.get(key)
        assert pod is not None
        self.manager.recorder.event(pod, "Normal", "Synced", f"synced {key}", resource=PODS)
        self.synced.append(key)
        return None


async def wait_until(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(PATIENCE):
        while True:
            if cond():
                return
            await asyncio.sleep(0.005)


async def get(port: int | None, path: str) -> tuple[int, str]:
    assert port is not None
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, await resp.text()


def seed_pod(client: FakeClient, name: str) -> None:
    client.seed(PODS, {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"}})


@contextlib.asynccontextmanager
async def running(manager: Manager, stop: asyncio.Event) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(manager.run(stop))
    try:
        yield task
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


async def test_runs_controllers_serves_endpoints_and_stops_gracefully() -> None:
    client = FakeClient()
    seed_pod(client, "a")
    seed_pod(client, "b")
    manager = Manager(client, options())
    ctl = PodController(manager)
    manager.add(ctl, 2)
    stop = asyncio.Event()
    async with running(manager, stop) as task:
        await wait_until(lambda: sorted(ctl.synced) == ["ns/a", "ns/b"])
        assert manager.metrics_port and manager.health_port and manager.metrics_port != manager.health_port
        assert await get(manager.health_port, "/healthz") == (200, "ok")
        assert await get(manager.health_port, "/readyz") == (200, "ok")
        status, text = await get(manager.health_port, "/readyz?verbose")
        assert status == 200 and "[+]manager ok" in text
        status, body = await get(manager.metrics_port, "/metrics")
        assert status == 200
        assert f'controller_runtime_reconcile_total{{controller="{ctl.name}",result="success"}} 2.0' in body
        assert f'workqueue_adds_total{{name="{ctl.name}"}}' in body

        # A sync in flight when the stop comes is finished, not cancelled.
        ctl.gate.clear()
        ctl.started.clear()
        seed_pod(client, "c")
        await asyncio.wait_for(ctl.started.wait(), PATIENCE)
        stop.set()
        await wait_until(lambda: manager.readyz.run() == [("manager", "shutting down")])
        assert not task.done()
        status, _ = await get(manager.health_port, "/readyz")
        assert status == 500  # not ready while shutting down
        ctl.gate.set()
        await asyncio.wait_for(task, PATIENCE)
    assert sorted(ctl.synced) == ["ns/a", "ns/b", "ns/c"]
    assert sorted(e["involvedObject"]["name"] for e in client.objects(EVENTS, "ns")) == ["a", "b", "c"]
    assert client.watch_count(PODS) == 0  # informers stopped
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(manager.health_port, "/healthz")


class _LendingClient(FakeClient):
    """A fake that, like ApiClient, lends its connections to clients with their own limits."""

    def __init__(self) -> None:
        super().__init__()
        self.lent: list[tuple[float, int, str]] = []

    def with_own_rate_limit(self, *, qps: float, burst: int, user_agent: str) -> KubeClient:
        self.lent.append((qps, burst, user_agent))
        return self


def test_each_controller_gets_its_own_rate_limited_client_once() -> None:
    client = _LendingClient()
    manager = Manager(client, options(kube_api_qps=7.0, kube_api_burst=9))
    roleset = manager.for_controller("roleset")
    assert manager.for_controller("roleset") is roleset
    assert manager.for_controller("stormservice") is not roleset
    assert client.lent == [
        (7.0, 9, "stormservice-controller/roleset"),
        (7.0, 9, "stormservice-controller/stormservice"),
    ]
    assert roleset.recorder is not manager.recorder


def test_a_client_that_cannot_lend_is_shared() -> None:
    client = FakeClient()
    manager = Manager(client, options())
    assert manager.for_controller("roleset").client is client


async def test_controller_recorders_run_with_the_manager_and_flush_on_stop() -> None:
    client = FakeClient()
    seed_pod(client, "a")
    manager = Manager(client, options())
    own = manager.for_controller("pods")
    stop = asyncio.Event()
    async with running(manager, stop) as task:
        await wait_until(lambda: manager.caches_synced)
        own.recorder.event(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "ns", "name": "a", "uid": "u"}},
            "Normal",
            "Synced",
            "by the controller's own recorder",
        )
        stop.set()
        await asyncio.wait_for(task, PATIENCE)
    assert [e["message"] for e in client.objects(EVENTS, "ns")] == ["by the controller's own recorder"]
    with pytest.raises(RuntimeError):
        manager.for_controller("late")


async def test_readiness_before_the_caches_sync() -> None:
    manager = Manager(FakeClient(), options())
    assert manager.readyz.run() == [("manager", "caches not synced")]


async def test_shutdown_timeout_cancels_stuck_syncs() -> None:
    client = FakeClient()
    seed_pod(client, "stuck")
    manager = Manager(client, options(graceful_shutdown_timeout=SHUTDOWN_RESERVE + 0.1))
    assert manager.shutdown_timeout == pytest.approx(0.1)
    ctl = PodController(manager)
    ctl.gate.clear()
    manager.add(ctl, 1)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    await asyncio.wait_for(ctl.started.wait(), PATIENCE)
    stop.set()
    await asyncio.wait_for(task, PATIENCE)
    assert ctl.synced == []
    assert ctl.queue.processing == frozenset()


async def test_leader_election_acquires_and_releases() -> None:
    client = FakeClient()
    seed_pod(client, "a")
    manager = Manager(client, options(leader_elect=True), identity="me", elector_factory=fast_elector)
    ctl = PodController(manager)
    manager.add(ctl, 1)
    stop = asyncio.Event()
    async with running(manager, stop) as task:
        await wait_until(lambda: ctl.synced == ["ns/a"])
        lease = client.get_object(LEASES, "ops", "stormservice-controller")
        assert lease is not None and lease["spec"]["holderIdentity"] == "me"
        assert await get(manager.health_port, "/healthz?verbose") == (
            200,
            "[+]ping ok\n[+]leader-election ok\nhealthz check passed\n",
        )
        stop.set()
        await asyncio.wait_for(task, PATIENCE)
    lease = client.get_object(LEASES, "ops", "stormservice-controller")
    assert lease is not None and lease["spec"]["holderIdentity"] == ""


async def test_the_elector_takes_its_timing_from_the_options() -> None:
    client = FakeClient()
    seed_pod(client, "a")
    timing = {
        "leader_elect_lease_duration": 7.0,
        "leader_elect_renew_deadline": 5.0,
        "leader_elect_retry_period": 0.25,
    }
    manager = Manager(client, options(leader_elect=True, **timing), identity="me")
    ctl = PodController(manager)
    manager.add(ctl, 1)
    stop = asyncio.Event()
    async with running(manager, stop) as task:
        await wait_until(lambda: ctl.synced == ["ns/a"])
        elector = manager.elector
        assert elector is not None
        assert (elector.lease_duration, elector.renew_deadline, elector.retry_period) == (7.0, 5.0, 0.25)
        lease = client.get_object(LEASES, "ops", "stormservice-controller")
        assert lease is not None and lease["spec"]["leaseDurationSeconds"] == 7
        stop.set()
        await asyncio.wait_for(task, PATIENCE)


async def test_a_standby_keeps_its_caches_warm_and_stays_idle() -> None:
    client = FakeClient()
    seed_pod(client, "a")
    client.seed(
        LEASES,
        {
            "metadata": {"name": "stormservice-controller", "namespace": "ops"},
            "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 60},
        },
    )
    manager = Manager(client, options(leader_elect=True), identity="me", elector_factory=fast_elector)
    ctl = PodController(manager)
    manager.add(ctl, 1)
    stop = asyncio.Event()
    async with running(manager, stop) as task:
        await wait_until(lambda: manager.caches_synced)
        assert await get(manager.health_port, "/readyz") == (200, "ok")
        # Warm: listed and watching, so that taking over needs no relist; idle: nothing synced.
        assert ctl.informer.store.get("ns/a") is not None and client.watch_count(PODS) == 1
        await asyncio.sleep(0.1)
        assert ctl.synced == []
        stop.set()
        await asyncio.wait_for(task, PATIENCE)
    lease = client.get_object(LEASES, "ops", "stormservice-controller")
    assert lease is not None and lease["spec"]["holderIdentity"] == "someone-else"


async def test_a_standby_takes_over_a_released_lease_at_once() -> None:
    """The retry period is long (5 s); the standby sees the release on its Lease watch."""
    client = FakeClient()
    seed_pod(client, "a")

    def slow_retries(c: KubeClient, opts: Options, identity: str) -> LeaderElector:
        return LeaderElector(
            c, opts.leader_elect_namespace, opts.leader_elect_id, identity,
            lease_duration=60.0, renew_deadline=30.0, retry_period=5.0,
        )  # fmt: skip

    first = Manager(client, options(leader_elect=True), identity="first", elector_factory=slow_retries)
    first_ctl = PodController(first)
    first.add(first_ctl, 1)
    second = Manager(client, options(leader_elect=True), identity="second", elector_factory=slow_retries)
    second_ctl = PodController(second)
    second.add(second_ctl, 1)
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    async with running(first, stop_first) as first_task:
        await wait_until(lambda: first_ctl.synced == ["ns/a"])
        async with running(second, stop_second):
            await wait_until(lambda: second.caches_synced and second.elector is not None)
            assert second.elector is not None
            await wait_until(lambda: second.elector is not None and second.elector.leader == "first")
            stop_first.set()
            await asyncio.wait_for(first_task, PATIENCE)
            released = asyncio.get_running_loop().time()
            await wait_until(lambda: second_ctl.synced == ["ns/a"])
            took = asyncio.get_running_loop().time() - released
            assert took < 2.0, f"took over {took:.2f}s after the release (retry period 5 s)"


async def test_readiness_says_why_a_cache_cannot_sync() -> None:
    client = FakeClient()
    forbidden = Forbidden(
        code=403,
        reason="Forbidden",
        message='pods is forbidden: User "system:serviceaccount:x:y" cannot list resource "pods"',
    )
    client.inject_error("list", PODS, forbidden, times=10_000)
    manager = Manager(client, options(cache_sync_timeout=0.05))
    manager.add(PodController(manager), 1)
    stop = asyncio.Event()
    async with running(manager, stop):
        await wait_until(lambda: "forbidden" in (manager.readyz.run()[0][1] or ""))
        (_, reason) = manager.readyz.run()[0]
        assert reason is not None
        assert (
            "pods cluster-wide: forbidden: the controller's identity needs the verbs list and watch" in reason
        )
        status, _ = await get(manager.health_port, "/readyz")
        assert status == 500
        client.clear_errors()
        await wait_until(lambda: manager.caches_synced)
        assert await get(manager.health_port, "/readyz") == (200, "ok")


async def test_losing_the_lease_stops_everything_and_raises() -> None:
    client = FakeClient()
    seed_pod(client, "a")
    manager = Manager(
        client, options(leader_elect=True), identity="me", elector_factory=quickly_losing_elector
    )
    ctl = PodController(manager)
    manager.add(ctl, 1)
    task = asyncio.create_task(manager.run(asyncio.Event()))
    await wait_until(lambda: ctl.synced == ["ns/a"])
    client.inject_error("*", LEASES, ConnectionResetError("api server gone"), times=10_000)
    with pytest.raises(LeadershipLost):
        await asyncio.wait_for(task, PATIENCE)
    assert client.watch_count(PODS) == 0


async def test_a_failing_informer_start_is_not_ready_but_stops_cleanly() -> None:
    client = FakeClient()
    client.inject_error("list", PODS, ConnectionResetError("down"), times=10_000)
    manager = Manager(client, options())
    manager.add(PodController(manager), 1)
    stop = asyncio.Event()
    async with running(manager, stop) as task:
        await wait_until(lambda: manager.health_port is not None)
        status, text = await get(manager.health_port, "/readyz")
        assert status == 500 and "caches not synced" in text
        stop.set()
        await asyncio.wait_for(task, PATIENCE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_one_server_when_metrics_and_health_share_an_address() -> None:
    address = f"127.0.0.1:{free_port()}"
    manager = Manager(FakeClient(), options(metrics_bind_address=address, health_probe_bind_address=address))
    stop = asyncio.Event()
    async with running(manager, stop):
        await wait_until(lambda: manager.caches_synced)
        assert manager.metrics_port == manager.health_port
        assert (await get(manager.metrics_port, "/metrics"))[0] == 200
        assert await get(manager.health_port, "/healthz") == (200, "ok")


async def test_disabled_endpoints() -> None:
    manager = Manager(FakeClient(), options(metrics_bind_address="0", health_probe_bind_address="0"))
    stop = asyncio.Event()
    async with running(manager, stop):
        await wait_until(lambda: manager.caches_synced)
        assert manager.metrics_port is None and manager.health_port is None


async def test_health_checks_report_failures() -> None:
    checks = HealthChecks("healthz")
    checks.add("good", lambda: None)
    checks.add("bad", lambda: "disk on fire")

    def boom() -> str | None:
        raise RuntimeError("oops")

    checks.add("raises", boom)
    with pytest.raises(ValueError):
        checks.add("good", lambda: None)
    server = HttpServer("t", "127.0.0.1", 0, {"/healthz": checks.handle})
    await server.start()
    try:
        status, text = await get(server.port, "/healthz")
        assert status == 500
        assert (
            text
            == "[-]bad failed: disk on fire\n[-]raises failed: check raised RuntimeError: oops\nhealthz check failed\n"
        )
    finally:
        await server.stop()


def test_add_validates() -> None:
    manager = Manager(FakeClient(), options())
    ctl = PodController.__new__(PodController)
    ctl.name = "x"
    with pytest.raises(ValueError):
        manager.add(ctl, 0)
    manager.add(ctl, 1)
    with pytest.raises(ValueError):
        manager.add(ctl, 1)


# --- wiring in controller.__main__ ----------------------------------------------------------------


def test_build_controllers_without_controller_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes an import fail with ModuleNotFoundError, as a missing module does.
    monkeypatch.setitem(sys.modules, "controller.roleset.controller", None)
    monkeypatch.setitem(sys.modules, "controller.stormservice.controller", None)
    manager = Manager(FakeClient(), options())
    build_controllers(manager)
    assert manager.controllers == []


def test_build_controllers_registers_what_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    def factory(kind: str) -> Callable[[Manager], object]:
        def new(manager: Manager) -> object:
            made.append(kind)
            ctl = PodController.__new__(PodController)
            ctl.name = kind
            return ctl

        return new

    roleset = types.ModuleType("controller.roleset.controller")
    roleset.new_roleset_controller = factory("roleset")  # type: ignore[attr-defined]
    storm = types.ModuleType("controller.stormservice.controller")
    storm.new_stormservice_controller = factory("stormservice")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "controller.roleset.controller", roleset)
    monkeypatch.setitem(sys.modules, "controller.stormservice.controller", storm)
    manager = Manager(FakeClient(), options(roleset_workers=3, stormservice_workers=7))
    build_controllers(manager)
    assert [(r.name, n) for r, n in manager.controllers] == [("roleset", 3), ("stormservice", 7)]


def test_build_controllers_does_not_hide_broken_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setitem(sys.modules, "controller.roleset.controller", Broken("controller.roleset.controller"))
    with pytest.raises(ModuleNotFoundError):
        build_controllers(Manager(FakeClient(), options()))


def test_main_serves_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: x, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n"
        "contexts: [{name: x, context: {cluster: x, user: x}}]\n"
        "users: [{name: x, user: {token: t}}]\n"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller",
            f"--kubeconfig={kubeconfig}",
            "--leader-elect=false",
            f"--metrics-bind-address={LOCAL}",
            f"--health-probe-bind-address={LOCAL}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        for line in proc.stderr:
            seen.append(line)
            if '"server":"health"' in line and '"event":"serving"' in line:
                break
        else:
            raise AssertionError("".join(seen))
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "".join(seen) + rest
    assert proc.returncode == 0, log
    assert '"event":"signal received, shutting down"' in log and '"event":"manager stopped"' in log


def test_main_runs_the_controller_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    loops: list[type] = []

    async def fake_run(opts: Options) -> int:
        loops.append(type(asyncio.get_running_loop()))
        return 7

    monkeypatch.setattr(controller_main, "run", fake_run)
    # Logging is global: the rest of the session keeps the test configuration.
    monkeypatch.setattr(controller_main, "configure_logging", lambda *args: None)
    assert controller_main.main(["--leader-elect=false"]) == 7
    assert loops == [uvloop.Loop]
