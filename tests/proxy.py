"""A TCP proxy for fault injection between a client and the API server, on loopback.

It forwards bytes both ways and can make the connections it holds go silent without closing them
(`blackhole()`), as a load balancer or NAT that dropped its connection state does: the client's
kernel sees an open connection, nothing more ever arrives, and writes vanish. Connections opened
afterwards are forwarded normally unless `refuse_new` is set.

Runs its own event loop in a daemon thread, so both synchronous tests and tests with their own
asyncio loop can use it:

    with BlackholeProxy(("127.0.0.1", 6443)) as proxy:
        proxy.port               # point a kubeconfig at https://127.0.0.1:<port>
        proxy.blackhole()        # every open connection goes silent
        proxy.partition()        # ... and connections opened from now on too, until heal()
        proxy.latency = (0.2, 0.5)   # every chunk forwarded after a random delay in that range
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any


@dataclass
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    silent: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class BlackholeProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.connections_accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="blackhole-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._links: list[_Link] = []
        self._partitioned = False
        # (min, max) seconds each chunk waits before it is forwarded, or None.
        self.latency: tuple[float, float] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> BlackholeProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> BlackholeProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- faults ------------------------------------------------------------------------------------

    def blackhole(self) -> int:
        """Every connection open now stops forwarding in both directions and stays open.
        Returns how many connections went silent."""
        return self._call(self._blackhole())

    def partition(self) -> int:
        """A network partition: every open connection goes silent, and so does every connection
        opened until `heal()` (accepted, then never forwarded, as a SYN into a black hole would
        leave the client waiting). Returns how many open connections went silent."""
        self._partitioned = True
        return self.blackhole()

    def heal(self) -> None:
        """Connections opened from now on are forwarded again; silent ones stay silent."""
        self._partitioned = False

    # --- internals ---------------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, int]) -> int:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def _stop(self) -> int:
        if self._server is not None:
            self._server.close()
        for link in self._links:
            for task in link.tasks:
                task.cancel()
            for writer in (link.client, link.upstream):
                writer.close()
        self._links.clear()
        return 0

    async def _blackhole(self) -> int:
        count = 0
        for link in self._links:
            if not link.silent.is_set() and not link.client.is_closing():
                link.silent.set()
                count += 1
        return count

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        link = _Link(writer, up_writer)
        if self._partitioned:
            link.silent.set()
        self._links.append(link)
        link.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, link)),
            asyncio.create_task(self._pump(up_reader, writer, link)),
        ]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        try:
            while not link.silent.is_set():
                data = await reader.read(65536)
                if not data:
                    break
                if self.latency is not None:
                    await asyncio.sleep(random.uniform(*self.latency))
                if link.silent.is_set():
                    return  # swallowed: the peer never hears of it
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            return
        if link.silent.is_set():
            return
        with contextlib.suppress(OSError):
            link.client.close()
            link.upstream.close()
