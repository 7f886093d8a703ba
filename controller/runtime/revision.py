"""ControllerRevision helpers, in the manner of kube-controller-manager's pkg/controller/history.

A revision records one distinct template of an owner: `data` is what is hashed and compared;
`revision` is a number that only grows, so that re-applying an old template makes its revision
the newest again (by renumbering it) instead of creating a duplicate.

The hash names the revision (`<owner>-<hash>`) and labels it (`controller.kubernetes.io/hash`).
Its stability across releases is a compatibility promise: a different hash for the same template
would make an upgraded controller see a new revision and roll every instance. It is FNV-1a 32 of
canonical JSON (stdlib json with sorted keys and no whitespace, UTF-8: the format is defined by
the standard library, not by a dependency's version), followed by the decimal collision count
when there is one, rendered with apimachinery's SafeEncodeString alphabet (no vowels, so no
words). tests/unit/runtime/test_revision.py pins it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from controller.runtime.client import KubeClient, Obj
from controller.runtime.controllerref import controller_ref, new_controller_ref
from controller.runtime.errors import AlreadyExists, NotFound
from controller.runtime.rand import safe_encode
from controller.runtime.resources import CONTROLLER_REVISIONS
from controller.runtime.timestamps import format_epoch

HASH_LABEL = "controller.kubernetes.io/hash"
MAX_NAME_PREFIX = 223  # a revision name stays within 253 characters
MAX_CREATE_ATTEMPTS = 16

_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


class RevisionCollisionError(Exception):
    """Too many name collisions in a row; something other than chance is at work."""


def canonical_json(data: Any) -> bytes:
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _fnv1a_32(data: bytes) -> int:
    h = _FNV32_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV32_PRIME) & 0xFFFFFFFF
    return h


@functools.lru_cache(maxsize=512)
def _hash_bytes(payload: bytes) -> str:
    # FNV in pure Python costs ~0.3 µs a byte; a StormService re-hashes the same template on
    # every sync, so remember recent answers.
    return safe_encode(str(_fnv1a_32(payload)))


def hash_revision_data(data: Mapping[str, Any], collision_count: int | None) -> str:
    payload = canonical_json(data)
    if collision_count is not None:
        payload += str(collision_count).encode()
    return _hash_bytes(payload)


def revision_name(prefix: str, hash_: str) -> str:
    return f"{prefix[:MAX_NAME_PREFIX]}-{hash_}"


def new_revision(
    owner: Mapping[str, Any],
    api_version: str,
    kind: str,
    name_prefix: str,
    data: Mapping[str, Any],
    revision_number: int,
    collision_count: int | None,
    labels: Mapping[str, str] | None = None,
) -> Obj:
    """A ControllerRevision (not yet created) controlled by `owner`."""
    hash_ = hash_revision_data(data, collision_count)
    return {
        "apiVersion": CONTROLLER_REVISIONS.api_version,
        "kind": CONTROLLER_REVISIONS.kind,
        "metadata": {
            "name": revision_name(name_prefix, hash_),
            "namespace": owner["metadata"].get("namespace"),
            "labels": {**(labels or {}), HASH_LABEL: hash_},
            "ownerReferences": [new_controller_ref(owner, api_version, kind)],
        },
        "data": copy.deepcopy(dict(data)),
        "revision": revision_number,
    }


def equal_revision(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Same data. (Hash labels are not compared: they include the collision count.) Data is
    compared as canonical JSON, where Python's `1 == 1.0 == True` does not hold."""
    if a is None or b is None:
        return a is b
    return canonical_json(a.get("data")) == canonical_json(b.get("data"))


def find_equal_revisions(revisions: Iterable[Obj], needle: Mapping[str, Any]) -> list[Obj]:
    wanted = canonical_json(needle.get("data"))
    return [r for r in revisions if canonical_json(r.get("data")) == wanted]


def _sort_key(rev: Mapping[str, Any]) -> tuple[int, str, str]:
    meta = rev.get("metadata", {})
    # RFC 3339 timestamps in UTC ("...Z") order lexically; an unset one sorts first.
    return int(rev.get("revision", 0)), str(meta.get("creationTimestamp") or ""), str(meta.get("name", ""))


def sort_revisions(revisions: Iterable[Obj]) -> list[Obj]:
    """Oldest first: by revision number, then creation time, then name."""
    return sorted(revisions, key=_sort_key)


def next_revision_number(revisions: Sequence[Mapping[str, Any]]) -> int:
    return max((int(r.get("revision", 0)) for r in revisions), default=0) + 1


def _name_prefix(revision: Mapping[str, Any]) -> str:
    meta = revision["metadata"]
    hash_ = (meta.get("labels") or {}).get(HASH_LABEL)
    name: str = meta["name"]
    if not hash_ or not name.endswith(f"-{hash_}"):
        raise ValueError(f"revision {name!r} was not built by new_revision (name does not end with its hash)")
    return name[: -len(hash_) - 1]


def _with_hash(revision: Mapping[str, Any], prefix: str, collision_count: int) -> Obj:
    hash_ = hash_revision_data(revision["data"], collision_count)
    body = copy.deepcopy(dict(revision))
    body["metadata"]["name"] = revision_name(prefix, hash_)
    body["metadata"]["labels"] = {**(body["metadata"].get("labels") or {}), HASH_LABEL: hash_}
    return body


def _same_controller(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    ra, rb = controller_ref(a), controller_ref(b)
    return ra is not None and rb is not None and ra.get("uid") == rb.get("uid")


async def _create_with_collisions(
    create: Callable[[Obj], Awaitable[Obj]],
    get: Callable[[str], Awaitable[Obj]],
    revision: Mapping[str, Any],
    collision_count: int,
) -> tuple[Obj, int]:
    prefix = _name_prefix(revision)
    for _ in range(MAX_CREATE_ATTEMPTS):
        body = _with_hash(revision, prefix, collision_count)
        try:
            return await create(body), collision_count
        except AlreadyExists:
            try:
                existing = await get(body["metadata"]["name"])
            except NotFound:
                continue  # deleted in between: the name is free again
            if equal_revision(existing, body) and _same_controller(existing, body):
                return existing, collision_count
            collision_count += 1
    raise RevisionCollisionError(
        f"could not create a revision for {prefix!r} after {MAX_CREATE_ATTEMPTS} attempts "
        f"(collision count {collision_count})"
    )


async def create_revision(
    client: KubeClient, namespace: str, revision: Mapping[str, Any], collision_count: int
) -> tuple[Obj, int]:
    """Create `revision` (from `new_revision`), renamed for `collision_count`. On a name clash
    with our own equal revision, return that one; on a clash with anything else, count a
    collision and try the next name. Returns the revision and the collision count to store in
    the owner's status."""

    async def create(body: Obj) -> Obj:
        return await client.create(CONTROLLER_REVISIONS, namespace, body)

    async def get(name: str) -> Obj:
        return await client.get(CONTROLLER_REVISIONS, namespace, name)

    return await _create_with_collisions(create, get, revision, collision_count)


async def update_revision_number(client: KubeClient, revision: Mapping[str, Any], number: int) -> Obj:
    """Renumber a revision (its data is immutable). The uid in the patch body makes the patch
    fail on a revision re-created under the same name."""
    if revision.get("revision") == number:
        return dict(revision)
    meta = revision["metadata"]
    return await client.patch(
        CONTROLLER_REVISIONS,
        meta.get("namespace"),
        meta["name"],
        {"metadata": {"uid": meta["uid"]}, "revision": number},
        patch_type="merge",
    )


def _owned_or_orphan(revision: Mapping[str, Any], owner_uid: str) -> bool:
    ref = controller_ref(revision)
    return ref is None or ref.get("uid") == owner_uid


class RevisionHistory(Protocol):
    """The revision side effects of a controller; `KubeRevisionHistory` in production,
    `FakeRevisionHistory` in unit tests."""

    def list_revisions(
        self, owner: Mapping[str, Any], match: Callable[[Obj], bool] | None = None
    ) -> list[Obj]:
        """From the cache: revisions in the owner's namespace that the owner controls, plus orphans
        (candidates for adoption), that satisfy `match` when given. Unsorted."""
        ...

    async def create_revision(self, revision: Obj, collision_count: int) -> tuple[Obj, int]: ...

    async def update_revision(self, revision: Obj, number: int) -> Obj: ...

    async def delete_revision(self, revision: Obj) -> None:
        """Delete (uid-preconditioned); a revision already gone is not an error."""
        ...


class KubeRevisionHistory:
    def __init__(
        self,
        client: KubeClient,
        list_cached: Callable[[str], Iterable[Obj]],
        candidates: Callable[[Mapping[str, Any]], Iterable[Obj]] | None = None,
    ) -> None:
        """`list_cached(namespace)` returns the cached ControllerRevisions of a namespace, e.g.
        an informer store's namespace index. `candidates(owner)`, when given, returns fewer of
        them: at least every one the owner controls and every orphan its `match` may accept (say,
        from a controller-uid index and an index of orphans by label), so that a pass does not
        scan every revision of the namespace."""
        self._client = client
        self._list_cached = list_cached
        self._candidates = candidates

    def list_revisions(
        self, owner: Mapping[str, Any], match: Callable[[Obj], bool] | None = None
    ) -> list[Obj]:
        meta = owner["metadata"]
        uid = meta["uid"]
        cached = (
            self._candidates(owner)
            if self._candidates is not None and match is not None
            else self._list_cached(meta.get("namespace") or "")
        )
        return [r for r in cached if _owned_or_orphan(r, uid) and (match is None or match(r))]

    async def create_revision(self, revision: Obj, collision_count: int) -> tuple[Obj, int]:
        return await create_revision(
            self._client, revision["metadata"]["namespace"], revision, collision_count
        )

    async def update_revision(self, revision: Obj, number: int) -> Obj:
        return await update_revision_number(self._client, revision, number)

    async def delete_revision(self, revision: Obj) -> None:
        meta = revision["metadata"]
        with contextlib.suppress(NotFound):
            await self._client.delete(
                CONTROLLER_REVISIONS, meta.get("namespace"), meta["name"], uid_precondition=meta.get("uid")
            )


class FakeRevisionHistory:
    """In-memory revision history: the store is the cache and the API server at once. `actions`
    records (verb, name); `inject_error(verb, err)` makes the next call of that verb raise."""

    def __init__(self, revisions: Iterable[Obj] = ()) -> None:
        self.revisions: dict[tuple[str, str], Obj] = {}
        self.actions: list[tuple[str, str]] = []
        self._errors: dict[str, list[Exception]] = {}
        self._serial = itertools.count(1)
        for rev in revisions:
            self._store(copy.deepcopy(rev))

    def inject_error(self, verb: str, err: Exception) -> None:
        """verb: create | update | delete."""
        self._errors.setdefault(verb, []).append(err)

    def _maybe_fail(self, verb: str) -> None:
        pending = self._errors.get(verb)
        if pending:
            raise pending.pop(0)

    def _store(self, rev: Obj) -> Obj:
        meta = rev["metadata"]
        n = next(self._serial)
        meta.setdefault("uid", f"rev-uid-{n}")
        meta.setdefault("creationTimestamp", format_epoch(n))
        meta["resourceVersion"] = str(n)
        self.revisions[(meta.get("namespace") or "", meta["name"])] = rev
        return rev

    def list_revisions(
        self, owner: Mapping[str, Any], match: Callable[[Obj], bool] | None = None
    ) -> list[Obj]:
        meta = owner["metadata"]
        namespace, uid = meta.get("namespace") or "", meta["uid"]
        return [
            copy.deepcopy(r)
            for (ns, _), r in self.revisions.items()
            if ns == namespace and _owned_or_orphan(r, uid) and (match is None or match(r))
        ]

    async def create_revision(self, revision: Obj, collision_count: int) -> tuple[Obj, int]:
        namespace = revision["metadata"].get("namespace") or ""

        async def create(body: Obj) -> Obj:
            name = body["metadata"]["name"]
            self.actions.append(("create", name))
            self._maybe_fail("create")
            if (namespace, name) in self.revisions:
                raise AlreadyExists(409, "AlreadyExists", f'controllerrevisions "{name}" already exists')
            return copy.deepcopy(self._store(copy.deepcopy(body)))

        async def get(name: str) -> Obj:
            try:
                return copy.deepcopy(self.revisions[(namespace, name)])
            except KeyError:
                raise NotFound(404, "NotFound", name) from None

        return await _create_with_collisions(create, get, revision, collision_count)

    async def update_revision(self, revision: Obj, number: int) -> Obj:
        meta = revision["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        self.actions.append(("update", meta["name"]))
        self._maybe_fail("update")
        stored = self.revisions.get(key)
        if stored is None or stored["metadata"].get("uid") != meta.get("uid"):
            raise NotFound(404, "NotFound", meta["name"])
        stored["revision"] = number
        stored["metadata"]["resourceVersion"] = str(next(self._serial))
        return copy.deepcopy(stored)

    async def delete_revision(self, revision: Obj) -> None:
        meta = revision["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        self.actions.append(("delete", meta["name"]))
        self._maybe_fail("delete")
        stored = self.revisions.get(key)
        if stored is not None and stored["metadata"].get("uid") == meta.get("uid"):
            del self.revisions[key]
