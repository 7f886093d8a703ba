"""The controller manager: shared informers, an event recorder, the HTTP endpoints, leader
election, and the worker loops of every registered controller, with a graceful shutdown.

Lifecycle of `run(stop_event)`:
1. serve /metrics, /healthz and /readyz; start the event recorder;
2. with leader election, wait for the Lease (a standby stays here, ready and idle);
3. start the informers and wait for their caches; then run the workers;
4. on `stop_event`: stop taking new work and let the syncs in flight finish (bounded by
   `shutdown_timeout`), stop the informers, release the Lease, flush events, stop serving.
Losing the Lease cancels the workers at once (another replica may already be acting) and makes
`run` raise `LeadershipLost`: the process should exit non-zero and be restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Callable

from controller.runtime.client import KubeClient
from controller.runtime.events import EventRecorder
from controller.runtime.health import Check, HealthChecks, HttpServer, serve_metrics
from controller.runtime.informer import InformerFactory
from controller.runtime.leaderelection import LeaderElector
from controller.runtime.logging import get_logger
from controller.runtime.loop import Reconciler, run_workers
from controller.runtime.options import Options, parse_bind_address

log = get_logger(__name__)

COMPONENT = "stormservice-controller"


class LeadershipLost(Exception):
    """The Lease was lost while leading."""


def default_identity() -> str:
    """Unique per process, like client-go's convention: hostname (the pod name) + a uuid."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


class Manager:
    def __init__(
        self,
        client: KubeClient,
        options: Options,
        *,
        identity: str | None = None,
        shutdown_timeout: float = 25.0,
        elector_factory: Callable[[KubeClient, Options, str], LeaderElector] | None = None,
    ) -> None:
        self.client = client
        self.options = options
        self.identity = identity or default_identity()
        self.shutdown_timeout = shutdown_timeout
        self.informers = InformerFactory(client, namespace=options.namespace)
        self.recorder = EventRecorder(client, COMPONENT, host=socket.gethostname())
        self.healthz = HealthChecks("healthz")
        self.readyz = HealthChecks("readyz")
        self.healthz.add("ping", lambda: None)
        self.readyz.add("manager", self._ready_check)
        self.elector: LeaderElector | None = None
        self._elector_factory = elector_factory or _new_elector
        self._controllers: list[tuple[Reconciler, int]] = []
        self._servers: list[HttpServer] = []
        self.metrics_port: int | None = None
        self.health_port: int | None = None
        self._caches_synced = False
        self._stopping = False
        self._running = False

    # --- registration --------------------------------------------------------------------------

    def add(self, reconciler: Reconciler, workers: int) -> None:
        if self._running:
            raise RuntimeError("controllers must be added before Manager.run()")
        if workers < 1:
            raise ValueError(f"{reconciler.name}: workers must be at least 1")
        if any(r.name == reconciler.name for r, _ in self._controllers):
            raise ValueError(f"a controller named {reconciler.name!r} is already registered")
        self._controllers.append((reconciler, workers))

    @property
    def controllers(self) -> list[tuple[Reconciler, int]]:
        return list(self._controllers)

    def add_healthz_check(self, name: str, check: Check) -> None:
        self.healthz.add(name, check)

    def add_readyz_check(self, name: str, check: Check) -> None:
        self.readyz.add(name, check)

    # --- state ---------------------------------------------------------------------------------

    @property
    def caches_synced(self) -> bool:
        return self._caches_synced

    def _ready_check(self) -> str | None:
        """Ready: serving and able to take over. A standby (not the leader) is ready: were it
        not, a rolling update of a two-replica Deployment could never finish. The leader is
        ready once its caches are synced."""
        if self._stopping:
            return "shutting down"
        if self.elector is not None and not self.elector.is_leader:
            return None
        if not self._caches_synced:
            return "caches not synced"
        return None

    def _lease_check(self) -> str | None:
        if self.elector is not None and not self.elector.healthy():
            return "the leader has not renewed its lease for too long"
        return None

    # --- running -------------------------------------------------------------------------------

    async def run(self, stop_event: asyncio.Event) -> None:
        if self._running:
            raise RuntimeError("Manager.run() called twice")
        self._running = True
        if not self._controllers:
            log.warning("no controllers registered: the manager will only serve its endpoints")
        try:
            await self._start_servers()
            await self.recorder.start()
            if self.options.leader_elect:
                await self._run_elected(stop_event)
            else:
                await self._lead(stop_event)
        finally:
            self._stopping = True
            await self.recorder.stop()
            await self._stop_servers()
        if self.elector is not None and self.elector.lost:
            raise LeadershipLost(
                f"lost the lease {self.options.leader_elect_namespace}/{self.options.leader_elect_id}"
            )
        log.info("manager stopped")

    async def _run_elected(self, stop_event: asyncio.Event) -> None:
        elector = self._elector_factory(self.client, self.options, self.identity)
        self.elector = elector
        self.healthz.add("leader-election", self._lease_check)

        async def lead() -> None:
            await self._lead(stop_event)

        elected = asyncio.create_task(elector.run(lead, lambda: None), name="leader-election")
        stop = asyncio.create_task(stop_event.wait(), name="stop-signal")
        try:
            await asyncio.wait({elected, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not elected.done() and not elector.is_leader:
                # A standby (or a candidate not yet leading): nothing to drain.
                elected.cancel()
            # A leader's lead() sees stop_event itself, drains, and the elector releases.
            with contextlib.suppress(asyncio.CancelledError):
                await elected
        finally:
            for task in (elected, stop):
                task.cancel()
            await asyncio.wait({elected, stop})

    async def _lead(self, stop_event: asyncio.Event) -> None:
        """Informers, then workers, until stop_event; then a graceful drain. Cancelled when the
        Lease is lost."""
        self.informers.start()
        worker_tasks: list[asyncio.Task[None]] = []
        stop = asyncio.create_task(stop_event.wait())
        try:
            sync = asyncio.create_task(self.informers.wait_for_sync())
            try:
                await asyncio.wait({stop, sync}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sync.cancel()
            if stop.done():
                log.info("stopped before the caches synced")
                return
            self._caches_synced = True
            log.info("caches synced", informers=len(self.informers.informers))
            for reconciler, workers in self._controllers:
                worker_tasks.append(
                    asyncio.create_task(run_workers(reconciler, workers), name=f"workers {reconciler.name}")
                )
            await asyncio.wait({stop, *worker_tasks}, return_when=asyncio.FIRST_COMPLETED)
            ended = [t for t in worker_tasks if t.done()]
            for task in ended:
                error = None if task.cancelled() else task.exception()
                log.error("workers stopped unexpectedly", task=task.get_name(), exc_info=error)
            self._stopping = True
            await self._drain(worker_tasks)
            if ended:
                raise RuntimeError(f"workers stopped unexpectedly: {', '.join(t.get_name() for t in ended)}")
        finally:
            stop.cancel()
            for task in worker_tasks:
                task.cancel()
            await asyncio.wait([stop, *worker_tasks])
            await self.informers.stop()

    async def _drain(self, worker_tasks: list[asyncio.Task[None]]) -> None:
        log.info("shutting down: finishing the syncs in flight", timeout=self.shutdown_timeout)
        try:
            async with asyncio.timeout(self.shutdown_timeout):
                await asyncio.gather(*(r.queue.shut_down_with_drain() for r, _ in self._controllers))
                if worker_tasks:
                    await asyncio.wait(worker_tasks)
        except TimeoutError:
            log.warning("syncs still running after the shutdown timeout; cancelling them")

    async def _start_servers(self) -> None:
        metrics_at = parse_bind_address(self.options.metrics_bind_address)
        health_at = parse_bind_address(self.options.health_probe_bind_address)
        health_routes = {"/healthz": self.healthz.handle, "/readyz": self.readyz.handle}
        if metrics_at is not None and metrics_at == health_at and metrics_at[1] != 0:
            combined = HttpServer("metrics+health", *metrics_at, {"/metrics": serve_metrics, **health_routes})
            await self._start(combined)
            self.metrics_port = self.health_port = combined.port
            return
        if metrics_at is not None:
            server = HttpServer("metrics", *metrics_at, {"/metrics": serve_metrics})
            await self._start(server)
            self.metrics_port = server.port
        if health_at is not None:
            server = HttpServer("health", *health_at, health_routes)
            await self._start(server)
            self.health_port = server.port

    async def _start(self, server: HttpServer) -> None:
        self._servers.append(server)
        await server.start()

    async def _stop_servers(self) -> None:
        for server in reversed(self._servers):
            try:
                await server.stop()
            except Exception as err:
                log.warning("could not stop a server", server=server.name, error=str(err))
        self._servers.clear()


def _new_elector(client: KubeClient, options: Options, identity: str) -> LeaderElector:
    return LeaderElector(
        client,
        options.leader_elect_namespace,
        options.leader_elect_id,
        identity,
        lease_duration=options.leader_elect_lease_duration,
        renew_deadline=options.leader_elect_renew_deadline,
        retry_period=options.leader_elect_retry_period,
    )
