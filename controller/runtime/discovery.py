"""Which optional API resources the API server serves, from API discovery (kcm's discovery-based
controllers do the same: the garbage collector and quota re-read discovery every 30 s).

Optional kinds (a gang scheduler's PodGroups) are detected here rather than by watching
CustomResourceDefinitions: discovery is readable by every authenticated identity, so a
namespace-scoped install needs no cluster-wide permission, and nothing caches whole CRDs with
their OpenAPI schemas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import structlog

from controller.runtime.client import KubeClient
from controller.runtime.resources import Resource

log = structlog.get_logger(__name__)

DEFAULT_INTERVAL = 30.0

ChangeHandler = Callable[[Resource, bool], None]


class Discovery:
    """Polls the group-versions of the tracked resources; `served(resource)` answers from the
    last poll, and handlers hear of every change. A failed poll keeps the previous answer."""

    def __init__(self, client: KubeClient, *, interval: float = DEFAULT_INTERVAL) -> None:
        self._client = client
        self.interval = interval
        self._tracked: dict[Resource, bool | None] = {}
        # Each handler with the resources it was registered for: it hears of those only.
        self._handlers: list[tuple[frozenset[Resource], ChangeHandler]] = []
        self._synced = asyncio.Event()
        self._poke = asyncio.Event()

    def track(self, resources: Iterable[Resource], on_change: ChangeHandler | None = None) -> None:
        """Follow `resources`; `on_change(resource, served)` is called when one of these
        resources (not another tracker's) appears or goes; the first answer counts as a change
        only when the resource is served."""
        followed = frozenset(resources)
        for resource in followed:
            self._tracked.setdefault(resource, None)
        if on_change is not None:
            self._handlers.append((followed, on_change))
        if self._synced.is_set():
            self._synced.clear()
            self._poke.set()

    def served(self, resource: Resource) -> bool:
        return bool(self._tracked.get(resource))

    def has_synced(self) -> bool:
        return self._synced.is_set() or not self._tracked

    async def wait_for_sync(self) -> None:
        if self._tracked:
            await self._synced.wait()

    def refresh(self) -> None:
        """Poll now rather than at the next interval."""
        self._poke.set()

    async def run(self) -> None:
        while True:
            self._poke.clear()
            await self.poll()
            try:
                async with asyncio.timeout(self.interval):
                    await self._poke.wait()
            except TimeoutError:
                pass

    async def poll(self) -> None:
        by_group_version: dict[str, list[Resource]] = {}
        for resource in self._tracked:
            by_group_version.setdefault(resource.api_version, []).append(resource)
        complete = True
        for group_version, resources in by_group_version.items():
            try:
                plurals = await self._client.api_resources(group_version)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                complete = False
                log.warning("API discovery failed", group_version=group_version, error=str(err))
                continue
            for resource in resources:
                self._set(resource, plurals is not None and resource.plural in plurals)
        if complete:
            self._synced.set()

    def _set(self, resource: Resource, served: bool) -> None:
        before = self._tracked.get(resource)
        self._tracked[resource] = served
        if (before is None and not served) or before == served:
            return
        log.info("API resource availability changed", resource=str(resource), served=served)
        for resources, handler in list(self._handlers):
            if resource not in resources:
                continue
            try:
                handler(resource, served)
            except Exception:
                log.exception("discovery change handler failed", resource=str(resource))
