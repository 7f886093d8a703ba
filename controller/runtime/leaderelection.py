"""Leader election on a coordination.k8s.io/v1 Lease, after client-go's tools/leaderelection.

Expiry is judged on our own monotonic clock: a candidate notes *when it saw* the lease record
change (`observed_time`) and may take the lease over once the record has not changed for the
record's leaseDurationSeconds. The holder's renewTime is informational: other machines' wall
clocks are never compared with ours.

The leader renews every retry_period; if no renewal succeeds within renew_deadline of the last
successful one, it stops leading (before lease_duration runs out, so that no other candidate can
have taken over yet). On a clean stop it releases the lease (empty holder, 1-second duration).

A candidate tries again every retry_period (jittered), and also as soon as a watch on the Lease
shows it changed (a release is taken over within a round trip, not at the next retry) and at
the moment the holder's lease would expire (a dead leader is replaced lease_duration after its
last renewal, not up to a retry period later).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from controller.runtime.client import KubeClient, Obj
from controller.runtime.errors import NotFound
from controller.runtime.logging import get_logger
from controller.runtime.metrics import LEADER_ELECTION_MASTER_STATUS
from controller.runtime.resources import LEASES

log = get_logger(__name__)

JITTER_FACTOR = 1.2
# Attempts at the holder's expiry come this late, so that our clock has surely passed it.
_EXPIRY_MARGIN = 0.05
_MIN_ATTEMPT_INTERVAL = 0.05
_RECORD_FIELDS = ("holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime", "leaseTransitions")


def micro_time(dt: datetime) -> str:
    """metav1.MicroTime's wire format."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(lease: Obj) -> dict[str, Any]:
    spec = lease.get("spec") or {}
    return {f: spec.get(f) for f in _RECORD_FIELDS}


class LeaderElector:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        release_timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not identity:
            raise ValueError("leader election identity must not be empty")
        if lease_duration <= renew_deadline:
            raise ValueError("lease_duration must be greater than renew_deadline")
        if renew_deadline <= JITTER_FACTOR * retry_period:
            raise ValueError(f"renew_deadline must be greater than {JITTER_FACTOR} * retry_period")
        if retry_period <= 0:
            raise ValueError("retry_period must be positive")
        self._client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.release_timeout = release_timeout
        self._clock = clock
        self._wall_clock = wall_clock

        self._lease: Obj | None = None  # the last lease object read or written (for resourceVersion)
        self._observed_record: dict[str, Any] | None = None
        self._observed_time = 0.0
        self._last_renew = 0.0
        self._leading = False
        # 0 from the start: a standby reports that it is one (client-go's leaderOff).
        self._status = LEADER_ELECTION_MASTER_STATUS.labels(name)
        self._status.set(0)
        self.lost = False  # leadership ended because renewing failed, not by release

    # --- state ---------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leading

    def _set_leading(self, leading: bool) -> None:
        self._leading = leading
        self._status.set(1 if leading else 0)

    @property
    def leader(self) -> str | None:
        """The holder we last observed ("" or None: nobody)."""
        return None if self._observed_record is None else self._observed_record.get("holderIdentity")

    def healthy(self, tolerance: float = 20.0) -> bool:
        """False when we lead but have not renewed for lease_duration + tolerance: the renew loop
        should have given up by then, so something is stuck (client-go's HealthzAdaptor)."""
        if not self._leading:
            return True
        return self._clock() - self._last_renew <= self.lease_duration + tolerance

    def _holds_observed(self) -> bool:
        return (
            self._observed_record is not None and self._observed_record.get("holderIdentity") == self.identity
        )

    def _observe(self, lease: Obj) -> None:
        self._lease = lease
        record = _record(lease)
        if record != self._observed_record:
            self._observed_record = record
            self._observed_time = self._clock()

    # --- one attempt ---------------------------------------------------------------------------

    def _lease_seconds(self) -> int:
        return max(1, round(self.lease_duration))

    async def try_acquire_or_renew(self) -> bool:
        """One attempt to take or keep the lease. Never raises an API error (logs it, returns
        False)."""
        try:
            return await self._try_acquire_or_renew()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning(
                "leader election attempt failed", lease=f"{self.namespace}/{self.name}", error=str(err)
            )
            return False

    async def _try_acquire_or_renew(self) -> bool:
        now = micro_time(self._wall_clock())
        try:
            lease = await self._client.get(LEASES, self.namespace, self.name)
        except NotFound:
            body: Obj = {
                "apiVersion": LEASES.api_version,
                "kind": LEASES.kind,
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": self._lease_seconds(),
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                },
            }
            created = await self._client.create(LEASES, self.namespace, body)
            self._observe(created)
            self._last_renew = self._clock()
            return True

        self._observe(lease)
        record = _record(lease)
        holder = record.get("holderIdentity")
        if holder and holder != self.identity:
            seconds = record.get("leaseDurationSeconds")
            duration = (
                float(seconds) if isinstance(seconds, int | float) and seconds > 0 else self.lease_duration
            )
            if self._observed_time + duration > self._clock():
                return False

        spec = dict(lease.get("spec") or {})
        transitions = int(record.get("leaseTransitions") or 0)
        if holder == self.identity:
            spec["acquireTime"] = record.get("acquireTime") or now
        else:
            transitions += 1
            spec["acquireTime"] = now
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=self._lease_seconds(),
            renewTime=now,
            leaseTransitions=transitions,
        )
        # `lease` carries its resourceVersion: a concurrent writer makes this a Conflict.
        updated = await self._client.replace(LEASES, self.namespace, self.name, {**lease, "spec": spec})
        self._observe(updated)
        self._last_renew = self._clock()
        return True

    async def release(self) -> bool:
        """Give the lease up if we hold it; other candidates may take it at once."""
        if not self._holds_observed() or self._lease is None:
            return True
        spec = dict(self._lease.get("spec") or {})
        spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=micro_time(self._wall_clock()))
        try:
            # Bounded: the shutdown that calls this must fit in the pod's grace period.
            async with asyncio.timeout(self.release_timeout):
                updated = await self._client.replace(
                    LEASES, self.namespace, self.name, {**self._lease, "spec": spec}
                )
        except Exception as err:
            log.error("could not release the lease", lease=f"{self.namespace}/{self.name}", error=str(err))
            return False
        self._observe(updated)
        log.info("released the lease", lease=f"{self.namespace}/{self.name}")
        return True

    # --- loops ---------------------------------------------------------------------------------

    def _expires_in(self) -> float | None:
        """Seconds until the observed holder's lease runs out, by our clock; None if nobody else
        holds it."""
        record = self._observed_record
        if record is None or not record.get("holderIdentity") or self._holds_observed():
            return None
        seconds = record.get("leaseDurationSeconds")
        duration = float(seconds) if isinstance(seconds, int | float) and seconds > 0 else self.lease_duration
        return self._observed_time + duration - self._clock()

    async def _acquire(self) -> None:
        log.info(
            "waiting to acquire the lease", lease=f"{self.namespace}/{self.name}", identity=self.identity
        )
        changed = asyncio.Event()
        watcher = asyncio.create_task(self._watch_lease(changed), name="lease-watch")
        reported: str | None = None
        try:
            while True:
                changed.clear()
                if await self.try_acquire_or_renew():
                    return
                if self.leader != reported:
                    reported = self.leader
                    log.info("lease held by another candidate", leader=reported)
                delay = self.retry_period * (1 + random.random() * JITTER_FACTOR)
                expires_in = self._expires_in()
                if expires_in is not None:
                    delay = min(delay, max(expires_in, 0.0) + _EXPIRY_MARGIN)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await changed.wait()
                        # A burst of changes (or a flapping watch) costs one attempt, not many.
                        await asyncio.sleep(_MIN_ATTEMPT_INTERVAL)
        finally:
            watcher.cancel()
            await asyncio.wait({watcher})

    async def _watch_lease(self, changed: asyncio.Event) -> None:
        """Sets `changed` whenever the Lease is written; retries quietly on failure (the timed
        attempts go on without it)."""
        while True:
            try:
                async for event in self._client.watch(
                    LEASES,
                    self.namespace,
                    field_selector=f"metadata.name={self.name}",
                    timeout_seconds=300,
                ):
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        changed.set()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.debug("lease watch failed", lease=f"{self.namespace}/{self.name}", error=str(err))
            await asyncio.sleep(self.retry_period)

    async def _renew(self) -> None:
        """Returns when leadership is lost."""
        while True:
            await asyncio.sleep(self.retry_period)
            deadline = self._last_renew + self.renew_deadline
            while True:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return
                # asyncio.timeout, not wait_for: on 3.11, wait_for can swallow a cancellation that
                # arrives as the attempt completes, and this loop would outlive run().
                renewed = False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        renewed = await self.try_acquire_or_renew()
                if renewed and self._holds_observed():
                    break
                if not renewed and self._observed_record is not None and not self._holds_observed():
                    return  # someone else holds it now
                await asyncio.sleep(min(self.retry_period, max(0.0, deadline - self._clock())))

    async def run(
        self,
        on_started_leading: Callable[[], Awaitable[None]],
        on_stopped_leading: Callable[[], None],
    ) -> None:
        """Wait for the lease, then run `on_started_leading()` while renewing. Returns when
        `on_started_leading()` returns (the lease is released) or when leadership is lost (the
        task running it is cancelled; `self.lost` is set). `on_stopped_leading()` is called once
        in both cases, never if we did not lead. Cancelling `run` while leading cancels
        `on_started_leading()` and releases the lease."""
        await self._acquire()
        self._set_leading(True)
        self.lost = False
        log.info("became leader", lease=f"{self.namespace}/{self.name}", identity=self.identity)

        async def lead_() -> None:
            await on_started_leading()

        lead = asyncio.create_task(lead_(), name="leading")
        renew = asyncio.create_task(self._renew(), name="lease-renew")
        try:
            await asyncio.wait({lead, renew}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if renew.done() and not lead.done():
                # Renewing gave up (or crashed): another candidate may take over any moment.
                self.lost = True
                self._set_leading(False)
                log.error("leader election lost", lease=f"{self.namespace}/{self.name}")
                lead.cancel()
                await asyncio.wait({lead})
            else:
                renew.cancel()
                lead.cancel()
                await asyncio.wait({renew, lead})
                self._set_leading(False)
                await self.release()
            on_stopped_leading()
        if not lead.cancelled():
            error = lead.exception()
            if error is not None:
                raise error
