"""Taking over what AIBrix's own controller left running (issue 10), on the real control plane.

Each test recreates one dump of ../shared/reference/aibrix-objects/ in a fresh namespace with
tests/aibrix_fixtures.py (StormService, ControllerRevision, RoleSet, PodSets, pods and Service,
exactly as AIBrix left them, pods Running on the fake kwok nodes), checks that the load is
faithful, records every pod's UID, and only then starts the controller (`python -m controller
--namespace=...`). Everything is polled with generous bounds; nothing waits a fixed time.

- test_takeover_without_podset_crd: the replica-mode dump (no PodSets) with nothing asking for
  the PodSet CRD (it runs first, so on a fresh cluster the CRD is really absent; on a cluster
  where an earlier session installed it, it is the same check as the next one).
- test_takeover_keeps_everything: nothing restarts or is replaced, the StormService becomes
  Ready for its generation, the revision it reports has AIBrix's content, PodSets and AIBrix's
  finalizers are gone and the PodSets' pods are controlled by their RoleSet.
- test_after_takeover_behaves_normally: then a template change rolls out, scaling works (the
  StormService's scale subresource in replica mode, a role's replicas in the pooled dump) and
  deleting the StormService removes everything.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from controller.roleset.podsets import PODSET_FINALIZER
from controller.runtime.client import KubeClient, Obj, list_all
from controller.runtime.errors import NotFound
from controller.runtime.resources import (
    CONTROLLER_REVISIONS,
    PODS,
    ROLESETS,
    SERVICES,
    STORMSERVICES,
)
from tests.aibrix_fixtures import (
    AIBRIX_FINALIZERS,
    FIXTURE_DIR,
    PODSET_CRD,
    PODSETS,
    LoadedFixture,
    check_loaded,
    fixture_path,
    load_fixture,
    loader_client,
    missing_from,
    pod_running_ready,
    read_fixture,
    remove_aibrix_finalizers,
    written_by_others,
)
from tests.cluster import ControllerProcess, Kubectl, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(720)]

FIXTURES = ["vllm-replica", "sglang-tp-1p1d"]
POLL = 0.5
READY_WITHIN = 60.0  # controller start -> StormService Ready for its generation
QUIET_FOR = 20.0  # watched after Ready: nothing may restart
SETTLE_WITHIN = 60.0  # after Ready: PodSets and finalizers gone, pods adopted
ROLLOUT_WITHIN = 180.0
DELETE_WITHIN = 120.0

# The role whose template each "behaves normally" test changes, and the role it scales in
# pooled mode (None: scale the StormService itself, replica mode).
CHANGE_ROLE = {"vllm-replica": "prefill", "sglang-tp-1p1d": "decode"}
SCALE_ROLE: dict[str, str | None] = {"vllm-replica": None, "sglang-tp-1p1d": "prefill"}
TEST_ENV = {"name": "TAKEOVER_CHECK", "value": "rolled-out"}


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def podset_crd(kubectl: Kubectl, crds: list[str]) -> str:
    """Installs the test PodSet CRD (tests/fixtures/aibrix-podset-crd.yaml) and waits until it
    is Established, discovered and listable, as the `crds` fixture does for ours. Left
    installed, like ours."""
    name = "podsets.orchestration.aibrix.ai"
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=stormservice-tests",
        "-f",
        str(PODSET_CRD),
    )

    def established() -> bool:
        crd = kubectl.get_json("crd", name)
        return any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (crd.get("status") or {}).get("conditions") or ()
        )

    def discovered() -> bool:
        out = kubectl("api-resources", "--api-group=orchestration.aibrix.ai", "-o", "name", check=False)
        return name in out.stdout.split()

    def listable() -> bool:
        return kubectl("get", name, "--all-namespaces", "-o", "name", check=False).returncode == 0

    wait_until(established, 60, f"CRD {name} Established")
    wait_until(discovered, 30, f"{name} in discovery")
    wait_until(listable, 30, f"{name} listable")
    return name


@pytest.fixture(autouse=True)
def _fixtures_present() -> None:
    if not FIXTURE_DIR.is_dir():
        pytest.skip(f"AIBrix fixtures not found in {FIXTURE_DIR} (set STORMSERVICE_AIBRIX_FIXTURES)")


@pytest.fixture
async def loader(kubeconfig: str, kube: KubeClient, namespace: str) -> AsyncIterator[KubeClient]:
    """The loader's client (its own field manager). On teardown, AIBrix's finalizers are
    stripped from whatever still carries them, or the namespace would never finish deleting."""
    client = await loader_client(kubeconfig)
    try:
        yield client
    finally:
        try:
            await remove_aibrix_finalizers(kube, namespace)
        finally:
            await client.close()


# ---------------------------------------------------------------------------------------------
# helpers


def condition(obj: Obj, type_: str) -> Obj:
    found: Obj = next(
        (c for c in (obj.get("status") or {}).get("conditions") or () if c["type"] == type_), {}
    )
    return found


def controller_ref(obj: Obj) -> Obj:
    found: Obj = next((r for r in obj["metadata"].get("ownerReferences") or () if r.get("controller")), {})
    return found


def semantic(value: Any) -> Any:
    """A template as a comparable value: no `$patch` directive, no `creationTimestamp: null`, no
    role `replicas` (a scaling dimension, not a version), no empty or null values, numbers as
    strings (a quantity of 1 and of "1" are the same)."""
    if isinstance(value, dict):
        out = {}
        is_role = "name" in value and "template" in value
        for key, item in value.items():
            if key in ("$patch", "creationTimestamp") or (is_role and key == "replicas"):
                continue
            norm = semantic(item)
            if norm in (None, {}, []):
                continue
            out[key] = norm
        return out
    if isinstance(value, list):
        return [semantic(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return str(value)
    return value


def revision_template(revision: Obj) -> Any:
    return semantic(((revision.get("data") or {}).get("spec") or {}).get("template") or {})


def pods_expected(ss: Obj, role: str | None = None) -> int:
    roles = ss["spec"]["template"]["spec"]["roles"]
    per_roleset = sum(
        int(r.get("replicas", 1)) * int(r.get("podGroupSize") or 1)
        for r in roles
        if role is None or r["name"] == role
    )
    return int(ss["spec"].get("replicas", 1)) * per_roleset


def env_of(pod: Obj) -> dict[str, str]:
    container = pod["spec"]["containers"][0]
    return {e["name"]: str(e.get("value", "")) for e in container.get("env") or ()}


@dataclass
class Cluster:
    kube: KubeClient
    namespace: str

    async def storm(self, name: str) -> Obj:
        return await self.kube.get(STORMSERVICES, self.namespace, name)

    async def pods(self) -> list[Obj]:
        items, _ = await list_all(self.kube, PODS, self.namespace)
        return items

    async def rolesets(self) -> list[Obj]:
        items, _ = await list_all(self.kube, ROLESETS, self.namespace)
        return items

    async def revisions(self) -> list[Obj]:
        items, _ = await list_all(self.kube, CONTROLLER_REVISIONS, self.namespace)
        return items

    async def podsets(self) -> list[Obj] | None:
        """None when the PodSet CRD is not installed."""
        try:
            items, _ = await list_all(self.kube, PODSETS, self.namespace)
        except NotFound:
            return None
        return items

    async def services(self) -> list[Obj]:
        items, _ = await list_all(self.kube, SERVICES, self.namespace)
        return items


@dataclass
class Baseline:
    """What AIBrix left, as loaded, before the controller starts."""

    loaded: LoadedFixture
    storm: str
    storm_uid: str
    pod_uids: dict[str, str]
    roleset_uids: dict[str, str]
    pod_roleset: dict[str, str]  # pod name -> name of the RoleSet it belongs to (through a PodSet or not)
    podset_pods: dict[str, str]  # pod name -> its PodSet, for the pods a PodSet owned
    aibrix_revision: str
    aibrix_template: Any
    storm_template: Any  # the StormService's template as stored (AIBrix's, plus our CRD's defaults)
    violations: list[str] = field(default_factory=list)


async def load(cluster: Cluster, loader: KubeClient, fixture: str) -> Baseline:
    """Loads the dump, checks the load is faithful and the pods Running/Ready, records UIDs."""
    loaded = await load_fixture(loader, fixture, cluster.namespace)
    problems = await check_loaded(cluster.kube, loaded)
    assert not problems, "the loader did not recreate the fixture faithfully:\n" + "\n".join(problems)

    deadline = time.monotonic() + 60
    while True:
        pods = await cluster.pods()
        if len(pods) == len(loaded.of_kind("Pod")) and all(pod_running_ready(p) for p in pods):
            break
        assert time.monotonic() < deadline, "pods not Running/Ready on kwok within 60s: " + ", ".join(
            f"{p['metadata']['name']}={(p.get('status') or {}).get('phase')}" for p in pods
        )
        await asyncio.sleep(POLL)
    pod_uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}
    assert pod_uids == loaded.uids("Pod"), "pods changed before the controller started"
    for pod in pods:
        ref = controller_ref(pod)
        assert ref and ref["uid"] in {o.uid for o in loaded.objects}, (
            f"{pod['metadata']['name']}: owner {ref}"
        )

    fixture_owner = {
        (o["kind"], o["metadata"]["name"]): controller_ref(o).get("name", "") for o in loaded.fixture
    }
    pod_roleset: dict[str, str] = {}
    podset_pods: dict[str, str] = {}
    for pod in loaded.fixture:
        if pod["kind"] != "Pod":
            continue
        name = pod["metadata"]["name"]
        ref = controller_ref(pod)
        if ref["kind"] == "PodSet":
            podset_pods[name] = ref["name"]
            pod_roleset[name] = fixture_owner[("PodSet", ref["name"])]
        else:
            pod_roleset[name] = ref["name"]

    storm = loaded.one("StormService")
    revision = loaded.one("ControllerRevision")
    live_storm = await cluster.storm(storm.name)
    return Baseline(
        loaded=loaded,
        storm=storm.name,
        storm_uid=storm.uid,
        pod_uids=pod_uids,
        roleset_uids=loaded.uids("RoleSet"),
        pod_roleset=pod_roleset,
        podset_pods=podset_pods,
        aibrix_revision=revision.name,
        aibrix_template=revision_template(loaded.fixture_object("ControllerRevision", revision.name)),
        storm_template=semantic(live_storm["spec"]["template"]),
    )


async def nothing_restarted(cluster: Cluster, base: Baseline) -> list[str]:
    """Breaches of "no pod deleted or replaced, none terminating, no RoleSet created or deleted"."""
    out: list[str] = []
    pods = {p["metadata"]["name"]: p for p in await cluster.pods()}
    uids = {n: p["metadata"]["uid"] for n, p in pods.items()}
    if uids != base.pod_uids:
        gone = sorted(n for n in base.pod_uids if uids.get(n) != base.pod_uids[n])
        new = sorted(n for n in uids if base.pod_uids.get(n) != uids[n])
        out.append(f"pods deleted or replaced: {gone}; pods created: {new}")
    terminating = sorted(n for n, p in pods.items() if p["metadata"].get("deletionTimestamp"))
    if terminating:
        out.append(f"pods terminating: {terminating}")
    rolesets = {r["metadata"]["name"]: r for r in await cluster.rolesets()}
    rs_uids = {n: r["metadata"]["uid"] for n, r in rolesets.items()}
    if rs_uids != base.roleset_uids:
        out.append(f"RoleSets changed: {sorted(rs_uids.items())} != {sorted(base.roleset_uids.items())}")
    rs_terminating = sorted(n for n, r in rolesets.items() if r["metadata"].get("deletionTimestamp"))
    if rs_terminating:
        out.append(f"RoleSets terminating: {rs_terminating}")
    return out


async def ready_by_controller(cluster: Cluster, base: Baseline) -> str | None:
    """None when the StormService is Ready for its generation in a status the controller wrote
    (the loader wrote AIBrix's Ready status; that one does not count); else why not."""
    ss = await cluster.storm(base.storm)
    status = ss.get("status") or {}
    if not written_by_others(ss, "status"):
        return "status not written by the controller yet"
    if condition(ss, "Ready").get("status") != "True":
        return f"Ready condition {condition(ss, 'Ready') or None}"
    if status.get("observedGeneration") != ss["metadata"]["generation"]:
        return f"observedGeneration {status.get('observedGeneration')} != generation {ss['metadata']['generation']}"
    return None


async def takeover_leftovers(cluster: Cluster, base: Baseline) -> list[str]:
    """What is not yet as a finished takeover leaves it: PodSets, AIBrix's finalizers, pods not
    controlled by their RoleSet, a StormService whose revisions are not AIBrix's content."""
    out: list[str] = []
    podsets = await cluster.podsets()
    if podsets:
        out.append(
            "PodSets remain: "
            + ", ".join(
                f"{p['metadata']['name']}{' (terminating)' if p['metadata'].get('deletionTimestamp') else ''}"
                f" finalizers={p['metadata'].get('finalizers')}"
                for p in podsets
            )
        )
    ss = await cluster.storm(base.storm)
    objects: list[tuple[str, Obj]] = [("StormService", ss)]
    objects += [("RoleSet", r) for r in await cluster.rolesets()]
    pods = await cluster.pods()
    objects += [("Pod", p) for p in pods]
    for kind, obj in objects:
        # The StormService's and RoleSets' own finalizers are removed when those are deleted
        # (the spec's rule; test_after_takeover_behaves_normally deletes and waits until all is
        # gone); nothing may keep a PodSet's.
        kept = sorted(set(obj["metadata"].get("finalizers") or ()) & AIBRIX_FINALIZERS)
        if kind in ("StormService", "RoleSet"):
            kept = [f for f in kept if f == PODSET_FINALIZER]
        if kept:
            out.append(f"{kind} {obj['metadata']['name']} keeps {kept}")
    for pod in pods:
        name = pod["metadata"]["name"]
        ref = controller_ref(pod)
        roleset = base.pod_roleset.get(name)
        want_uid = base.roleset_uids.get(roleset or "")
        if ref.get("kind") != "RoleSet" or ref.get("uid") != want_uid or ref.get("name") != roleset:
            was = f" (was PodSet {base.podset_pods[name]})" if name in base.podset_pods else ""
            out.append(f"pod {name}{was} controlled by {ref or None}, not RoleSet {roleset} {want_uid}")

    status = ss.get("status") or {}
    update, current = status.get("updateRevision"), status.get("currentRevision")
    if not update or update != current:
        out.append(f"updateRevision {update!r} != currentRevision {current!r}")
    ours = [r for r in await cluster.revisions() if controller_ref(r).get("uid") == base.storm_uid]
    names = {r["metadata"]["name"] for r in ours}
    # AIBrix's revision is recognised by its content: it stays the revision, none is added.
    if names != {base.aibrix_revision} or update != base.aibrix_revision:
        out.append(
            f"revisions {sorted(names)}, updateRevision {update!r}: want only AIBrix's {base.aibrix_revision}"
        )
    if update and update not in names:
        out.append(
            f"updateRevision {update} names no ControllerRevision of the StormService ({sorted(names)})"
        )
    for rev in ours:
        # Every revision (AIBrix's, or one of ours beside it) must record AIBrix's template:
        # everything AIBrix's revision says, and nothing beyond the StormService's template as
        # stored (which is AIBrix's plus our CRD's defaults, e.g. podGroupSize 1), so that the
        # two can differ in defaults only.
        template = revision_template(rev)
        lost = missing_from(base.aibrix_template, template)
        extra = missing_from(template, base.storm_template)
        if lost or extra:
            out.append(
                f"ControllerRevision {rev['metadata']['name']} records another template than AIBrix's "
                f"{base.aibrix_revision}: differs from it at {lost[:5]}; "
                f"not in the StormService's template: {extra[:5]}"
            )
    for rs in await cluster.rolesets():
        label = (rs["metadata"].get("labels") or {}).get("storm-service-revision")
        if update and label != update:
            out.append(
                f"RoleSet {rs['metadata']['name']} is of revision {label}, not updateRevision {update}"
            )
    return out


async def poll(
    what: str,
    check: Callable[[], Awaitable[Any]],
    within: float,
    controller: ControllerProcess,
    invariant: Callable[[], Awaitable[list[str]]] | None = None,
) -> None:
    """Polls `check` every POLL seconds until it returns a falsy value (None, [] or ""), failing
    after `within` seconds with its last answer. `invariant`, when given, is checked on every
    poll and fails the test at once."""
    deadline = time.monotonic() + within
    while True:
        if invariant is not None:
            broken = await invariant()
            if broken:
                raise AssertionError(f"while waiting for {what}: " + "; ".join(broken))
        last = await check()
        if not last:
            return
        if not controller.alive():
            raise AssertionError(f"the controller exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}: {last}")
        await asyncio.sleep(POLL)


async def rolled_out(
    cluster: Cluster, name: str, role: str | None = None, *, revision_not: str | None = None
) -> str | None:
    """None when the StormService is Ready for its generation, fully rolled out (update ==
    current revision, every RoleSet of it) with exactly the pods its spec asks for, all
    Running/Ready and none terminating; else what is still missing. With `role`, every
    pod of that role must also carry TEST_ENV."""
    ss = await cluster.storm(name)
    status = ss.get("status") or {}
    if not written_by_others(ss, "status"):
        return "status not written by the controller yet"
    if condition(ss, "Ready").get("status") != "True":
        return f"Ready condition {condition(ss, 'Ready') or None}"
    if status.get("observedGeneration") != ss["metadata"]["generation"]:
        return f"observedGeneration {status.get('observedGeneration')} != {ss['metadata']['generation']}"
    update = status.get("updateRevision")
    if not update or update != status.get("currentRevision") or update == revision_not:
        return f"updateRevision {update} currentRevision {status.get('currentRevision')}"
    rolesets = await cluster.rolesets()
    if len(rolesets) != int(ss["spec"]["replicas"]):
        return f"{len(rolesets)} RoleSets, want {ss['spec']['replicas']}"
    stale = [
        r["metadata"]["name"]
        for r in rolesets
        if (r["metadata"].get("labels") or {}).get("storm-service-revision") != update
        or r["metadata"].get("deletionTimestamp")
    ]
    if stale:
        return f"RoleSets not of {update} (or terminating): {stale}"
    pods = await cluster.pods()
    if len(pods) != pods_expected(ss) or not all(pod_running_ready(p) for p in pods):
        return f"{sum(pod_running_ready(p) for p in pods)} of {len(pods)} pods Running/Ready, want {pods_expected(ss)}"
    if role is not None:
        mine = [p for p in pods if (p["metadata"].get("labels") or {}).get("role-name") == role]
        if len(mine) != pods_expected(ss, role):
            return f"{len(mine)} {role} pods, want {pods_expected(ss, role)}"
        missing = [
            p["metadata"]["name"] for p in mine if env_of(p).get(TEST_ENV["name"]) != TEST_ENV["value"]
        ]
        if missing:
            return f"{role} pods without {TEST_ENV['name']}: {missing}"
    return None


async def add_test_env(kube: KubeClient, ss: Obj, role: str) -> None:
    """Adds TEST_ENV to the first container of `role` in the StormService's template."""
    roles = ss["spec"]["template"]["spec"]["roles"]
    i = next(k for k, r in enumerate(roles) if r["name"] == role)
    path = f"/spec/template/spec/roles/{i}"
    patch: list[Obj] = [{"op": "test", "path": f"{path}/name", "value": role}]
    if roles[i]["template"]["spec"]["containers"][0].get("env"):
        patch.append({"op": "add", "path": f"{path}/template/spec/containers/0/env/-", "value": TEST_ENV})
    else:
        patch.append({"op": "add", "path": f"{path}/template/spec/containers/0/env", "value": [TEST_ENV]})
    meta = ss["metadata"]
    await kube.patch(STORMSERVICES, meta["namespace"], meta["name"], patch, patch_type="json")


async def start_and_take_over(
    cluster: Cluster, base: Baseline, run_controller: Callable[..., ControllerProcess]
) -> ControllerProcess:
    """Starts the controller; asserts the takeover restarts nothing and finishes."""
    invariant = functools.partial(nothing_restarted, cluster, base)
    controller = run_controller(f"--namespace={cluster.namespace}")
    started = time.monotonic()
    await poll(
        "the StormService Ready for its generation",
        functools.partial(ready_by_controller, cluster, base),
        READY_WITHIN,
        controller,
        invariant,
    )
    ready_at = time.monotonic()
    print(f"Ready {ready_at - started:.1f}s after the controller started")
    # Watched for at least QUIET_FOR seconds after Ready, and until the takeover is finished.
    await poll(
        f"{QUIET_FOR:.0f}s of quiet after Ready",
        lambda: asyncio.sleep(0, result=time.monotonic() - ready_at < QUIET_FOR),
        QUIET_FOR + 5,
        controller,
        invariant,
    )
    await poll(
        "the takeover to finish (PodSets, finalizers, ownership, revisions)",
        functools.partial(takeover_leftovers, cluster, base),
        SETTLE_WITHIN,
        controller,
        invariant,
    )
    broken = await invariant()
    assert not broken, "; ".join(broken)
    ready = await ready_by_controller(cluster, base)
    assert ready is None, f"the StormService is no longer Ready: {ready}"
    print(f"takeover finished {time.monotonic() - started:.1f}s after the controller started")
    return controller


# ---------------------------------------------------------------------------------------------
# tests


async def test_takeover_without_podset_crd(
    kube: KubeClient,
    loader: KubeClient,
    namespace: str,
    crds: list[str],
    kubectl: Kubectl,
    run_controller: Callable[..., ControllerProcess],
) -> None:
    """The replica-mode dump has no PodSets: its takeover must not depend on the PodSet CRD."""
    crd_present = kubectl.exists("crd", "podsets.orchestration.aibrix.ai")
    print(f"PodSet CRD installed: {crd_present}")
    cluster = Cluster(kube, namespace)
    base = await load(cluster, loader, "vllm-replica")
    assert not base.podset_pods
    await start_and_take_over(cluster, base, run_controller)


@pytest.mark.parametrize("fixture", FIXTURES)
async def test_takeover_keeps_everything(
    fixture: str,
    kube: KubeClient,
    loader: KubeClient,
    namespace: str,
    crds: list[str],
    podset_crd: str,
    run_controller: Callable[..., ControllerProcess],
) -> None:
    cluster = Cluster(kube, namespace)
    base = await load(cluster, loader, fixture)
    await start_and_take_over(cluster, base, run_controller)


@pytest.mark.parametrize("fixture", FIXTURES)
async def test_after_takeover_behaves_normally(
    fixture: str,
    kube: KubeClient,
    loader: KubeClient,
    namespace: str,
    crds: list[str],
    podset_crd: str,
    kubectl: Kubectl,
    run_controller: Callable[..., ControllerProcess],
) -> None:
    cluster = Cluster(kube, namespace)
    base = await load(cluster, loader, fixture)
    name = base.storm
    controller = run_controller(f"--namespace={namespace}")

    settled = functools.partial(rolled_out, cluster, name)

    started = time.monotonic()
    await poll("the takeover (Ready, fully rolled out)", settled, READY_WITHIN, controller)
    print(f"taken over in {time.monotonic() - started:.1f}s")
    ss = await cluster.storm(name)
    taken_over_revision = ss["status"]["updateRevision"]

    # 1. a template change: an env var in one role's container rolls out to every pod of it.
    role = CHANGE_ROLE[fixture]
    await add_test_env(kube, ss, role)
    t = time.monotonic()
    await poll(
        f"the {role} template change to roll out",
        functools.partial(settled, role, revision_not=taken_over_revision),
        ROLLOUT_WITHIN,
        controller,
    )
    print(f"template change rolled out in {time.monotonic() - t:.1f}s")

    # 2. scaling: the StormService (replica mode) or one role (pooled mode).
    scale_role = SCALE_ROLE[fixture]
    before = await cluster.storm(name)
    if scale_role is None:
        replicas = int(before["spec"]["replicas"]) + 1
        kubectl("scale", f"stormservice/{name}", f"--replicas={replicas}", "-n", namespace)
    else:
        roles = before["spec"]["template"]["spec"]["roles"]
        i = next(k for k, r in enumerate(roles) if r["name"] == scale_role)
        replicas = int(roles[i].get("replicas", 1)) + 1
        path = f"/spec/template/spec/roles/{i}"
        await kube.patch(
            STORMSERVICES,
            namespace,
            name,
            [
                {"op": "test", "path": f"{path}/name", "value": scale_role},
                {"op": "replace", "path": f"{path}/replicas", "value": replicas},
            ],
            patch_type="json",
        )
    want = pods_expected(await cluster.storm(name))
    assert want > pods_expected(before)
    t = time.monotonic()
    await poll(f"{want} pods after scaling", settled, ROLLOUT_WITHIN, controller)
    print(f"scaled to {want} pods in {time.monotonic() - t:.1f}s")
    # Pods we create carry every label, annotation and env var AIBrix's pods of the role carry
    # (routers and dashboards read them).
    aibrix_pods = [o for o in read_fixture(fixture_path(fixture)) if o["kind"] == "Pod"]
    new_pods = [p for p in await cluster.pods() if p["metadata"]["name"] not in base.pod_uids]
    assert new_pods
    for pod in new_pods:
        role_of = (pod["metadata"].get("labels") or {}).get("role-name")
        theirs = [a for a in aibrix_pods if a["metadata"]["labels"].get("role-name") == role_of]
        assert theirs, f"no AIBrix pod of role {role_of}"
        for key in ("labels", "annotations"):
            lacking = set(theirs[0]["metadata"].get(key) or {}) - set(pod["metadata"].get(key) or {})
            assert not lacking, f"pod {pod['metadata']['name']} lacks the {key} {sorted(lacking)}"
        lacking_env = set(env_of(theirs[0])) - set(env_of(pod))
        assert not lacking_env, f"pod {pod['metadata']['name']} lacks the env vars {sorted(lacking_env)}"

    # 3. deleting the StormService removes everything it made.
    kubectl("delete", f"stormservice/{name}", "-n", namespace, "--wait=false")

    async def leftovers() -> list[str]:
        out: list[str] = []
        try:
            ss = await cluster.storm(name)
            out.append(f"StormService finalizers={ss['metadata'].get('finalizers')}")
        except NotFound:
            pass
        out += [f"RoleSet {r['metadata']['name']}" for r in await cluster.rolesets()]
        out += [f"Pod {p['metadata']['name']}" for p in await cluster.pods()]
        out += [f"PodSet {p['metadata']['name']}" for p in await cluster.podsets() or ()]
        out += [f"ControllerRevision {r['metadata']['name']}" for r in await cluster.revisions()]
        out += [f"Service {s['metadata']['name']}" for s in await cluster.services()]
        return out

    t = time.monotonic()
    await poll("the StormService and everything it made to be deleted", leftovers, DELETE_WITHIN, controller)
    print(f"deleted in {time.monotonic() - t:.1f}s")


@pytest.mark.parametrize("fixture", FIXTURES)
async def test_a_template_changed_while_no_controller_ran_rolls_out_from_aibrix_objects(
    fixture: str,
    kube: KubeClient,
    loader: KubeClient,
    namespace: str,
    crds: list[str],
    podset_crd: str,
    run_controller: Callable[..., ControllerProcess],
) -> None:
    """AIBrix's pods count as the old revision: the change rolls out to every pod of its role."""
    cluster = Cluster(kube, namespace)
    base = await load(cluster, loader, fixture)
    role = CHANGE_ROLE[fixture]
    await add_test_env(kube, await cluster.storm(base.storm), role)
    controller = run_controller(f"--namespace={namespace}")
    started = time.monotonic()
    await poll(
        f"the {role} change made while no controller ran to roll out",
        functools.partial(rolled_out, cluster, base.storm, role, revision_not=base.aibrix_revision),
        ROLLOUT_WITHIN,
        controller,
    )
    assert not await cluster.podsets()
    print(f"rolled out in {time.monotonic() - started:.1f}s")
