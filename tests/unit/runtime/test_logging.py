from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from controller.runtime.logging import configure_logging, get_logger


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    yield out
    structlog.contextvars.clear_contextvars()
    configure_logging("info", "json")  # back to stderr for the tests that follow


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_carry_bound_context(stream: io.StringIO) -> None:
    configure_logging("info", "json", stream=stream)
    log = get_logger("controller.test")
    structlog.contextvars.bind_contextvars(controller="roleset", key="ns/a", reconcile_id="abc123")
    log.info("synced", pods=3)
    logging.getLogger("kubernetes_asyncio.x").warning("from %s", "stdlib")
    structlog.contextvars.clear_contextvars()
    log.info("unbound")

    first, second, third = lines(stream)
    assert first["event"] == "synced" and first["pods"] == 3 and first["level"] == "info"
    assert first["logger"] == "controller.test"
    assert (first["controller"], first["key"], first["reconcile_id"]) == ("roleset", "ns/a", "abc123")
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
    assert second["event"] == "from stdlib" and second["key"] == "ns/a" and second["level"] == "warning"
    assert "key" not in third


def test_level_filters_and_exceptions_stay_on_one_line(stream: io.StringIO) -> None:
    configure_logging("warning", "json", stream=stream)
    log = get_logger("t")
    log.info("hidden")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed", key="ns/x")
    out = lines(stream)
    assert len(out) == 1
    assert out[0]["event"] == "failed" and out[0]["level"] == "error"
    assert "RuntimeError: boom" in out[0]["exception"] and "Traceback" in out[0]["exception"]


def test_unserialisable_values_do_not_lose_the_line(stream: io.StringIO) -> None:
    configure_logging("debug", "json", stream=stream)
    get_logger("t").debug("odd", value=object(), err=ValueError("x"))
    (line,) = lines(stream)
    assert line["event"] == "odd" and line["err"] == "x"


def test_console_format(stream: io.StringIO) -> None:
    configure_logging("info", "console", stream=stream)
    structlog.contextvars.bind_contextvars(key="ns/a")
    get_logger("t").info("hello")
    text = stream.getvalue()
    assert "hello" in text and "key=ns/a" in text


def test_reconfiguring_replaces_the_handler(stream: io.StringIO) -> None:
    configure_logging("info", "json", stream=io.StringIO())
    configure_logging("info", "json", stream=stream)
    get_logger("t").info("once")
    assert len(lines(stream)) == 1


@pytest.mark.parametrize(("level", "fmt"), [("verbose", "json"), ("info", "xml")])
def test_rejects_bad_settings(level: str, fmt: Any) -> None:
    with pytest.raises(ValueError):
        configure_logging(level, fmt)
