"""HTTP endpoints of the manager: /healthz, /readyz (named checks, as controller-runtime's) and
/metrics, on aiohttp."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from controller.runtime import metrics
from controller.runtime.logging import get_logger
from controller.runtime.options import SERVER_STOP_TIMEOUT

log = get_logger(__name__)

Check = Callable[[], str | None]
"""A health check: None when fine, else why not."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HealthChecks:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        if name in self._checks:
            raise ValueError(f"{self.kind} check {name!r} already registered")
        self._checks[name] = check

    def run(self) -> list[tuple[str, str | None]]:
        results: list[tuple[str, str | None]] = []
        for name, check in self._checks.items():
            try:
                results.append((name, check()))
            except Exception as err:
                results.append((name, f"check raised {type(err).__name__}: {err}"))
        return results

    async def handle(self, request: web.Request) -> web.Response:
        """200 "ok" when every check passes, else 500 listing the failures; `?verbose` lists all,
        like the API server's own /healthz."""
        results = self.run()
        ok = all(reason is None for _, reason in results)
        verbose = "verbose" in request.query
        if ok and not verbose:
            return web.Response(text="ok")
        lines = [
            f"[+]{name} ok" if reason is None else f"[-]{name} failed: {reason}"
            for name, reason in results
            if verbose or reason is not None
        ]
        lines.append(f"{self.kind} check passed" if ok else f"{self.kind} check failed")
        return web.Response(text="\n".join(lines) + "\n", status=200 if ok else 500)


async def serve_metrics(_: web.Request) -> web.Response:
    return web.Response(body=metrics.render_latest(), headers={"Content-Type": metrics.CONTENT_TYPE})


class HttpServer:
    """One listening socket serving a few routes. `port` is the bound port (useful with port 0)."""

    def __init__(self, name: str, host: str, port: int, routes: Mapping[str, Handler]) -> None:
        self.name = name
        self.host = host
        self.requested_port = port
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_get(path, handler)
        # shutdown_timeout: probes and scrapes are short; do not hold a stopping manager for 60 s.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=SERVER_STOP_TIMEOUT
        )
        self.port: int | None = None

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host or None, self.requested_port)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else None
        log.info("serving", server=self.name, addresses=[f"{a[0]}:{a[1]}" for a in addresses])

    async def stop(self) -> None:
        await self._runner.cleanup()
