"""Recreate what AIBrix's own controller left on a cluster, from the dumps in
../shared/reference/aibrix-objects/ (README.md there says how they were made).

`load_fixture` creates one dump's objects in a namespace exactly as AIBrix left them: same names,
labels, annotations, finalizers and specs; ownerReferences re-pointed to the recreated owners'
new UIDs; status written through the status subresource where the kind has one (pods too, so
they look Running/Ready as in the dump; kwok then keeps them so on our fake nodes). Fields the
API server fills in are dropped, pods are put on the cluster's fake kwok nodes (round-robin), and
a Service keeps its clusterIP only when it is headless ("None"). Owners are created before what
they own, so the garbage collector never sees a dangling owner. The result records what was
created (kind, name, new and old UID) so a test can compare UIDs afterwards.

`check_loaded` compares the live objects with the dump (the loader's own test), and
`remove_aibrix_finalizers` lets a test's teardown free a namespace whose objects still carry
AIBrix's finalizers (with no AIBrix controller to remove them, it would never finish deleting).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controller.runtime.client import ApiClient, KubeClient, Obj, create_client, list_all
from controller.runtime.errors import Conflict, NotFound
from controller.runtime.resources import (
    CONTROLLER_REVISIONS,
    NODES,
    PODS,
    ROLESETS,
    SERVICES,
    STORMSERVICES,
    Resource,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
# Copies of ../shared/reference/aibrix-objects, so that the tests run from a checkout alone.
FIXTURE_DIR = Path(
    os.environ.get("STORMSERVICE_AIBRIX_FIXTURES", REPO_ROOT / "tests" / "fixtures" / "aibrix")
)
PODSET_CRD = REPO_ROOT / "tests" / "fixtures" / "aibrix-podset-crd.yaml"

PODSETS = Resource("orchestration.aibrix.ai", "v1alpha1", "podsets", "PodSet")

RESOURCES: dict[str, Resource] = {
    r.kind: r for r in (STORMSERVICES, CONTROLLER_REVISIONS, ROLESETS, PODSETS, PODS, SERVICES)
}
# Kinds whose status is written through the status subresource after create.
WITH_STATUS = frozenset({"StormService", "RoleSet", "PodSet", "Pod"})

AIBRIX_FINALIZERS = frozenset(
    {
        "orchestration.aibrix.ai/stormservice-finalizer",
        "orchestration.aibrix.ai/roleset-finalizer",
        "orchestration.aibrix.ai/podset-finalizer",
    }
)

# The loader's own user agent, so its writes are told apart from the controller's in managedFields
# (the API server names a request's field manager after its user agent).
LOADER_USER_AGENT = "aibrix-fixture-loader"

FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")

# Filled in by the API server; a recreated object gets its own.
SERVER_FIELDS = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
)


class FixtureError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class CreatedObject:
    kind: str
    name: str
    uid: str  # on this cluster
    fixture_uid: str  # in the dump


@dataclass
class LoadedFixture:
    path: Path
    namespace: str
    objects: list[CreatedObject] = field(default_factory=list)
    fixture: list[Obj] = field(default_factory=list)  # the dump's objects, as read
    nodes: dict[str, str] = field(default_factory=dict)  # pod name -> fake node it was put on

    def of_kind(self, kind: str) -> list[CreatedObject]:
        return [o for o in self.objects if o.kind == kind]

    def uids(self, kind: str) -> dict[str, str]:
        """name -> UID on this cluster, for every created object of `kind`."""
        return {o.name: o.uid for o in self.of_kind(kind)}

    def one(self, kind: str) -> CreatedObject:
        found = self.of_kind(kind)
        if len(found) != 1:
            raise FixtureError(f"{self.path.name}: {len(found)} {kind} objects, expected one")
        return found[0]

    def fixture_object(self, kind: str, name: str) -> Obj:
        for obj in self.fixture:
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return obj
        raise FixtureError(f"{self.path.name}: no {kind} {name}")


async def loader_client(kubeconfig: str) -> ApiClient:
    """A client whose writes show in managedFields as LOADER_USER_AGENT's."""
    return await create_client(kubeconfig, user_agent=LOADER_USER_AGENT)


def written_by_others(obj: Mapping[str, Any], subresource: str | None = None) -> set[str]:
    """Field managers other than the loader that wrote `obj` (its status with subresource="status")."""
    return {
        str(entry.get("manager"))
        for entry in obj["metadata"].get("managedFields") or ()
        if entry.get("manager") != LOADER_USER_AGENT and (entry.get("subresource") or None) == subresource
    }


def fixture_path(name: str) -> Path:
    """`name` is a file in FIXTURE_DIR ("vllm-replica" or "vllm-replica.objects.yaml") or a path."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    if not name.endswith((".yaml", ".yml")):
        name = f"{name}.objects.yaml"
    return FIXTURE_DIR / name


def read_fixture(path: Path) -> list[Obj]:
    """The objects of one dump (a v1 List), in file order."""
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise FixtureError(f"{path}: not a List of objects")
    items: list[Obj] = doc["items"]
    for obj in items:
        if obj.get("kind") not in RESOURCES:
            raise FixtureError(f"{path}: no resource known for kind {obj.get('kind')!r}")
    return items


def owners_first(objects: Iterable[Obj]) -> list[Obj]:
    """The objects ordered so that every owner (by the dump's UIDs) precedes what it owns; stable
    otherwise. An owner missing from the dump is an error: its UID could not be re-pointed."""
    pending = list(objects)
    uids = {o["metadata"]["uid"] for o in pending}
    placed: set[str] = set()
    ordered: list[Obj] = []
    while pending:
        ready = [
            o
            for o in pending
            if all(ref["uid"] in placed for ref in o["metadata"].get("ownerReferences") or ())
        ]
        if not ready:
            missing = {
                f"{ref['kind']}/{ref['name']}"
                for o in pending
                for ref in o["metadata"].get("ownerReferences") or ()
                if ref["uid"] not in uids
            }
            raise FixtureError(f"owners not in the fixture (or a cycle): {sorted(missing) or pending}")
        for o in ready:
            ordered.append(o)
            placed.add(o["metadata"]["uid"])
        pending = [o for o in pending if o["metadata"]["uid"] not in placed]
    return ordered


async def fake_nodes(client: KubeClient) -> list[str]:
    """Names of the nodes kwok manages (annotation kwok.x-k8s.io/node=fake), sorted."""
    nodes, _ = await list_all(client, NODES)
    key, value = FAKE_NODE_ANNOTATION
    names = sorted(
        n["metadata"]["name"] for n in nodes if (n["metadata"].get("annotations") or {}).get(key) == value
    )
    if not names:
        raise FixtureError(f"no nodes annotated {key}={value}: kwok would not run the pods")
    return names


def render(obj: Mapping[str, Any], namespace: str, new_uids: Mapping[str, str]) -> Obj:
    """The body to create for one dumped object: server fields and status dropped, namespace
    set, ownerReferences re-pointed to `new_uids` (dump UID -> UID on this cluster)."""
    body = copy.deepcopy(dict(obj))
    body.pop("status", None)
    meta = body["metadata"]
    for key in SERVER_FIELDS:
        meta.pop(key, None)
    meta["namespace"] = namespace
    refs = meta.get("ownerReferences")
    if refs:
        for ref in refs:
            ref["uid"] = new_uids[ref["uid"]]
    if body["kind"] == "Service":
        spec = body.get("spec") or {}
        if spec.get("clusterIP") != "None":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
    return body


async def _write_status(client: KubeClient, resource: Resource, created: Obj, status: Obj) -> Obj:
    """PUT the status subresource with the dump's status. Retried on conflicts: kwok may write a
    pod's status between our create and this write."""
    current = created
    for _ in range(10):
        body = copy.deepcopy(current)
        body["status"] = copy.deepcopy(status)
        meta = body["metadata"]
        try:
            return await client.replace(resource, meta["namespace"], meta["name"], body, subresource="status")
        except Conflict:
            current = await client.get(resource, meta["namespace"], meta["name"])
    raise FixtureError(f"could not write the status of {resource.kind} {created['metadata']['name']}")


async def load_fixture(
    client: KubeClient, fixture: str | Path, namespace: str, *, nodes: list[str] | None = None
) -> LoadedFixture:
    """Creates the dump's objects in `namespace` (owners first) and returns what was created."""
    path = fixture if isinstance(fixture, Path) else fixture_path(fixture)
    objects = read_fixture(path)
    node_names = nodes if nodes is not None else await fake_nodes(client)
    loaded = LoadedFixture(path, namespace, fixture=objects)
    new_uids: dict[str, str] = {}
    pod_count = 0
    for obj in owners_first(objects):
        kind = obj["kind"]
        resource = RESOURCES[kind]
        body = render(obj, namespace, new_uids)
        if kind == "Pod":
            node = node_names[pod_count % len(node_names)]
            pod_count += 1
            body["spec"]["nodeName"] = node
            loaded.nodes[body["metadata"]["name"]] = node
        created = await client.create(resource, namespace, body)
        if kind in WITH_STATUS and obj.get("status"):
            created = await _write_status(client, resource, created, obj["status"])
        meta = created["metadata"]
        new_uids[obj["metadata"]["uid"]] = meta["uid"]
        loaded.objects.append(CreatedObject(kind, meta["name"], meta["uid"], obj["metadata"]["uid"]))
    return loaded


def missing_from(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where `actual` lacks or differs from what `expected` states (defaults added by the API
    server are allowed; values dropped or changed are not)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path or '.'}: {actual!r} is not an object"]
        out: list[str] = []
        for key, value in expected.items():
            if key not in actual:
                if value in ({}, [], None):
                    continue
                out.append(f"{path}.{key}: missing")
            else:
                out.extend(missing_from(value, actual[key], f"{path}.{key}"))
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: {actual!r} != {expected!r}"]
        return [
            p
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for p in missing_from(e, a, f"{path}[{i}]")
        ]
    return [] if expected == actual else [f"{path}: {actual!r} != {expected!r}"]


async def check_loaded(client: KubeClient, loaded: LoadedFixture) -> list[str]:
    """What differs between the live objects and the dump (empty when the load is faithful):
    the UIDs recorded, labels, annotations, finalizers, ownerReferences (re-pointed), spec (or a
    ControllerRevision's data), status where written, pods on fake nodes."""
    problems: list[str] = []
    by_fixture_uid = {o.fixture_uid: o for o in loaded.objects}
    for created in loaded.objects:
        want = loaded.fixture_object(created.kind, created.name)
        what = f"{created.kind} {created.name}"
        try:
            live = await client.get(RESOURCES[created.kind], loaded.namespace, created.name)
        except NotFound:
            problems.append(f"{what}: not found")
            continue
        meta, want_meta = live["metadata"], want["metadata"]
        if meta["uid"] != created.uid:
            problems.append(f"{what}: uid {meta['uid']} != recorded {created.uid}")
        if meta.get("deletionTimestamp"):
            problems.append(f"{what}: being deleted")
        for key in ("labels", "annotations", "finalizers"):
            if (meta.get(key) or None) != (want_meta.get(key) or None):
                problems.append(f"{what}: {key} {meta.get(key)!r} != {want_meta.get(key)!r}")
        want_refs = [
            {**ref, "uid": by_fixture_uid[ref["uid"]].uid} for ref in want_meta.get("ownerReferences") or ()
        ]
        if (meta.get("ownerReferences") or []) != want_refs:
            problems.append(f"{what}: ownerReferences {meta.get('ownerReferences')!r} != {want_refs!r}")
        if created.kind == "ControllerRevision":
            if live.get("data") != want.get("data") or live.get("revision") != want.get("revision"):
                problems.append(f"{what}: data or revision differ from the fixture")
            continue
        want_spec = copy.deepcopy(want.get("spec") or {})
        if created.kind == "Pod":
            want_spec["nodeName"] = loaded.nodes[created.name]
        problems.extend(f"{what}: spec{p}" for p in missing_from(want_spec, live.get("spec") or {}))
        if created.kind in WITH_STATUS and created.kind != "Pod":
            problems.extend(
                f"{what}: status{p}" for p in missing_from(want.get("status") or {}, live.get("status") or {})
            )
    return problems


def pod_running_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    return (
        not pod["metadata"].get("deletionTimestamp")
        and status.get("phase") == "Running"
        and any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ()
        )
    )


async def remove_aibrix_finalizers(client: KubeClient, namespace: str) -> list[str]:
    """Strips AIBrix's finalizers from every StormService, RoleSet and PodSet in `namespace`
    (test teardown). Returns "Kind/name" of the objects it changed. PodSets are skipped when
    their CRD is not installed."""
    changed: list[str] = []
    for resource in (STORMSERVICES, ROLESETS, PODSETS):
        try:
            items, _ = await list_all(client, resource, namespace)
        except NotFound:
            continue
        for obj in items:
            name = obj["metadata"]["name"]
            for _ in range(5):
                meta = obj["metadata"]
                finalizers = meta.get("finalizers") or []
                kept = [f for f in finalizers if f not in AIBRIX_FINALIZERS]
                if kept == finalizers:
                    break
                # resourceVersion in a merge patch makes it conditional (409 when stale).
                patch = {"metadata": {"finalizers": kept, "resourceVersion": meta["resourceVersion"]}}
                try:
                    await client.patch(resource, namespace, name, patch)
                    changed.append(f"{resource.kind}/{name}")
                    break
                except NotFound:
                    break
                except Conflict:
                    try:
                        obj = await client.get(resource, namespace, name)
                    except NotFound:
                        break
    return changed
