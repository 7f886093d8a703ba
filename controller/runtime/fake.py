"""In-memory KubeClient for unit tests of sync logic and of the informer.

What it models, like the API server does:
- objects keyed by resource + namespace + name; one global resourceVersion counter;
- uid, creationTimestamp, generation on create; generateName; kind/apiVersion filled in;
- generation bumps when anything but metadata/status changes; status subresource writes change
  only status and never bump it; writes to the main resource ignore status (for resources with a
  status subresource: all but EVENTS, CONTROLLER_REVISIONS, LEASES unless configured);
- optimistic concurrency (metadata.resourceVersion on update/patch → Conflict), no-op updates do
  not bump the resourceVersion nor emit an event;
- finalizers: delete sets deletionTimestamp and waits; removing the last finalizer deletes;
- label selectors (=, ==, !=, in, notin, exists, !) and simple field selectors;
- merge patch (RFC 7386) and JSON patch (RFC 6902) applied for real;
- list pagination with continue tokens; watch streams replayed from a per-resource event log,
  with BOOKMARKs on request (`bookmark()`), normal ends (`end_watches()`) and 410 (`expire_watches()`).

What it does not: no garbage collector (delete owned objects yourself), no admission/validation,
no field ownership for server-side apply (apply = create-or-merge). Strategic merge patch knows the
merge key of ownerReferences (`uid`, with the server's `$patch: delete`/`replace` directives and
element order); other lists of maps merge by `name` when every item has one, else are replaced;
it is refused for custom resources, as the server does. A patch that would change metadata.uid
(the uid precondition in a patch body) fails with 422 Invalid, like the server; a PUT or DELETE
with a stale uid gets 409 Conflict, like the server.

Test helpers: `actions` / `requests` (what a sync did), `inject_error()`, `seed()` and
`set_status()` (setup without recording actions), `objects()`.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from controller.runtime.client import Obj, PatchType, PropagationPolicy, list_all
from controller.runtime.errors import (
    AlreadyExists,
    ApiError,
    BadRequest,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    StatusCause,
)
from controller.runtime.rand import random_string
from controller.runtime.resources import (
    CONTROLLER_REVISIONS,
    CUSTOM_RESOURCE_DEFINITIONS,
    EVENTS,
    LEASES,
    PODS,
    Resource,
)
from controller.runtime.timestamps import now_rfc3339

WRITE_VERBS = frozenset({"create", "update", "patch", "delete"})
_BUILTIN_GROUPS = frozenset({"", "apps", "batch", "policy", "autoscaling"})


class Action(NamedTuple):
    """One request, comparable to a plain tuple: ("create", "pods", "ns", "name").
    `resource` is the plural, or "plural/subresource" (e.g. "stormservices/status")."""

    verb: str
    resource: str
    namespace: str | None
    name: str | None


@dataclass
class Request:
    """The full detail of one request (body or patch as sent, options)."""

    verb: str
    resource: Resource
    namespace: str | None
    name: str | None
    subresource: str | None = None
    body: Any = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class _InjectedError:
    verb: str
    resource: str | None
    error: BaseException
    times: int


@dataclass
class _Event:
    rv: int
    type: str
    obj: Obj
    old: Obj | None


class _End:
    pass


_END = _End()


@dataclass
class _Watcher:
    resource: Resource
    namespace: str | None
    labels: Callable[[Mapping[str, str]], bool]
    fields: Callable[[Obj], bool]
    bookmarks: bool
    queue: asyncio.Queue[Obj | BaseException | _End] = field(default_factory=asyncio.Queue)

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.namespace and self.resource.namespaced and meta.get("namespace") != self.namespace:
            return False
        return self.labels(meta.get("labels") or {}) and self.fields(obj)

    def translate(self, event: _Event) -> Obj | None:
        """The event as this watcher sees it: objects entering/leaving its selector are
        ADDED/DELETED, as the API server's watch cache reports them."""
        now = self.matches(event.obj)
        if event.type == "MODIFIED":
            before = self.matches(event.old)
            if now and before:
                kind = "MODIFIED"
            elif now:
                kind = "ADDED"
            elif before:
                # Like the watch cache: the object as it was when it still matched, at the
                # event's resourceVersion.
                gone = _copy(event.old)
                gone["metadata"]["resourceVersion"] = event.obj["metadata"]["resourceVersion"]
                return {"type": "DELETED", "object": gone}
            else:
                return None
        elif now:
            kind = event.type
        else:
            return None
        return {"type": kind, "object": _copy(event.obj)}


def _copy(obj: Any) -> Any:
    return orjson.loads(orjson.dumps(obj))


def _copy_obj(obj: Mapping[str, Any]) -> Obj:
    copied: Obj = orjson.loads(orjson.dumps(obj))
    return copied


def _now() -> str:
    return now_rfc3339()


# --- selectors ------------------------------------------------------------------------------------

_SET_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_./-]+$")


def _split_top_level(selector: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


_Requirement = tuple[str, str, frozenset[str]]  # (key, op, values); op: in notin exists !exists


def _label_requirement(req: str) -> _Requirement:
    m = _SET_RE.match(req)
    if m:
        values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
        return (m.group(1), m.group(2), values)
    if req.startswith("!"):
        key = req[1:].strip()
        if not _KEY_RE.match(key):
            raise ValueError(f"invalid label selector requirement {req!r}")
        return (key, "!exists", frozenset())
    for op in ("!=", "==", "="):
        if op in req:
            key, _, value = req.partition(op)
            key, value = key.strip(), value.strip()
            if not _KEY_RE.match(key) or (value and not _KEY_RE.match(value)):
                raise ValueError(f"invalid label selector requirement {req!r}")
            return (key, "notin" if op == "!=" else "in", frozenset({value}))
    if not _KEY_RE.match(req):
        raise ValueError(f"invalid label selector requirement {req!r}")
    return (req, "exists", frozenset())


def _label_matches(requirements: list[_Requirement], labels: Mapping[str, str]) -> bool:
    for key, op, values in requirements:
        present = key in labels
        if op == "in":
            ok = present and labels[key] in values
        elif op == "notin":
            ok = not present or labels[key] not in values
        elif op == "exists":
            ok = present
        else:
            ok = not present
        if not ok:
            return False
    return True


def parse_label_selector(selector: str | None) -> Callable[[Mapping[str, str]], bool]:
    """A predicate over labels for a label selector string (=, ==, !=, in, notin, key, !key);
    raises ValueError when malformed."""
    requirements = [_label_requirement(req) for req in _split_top_level(selector or "")]
    return functools.partial(_label_matches, requirements)


def _field_value(obj: Obj, path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return ""
        node = node[part]
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


def _field_matches(requirements: list[tuple[str, bool, str]], obj: Obj) -> bool:
    return all((_field_value(obj, path) == value) == equal for path, equal, value in requirements)


def parse_field_selector(selector: str | None) -> Callable[[Obj], bool]:
    """Field selectors: comma-separated `path=value`, `path==value`, `path!=value` on dotted paths."""
    requirements: list[tuple[str, bool, str]] = []
    for req in _split_top_level(selector or ""):
        for op in ("!=", "==", "="):
            if op in req:
                path, _, value = req.partition(op)
                requirements.append((path.strip(), op != "!=", value.strip()))
                break
        else:
            raise ValueError(f"invalid field selector requirement {req!r}")
    return functools.partial(_field_matches, requirements)


# --- patches --------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (returns a new value; inputs untouched)."""
    if not isinstance(patch, Mapping):
        return _copy(patch)
    result: dict[str, Any] = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# patchMergeKey of the list fields whose strategic merge the fake models exactly (from the
# Kubernetes API types); ownerReferences merge by uid: two owners may share a name.
_MERGE_KEYS = {"ownerReferences": "uid"}


def _merge_keyed_list(current: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    """apimachinery's strategicpatch mergeSlice for a list of maps with a merge key: `$patch:
    delete` items remove the matching entries, `$patch: replace` makes the patch's items the whole
    list, other items merge into the entry with the same key or are appended. The order is the
    server's: patch items in patch order, interleaved with the server-only items in their original
    order (a patch item already present keeps its place relative to them)."""
    original: list[Any] = list(current)
    items: list[Mapping[str, Any]] = []
    replace = False
    for item in patch:
        if not isinstance(item, Mapping):
            raise ValueError(f"a list merged by {merge_key!r} holds only objects")
        directive = item.get("$patch")
        if directive is None:
            if merge_key not in item:
                raise ValueError(f"map: {dict(item)} does not contain declared merge key: {merge_key}")
            items.append(item)
        elif directive == "delete":
            if merge_key not in item:
                raise ValueError(f"map: {dict(item)} does not contain declared merge key: {merge_key}")
            original = [
                o for o in original if not (isinstance(o, Mapping) and o.get(merge_key) == item[merge_key])
            ]
        elif directive == "replace":
            replace = True
        else:
            raise ValueError(f"unknown patch directive {directive!r} in a list")
    if replace:
        return [_strategic_merge(None, item) for item in items]
    merged: list[Any] = list(original)
    for item in items:
        at = next(
            (
                i
                for i, o in enumerate(merged)
                if isinstance(o, Mapping) and o.get(merge_key) == item[merge_key]
            ),
            None,
        )
        if at is None:
            merged.append(_strategic_merge(None, item))
        else:
            merged[at] = _strategic_merge(merged[at], item)
    patch_keys = [item[merge_key] for item in items]
    server_keys = [o.get(merge_key) if isinstance(o, Mapping) else None for o in original]

    def key_of(o: Any) -> Any:
        return o.get(merge_key) if isinstance(o, Mapping) else None

    from_patch = sorted(
        (o for o in merged if key_of(o) in patch_keys), key=lambda o: patch_keys.index(key_of(o))
    )
    server_only = [o for o in merged if key_of(o) not in patch_keys]
    ordered: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(from_patch):
        if j >= len(from_patch):
            ordered.append(server_only[i])
            i += 1
        elif i >= len(server_only):
            ordered.append(from_patch[j])
            j += 1
        else:
            left, right = key_of(server_only[i]), key_of(from_patch[j])
            if (
                left in server_keys
                and right in server_keys
                and server_keys.index(left) < server_keys.index(right)
            ):
                ordered.append(server_only[i])
                i += 1
            else:
                ordered.append(from_patch[j])
                j += 1
    return ordered


def _strategic_merge(target: Any, patch: Any) -> Any:
    """A subset of strategic merge patch: maps merge; lists with a known merge key merge as the
    server does (`_merge_keyed_list`); other lists of maps that all carry `name` merge by name
    (with `$patch: delete`); other lists are replaced."""
    if not isinstance(patch, Mapping):
        return _copy(patch)
    result: dict[str, Any] = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        current = result.get(key)
        merge_key = _MERGE_KEYS.get(key)
        if value is None:
            result.pop(key, None)
        elif merge_key is not None and isinstance(value, list):
            keyed = _merge_keyed_list(current if isinstance(current, list) else [], value, merge_key)
            if keyed:
                result[key] = keyed
            else:
                result.pop(key, None)  # an empty list is omitted (omitempty), as the server stores it
        elif (
            isinstance(value, list)
            and isinstance(current, list)
            and all(isinstance(i, Mapping) and "name" in i for i in value + current)
        ):
            merged = {item["name"]: item for item in current}
            for item in value:
                if item.get("$patch") == "delete":
                    merged.pop(item["name"], None)
                else:
                    merged[item["name"]] = _strategic_merge(merged.get(item["name"]), item)
            result[key] = list(merged.values())
        else:
            result[key] = _strategic_merge(current, value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve_parent(doc: Any, parts: list[str]) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict):
            if part not in node:
                raise ValueError(f"path element {part!r} not found")
            node = node[part]
        elif isinstance(node, list):
            node = node[_index(node, part, allow_end=False)]
        else:
            raise ValueError(f"cannot descend into {type(node).__name__} at {part!r}")
    return node, parts[-1]


def _index(node: list[Any], part: str, *, allow_end: bool) -> int:
    if part == "-" and allow_end:
        return len(node)
    if not part.isdigit():
        raise ValueError(f"invalid array index {part!r}")
    idx = int(part)
    if idx > len(node) or (idx == len(node) and not allow_end):
        raise ValueError(f"array index {idx} out of range")
    return idx


def _get(doc: Any, parts: list[str]) -> Any:
    if not parts:
        return doc
    parent, last = _resolve_parent(doc, parts)
    if isinstance(parent, dict):
        if last not in parent:
            raise ValueError(f"path element {last!r} not found")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, allow_end=False)]
    raise ValueError("invalid path")


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent, last = _resolve_parent(doc, parts)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise ValueError("invalid path")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        raise ValueError("cannot remove the whole document")
    parent, last = _resolve_parent(doc, parts)
    if isinstance(parent, dict):
        if last not in parent:
            raise ValueError(f"path element {last!r} not found")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, allow_end=False))
    raise ValueError("invalid path")


def _test(doc: Any, parts: list[str], value: Any) -> bool:
    """A `test` op as the API server's json-patch library runs it: a null value also matches
    a member that is absent from an existing object."""
    if value is None and parts:
        parent, last = _resolve_parent(doc, parts)
        if isinstance(parent, dict) and last not in parent:
            return True
    return bool(_get(doc, parts) == value)


def json_patch(doc: Any, operations: Sequence[Mapping[str, Any]]) -> Any:
    """RFC 6902 JSON patch (returns a new document); raises ValueError on a failed op or test."""
    doc = _copy(doc)
    for op in operations:
        kind = op.get("op")
        parts = _pointer(str(op.get("path", "")))
        if kind == "add":
            doc = _add(doc, parts, _copy(op.get("value")))
        elif kind == "remove":
            _remove(doc, parts)
        elif kind == "replace":
            _get(doc, parts)
            if not parts:
                doc = _copy(op.get("value"))
            else:
                _remove(doc, parts)
                doc = _add(doc, parts, _copy(op.get("value")))
        elif kind in ("move", "copy"):
            source = _pointer(str(op.get("from", "")))
            value = _get(doc, source)
            if kind == "move":
                _remove(doc, source)
            else:
                value = _copy(value)
            doc = _add(doc, parts, value)
        elif kind == "test":
            if not _test(doc, parts, op.get("value")):
                raise ValueError(f"test operation failed at {op.get('path')!r}")
        else:
            raise ValueError(f"unknown JSON patch op {kind!r}")
    return doc


# --- the fake -------------------------------------------------------------------------------------


class FakeClient:
    """KubeClient in memory. See the module docstring for what it models."""

    def __init__(self, *, without_status_subresource: frozenset[Resource] | None = None) -> None:
        self._objects: dict[Resource, dict[tuple[str, str], Obj]] = {}
        self._rv = 0
        self._log: dict[Resource, list[_Event]] = {}
        self._compacted: dict[Resource, int] = {}
        self._watchers: dict[Resource, list[_Watcher]] = {}
        self._errors: list[_InjectedError] = []
        self._no_status = (
            without_status_subresource
            if without_status_subresource is not None
            else frozenset({EVENTS, CONTROLLER_REVISIONS, LEASES})
        )
        self.actions: list[Action] = []
        self.requests: list[Request] = []
        self.closed = False

    # --- test helpers --------------------------------------------------------------------------

    def inject_error(
        self, verb: str, resource: Resource | str | None, err: BaseException, times: int = 1
    ) -> None:
        """The next `times` calls of `verb` ("create", "update", "patch", "delete", "get", "list",
        "watch" or "*") on `resource` (a Resource, a plural, "plural/subresource", or None for any)
        raise `err`. The request is still recorded in `actions`."""
        name = resource.plural if isinstance(resource, Resource) else resource
        self._errors.append(_InjectedError(verb, name, err, times))

    def clear_errors(self) -> None:
        """Forget every injected error not yet raised."""
        self._errors.clear()

    def writes(self) -> list[Action]:
        return [a for a in self.actions if a.verb in WRITE_VERBS]

    def clear_actions(self) -> None:
        self.actions.clear()
        self.requests.clear()

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def objects(self, resource: Resource, namespace: str | None = None) -> list[Obj]:
        """Copies of the stored objects, sorted by namespace/name."""
        store = self._objects.get(resource, {})
        return [
            _copy(obj)
            for key, obj in sorted(store.items())
            if namespace is None or key[0] == (namespace or "")
        ]

    def get_object(self, resource: Resource, namespace: str | None, name: str) -> Obj | None:
        obj = self._objects.get(resource, {}).get(self._key(resource, namespace, name))
        return None if obj is None else _copy(obj)

    def seed(self, resource: Resource, obj: Obj) -> Obj:
        """Store an object as given (status included), filling in missing metadata; emits ADDED
        (or MODIFIED if it exists); records no action."""
        body = _copy(obj)
        body.setdefault("apiVersion", resource.api_version)
        body.setdefault("kind", resource.kind)
        meta = body.setdefault("metadata", {})
        if not resource.namespaced:
            meta.pop("namespace", None)
        elif not meta.get("namespace"):
            raise ValueError("seed(): a namespaced object needs metadata.namespace")
        if not meta.get("name"):
            raise ValueError("seed(): metadata.name is required")
        if "uid" not in meta:
            meta["uid"] = str(uuid.uuid4())
        if "creationTimestamp" not in meta:
            meta["creationTimestamp"] = _now()
        meta.setdefault("generation", 1)
        key = self._key(resource, meta.get("namespace"), meta["name"])
        old = self._objects.get(resource, {}).get(key)
        meta["resourceVersion"] = self._next_rv()
        self._objects.setdefault(resource, {})[key] = body
        self._emit(resource, "MODIFIED" if old is not None else "ADDED", body, old)
        return _copy_obj(body)

    def set_status(self, resource: Resource, namespace: str | None, name: str, status: Obj) -> Obj:
        """Replace an object's status (as a kubelet or another controller would); no action."""
        key = self._key(resource, namespace, name)
        old = self._objects.get(resource, {}).get(key)
        if old is None:
            raise self._not_found(resource, name)
        new = _copy(old)
        new["status"] = _copy(status)
        return self._commit(resource, key, old, new)

    def bookmark(self, resource: Resource) -> None:
        """Send a BOOKMARK at the current resourceVersion to watches that allow bookmarks."""
        event = {
            "type": "BOOKMARK",
            "object": {
                "apiVersion": resource.api_version,
                "kind": resource.kind,
                "metadata": {"resourceVersion": str(self._rv)},
            },
        }
        for watcher in self._watchers.get(resource, ()):
            if watcher.bookmarks:
                watcher.queue.put_nowait(_copy(event))

    def end_watches(self, resource: Resource) -> None:
        """Close every open watch on the resource normally (as the server's timeout does), after
        the events already sent to it."""
        for watcher in self._watchers.get(resource, ()):
            watcher.queue.put_nowait(_END)

    def expire_watches(self, resource: Resource) -> None:
        """Compact the history: watches from a resourceVersion before now get 410 Gone, and every
        open watch on the resource ends with 410 at once. Events not yet read by an open watch
        are lost to it, as they would be for a client that was disconnected."""
        self._compacted[resource] = self._rv
        self._log[resource] = []
        for watcher in self._watchers.get(resource, ()):
            while not watcher.queue.empty():
                watcher.queue.get_nowait()
            watcher.queue.put_nowait(self._gone(self._rv))

    def watch_count(self, resource: Resource) -> int:
        """How many watch streams on the resource are open."""
        return len(self._watchers.get(resource, ()))

    # --- internals -----------------------------------------------------------------------------

    @staticmethod
    def _key(resource: Resource, namespace: str | None, name: str) -> tuple[str, str]:
        if resource.namespaced:
            if not namespace:
                raise ValueError(f"{resource} is namespaced: a namespace is required to address {name!r}")
            return (namespace, name)
        return ("", name)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _has_status_subresource(self, resource: Resource) -> bool:
        return resource not in self._no_status

    def _record(
        self,
        verb: str,
        resource: Resource,
        namespace: str | None,
        name: str | None,
        *,
        subresource: str | None = None,
        body: Any = None,
        **options: Any,
    ) -> None:
        label = f"{resource.plural}/{subresource}" if subresource else resource.plural
        self.actions.append(Action(verb, label, namespace, name))
        self.requests.append(Request(verb, resource, namespace, name, subresource, _copy(body), options))
        for injected in self._errors:
            if injected.verb not in (verb, "*"):
                continue
            if injected.resource not in (None, resource.plural, label):
                continue
            injected.times -= 1
            if injected.times <= 0:
                self._errors.remove(injected)
            raise injected.error

    def _emit(self, resource: Resource, kind: str, obj: Obj, old: Obj | None) -> None:
        event = _Event(int(obj["metadata"]["resourceVersion"]), kind, obj, old)
        self._log.setdefault(resource, []).append(event)
        for watcher in self._watchers.get(resource, ()):
            out = watcher.translate(event)
            if out is not None:
                watcher.queue.put_nowait(out)

    @staticmethod
    def _not_found(resource: Resource, name: str) -> NotFound:
        group = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
        return NotFound(
            code=404,
            reason="NotFound",
            message=f'{group} "{name}" not found',
            body={"kind": "Status", "code": 404, "reason": "NotFound"},
        )

    @staticmethod
    def _conflict(resource: Resource, name: str, message: str) -> Conflict:
        group = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
        return Conflict(
            code=409,
            reason="Conflict",
            message=f'Operation cannot be fulfilled on {group} "{name}": {message}',
            body={"kind": "Status", "code": 409, "reason": "Conflict"},
        )

    @staticmethod
    def _gone(rv: int) -> Gone:
        return Gone(
            code=410,
            reason="Expired",
            message=f"too old resource version (compacted up to {rv})",
            body={"kind": "Status", "code": 410, "reason": "Expired"},
        )

    @staticmethod
    def _selectors(
        label_selector: str | None, field_selector: str | None
    ) -> tuple[Callable[[Mapping[str, str]], bool], Callable[[Obj], bool]]:
        try:
            return parse_label_selector(label_selector), parse_field_selector(field_selector)
        except ValueError as err:
            raise BadRequest(code=400, reason="BadRequest", message=str(err)) from None

    def _generation_content(self, resource: Resource, obj: Obj) -> Obj:
        skip = ("metadata", "status") if self._has_status_subresource(resource) else ("metadata",)
        return {k: v for k, v in obj.items() if k not in skip}

    def _commit(self, resource: Resource, key: tuple[str, str], old: Obj, new: Obj) -> Obj:
        """Store an update of `old` to `new` (a private copy) and emit its event."""
        new_meta = new.setdefault("metadata", {})
        old_meta = old["metadata"]
        # Fields the server owns.
        for field_name in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if field_name in old_meta:
                new_meta[field_name] = old_meta[field_name]
            else:
                new_meta.pop(field_name, None)
        new_meta["name"] = old_meta["name"]
        if resource.namespaced:
            new_meta["namespace"] = old_meta["namespace"]
        new["apiVersion"] = resource.api_version
        new["kind"] = resource.kind
        new_meta["generation"] = old_meta.get("generation", 1)
        new_meta["resourceVersion"] = old_meta.get("resourceVersion")
        if new == old:
            return _copy_obj(old)  # a no-op write: no new resourceVersion, no event
        if self._generation_content(resource, new) != self._generation_content(resource, old):
            new_meta["generation"] = int(old_meta.get("generation", 1)) + 1
        new_meta["resourceVersion"] = self._next_rv()
        store = self._objects.setdefault(resource, {})
        if new_meta.get("deletionTimestamp") and not new_meta.get("finalizers"):
            del store[key]
            self._emit(resource, "DELETED", new, old)
        else:
            store[key] = new
            self._emit(resource, "MODIFIED", new, old)
        return _copy_obj(new)

    def _check_preconditions(self, resource: Resource, current: Obj, wanted: Obj) -> None:
        meta = wanted.get("metadata") or {}
        cur_meta = current["metadata"]
        rv = meta.get("resourceVersion")
        if rv and rv != cur_meta.get("resourceVersion"):
            raise self._conflict(
                resource,
                cur_meta["name"],
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        uid = meta.get("uid")
        if uid and uid != cur_meta.get("uid"):
            raise self._conflict(
                resource,
                cur_meta["name"],
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: {cur_meta.get('uid')}",
            )

    def _update(
        self, resource: Resource, key: tuple[str, str], current: Obj, wanted: Obj, subresource: str | None
    ) -> Obj:
        """Apply a full desired object (after a PUT body or a patch) to the stored one."""
        self._check_preconditions(resource, current, wanted)
        if subresource == "status":
            new = _copy(current)
            if "status" in wanted:
                new["status"] = _copy(wanted["status"])
            else:
                new.pop("status", None)
        elif subresource is not None:
            raise NotFound(
                code=404, reason="NotFound", message=f"subresource {subresource!r} not supported by the fake"
            )
        else:
            new = _copy(wanted)
            if self._has_status_subresource(resource):
                if "status" in current:
                    new["status"] = _copy(current["status"])
                else:
                    new.pop("status", None)
        return self._commit(resource, key, current, new)

    # --- KubeClient ----------------------------------------------------------------------------

    async def get(self, resource: Resource, namespace: str | None, name: str) -> Obj:
        self._record("get", resource, namespace, name)
        obj = self._objects.get(resource, {}).get(self._key(resource, namespace, name))
        if obj is None:
            raise self._not_found(resource, name)
        return _copy_obj(obj)

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
        """resource_version is accepted and ignored: lists are always of the current state."""
        self._record("list", resource, namespace, None, label_selector=label_selector, limit=limit)
        labels, fields = self._selectors(label_selector, field_selector)
        snapshot_rv = self._rv
        after: tuple[str, str] | None = None
        if continue_token:
            try:
                rv_text, _, last = continue_token.partition(":")
                snapshot_rv = int(rv_text)
                ns, _, name = last.partition("/")
                after = (ns, name)
            except ValueError:
                raise BadRequest(code=400, reason="BadRequest", message="invalid continue token") from None
            if snapshot_rv < self._compacted.get(resource, 0):
                raise Gone(
                    code=410,
                    reason="Expired",
                    message="The provided continue parameter is too old to display a consistent list result.",
                )
        items: list[Obj] = []
        next_token = ""
        for key in sorted(self._objects.get(resource, {})):
            if after is not None and key <= after:
                continue
            obj = self._objects[resource][key]
            if namespace and resource.namespaced and key[0] != namespace:
                continue
            if not labels(obj["metadata"].get("labels") or {}) or not fields(obj):
                continue
            if limit and len(items) >= limit:
                last = items[-1]["metadata"]
                next_token = f"{snapshot_rv}:{last.get('namespace', '')}/{last['name']}"
                break
            items.append(_copy(obj))
        meta: dict[str, Any] = {"resourceVersion": str(snapshot_rv)}
        if next_token:
            meta["continue"] = next_token
        return {
            "apiVersion": resource.api_version,
            "kind": f"{resource.kind}List",
            "metadata": meta,
            "items": items,
        }

    async def list_all(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> tuple[builtins.list[Obj], str]:
        return await list_all(
            self,
            resource,
            namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            page_size=page_size,
        )

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
        return self._watch(
            resource,
            namespace,
            resource_version,
            label_selector,
            field_selector,
            timeout_seconds,
            allow_bookmarks,
        )

    async def _watch(
        self,
        resource: Resource,
        namespace: str | None,
        resource_version: str | None,
        label_selector: str | None,
        field_selector: str | None,
        timeout_seconds: int | None,
        allow_bookmarks: bool,
    ) -> AsyncIterator[Obj]:
        self._record(
            "watch",
            resource,
            namespace,
            None,
            resource_version=resource_version,
            label_selector=label_selector,
            timeout_seconds=timeout_seconds,
            allow_bookmarks=allow_bookmarks,
        )
        labels, fields = self._selectors(label_selector, field_selector)
        watcher = _Watcher(resource, namespace, labels, fields, allow_bookmarks)
        if resource_version and resource_version != "0":
            try:
                start = int(resource_version)
            except ValueError:
                raise BadRequest(code=400, reason="BadRequest", message="invalid resourceVersion") from None
            if start < self._compacted.get(resource, 0):
                raise self._gone(self._compacted[resource])
            for event in self._log.get(resource, ()):
                if event.rv > start:
                    out = watcher.translate(event)
                    if out is not None:
                        watcher.queue.put_nowait(out)
        else:
            # No resourceVersion: synthetic ADDED for the current state, then changes.
            for _, obj in sorted(self._objects.get(resource, {}).items()):
                if watcher.matches(obj):
                    watcher.queue.put_nowait({"type": "ADDED", "object": _copy(obj)})
        self._watchers.setdefault(resource, []).append(watcher)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds if timeout_seconds else None
        try:
            while not self.closed:
                if deadline is None:
                    item = await watcher.queue.get()
                else:
                    try:
                        async with asyncio.timeout_at(deadline):
                            item = await watcher.queue.get()
                    except TimeoutError:
                        return
                if isinstance(item, _End):
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            watchers = self._watchers.get(resource, [])
            if watcher in watchers:
                watchers.remove(watcher)

    async def create(
        self, resource: Resource, namespace: str | None, body: Obj, *, dry_run: bool = False
    ) -> Obj:
        """With dry_run: recorded as verb "create-dry-run" (not a write; inject errors on that
        verb to model a rejection) and answered without storing or emitting anything."""
        meta_in = body.get("metadata") or {}
        verb = "create-dry-run" if dry_run else "create"
        self._record(verb, resource, namespace or meta_in.get("namespace"), meta_in.get("name"), body=body)
        return self._create(resource, namespace, body, dry_run=dry_run)

    def _create(self, resource: Resource, namespace: str | None, body: Obj, *, dry_run: bool = False) -> Obj:
        obj = _copy(body)
        meta = obj.setdefault("metadata", {})
        if resource.namespaced:
            ns = namespace or meta.get("namespace")
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise BadRequest(
                    code=400,
                    reason="BadRequest",
                    message="the namespace of the provided object does not match the namespace sent on the request",
                )
            if not ns:
                raise BadRequest(code=400, reason="BadRequest", message="a namespace is required")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise Invalid(
                    code=422,
                    reason="Invalid",
                    message=f"{resource.kind} is invalid: metadata.name: Required value",
                    causes=[
                        StatusCause(
                            "FieldValueRequired",
                            "Required value: name or generateName is required",
                            "metadata.name",
                        )
                    ],
                )
            meta["name"] = prefix + random_string()
        key = self._key(resource, meta.get("namespace"), meta["name"])
        store = self._objects.setdefault(resource, {})
        if key in store:
            group = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
            raise AlreadyExists(
                code=409,
                reason="AlreadyExists",
                message=f'{group} "{meta["name"]}" already exists',
                body={"kind": "Status", "code": 409, "reason": "AlreadyExists"},
            )
        obj["apiVersion"] = resource.api_version
        obj["kind"] = resource.kind
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        for server_owned in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(server_owned, None)
        if self._has_status_subresource(resource):
            obj.pop("status", None)
            if resource == PODS:
                obj["status"] = {"phase": "Pending"}
        if dry_run:
            return _copy_obj(obj)
        meta["resourceVersion"] = self._next_rv()
        store[key] = obj
        self._emit(resource, "ADDED", obj, None)
        return _copy_obj(obj)

    async def replace(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        body: Obj,
        *,
        subresource: str | None = None,
    ) -> Obj:
        self._record("update", resource, namespace, name, subresource=subresource, body=body)
        key = self._key(resource, namespace, name)
        current = self._objects.get(resource, {}).get(key)
        if current is None:
            raise self._not_found(resource, name)
        body_name = (body.get("metadata") or {}).get("name")
        if body_name and body_name != name:
            raise BadRequest(
                code=400,
                reason="BadRequest",
                message="the name of the object does not match the name on the URL",
            )
        return self._update(resource, key, current, body, subresource)

    async def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: Obj | builtins.list[Obj],
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool = False,
    ) -> Obj:
        self._record(
            "patch",
            resource,
            namespace,
            name,
            subresource=subresource,
            body=patch,
            patch_type=patch_type,
            field_manager=field_manager,
            force=force,
        )
        key = self._key(resource, namespace, name)
        current = self._objects.get(resource, {}).get(key)
        if current is None:
            if patch_type == "apply" and subresource is None and isinstance(patch, Mapping):
                # Server-side apply creates what does not exist.
                body = _copy(patch)
                body.setdefault("metadata", {})["name"] = name
                return self._create(resource, namespace, body)
            raise self._not_found(resource, name)
        try:
            if patch_type == "json":
                if not isinstance(patch, list):
                    raise ValueError("a JSON patch is a list of operations")
                wanted = json_patch(current, patch)
            elif not isinstance(patch, Mapping):
                raise ValueError(f"a {patch_type} patch is an object")
            elif patch_type == "strategic":
                if resource.group not in _BUILTIN_GROUPS and not resource.group.endswith(".k8s.io"):
                    raise ApiError(
                        code=415,
                        reason="UnsupportedMediaType",
                        message="the body of the request was in an unknown format - accepted media types include: "
                        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                    )
                wanted = _strategic_merge(current, patch)
            else:  # merge, apply
                wanted = merge_patch(current, patch)
        except ValueError as err:
            raise Invalid(
                code=422, reason="Invalid", message=f"the patch could not be applied: {err}"
            ) from None
        if not isinstance(wanted, dict):
            raise Invalid(code=422, reason="Invalid", message="the patch did not produce an object")
        self._check_uid_unchanged(resource, current, wanted)
        return self._update(resource, key, current, wanted, subresource)

    @staticmethod
    def _check_uid_unchanged(resource: Resource, current: Obj, wanted: Obj) -> None:
        """A patch carrying another uid (a uid precondition that no longer holds) is rejected by
        the server's validation of the patched object (422), not as a precondition (409)."""
        uid = (wanted.get("metadata") or {}).get("uid")
        if uid and uid != current["metadata"].get("uid"):
            detail = f'Invalid value: "{uid}": field is immutable'
            raise Invalid(
                code=422,
                reason="Invalid",
                message=f'{resource.kind} "{current["metadata"]["name"]}" is invalid: metadata.uid: {detail}',
                causes=[StatusCause(reason="FieldValueInvalid", message=detail, field="metadata.uid")],
            )

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
    ) -> None:
        self._record(
            "delete",
            resource,
            namespace,
            name,
            uid_precondition=uid_precondition,
            resource_version_precondition=resource_version_precondition,
            propagation_policy=propagation_policy,
            grace_period_seconds=grace_period_seconds,
        )
        key = self._key(resource, namespace, name)
        store = self._objects.get(resource, {})
        current = store.get(key)
        if current is None:
            raise self._not_found(resource, name)
        self._check_preconditions(
            resource,
            current,
            {"metadata": {"uid": uid_precondition, "resourceVersion": resource_version_precondition}},
        )
        meta = current["metadata"]
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return  # already terminating
            new = _copy(current)
            new["metadata"]["deletionTimestamp"] = _now()
            new["metadata"]["deletionGracePeriodSeconds"] = grace_period_seconds or 0
            new["metadata"]["generation"] = int(meta.get("generation", 1)) + 1
            new["metadata"]["resourceVersion"] = self._next_rv()
            store[key] = new
            self._emit(resource, "MODIFIED", new, current)
            return
        final = _copy(current)
        final["metadata"]["resourceVersion"] = self._next_rv()
        if resource == PODS and not final["metadata"].get("deletionTimestamp"):
            # Pods delete gracefully: the API server stamps even an immediate deletion.
            final["metadata"]["deletionTimestamp"] = _now()
            final["metadata"]["deletionGracePeriodSeconds"] = grace_period_seconds or 0
        del store[key]
        self._emit(resource, "DELETED", final, current)

    async def api_resources(self, group_version: str) -> set[str] | None:
        """Served: the resources of the CustomResourceDefinitions seeded or created here (by
        name, `plural.group`, and spec.versions when given)."""
        group, _, version = group_version.rpartition("/")
        plurals: set[str] = set()
        for crd in self._objects.get(CUSTOM_RESOURCE_DEFINITIONS, {}).values():
            plural, _, crd_group = str(crd["metadata"]["name"]).partition(".")
            versions = [v.get("name") for v in (crd.get("spec") or {}).get("versions") or ()]
            if crd_group == group and (not versions or version in versions):
                plurals.add(plural)
        return plurals or None

    async def close(self) -> None:
        self.closed = True
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.queue.put_nowait(_END)
