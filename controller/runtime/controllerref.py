"""Controller references: claim, adopt and release objects, with the rules of client-go's
ControllerRefManager (kube-controller-manager's pkg/controller/controller_ref_manager.go).

For each candidate object (from the cache, already filtered to the owner's namespace):
- controlled by the owner and matching the selector: claimed, even while the owner is being
  deleted (keeping what we own needs no write);
- controlled by the owner and not matching: released (our ownerReference removed), unless the
  owner is being deleted: the garbage collector will take care of it;
- an orphan (no controller) that matches: adopted, unless the owner or the object is being
  deleted. Before the first adoption of a pass, `can_adopt` re-reads the owner from the API server
  (not the cache): an owner deleted and re-created under the same name must not adopt the old
  owner's leftovers, and an owner being deleted must not adopt anything;
- controlled by someone else: ignored.

Writes carry a `metadata.uid` precondition in the patch body, so that a patch aimed at an object
that was deleted and re-created under the same name fails instead of claiming the new one.
Built-in kinds get client-go's strategic merge patches; custom resources do not support strategic
merge, so they get JSON patches with `test` operations instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from controller.runtime.client import KubeClient, Obj, PatchType
from controller.runtime.errors import Invalid, NotFound, ReconcileError
from controller.runtime.resources import Resource

MatchFunc = Callable[[Obj], bool]
ObjectAction = Callable[[Obj], Awaitable[None]]
CanAdoptFunc = Callable[[], Awaitable[None]]


def controller_ref_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference with controller=true, if any, not copied (client-go's
    GetControllerOfNoCopy): for indexers and event handlers, which only read it."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref  # type: ignore[no-any-return]
    return None


def controller_ref(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ownerReference with controller=true, if any (a copy)."""
    ref = controller_ref_of(obj)
    return None if ref is None else dict(ref)


def new_controller_ref(owner: Mapping[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_controlled_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == owner_uid


def being_deleted(obj: Mapping[str, Any]) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))


def supports_strategic_merge(resource: Resource) -> bool:
    """Built-in API groups are the core group, dotless groups (apps, batch, policy) and *.k8s.io;
    custom resources (whose groups must contain a dot) only accept JSON and merge patches."""
    return resource.group == "" or "." not in resource.group or resource.group.endswith(".k8s.io")


def adopt_patch(obj: Mapping[str, Any], ref: Mapping[str, Any], *, strategic: bool) -> tuple[Any, PatchType]:
    """The patch that adds `ref` (a controller ownerReference) to `obj`, only if `obj` still has
    the uid we saw. The API server rejects it if another controller reference exists."""
    meta = obj["metadata"]
    if strategic:
        # ownerReferences merge by uid in a strategic merge patch; a differing uid is an
        # attempt to change an immutable field, which the API server rejects (422).
        return {"metadata": {"ownerReferences": [dict(ref)], "uid": meta["uid"]}}, "strategic"
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": meta["uid"]}]
    current = meta.get("ownerReferences")
    if current:
        # `add` at "/-" would not notice a concurrent change of the list; testing the list we
        # decided on makes the patch fail instead.
        ops.append({"op": "test", "path": "/metadata/ownerReferences", "value": current})
        ops.append({"op": "add", "path": "/metadata/ownerReferences/-", "value": dict(ref)})
    else:
        # `add` of the whole list would replace references added since we looked (another
        # controller's adoption among them); a `test` of null passes only while the list is
        # still absent (the server omits an empty one).
        ops.append({"op": "test", "path": "/metadata/ownerReferences", "value": current})
        ops.append({"op": "add", "path": "/metadata/ownerReferences", "value": [dict(ref)]})
    return ops, "json"


def release_patch(obj: Mapping[str, Any], owner_uid: str, *, strategic: bool) -> tuple[Any, PatchType] | None:
    """The patch that removes the ownerReference to `owner_uid` from `obj`; None when `obj`
    (as we saw it) has no such reference."""
    meta = obj["metadata"]
    refs = meta.get("ownerReferences") or []
    index = next((i for i, r in enumerate(refs) if r.get("uid") == owner_uid), None)
    if index is None:
        return None
    if strategic:
        return {
            "metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner_uid}], "uid": meta["uid"]}
        }, ("strategic")
    return [
        {"op": "test", "path": "/metadata/uid", "value": meta["uid"]},
        {"op": "test", "path": f"/metadata/ownerReferences/{index}/uid", "value": owner_uid},
        {"op": "remove", "path": f"/metadata/ownerReferences/{index}"},
    ], "json"


async def adopt_object(client: KubeClient, resource: Resource, obj: Obj, ref: Mapping[str, Any]) -> Obj:
    patch, patch_type = adopt_patch(obj, ref, strategic=supports_strategic_merge(resource))
    meta = obj["metadata"]
    return await client.patch(resource, meta.get("namespace"), meta["name"], patch, patch_type=patch_type)


async def release_object(client: KubeClient, resource: Resource, obj: Obj, owner_uid: str) -> Obj | None:
    """Remove our ownerReference. Returns None when there was nothing to release: the object is
    gone (404), or it is no longer the object we saw or no longer refers to us (422: the API
    server rejects a patch whose uid differs, and a failed JSON patch `test`, as Invalid). A 409
    is not swallowed: the patches carry no resourceVersion, so it means the server gave up
    retrying its own write conflicts, and the sync should be retried."""
    built = release_patch(obj, owner_uid, strategic=supports_strategic_merge(resource))
    if built is None:
        return None
    patch, patch_type = built
    meta = obj["metadata"]
    try:
        return await client.patch(resource, meta.get("namespace"), meta["name"], patch, patch_type=patch_type)
    except (NotFound, Invalid):
        return None


class CannotAdopt(Exception):
    """The owner, read fresh from the API server, must not adopt (gone, replaced, or deleting)."""


def recheck_deletion_timestamp(get_fresh_owner: Callable[[], Awaitable[Obj]], owner_uid: str) -> CanAdoptFunc:
    """A `can_adopt` check in the manner of client-go's RecheckDeletionTimestamp (plus the uid
    check the ReplicaSet controller adds): `get_fresh_owner` should GET the owner from the API
    server, since the cache may lag behind a deletion."""

    async def can_adopt() -> None:
        try:
            fresh = await get_fresh_owner()
        except NotFound as err:
            raise CannotAdopt(f"owner {owner_uid} is gone") from err
        meta = fresh.get("metadata", {})
        if meta.get("uid") != owner_uid:
            raise CannotAdopt(f"owner {owner_uid} was replaced by {meta.get('uid')}")
        if meta.get("deletionTimestamp"):
            raise CannotAdopt(f"owner {meta.get('namespace')}/{meta.get('name')} is being deleted")

    return can_adopt


class ClaimError(ReconcileError):
    """Some adoptions or releases failed; the sync should be retried. `claimed` is what the owner
    does own."""

    def __init__(self, errors: list[Exception], claimed: list[Obj]) -> None:
        super().__init__("; ".join(str(e) or type(e).__name__ for e in errors))
        self.errors = errors
        self.claimed = claimed


class ControllerRefManager:
    """One claim pass for one owner. Create a new one per sync: the `can_adopt` result is
    remembered for the lifetime of the instance, so that a pass re-reads the owner at most once."""

    def __init__(
        self,
        owner: Mapping[str, Any],
        *,
        match: MatchFunc,
        adopt: ObjectAction,
        release: ObjectAction,
        can_adopt: CanAdoptFunc | None = None,
    ) -> None:
        self._owner_uid: str = owner["metadata"]["uid"]
        self._owner_deleting = being_deleted(owner)
        self._match = match
        self._adopt = adopt
        self._release = release
        self._can_adopt = can_adopt
        self._can_adopt_checked = False
        self._can_adopt_error: Exception | None = None

    @classmethod
    def for_resource(
        cls,
        client: KubeClient,
        resource: Resource,
        owner: Mapping[str, Any],
        *,
        api_version: str,
        kind: str,
        match: MatchFunc,
        can_adopt: CanAdoptFunc | None = None,
    ) -> ControllerRefManager:
        """A manager whose adopt and release patch `resource` objects through `client`."""
        ref = new_controller_ref(owner, api_version, kind)
        owner_uid: str = owner["metadata"]["uid"]

        async def adopt(obj: Obj) -> None:
            await adopt_object(client, resource, obj, ref)

        async def release(obj: Obj) -> None:
            await release_object(client, resource, obj, owner_uid)

        return cls(owner, match=match, adopt=adopt, release=release, can_adopt=can_adopt)

    async def _check_can_adopt(self) -> None:
        if not self._can_adopt_checked:
            self._can_adopt_checked = True
            if self._can_adopt is not None:
                try:
                    await self._can_adopt()
                except Exception as err:
                    self._can_adopt_error = err
        if self._can_adopt_error is not None:
            raise self._can_adopt_error

    async def claim_object(self, obj: Obj) -> bool:
        """Whether the owner now owns `obj`; raises when an adoption or a release failed."""
        ref = controller_ref(obj)
        if ref is not None:
            if ref.get("uid") != self._owner_uid:
                return False
            if self._match(obj):
                return True
            if self._owner_deleting:
                return False
            with contextlib.suppress(NotFound):
                await self._release(obj)
            return False
        if self._owner_deleting or not self._match(obj) or being_deleted(obj):
            return False
        await self._check_can_adopt()
        try:
            await self._adopt(obj)
        except NotFound:
            return False
        return True

    async def claim(self, objs: Iterable[Obj]) -> list[Obj]:
        """The objects the owner owns after this pass, in input order. Every candidate is tried
        even when some fail; then ClaimError carries all failures and the claimed list."""
        claimed: list[Obj] = []
        errors: list[Exception] = []
        for obj in objs:
            try:
                if await self.claim_object(obj):
                    claimed.append(obj)
            except Exception as err:
                errors.append(err)
        if errors:
            raise ClaimError(errors, claimed)
        return claimed
