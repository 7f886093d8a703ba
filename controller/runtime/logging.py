"""Structured logs: structlog, one JSON object per line on stderr.

Context bound with `structlog.contextvars.bind_contextvars` (the reconcile loop binds
`controller`, `key` and `reconcile_id`) appears on every line logged while it is bound, including
lines from the standard `logging` module (kubernetes-asyncio, aiohttp), which are routed through
the same processors.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor

LogFormat = Literal["json", "console"]
LEVELS = ("debug", "info", "warning", "error", "critical")

_HANDLER_MARK = "_stormservice_handler"


def _orjson_dumps(obj: Any, **_: Any) -> str:
    # default=str: an exception or datetime in an event must not make the log line disappear.
    return orjson.dumps(obj, default=str).decode()


def _drop_color_message(_: Any, __: str, event_dict: EventDict) -> EventDict:
    # uvicorn/aiohttp-style loggers sometimes add ANSI duplicates of the message.
    event_dict.pop("color_message", None)
    return event_dict


def configure_logging(level: str = "info", fmt: LogFormat = "json", *, stream: TextIO | None = None) -> None:
    """Configure structlog and the standard library root logger. Safe to call again (tests, or a
    changed level): the previous handler is replaced."""
    level_name = level.lower()
    if level_name not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    if fmt not in ("json", "console"):
        raise ValueError(f"log format must be json or console, not {fmt!r}")
    numeric_level = logging.getLevelNamesMapping()[level_name.upper()]

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_color_message,
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor
    if fmt == "json":
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    # The HTTP access log of the probes would be a line every few seconds per probe.
    logging.getLogger("aiohttp.access").setLevel(max(numeric_level, logging.WARNING))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
