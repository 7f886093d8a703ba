"""Side effects of the RoleSet controller: the only place that writes to the API server.

`KubeObjectControl` is the real implementation over a KubeClient; `RecordingObjectControl` is a
fake for tests of code that must not reach any server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from controller.runtime.client import KubeClient, Obj, PatchType
from controller.runtime.errors import ApiError, NotFound
from controller.runtime.resources import Resource


class ObjectControl(Protocol):
    async def create(
        self, resource: Resource, namespace: str, body: Obj, *, dry_run: bool = False
    ) -> Obj: ...

    async def delete(
        self, resource: Resource, namespace: str, name: str, *, uid: str | None = None, orphan: bool = False
    ) -> None:
        """With orphan, the object's dependents stay (propagationPolicy Orphan)."""
        ...

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: Obj | list[Obj],
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
    ) -> Obj: ...

    async def get(self, resource: Resource, namespace: str, name: str) -> Obj: ...


class KubeObjectControl:
    def __init__(self, client: KubeClient, field_manager: str = "stormservice-roleset-controller") -> None:
        self._client = client
        self._field_manager = field_manager

    async def create(self, resource: Resource, namespace: str, body: Obj, *, dry_run: bool = False) -> Obj:
        return await self._client.create(resource, namespace, body, dry_run=dry_run)

    async def delete(
        self, resource: Resource, namespace: str, name: str, *, uid: str | None = None, orphan: bool = False
    ) -> None:
        await self._client.delete(
            resource, namespace, name, uid_precondition=uid, propagation_policy="Orphan" if orphan else None
        )

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: Obj | list[Obj],
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
    ) -> Obj:
        return await self._client.patch(
            resource,
            namespace,
            name,
            patch,
            patch_type=patch_type,
            subresource=subresource,
            field_manager=self._field_manager,
        )

    async def get(self, resource: Resource, namespace: str, name: str) -> Obj:
        return await self._client.get(resource, namespace, name)


@dataclass
class RecordingObjectControl:
    """Records every call; `fail` maps a verb to the error its next calls raise."""

    calls: list[tuple[str, str, str, Any]] = field(default_factory=list)
    fail: dict[str, ApiError] = field(default_factory=dict)
    objects: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    _n: int = 0

    def _check(self, verb: str) -> None:
        err = self.fail.get(verb)
        if err is not None:
            raise err

    async def create(self, resource: Resource, namespace: str, body: Obj, *, dry_run: bool = False) -> Obj:
        verb = "create-dry-run" if dry_run else "create"
        self.calls.append((verb, resource.plural, namespace, body))
        self._check(verb)
        if dry_run:
            return dict(body)
        obj = dict(body)
        meta = dict(obj.get("metadata") or {})
        if not meta.get("name"):
            self._n += 1
            meta["name"] = f"{meta.get('generateName', 'obj-')}{self._n:05d}"
        obj["metadata"] = meta
        self.objects[(resource.plural, namespace, meta["name"])] = obj
        return obj

    async def delete(
        self, resource: Resource, namespace: str, name: str, *, uid: str | None = None, orphan: bool = False
    ) -> None:
        self.calls.append(("delete", resource.plural, namespace, name))
        self._check("delete")
        self.objects.pop((resource.plural, namespace, name), None)

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: Obj | list[Obj],
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
    ) -> Obj:
        plural = f"{resource.plural}/{subresource}" if subresource else resource.plural
        self.calls.append(("patch", plural, namespace, (name, patch)))
        self._check("patch")
        return {"metadata": {"name": name, "namespace": namespace}}

    async def get(self, resource: Resource, namespace: str, name: str) -> Obj:
        self.calls.append(("get", resource.plural, namespace, name))
        self._check("get")
        obj = self.objects.get((resource.plural, namespace, name))
        if obj is None:
            raise NotFound(404, "NotFound", f"{resource.plural} {name} not found")
        return obj
