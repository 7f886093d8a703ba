"""Status writes that only move counts, batched per object (kube-controller-manager's Job
controller batches its pod-driven status updates the same way, with syncJobBatchPeriod).

While pods are created and become ready one after another, every pod event changes a count in
its owner's status; written each time, that is a status PATCH per pod and level, drawn from the
same client rate limit as the pod creates. A write that only moves counts (and the messages that
quote them) waits until `period` after the object's previous status write; the pass that defers
it asks to be run again then, so the latest counts are always written in the end. Anything a
user or another controller acts on is written at once: a new observedGeneration, a condition
whose status or reason changes (Ready included), a revision, a failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

#: kube-controller-manager's syncJobBatchPeriod.
STATUS_BATCH_SECONDS = 1.0


class StatusBatcher:
    def __init__(
        self, period: float = STATUS_BATCH_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.period = period
        self._clock = clock
        self._last_write: dict[str, float] = {}

    def hold(self, key: str, *, counts_only: bool) -> float | None:
        """None: write the status now (noted as the key's latest write); else the seconds to wait
        before this counts-only change may be written."""
        now = self._clock()
        last = self._last_write.get(key)
        if counts_only and self.period > 0 and last is not None and now - last < self.period:
            return self.period - (now - last)
        self._last_write[key] = now
        return None

    def forget(self, key: str) -> None:
        self._last_write.pop(key, None)


def condition_states(status: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """The conditions' (type, status, reason), sorted: what a batched write must not change
    (their messages may quote counts and so may be held back)."""
    return sorted(
        (str(c.get("type")), str(c.get("status")), str(c.get("reason") or ""))
        for c in status.get("conditions") or ()
    )
