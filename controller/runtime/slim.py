"""What the informers cache: slim, read-only objects whose equal parts are shared.

A realistic inference pod (bench/fixtures/vllm-pod.json: two containers, ~40 env entries, probes,
GPUs, volumes, tolerations, affinity) decodes to ~55 KB of Python objects without managedFields.
The pods of one role share their template, so most of that repeats from pod to pod. `slim()`
turns a decoded object into its cached form:

- metadata.managedFields is dropped, and, for pods, the status fields no code reads (see
  POD_STATUS_FIELDS); the spec and the rest of metadata are kept whole;
- every dict and list below the top level and metadata is hash-consed (`Interner`): an equal one
  already cached is reused, so the pods of a template share everything but what differs per pod
  (name, uid, labels, env entries with indexes, container IDs, ...); strings are interned;
- the previous version of the object, when there is one (watch updates, relists), gives the
  parts an update did not touch, so they are neither rebuilt nor looked up again;
- everything is built from `FrozenDict` and `FrozenList`: dict and list subclasses that refuse
  every mutation. A shared part changed in place would change every object sharing it; with
  them, a write into a cached object is a TypeError at the write, not a corrupt cache. Copy
  before changing: `copy.deepcopy(obj)` returns plain dicts and lists all the way down (and
  `dict(obj)`, `obj.copy()`, `{**obj}` one level).

`make bench` measures what a cached realistic pod costs (bench/memory.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

import orjson

_READ_ONLY = "cached objects are shared and read-only: copy before changing (copy.deepcopy)"


class FrozenDict(dict[str, Any]):
    """A dict that refuses mutation. Reads, iteration, equality with dicts and JSON encoding are
    those of dict; copies are plain dicts."""

    __slots__ = ()
    MUTATORS = ("__setitem__", "__delitem__", "__ior__", "clear", "pop", "popitem", "setdefault", "update")

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(_READ_ONLY)

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        # Cached objects are decoded JSON: an orjson round trip is a deep copy, 10x faster.
        copied: dict[str, Any] = orjson.loads(orjson.dumps(self))
        return copied

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))


class FrozenList(list[Any]):
    """A list that refuses mutation; copies are plain lists."""

    __slots__ = ()
    MUTATORS = (
        "__setitem__", "__delitem__", "__iadd__", "__imul__",
        "append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse",
    )  # fmt: skip

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(_READ_ONLY)

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        copied: list[Any] = orjson.loads(orjson.dumps(self))
        return copied

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))


# Every mutating method of both classes refuses, from one list each (MUTATORS), which the test
# checks against what dict and list have.
for _frozen in (FrozenDict, FrozenList):
    for _name in _frozen.MUTATORS:
        setattr(_frozen, _name, _frozen._refuse)


_dumps = orjson.dumps
_FROZEN_OF: dict[type, type] = {dict: FrozenDict, list: FrozenList}
_ATOMS = frozenset({int, float, bool, type(None)})
_NO_OLD: Mapping[str, Any] = FrozenDict()


class Interner:
    """Hash-consing of decoded JSON: `canon(node)` returns a frozen value equal to `node`, the same
    object for equal values while one is cached.

    The table maps hash(orjson.dumps(node)) to the node. A hit is confirmed with == unless it is
    the previous version's own part, so a wrong hit takes a 64-bit hash collision (SipHash, keyed
    per process) between an update and the part it replaces, or between two values equal for
    Python but not in JSON (1 and true). The lookup is top-down: a subtree found whole is reused
    without visiting its children, so an object costs a lookup per node on the paths to what
    makes it unique, and one per sibling of those.

    A node holding a string never seen before (a pod's name, uid, IP, container ID) is most
    likely unique and gets no table entry; nodes and strings that only the tables keep alive are
    swept (`sweep()`) after every relist and whenever the tables grew by a quarter.
    """

    def __init__(self, min_sweep: int = 16_384) -> None:
        self._table: dict[int, Any] = {}
        # Interned strings (sys.intern would do, but this table also tells, by its length,
        # whether a node holds a string never seen before: see canon).
        self._strings: dict[str, str] = {}
        self.min_sweep = min_sweep
        self._next_sweep = min_sweep

    def __len__(self) -> int:
        """Table entries (not counting interned strings)."""
        return len(self._table)

    def intern(self, value: str) -> str:
        return self._strings.setdefault(value, value)

    def canon(self, node: Any, old: Any = None) -> Any:
        """`node` in its cached form. `old`, the same place in the previous version of the
        object (watch updates, relists), is reused when `node` encodes to the same JSON: the
        parts of an object an update did not touch are kept as they are, shared or not."""
        kind = type(node)
        if kind is str:
            return self._strings.setdefault(node, node)
        if kind is not dict and kind is not list:
            return node  # numbers, booleans, null; and frozen values, which came from here
        raw = _dumps(node)
        key = hash(raw)
        table = self._table
        found = table.get(key)
        # The previous version's own part comes back on a hash match alone (64 bits, keyed per
        # process: this skips comparing what did not change, most of a watch update); anything
        # else is compared too.
        if found is not None and (found is old or found == node):
            return found
        if old is not None and type(old) is _FROZEN_OF[kind] and _dumps(old) == raw:
            return old
        del raw
        strings = self._strings
        known = len(strings)
        s = strings.setdefault
        canon = self.canon
        out: Any
        if kind is dict:
            olds = old if type(old) is FrozenDict else _NO_OLD
            out = FrozenDict(
                {
                    s(k, k): s(v, v) if type(v) is str else v if type(v) in _ATOMS else canon(v, olds.get(k))
                    for k, v in node.items()
                }
            )
        elif type(old) is FrozenList:
            n = len(old)
            out = FrozenList(
                [
                    s(v, v)
                    if type(v) is str
                    else v
                    if type(v) in _ATOMS
                    else canon(v, old[i] if i < n else None)
                    for i, v in enumerate(node)
                ]
            )
        else:
            out = FrozenList(
                [s(v, v) if type(v) is str else v if type(v) in _ATOMS else canon(v) for v in node]
            )
        # A node holding a string seen for the first time (a pod's name, IP, container ID) is
        # most likely unique: not worth a table entry.
        if found is None and len(strings) == known:
            table[key] = out
        return out

    def maybe_sweep(self) -> None:
        if len(self._table) + len(self._strings) >= self._next_sweep:
            self.sweep()

    def sweep(self) -> int:
        """Drop the nodes and strings nothing but the tables refers to; returns how many."""
        table = self._table
        refcount = sys.getrefcount
        dropped = 0
        # Newest first: a node is always newer than its children, so dropping it frees them
        # before they are looked at.
        for key in reversed(list(table)):
            node = table[key]
            # References: the table, `node`, getrefcount's argument.
            if refcount(node) <= 3:
                del table[key]
                dropped += 1
        node = None
        strings = self._strings
        for value in list(strings):
            # References: the table's key and value, the list, `value`, getrefcount's argument.
            if refcount(value) <= 5:
                del strings[value]
                dropped += 1
        size = len(table) + len(strings)
        self._next_sweep = max(self.min_sweep, size + size // 4)
        return dropped


# Pod status fields some code reads (grep controller/ apis/): phase (instances.pod_info),
# conditions' type and status (instances.is_pod_ready, inplace.pod_condition), the Ready
# condition's lastTransitionTime while it is not True (recovery.member_state), and per container
# its name, ready, image, imageID, containerID, restartCount and state.running.startedAt (the
# in-place update's start_patch and check_completion). Everything else the kubelet reports (IPs,
# start time, QoS class, lastState, resources, volumeMounts, user, init and ephemeral container
# statuses, condition times and messages, ...) is dropped from the cached pod. A reader of
# another field adds it here.
POD_STATUS_FIELDS = ("phase", "conditions", "containerStatuses")
POD_CONDITION_FIELDS = ("type", "status")
CONTAINER_STATUS_FIELDS = ("name", "ready", "image", "imageID", "containerID", "restartCount", "state")


def _container_status(status: Any) -> Any:
    if not isinstance(status, dict):
        return status
    out = {k: status[k] for k in CONTAINER_STATUS_FIELDS if k in status}
    state = out.get("state")
    if isinstance(state, dict):
        running = state.get("running")
        if isinstance(running, dict):
            out["state"] = {"running": {k: v for k, v in running.items() if k == "startedAt"}}
        else:
            out["state"] = {} if running is None else {"running": running}
    return out


def _pod_condition(cond: Any) -> Any:
    if not isinstance(cond, dict):
        return cond
    out = {k: cond[k] for k in POD_CONDITION_FIELDS if k in cond}
    # Since when a pod is not Ready: roleset/recovery.py waits a grace from then. Only while
    # not Ready, so the cache of a healthy workload holds no time per pod.
    if cond.get("type") == "Ready" and cond.get("status") != "True" and "lastTransitionTime" in cond:
        out["lastTransitionTime"] = cond["lastTransitionTime"]
    return out


def slim_pod_status(status: Any) -> Any:
    """The pod status with only the fields in POD_STATUS_FIELDS (and their kept sub-fields)."""
    if not isinstance(status, dict):
        return status
    out = {k: status[k] for k in POD_STATUS_FIELDS if k in status}
    conditions = out.get("conditions")
    if isinstance(conditions, list):
        out["conditions"] = [_pod_condition(c) for c in conditions]
    statuses = out.get("containerStatuses")
    if isinstance(statuses, list):
        out["containerStatuses"] = [_container_status(c) for c in statuses]
    return out


DEFAULT_INTERNER = Interner()


# Never shared, never repeated: not worth interning.
_UNIQUE_METADATA = frozenset({"uid", "resourceVersion"})


def slim(
    obj: Mapping[str, Any],
    kind: str | None = None,
    old: Mapping[str, Any] | None = None,
    interner: Interner | None = None,
) -> FrozenDict:
    """The cached form of a decoded object (see the module docstring); `obj` is not modified.
    `kind` defaults to obj["kind"]. `old` is the cached previous version of the object, if any:
    the parts that did not change are reused as they are."""
    if isinstance(obj, FrozenDict):
        return obj
    if interner is None:
        interner = DEFAULT_INTERNER
    canon = interner.canon
    s = interner._strings.setdefault
    if not isinstance(old, FrozenDict):
        old = _NO_OLD
    is_pod = (kind or obj.get("kind")) == "Pod"
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if type(value) is str:
            value = s(value, value)
        elif key == "metadata" and isinstance(value, dict):
            # Never shared whole (name, uid, resourceVersion): built, not looked up.
            was = old.get("metadata") or _NO_OLD
            value = FrozenDict(
                {
                    s(k, k): v
                    if k in _UNIQUE_METADATA
                    else s(v, v)
                    if type(v) is str
                    else canon(v, was.get(k))
                    for k, v in value.items()
                    if k != "managedFields"
                }
            )
        elif key == "status" and is_pod:
            value = canon(slim_pod_status(value), old.get("status"))
        else:
            value = canon(value, old.get(key))
        out[s(key, key)] = value
    interner.maybe_sweep()
    return FrozenDict(out)


def _load_malloc_trim() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def release_free_memory() -> None:
    """Give the C heap's free pages back to the OS (glibc's malloc_trim). A relist frees tens of
    MB of page bodies and of decoded objects larger than pymalloc's 512 bytes; glibc keeps free
    memory below the top of its heap, so without this the process keeps its peak."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
