"""A guard on the informers' cached objects for unit tests (see tests/unit/conftest.py)."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

from controller.runtime.slim import FrozenDict, FrozenList


@contextlib.contextmanager
def recording_cache_writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Cached objects still refuse every write; each attempt, even one the code that made it
    catches, is also recorded (with its stack) in the list this yields."""
    writes: list[str] = []
    for cls in (FrozenDict, FrozenList):
        for name in cls.MUTATORS:

            def refuse(
                self: Any, *args: Any, _what: str = f"{cls.__name__}.{name}", **kwargs: Any
            ) -> NoReturn:
                writes.append(f"{_what}{args!r:.200}\n" + "".join(traceback.format_stack(limit=12)[:-1]))
                raise TypeError("cached objects are shared and read-only: copy before changing")

            monkeypatch.setattr(cls, name, refuse)
    yield writes
