"""API client adapter over kubernetes-asyncio.

Objects travel as plain dicts decoded with orjson: the generated models are slow and the
controller never needs them. The concrete client (`ApiClient`) is below the protocol; tests use
`controller.runtime.fake.FakeClient`, which implements the same protocol in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal, Protocol

from controller.runtime.resources import Resource

Obj = dict[str, Any]
PatchType = Literal["merge", "json", "strategic", "apply"]
PropagationPolicy = Literal["Background", "Foreground", "Orphan"]


class KubeClient(Protocol):
    """What the runtime and the controllers may ask of the API server. Every method raises a
    subclass of `controller.runtime.errors.ApiError` on failure."""

    async def get(self, resource: Resource, namespace: str | None, name: str) -> Obj: ...

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        resource_version: str | None = None,
    ) -> Obj:
        """One page of a list: {"metadata": {"resourceVersion", "continue"}, "items": [...]}."""
        ...

    def watch(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int | None = None,
        allow_bookmarks: bool = True,
    ) -> AsyncIterator[Obj]:
        """Watch events {"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": {...}}.
        Ends normally when the server closes the stream; an ERROR event with code 410 raises Gone."""
        ...

    async def create(self, resource: Resource, namespace: str | None, body: Obj) -> Obj: ...

    async def replace(
        self, resource: Resource, namespace: str | None, name: str, body: Obj, *, subresource: str | None = None
    ) -> Obj:
        """PUT; with subresource="status" writes the status subresource."""
        ...

    async def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: Obj | list[Obj],
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool = False,
    ) -> Obj: ...

    async def delete(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        *,
        uid_precondition: str | None = None,
        resource_version_precondition: str | None = None,
        propagation_policy: PropagationPolicy | None = None,
        grace_period_seconds: int | None = None,
    ) -> None: ...

    async def close(self) -> None: ...


def object_key(obj: Mapping[str, Any]) -> str:
    """The cache/work-queue key of an object: "namespace/name", or "name" when cluster-scoped."""
    meta = obj["metadata"]
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else str(meta["name"])


def split_key(key: str) -> tuple[str | None, str]:
    namespace, sep, name = key.partition("/")
    return (namespace, name) if sep else (None, namespace)
