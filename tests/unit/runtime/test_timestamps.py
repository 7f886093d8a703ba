"""metav1.Time formatting and parsing, shared by every controller."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from controller.runtime.timestamps import format_epoch, format_time, parse_time

T = datetime(2026, 12, 1, 17, 5, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("t", "want"),
    [
        pytest.param(T, "2026-12-01T17:05:09Z", id="utc"),
        pytest.param(T.replace(microsecond=999_999), "2026-12-01T17:05:09Z", id="to-the-second"),
        pytest.param(
            T.astimezone(timezone(timedelta(hours=2))), "2026-12-01T17:05:09Z", id="other-zone-to-utc"
        ),
        pytest.param(T.replace(tzinfo=None), "2026-12-01T17:05:09Z", id="naive-is-utc"),
    ],
)
def test_format_time(t: datetime, want: str) -> None:
    assert format_time(t) == want


def test_format_epoch() -> None:
    assert format_epoch(0) == "1970-01-01T00:00:00Z"
    assert format_epoch(T.timestamp()) == "2026-12-01T17:05:09Z"


@pytest.mark.parametrize(
    ("value", "want"),
    [
        pytest.param("2026-12-01T17:05:09Z", T, id="metav1-time"),
        pytest.param("2026-12-01T19:05:09+02:00", T, id="offset"),
        pytest.param("2026-12-01T17:05:09", T, id="no-zone-is-utc"),
        pytest.param("2026-12-01T17:05:09.5Z", T + timedelta(microseconds=500_000), id="fraction"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
        pytest.param(17, None, id="not-a-string"),
        pytest.param("yesterday", None, id="not-a-time"),
    ],
)
def test_parse_time(value: object, want: datetime | None) -> None:
    assert parse_time(value) == want


def test_round_trip() -> None:
    assert parse_time(format_time(T)) == T
