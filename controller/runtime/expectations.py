"""Controller expectations: what a sync has asked the API server to do and not yet seen in the cache.

A sync that creates or deletes objects records what it expects to observe; the informer event
handlers lower the expectations as the cache catches up. Until they are satisfied, the next sync
of that controller key must not act on the cache, or it would create (or delete) twice.

Creations are counted (a created object's name is often generated, so there is nothing to track);
deletions are tracked by object key, so that a deletion observed twice (an update carrying a
deletionTimestamp, then the delete itself, or a DeletedFinalStateUnknown tombstone) is counted
once, and a deletion of an object we never asked to delete is not counted at all.

A record older than the TTL counts as satisfied: a watch event can be lost (a relist compresses
an add and a delete into nothing), and a controller stuck forever is worse than one acting on a
cache that is a few minutes stale.

Single event loop, no locks: every method is synchronous and called from that loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

EXPECTATIONS_TTL_SECONDS = 5 * 60.0


@dataclass(slots=True)
class _Record:
    adds: int
    deletes: set[str] = field(default_factory=set)
    timestamp: float = 0.0

    def fulfilled(self) -> bool:
        return self.adds <= 0 and not self.deletes


@dataclass(frozen=True, slots=True)
class PendingExpectations:
    """What a controller key still waits for; for logs and debugging."""

    adds: int
    deletes: tuple[str, ...]
    age_seconds: float


class ControllerExpectations:
    def __init__(
        self, *, ttl: float = EXPECTATIONS_TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._records: dict[str, _Record] = {}

    def _fresh_record(self, controller_key: str) -> _Record:
        """The record to add new expectations to. An expired one is discarded (what it waited
        for will never be seen); a fulfilled one keeps no negative adds, so that an object we
        observed without having asked for it cannot cancel a creation we ask for now."""
        now = self._clock()
        record = self._records.get(controller_key)
        if record is None or self._expired(record, now):
            record = _Record(adds=0)
            self._records[controller_key] = record
        record.adds = max(record.adds, 0)
        record.timestamp = now
        return record

    def _expired(self, record: _Record, now: float) -> bool:
        return now - record.timestamp > self._ttl

    def expect_creations(self, controller_key: str, n: int) -> None:
        """Call before issuing n creates."""
        if n < 0:
            raise ValueError(f"expect_creations: negative count {n}")
        self._fresh_record(controller_key).adds += n

    def expect_deletions(self, controller_key: str, object_keys: Iterable[str]) -> None:
        """Call before issuing deletes of these objects ("namespace/name" keys)."""
        self._fresh_record(controller_key).deletes.update(object_keys)

    def creation_observed(self, controller_key: str) -> None:
        """An informer saw an object of this controller appear."""
        record = self._records.get(controller_key)
        if record is not None:
            record.adds -= 1

    def deletion_observed(self, controller_key: str, object_key: str) -> None:
        """An informer saw an object of this controller go (or get a deletionTimestamp). Only a
        key that was expected counts, and only once."""
        record = self._records.get(controller_key)
        if record is not None:
            record.deletes.discard(object_key)

    def lower_expectations(
        self, controller_key: str, adds: int = 0, object_keys_deleted: Iterable[str] = ()
    ) -> None:
        """Undo expectations for writes that failed (or were skipped): they will never be
        observed."""
        record = self._records.get(controller_key)
        if record is None:
            return
        if adds:
            record.adds -= adds
        record.deletes.difference_update(object_keys_deleted)

    def expire_within(self, controller_key: str, seconds: float) -> None:
        """The pending record counts as satisfied `seconds` from now at the latest: for a write
        whose outcome is unknown (the connection broke, the API server timed out), which the
        informer, resumed, shows within that time if it happened. Waiting the whole TTL for it
        would stall the key for minutes after an API server blip."""
        record = self._records.get(controller_key)
        if record is not None:
            record.timestamp = min(record.timestamp, self._clock() - self._ttl + seconds)

    def expires_in(self, controller_key: str) -> float | None:
        """Seconds until the key's pending record expires (and the sync may act without its
        events: look again then); None when nothing is pending."""
        record = self._records.get(controller_key)
        if record is None or record.fulfilled():
            return None
        return max(0.0, record.timestamp + self._ttl - self._clock())

    def satisfied(self, controller_key: str) -> bool:
        """True when the sync may act: no record, nothing pending, or the record has expired."""
        record = self._records.get(controller_key)
        if record is None or record.fulfilled():
            return True
        return self._expired(record, self._clock())

    def pending(self, controller_key: str) -> PendingExpectations | None:
        record = self._records.get(controller_key)
        if record is None:
            return None
        return PendingExpectations(
            adds=max(record.adds, 0),
            deletes=tuple(sorted(record.deletes)),
            age_seconds=self._clock() - record.timestamp,
        )

    def delete_expectations(self, controller_key: str) -> None:
        """Forget a controller key (its object was deleted)."""
        self._records.pop(controller_key, None)

    def __len__(self) -> int:
        return len(self._records)
