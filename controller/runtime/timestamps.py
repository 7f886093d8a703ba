"""metav1.Time on the wire: RFC 3339 in UTC, to the second, as the API server writes it."""

from __future__ import annotations

from datetime import UTC, datetime

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_time(t: datetime) -> str:
    """`t` as metav1.Time; a naive datetime is taken to be UTC already."""
    return (t if t.tzinfo is None else t.astimezone(UTC)).strftime(FORMAT)


def format_epoch(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime(FORMAT)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime(FORMAT)


def parse_time(value: object) -> datetime | None:
    """A metav1.Time (or any RFC 3339 time) as an aware datetime; None when absent or not a
    time, so that a field nobody should have written cannot fail a sync. A time without a zone
    is taken as UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
