"""An HTTP-level proxy in front of the local API server, for faults a TCP proxy cannot make: it
terminates TLS with the API server's own serving certificate (so a kubeconfig with the cluster's CA
trusts it), forwards each request upstream as the admin client, and streams the answer back.

Faults:
- `throttle(fraction)`: that fraction of requests (watches excepted) is answered 429 Too Many
  Requests with `Retry-After: 1`, as API Priority and Fairness does under load.
- `expire_watches(seconds)`: every open watch ends with an ERROR event 410 Expired ("too old
  resource version"), and for `seconds` every new watch that resumes from a resourceVersion
  gets the same at once: the API server's answer when the history the client asks for has been
  compacted. A client must relist.

Loopback only; the local cluster's pki directory is needed (an external cluster has none).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

# Hop-by-hop headers, and those the proxy re-computes. Content-Encoding passes through with the
# body as it came (the API server gzips large lists when the client accepts it).
IDLE_WATCH_CHECK_SECONDS = 0.5
_DROP_REQUEST = {"host", "content-length", "transfer-encoding", "connection"}
_DROP_RESPONSE = {"content-length", "transfer-encoding", "connection"}

EXPIRED_EVENT = orjson.dumps(
    {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "too old resource version (injected by the chaos suite)",
            "reason": "Expired",
            "code": 410,
        },
    }
)
TOO_MANY = orjson.dumps(
    {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "too many requests (injected by the chaos suite)",
        "reason": "TooManyRequests",
        "code": 429,
    }
)


class ApiFaultProxy:
    def __init__(self, upstream: str, pki: Path, seed: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.pki = pki
        self.port = 0
        self.throttle_fraction = 0.0
        self.throttled = 0  # requests answered 429
        self.expired = 0  # watches answered or ended with 410
        self._expire_until = 0.0
        self._watch_generation = 0
        self._rng = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> ApiFaultProxy:
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(self.pki / "apiserver.crt", self.pki / "apiserver.key")
        client_ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        client_ctx.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ctx, limit=0), auto_decompress=False
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # The controller's watches are still open when the proxy stops: do not wait for them.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=server_ctx)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # --- faults ------------------------------------------------------------------------------

    def throttle(self, fraction: float) -> None:
        self.throttle_fraction = fraction

    def expire_watches(self, seconds: float) -> None:
        self._watch_generation += 1
        self._expire_until = time.monotonic() + seconds

    # --- internals ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        is_watch = request.query.get("watch") in ("true", "1")
        if not is_watch and self._rng.random() < self.throttle_fraction:
            self.throttled += 1
            return web.Response(
                status=429, body=TOO_MANY, content_type="application/json", headers={"Retry-After": "1"}
            )
        if is_watch and request.query.get("resourceVersion") and time.monotonic() < self._expire_until:
            self.expired += 1
            return await self._expire(request)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
        body = await request.read()
        generation = self._watch_generation
        try:
            upstream = await self._session.request(
                request.method,
                self.upstream + request.rel_url.path_qs,
                headers=headers,
                data=body or None,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        except (aiohttp.ClientError, OSError):
            return web.Response(status=503, text="upstream unreachable")
        async with upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in _DROP_RESPONSE},
            )
            if is_watch:
                response.enable_chunked_encoding()
            await response.prepare(request)
            pending = b""
            with contextlib.suppress(aiohttp.ClientError, ConnectionError, OSError):
                while True:
                    chunk: bytes | None
                    if is_watch:
                        # A watch with nothing to say must still be ended by a compaction: look
                        # at the generation at least this often, not only when an event comes.
                        try:
                            chunk = await asyncio.wait_for(
                                upstream.content.readany(), IDLE_WATCH_CHECK_SECONDS
                            )
                        except TimeoutError:
                            chunk = None
                    else:
                        chunk = await upstream.content.readany()
                    if chunk == b"":
                        break  # the upstream response ended
                    if not is_watch:
                        assert chunk is not None
                        await response.write(chunk)
                        continue
                    if self._watch_generation != generation:
                        # Compacted under the watch: the API server ends it with 410.
                        self.expired += 1
                        await response.write(EXPIRED_EVENT + b"\n")
                        break
                    if chunk is None:
                        continue
                    # Whole events only, so that the 410 above never lands in the middle of one.
                    pending += chunk
                    cut = pending.rfind(b"\n") + 1
                    if cut:
                        await response.write(pending[:cut])
                        pending = pending[cut:]
            with contextlib.suppress(ConnectionError, OSError):
                await response.write_eof()
            return response

    async def _expire(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(EXPIRED_EVENT + b"\n")
        await response.write_eof()
        return response
