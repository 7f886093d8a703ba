"""The informer's in-memory cache: objects by key, plus secondary indexes (client-go's
ThreadSafeStore/Indexer, minus the threads: everything runs on one event loop).

Objects in the store are shared, not copied: treat anything read from it as read-only, and copy
before mutating (`copy.deepcopy`). An informer's objects are built by controller/runtime/slim.py:
they share their equal parts with other cached objects and refuse every write (TypeError).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping

from controller.runtime.client import Obj, object_key
from controller.runtime.controllerref import controller_ref as controller_ref
from controller.runtime.controllerref import controller_ref_of

IndexFunc = Callable[[Obj], list[str]]

INDEX_NAMESPACE = "namespace"
INDEX_CONTROLLER_UID = "controller-uid"


def namespace_index(obj: Obj) -> list[str]:
    """The object's namespace ("" when cluster-scoped)."""
    return [obj.get("metadata", {}).get("namespace") or ""]


def controller_uid_index(obj: Obj) -> list[str]:
    """The uid of the ownerReference with controller=true, if any."""
    ref = controller_ref_of(obj)
    return [str(ref["uid"])] if ref is not None and ref.get("uid") else []


def strip_object(obj: Obj) -> Obj:
    """The object without metadata.managedFields (often half its size, never read by us).
    Returns a new top-level dict and metadata dict when there is something to drop; the input is
    not modified. Annotations (including last-applied-configuration) are kept."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or "managedFields" not in meta:
        return obj
    slim = dict(obj)
    slim["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return slim


DEFAULT_INDEXERS: Mapping[str, IndexFunc] = {
    INDEX_NAMESPACE: namespace_index,
    INDEX_CONTROLLER_UID: controller_uid_index,
}


class Store:
    """Objects by "namespace/name" key with indexes. The namespace and controller-uid indexes are
    always present."""

    def __init__(
        self,
        indexers: Mapping[str, IndexFunc] | None = None,
        *,
        key_func: Callable[[Obj], str] = object_key,
    ) -> None:
        self._key_func = key_func
        self._items: dict[str, Obj] = {}
        self._indexers: dict[str, IndexFunc] = {}
        # index name -> index value -> keys (a dict used as an insertion-ordered set)
        self._indices: dict[str, dict[str, dict[str, None]]] = {}
        self.resource_version = ""
        self.add_indexers({**DEFAULT_INDEXERS, **(indexers or {})})

    # --- reads ---------------------------------------------------------------------------------

    def get(self, key: str) -> Obj | None:
        return self._items.get(key)

    def get_by_object(self, obj: Obj) -> Obj | None:
        return self._items.get(self._key_func(obj))

    def list(self) -> builtins.list[Obj]:
        return list(self._items.values())

    def keys(self) -> builtins.list[str]:
        return list(self._items)

    def items(self) -> builtins.list[tuple[str, Obj]]:
        return list(self._items.items())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def index_names(self) -> builtins.list[str]:
        return list(self._indexers)

    def index_keys(self, index_name: str, value: str) -> builtins.list[str]:
        index = self._index(index_name)
        return list(index.get(value, ()))

    def by_index(self, index_name: str, value: str) -> builtins.list[Obj]:
        index = self._index(index_name)
        return [self._items[k] for k in index.get(value, ())]

    def index_values(self, index_name: str) -> builtins.list[str]:
        return list(self._index(index_name))

    # --- writes --------------------------------------------------------------------------------

    def add_indexers(self, indexers: Mapping[str, IndexFunc]) -> None:
        """Add indexes, also over the objects already stored. Re-adding the same function under
        the same name is a no-op (shared informers); a different function is an error."""
        for name, fn in indexers.items():
            existing = self._indexers.get(name)
            if existing is not None:
                if existing is fn:
                    continue
                raise ValueError(f"indexer {name!r} already exists with a different function")
            self._indexers[name] = fn
            index: dict[str, dict[str, None]] = {}
            for key, obj in self._items.items():
                for value in fn(obj):
                    index.setdefault(value, {})[key] = None
            self._indices[name] = index

    def add(self, obj: Obj) -> Obj | None:
        """Insert or replace; returns the previous object under that key."""
        key = self._key_func(obj)
        old = self._items.get(key)
        self._items[key] = obj
        self._reindex(key, old, obj)
        return old

    def update(self, obj: Obj) -> Obj | None:
        return self.add(obj)

    def delete(self, obj_or_key: Obj | str) -> Obj | None:
        """Remove by object or key; returns the removed object (None if absent)."""
        key = obj_or_key if isinstance(obj_or_key, str) else self._key_func(obj_or_key)
        old = self._items.pop(key, None)
        if old is not None:
            self._reindex(key, old, None)
        return old

    def replace(self, objs: Iterable[Obj], resource_version: str) -> dict[str, Obj]:
        """Replace the whole content (a relist); returns the previous content by key."""
        old_items = self._items
        self._items = {}
        for obj in objs:
            self._items[self._key_func(obj)] = obj
        self._indices = {name: {} for name in self._indexers}
        for key, obj in self._items.items():
            for name, fn in self._indexers.items():
                index = self._indices[name]
                for value in fn(obj):
                    index.setdefault(value, {})[key] = None
        self.resource_version = resource_version
        return old_items

    # --- internals -----------------------------------------------------------------------------

    def _index(self, index_name: str) -> dict[str, dict[str, None]]:
        try:
            return self._indices[index_name]
        except KeyError:
            raise KeyError(f"index {index_name!r} does not exist") from None

    def _reindex(self, key: str, old: Obj | None, new: Obj | None) -> None:
        for name, fn in self._indexers.items():
            old_values = fn(old) if old is not None else []
            new_values = fn(new) if new is not None else []
            if old_values == new_values:
                continue
            index = self._indices[name]
            for value in old_values:
                if value in new_values:
                    continue
                bucket = index.get(value)
                if bucket is not None:
                    bucket.pop(key, None)
                    if not bucket:
                        del index[value]
            for value in new_values:
                index.setdefault(value, {})[key] = None
