"""The controller manager: shared informers, an event recorder, the HTTP endpoints, leader
election, and the worker loops of every registered controller, with a graceful shutdown.

Lifecycle of `run(stop_event)`:
1. serve /metrics, /healthz and /readyz; start the event recorder;
2. start the informers, on every replica: a standby keeps its caches warm, so that taking over
   does not begin with a cold relist (controller-runtime does the same);
3. with leader election, wait for the Lease (a standby stays here, caches synced and idle);
4. once leading and the caches are synced, run the workers;
5. on `stop_event`: stop handing out work, let the syncs in flight finish (keys still queued are
   left to the next leader), release the Lease, stop the informers, flush events, stop serving,
   all within `graceful_shutdown_timeout`.
Losing the Lease cancels the workers at once (another replica may already be acting) and makes
`run` raise `LeadershipLost`: the process should exit non-zero and be restarted.

Leader election uses its own client (`lease_client`), with its own rate limiter: renewals must
never queue behind the controllers' own writes (client-go gives leader election its own client
for the same reason). Each controller, too, writes (and records its events) through a client with
a token bucket of its own at the configured QPS and burst (`for_controller`), as
kube-controller-manager gives every controller its own clientset: a RoleSet controller creating a
thousand pods does not hold back the StormService controller, nor the other way round. The
informers list and watch through the manager's client.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from controller.runtime.client import KubeClient
from controller.runtime.errors import ApiError, Forbidden, NotFound
from controller.runtime.events import EventRecorder
from controller.runtime.health import Check, HealthChecks, HttpServer, serve_metrics
from controller.runtime.heap import HeapTrimmer, glibc_allocator
from controller.runtime.informer import Informer, InformerFactory
from controller.runtime.leaderelection import LeaderElector
from controller.runtime.logging import get_logger
from controller.runtime.loop import Reconciler, run_workers
from controller.runtime.options import (
    EVENT_FLUSH_TIMEOUT,
    LEASE_RELEASE_TIMEOUT,
    SHUTDOWN_RESERVE,
    Options,
    parse_bind_address,
)

log = get_logger(__name__)

COMPONENT = "stormservice-controller"


class LeadershipLost(Exception):
    """The Lease was lost while leading."""


@runtime_checkable
class OwnRateLimit(Protocol):
    """A client that can lend its connections to a client with its own token bucket
    (`ApiClient`; the in-memory fakes cannot, and are shared as they are)."""

    def with_own_rate_limit(self, *, qps: float, burst: int, user_agent: str) -> KubeClient: ...


@dataclass(frozen=True)
class ControllerClients:
    """What one controller writes through: its client and the recorder of its events."""

    client: KubeClient
    recorder: EventRecorder


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
        elector_factory: Callable[[KubeClient, Options, str], LeaderElector] | None = None,
        lease_client: KubeClient | None = None,
        heap_trimmer: HeapTrimmer | None = None,
    ) -> None:
        self.client = client
        self.heap_trimmer = heap_trimmer or HeapTrimmer(glibc_allocator(), activity=self._work_queue_adds)
        self.lease_client = lease_client or client
        self.options = options
        self.identity = identity or default_identity()
        # What is left for the syncs in flight once the rest of the shutdown is provided for.
        self.shutdown_timeout = max(0.0, options.graceful_shutdown_timeout - SHUTDOWN_RESERVE)
        self.informers = InformerFactory(client, namespace=options.namespace)
        self.recorder = EventRecorder(
            client, COMPONENT, host=socket.gethostname(), flush_timeout=EVENT_FLUSH_TIMEOUT
        )
        self._per_controller: dict[str, ControllerClients] = {}
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
        self._cache_sync_overdue = False
        self._stopping = False
        self._running = False

    # --- registration --------------------------------------------------------------------------

    def for_controller(self, name: str) -> ControllerClients:
        """The client (own token bucket, the configured QPS and burst) and event recorder of
        controller `name`; the same ones every time for one name."""
        found = self._per_controller.get(name)
        if found is not None:
            return found
        if self._running:
            raise RuntimeError("controller clients must be made before Manager.run()")
        client = self.client
        if isinstance(client, OwnRateLimit):
            client = client.with_own_rate_limit(
                qps=self.options.kube_api_qps,
                burst=int(self.options.kube_api_burst),
                user_agent=f"{COMPONENT}/{name}",
            )
        recorder = EventRecorder(
            client, COMPONENT, host=socket.gethostname(), flush_timeout=EVENT_FLUSH_TIMEOUT
        )
        found = self._per_controller[name] = ControllerClients(client, recorder)
        return found

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
        """Ready: serving, caches synced, able to lead. A standby with synced caches is ready
        too (it could take over at once; and were it not, a rolling update of a two-replica
        Deployment could never finish)."""
        if self._stopping:
            return "shutting down"
        if not self._caches_synced:
            problems = [
                describe_sync_failure(i)
                for i in self.informers.informers
                if not i.has_synced() and i.last_list_error is not None
            ]
            if problems:
                return "caches not synced: " + "; ".join(problems)
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
        cache_sync: asyncio.Task[None] | None = None
        trimmer = asyncio.create_task(self.heap_trimmer.run(), name="heap-trimmer")
        try:
            await self._start_servers()
            for recorder in self._recorders():
                await recorder.start()
            self.informers.start()
            cache_sync = asyncio.create_task(self._await_cache_sync(), name="cache-sync")
            if self.options.leader_elect:
                await self._run_elected(stop_event)
            else:
                await self._lead(stop_event)
        finally:
            self._stopping = True
            trimmer.cancel()
            await asyncio.wait({trimmer})
            if cache_sync is not None:
                cache_sync.cancel()
                await asyncio.wait({cache_sync})
            await self.informers.stop()
            # At the same time: the shutdown reserve holds one flush timeout, not one per recorder.
            await asyncio.gather(*(recorder.stop() for recorder in self._recorders()))
            await self._stop_servers()
        if self.elector is not None and self.elector.lost:
            raise LeadershipLost(
                f"lost the lease {self.options.leader_elect_namespace}/{self.options.leader_elect_id}"
            )
        log.info("manager stopped")

    def _work_queue_adds(self) -> int:
        return sum(reconciler.queue.add_calls for reconciler, _ in self._controllers)

    def _recorders(self) -> list[EventRecorder]:
        return [self.recorder, *(c.recorder for c in self._per_controller.values())]

    async def _run_elected(self, stop_event: asyncio.Event) -> None:
        elector = self._elector_factory(self.lease_client, self.options, self.identity)
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

    async def _await_cache_sync(self) -> None:
        """Marks the caches synced. Past cache_sync_timeout, says once, loudly, which caches
        cannot sync and why (the informers keep retrying; /readyz says it too)."""
        timeout = self.options.cache_sync_timeout
        if await self.informers.wait_for_sync(timeout):
            self._mark_synced()
            return
        self._cache_sync_overdue = True
        unsynced = [i for i in self.informers.informers if not i.has_synced()]
        log.error(
            "caches not synced; still retrying",
            waited_seconds=timeout,
            resources=[str(i.resource) for i in unsynced],
            reasons=[describe_sync_failure(i) for i in unsynced],
        )
        await self.informers.wait_for_sync()
        self._mark_synced()

    def _mark_synced(self) -> None:
        self._caches_synced = True
        log.info(
            "caches synced", informers=len(self.informers.informers), after_timeout=self._cache_sync_overdue
        )

    async def _lead(self, stop_event: asyncio.Event) -> None:
        """Once the caches are synced, the workers, until stop_event; then a graceful drain.
        Cancelled when the Lease is lost."""
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

    async def _drain(self, worker_tasks: list[asyncio.Task[None]]) -> None:
        log.info("shutting down: finishing the syncs in flight", timeout=self.shutdown_timeout)
        try:
            async with asyncio.timeout(self.shutdown_timeout):
                # Keys still queued are not synced: the next leader has them queued too, from
                # its own caches, and starts on them as soon as we release the Lease.
                await asyncio.gather(
                    *(r.queue.shut_down_with_drain(discard_queued=True) for r, _ in self._controllers)
                )
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


def describe_sync_failure(informer: Informer) -> str:
    """Why an informer cannot list, in words an operator can act on."""
    resource = informer.resource
    what = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
    scope = f"in namespace {informer.namespace}" if informer.namespace else "cluster-wide"
    err = informer.last_list_error
    if err is None:
        return f"{what} {scope}: not listed yet"
    if isinstance(err, Forbidden):
        role = "a Role in that namespace" if informer.namespace else "a ClusterRole"
        return (
            f"{what} {scope}: forbidden: the controller's identity needs the verbs list and watch "
            f"on {what} ({role}): {err.message}"
        )
    if isinstance(err, NotFound):
        return (
            f"{what} {scope}: the API server does not serve {resource.api_version} {resource.plural} "
            "(is its CRD installed?)"
        )
    detail = str(err) if isinstance(err, ApiError) else f"{type(err).__name__}: {err}"
    return f"{what} {scope}: cannot list: {detail}"


def _new_elector(client: KubeClient, options: Options, identity: str) -> LeaderElector:
    return LeaderElector(
        client,
        options.leader_elect_namespace,
        options.leader_elect_id,
        identity,
        lease_duration=options.leader_elect_lease_duration,
        renew_deadline=options.leader_elect_renew_deadline,
        retry_period=options.leader_elect_retry_period,
        release_timeout=LEASE_RELEASE_TIMEOUT,
    )
