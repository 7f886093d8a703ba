"""The StormService controller on the real control plane (kube-apiserver, etcd, controller-manager
with its garbage collector, scheduler, kwok nodes), run as the shipped binary (`python -m
controller`, with the RoleSet controller in the same process).

Every test runs an invariant monitor: a watch on the namespace's RoleSets and pods for the whole
test. Whenever a bound is armed, every event is checked against it: the number of RoleSets never
exceeds `replicas + maxSurge`, and the ready ones never fall below `replicas - maxUnavailable`.
Readiness is judged here from the RoleSet's own spec and status (every role ready at its
replicas, status current for the spec, not terminating), independently of the controller's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.runtime.client import KubeClient, Obj, list_all
from controller.runtime.errors import ApiError, Gone, NotFound
from controller.runtime.resources import (
    POD_DISRUPTION_BUDGETS,
    PODS,
    ROLESETS,
    SERVICES,
    STORMSERVICES,
    Resource,
)
from tests.storm_reads import StormReads, pods_per_roleset, revision_of, roleset_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")

API = "orchestration.aibrix.ai/v1alpha1"
IMAGE_V1 = "registry.k8s.io/pause:3.10"
IMAGE_V2 = "registry.k8s.io/pause:3.9"
POLL = 0.2


# ---------------------------------------------------------------------------------------------
# manifests


def role(name: str, replicas: int, image: str, *, group: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "replicas": replicas,
        "podGroupSize": group,
        "template": {
            "metadata": {"labels": {"component": name}},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "engine", "image": image}],
            },
        },
    }


def storm(
    name: str,
    *,
    replicas: int = 3,
    image: str = IMAGE_V1,
    prefill: int = 1,
    decode: int = 1,
    strategy: dict[str, Any] | None = None,
    paused: bool = False,
) -> Obj:
    return {
        "apiVersion": API,
        "kind": "StormService",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": strategy or {"type": "RollingUpdate", "maxSurge": 1, "maxUnavailable": 1},
            "paused": paused,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"roles": [role("prefill", prefill, image), role("decode", decode, image, group=2)]},
            },
        },
    }


# ---------------------------------------------------------------------------------------------
# the invariant monitor


@dataclass
class Monitor:
    client: KubeClient
    namespace: str
    rolesets: dict[str, Obj] = field(default_factory=dict)
    pods: dict[str, Obj] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    bounds: tuple[int, int] | None = None  # (max total, min ready)
    max_total_seen: int = 0
    min_ready_seen: int = 10**9
    deleted_pods: list[str] = field(default_factory=list)
    roleset_names: set[str] = field(default_factory=set)
    frozen_names: set[str] | None = None  # while set, no RoleSet may appear or disappear
    forbidden_revision: str | None = None  # while set, no RoleSet of this revision may appear
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _events: int = 0

    async def start(self) -> None:
        for resource, store in ((ROLESETS, self.rolesets), (PODS, self.pods)):
            items, rv = await list_all(self.client, resource, self.namespace)
            store.update({o["metadata"]["name"]: o for o in items})
            self._tasks.append(asyncio.create_task(self._watch(resource, store, rv)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _watch(self, resource: Resource, store: dict[str, Obj], rv: str) -> None:
        while True:
            try:
                async for event in self.client.watch(
                    resource, self.namespace, resource_version=rv, timeout_seconds=60
                ):
                    obj = event.get("object") or {}
                    meta = obj.get("metadata") or {}
                    rv = meta.get("resourceVersion") or rv
                    if event.get("type") == "BOOKMARK":
                        continue
                    name = str(meta.get("name") or "")
                    if event.get("type") == "DELETED":
                        store.pop(name, None)
                        if resource == PODS:
                            self.deleted_pods.append(name)
                    else:
                        if (
                            resource == PODS
                            and meta.get("deletionTimestamp")
                            and name not in self.deleted_pods
                        ):
                            self.deleted_pods.append(name)
                        store[name] = obj
                    if resource == ROLESETS:
                        self._check(f"{event.get('type')} {name}")
            except Gone:
                items, rv = await list_all(self.client, resource, self.namespace)
                store.clear()
                store.update({o["metadata"]["name"]: o for o in items})

    def _check(self, what: str) -> None:
        self._events += 1
        self.roleset_names |= set(self.rolesets)
        total = len(self.rolesets)
        ready = sum(1 for rs in self.rolesets.values() if roleset_ready(rs))
        if self.frozen_names is not None and set(self.rolesets) != self.frozen_names:
            self.violations.append(f"{what}: RoleSets {sorted(self.rolesets)} != {sorted(self.frozen_names)}")
        if self.forbidden_revision is not None:
            bad = [n for n, rs in self.rolesets.items() if revision_of(rs) == self.forbidden_revision]
            if bad:
                self.violations.append(f"{what}: RoleSets of revision {self.forbidden_revision}: {bad}")
        if self.bounds is None:
            return
        self.max_total_seen = max(self.max_total_seen, total)
        self.min_ready_seen = min(self.min_ready_seen, ready)
        max_total, min_ready = self.bounds
        if total > max_total:
            self.violations.append(f"{what}: {total} RoleSets > {max_total}: {self.summary()}")
        if ready < min_ready:
            self.violations.append(f"{what}: {ready} ready RoleSets < {min_ready}: {self.summary()}")

    def summary(self) -> str:
        return ", ".join(
            f"{n}({revision_of(rs)[-5:]}{',ready' if roleset_ready(rs) else ''}"
            f"{',terminating' if rs['metadata'].get('deletionTimestamp') else ''})"
            for n, rs in sorted(self.rolesets.items())
        )

    def arm(self, replicas: int, max_surge: int, max_unavailable: int) -> None:
        self.bounds = (replicas + max_surge, replicas - max_unavailable)
        self._check("armed")

    def assert_clean(self) -> None:
        assert not self.violations, "invariant violations:\n" + "\n".join(self.violations[:20])


# ---------------------------------------------------------------------------------------------
# fixtures and helpers


@dataclass
class Env(StormReads):
    kube: KubeClient
    kubectl: Any
    namespace: str
    monitor: Monitor
    start_controller: Callable[..., Any]
    controller: Any = None

    async def eventually(self, check: Callable[[], Any], what: str, within: float = 120.0) -> Any:
        deadline = time.monotonic() + within
        last: Any = None
        while True:
            try:
                result = check()
                if isinstance(result, Awaitable):
                    result = await result
            except (NotFound, ApiError) as err:
                result = None
                last = err
            if result:
                return result
            last = result if last is None else last
            if self.controller is not None and not self.controller.alive():
                raise AssertionError(f"the controller exited while waiting for {what}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {within:.0f}s waiting for {what} (last: {last!r}); RoleSets: {self.monitor.summary()}"
                )
            await asyncio.sleep(POLL)

    def apply(self, obj: Obj) -> None:
        self.kubectl.apply(obj, "-n", self.namespace)

    async def wait_settled(self, name: str, within: float = 180.0) -> Obj:
        result: Obj = await self.eventually(lambda: self.settled(name), f"{name} to settle", within)
        return result

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The controller's /metrics, as {(sample name, sorted labels): value}."""
        line = self.controller.wait_for_log('"server":"metrics"')
        address = json.loads(line)["addresses"][0]
        text = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
        )
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    async def patch_spec(self, name: str, patch: list[dict[str, Any]]) -> None:
        await self.kube.patch(STORMSERVICES, self.namespace, name, patch, patch_type="json")


@pytest.fixture
async def env(kube: KubeClient, kubectl: Any, namespace: str, crds: list[str], run_controller: Any) -> Any:
    monitor = Monitor(kube, namespace)
    await monitor.start()
    e = Env(kube, kubectl, namespace, monitor, run_controller)
    e.controller = run_controller()
    try:
        yield e
    finally:
        await monitor.stop()
    monitor.assert_clean()


def set_image(image: str) -> list[dict[str, Any]]:
    return [
        {
            "op": "replace",
            "path": f"/spec/template/spec/roles/{i}/template/spec/containers/0/image",
            "value": image,
        }
        for i in range(2)
    ]


# ---------------------------------------------------------------------------------------------
# tests


async def test_rolling_update_stays_within_surge_and_availability(env: Env) -> None:
    env.apply(
        storm("roll", replicas=3, strategy={"type": "RollingUpdate", "maxSurge": 1, "maxUnavailable": 1})
    )
    before = await env.wait_settled("roll")
    env.monitor.arm(replicas=3, max_surge=1, max_unavailable=1)
    await env.patch_spec("roll", set_image(IMAGE_V2))
    after = await env.wait_settled("roll")
    assert after["status"]["updateRevision"] != before["status"]["updateRevision"]
    for pod in await env.pods("roll"):
        assert pod["spec"]["containers"][0]["image"] == IMAGE_V2
    assert env.monitor.max_total_seen == 4, "the rollout never used its surge"
    old_names = {rs["metadata"]["name"] for rs in env.monitor.rolesets.values()}
    assert len(old_names) == 3
    # Tighter budget, no surge: one RoleSet down at a time, never more than 2 replaced at once.
    env.monitor.bounds = None
    await env.patch_spec(
        "roll",
        [
            {
                "op": "replace",
                "path": "/spec/updateStrategy",
                "value": {"type": "RollingUpdate", "maxSurge": 0, "maxUnavailable": 1},
            }
        ],
    )
    await env.wait_settled("roll")
    env.monitor.arm(replicas=3, max_surge=0, max_unavailable=1)
    await env.patch_spec("roll", set_image(IMAGE_V1))
    final = await env.wait_settled("roll")
    assert env.monitor.min_ready_seen == 2
    metrics = await env.metrics()
    assert metrics[("stormservice_rollout_duration_seconds_count", ())] >= 2
    key = f"{env.namespace}/roll"
    revision = final["status"]["updateRevision"]
    assert (
        metrics[("stormservice_rolesets", (("ready", "true"), ("revision", revision), ("stormservice", key)))]
        == 3
    )
    assert [k for k in metrics if k[0] == "stormservice_rolesets" and ("stormservice", key) in k[1]] == [
        ("stormservice_rolesets", (("ready", "true"), ("revision", revision), ("stormservice", key)))
    ]
    svc = await env.kube.get(SERVICES, env.namespace, "roll")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == {"storm-service-name": "roll"}
    assert svc["spec"]["publishNotReadyAddresses"] is True


async def test_headless_service_carries_the_stormservice_labels(env: Env) -> None:
    """As AIBrix's Service does (its metadata.labels are the StormService's), plus the label it
    selects by; labels we set are repaired, labels added by someone else are left alone."""
    manifest = storm("labelled", replicas=1)
    manifest["metadata"]["labels"] = {"app.kubernetes.io/name": "llm", "team": "serving"}
    env.apply(manifest)
    want = {"app.kubernetes.io/name": "llm", "team": "serving", "storm-service-name": "labelled"}

    async def service_with(labels: dict[str, str]) -> Obj | None:
        svc: Obj = await env.kube.get(SERVICES, env.namespace, "labelled")
        return svc if svc["metadata"].get("labels") == labels else None

    svc = await env.eventually(lambda: service_with(want), "the Service with the StormService's labels")
    uid = svc["metadata"]["uid"]

    await env.kube.patch(
        SERVICES,
        env.namespace,
        "labelled",
        {"metadata": {"labels": {"team": "other", "storm-service-name": None, "added": "by-hand"}}},
        patch_type="merge",
    )
    await env.eventually(lambda: service_with({**want, "added": "by-hand"}), "the drifted labels repaired")

    await env.kube.patch(
        STORMSERVICES,
        env.namespace,
        "labelled",
        {"metadata": {"labels": {"team": "research"}}},
        patch_type="merge",
    )
    svc = await env.eventually(
        lambda: service_with({**want, "team": "research", "added": "by-hand"}), "the Service to follow"
    )
    assert svc["metadata"]["uid"] == uid, "patched, not recreated"


async def test_role_scope_topology_keeps_a_role_together_across_rolesets(env: Env) -> None:
    """`topologyPolicy.scope: Role` selects {storm-service-name, role-name}, as AIBrix does: a
    role's pods share a node across every RoleSet of the StormService, not only within one."""
    manifest = storm("colo", replicas=2)
    manifest["spec"]["template"]["spec"]["topologyPolicy"] = {
        "scope": "Role",
        "mode": "Required",
        "key": "kubernetes.io/hostname",
    }
    env.apply(manifest)
    await env.wait_settled("colo")
    pods = await env.pods("colo")
    assert len({p["metadata"]["labels"]["roleset-name"] for p in pods}) == 2
    nodes: dict[str, set[str]] = {}
    for p in pods:
        role_name = p["metadata"]["labels"]["role-name"]
        assert p["spec"]["affinity"]["podAffinity"] == {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {"storm-service-name": "colo", "role-name": role_name}},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }, p["metadata"]["name"]
        nodes.setdefault(role_name, set()).add(p["spec"]["nodeName"])
    assert {r: len(n) for r, n in nodes.items()} == {"prefill": 1, "decode": 1}, nodes


async def test_in_place_update_keeps_roleset_names(env: Env) -> None:
    env.apply(storm("inplace", replicas=2, strategy={"type": "InPlaceUpdate"}))
    before = await env.wait_settled("inplace")
    names = {rs["metadata"]["name"]: rs["metadata"]["uid"] for rs in await env.rolesets("inplace")}
    env.monitor.frozen_names = set(names)
    await env.patch_spec("inplace", set_image(IMAGE_V2))
    after = await env.wait_settled("inplace")
    assert after["status"]["updateRevision"] != before["status"]["updateRevision"]
    rolesets = await env.rolesets("inplace")
    assert {rs["metadata"]["name"]: rs["metadata"]["uid"] for rs in rolesets} == names
    for rs in rolesets:
        assert revision_of(rs) == after["status"]["updateRevision"]
    for pod in await env.pods("inplace"):
        assert pod["spec"]["containers"][0]["image"] == IMAGE_V2


async def test_a_roleset_rollout_that_cannot_go_on_is_reported_on_the_stormservice(env: Env) -> None:
    manifest = storm("stall", replicas=1, strategy={"type": "InPlaceUpdate"})
    decode = manifest["spec"]["template"]["spec"]["roles"][1]
    decode["updateStrategy"] = {"maxSurge": 1, "maxUnavailable": 0}
    env.apply(manifest)
    await env.wait_settled("stall")
    # Same pod template, groups of 3 instead of 2: the RoleSet cannot surge a group under the
    # same names, and its budget forbids taking one down.
    await env.patch_spec(
        "stall", [{"op": "replace", "path": "/spec/template/spec/roles/1/podGroupSize", "value": 3}]
    )

    async def stalled() -> dict[str, Any] | None:
        ss = await env.ss("stall")
        c = next(
            (c for c in (ss.get("status") or {}).get("conditions") or () if c["type"] == "Progressing"), None
        )
        return c if c and (c["status"], c["reason"]) == ("False", "RoleSetRolloutStalled") else None

    cond = await env.eventually(stalled, "Progressing=False RoleSetRolloutStalled")
    (roleset,) = await env.rolesets("stall")
    assert f"RoleSet {roleset['metadata']['name']}: RolloutBlocked: role decode" in cond["message"]

    await env.patch_spec(
        "stall",
        [{"op": "replace", "path": "/spec/template/spec/roles/1/updateStrategy/maxUnavailable", "value": 1}],
    )
    ss = await env.wait_settled("stall")
    # Done: Progressing means the same on both kinds (Deployment convention), True with the
    # completion reason.
    p = next(c for c in ss["status"]["conditions"] if c["type"] == "Progressing")
    assert (p["status"], p["reason"]) == ("True", "RolloutComplete"), p
    (roleset,) = await env.rolesets("stall")
    rp = next(c for c in roleset["status"]["conditions"] if c["type"] == "Progressing")
    assert (rp["status"], rp["reason"]) == ("True", "RolloutComplete"), rp
    assert len(await env.pods("stall")) == 1 + 3


@pytest.mark.parametrize("strategy", ["RollingUpdate", "InPlaceUpdate"])
async def test_a_template_the_api_server_rejects_as_a_pod_replaces_nothing(env: Env, strategy: str) -> None:
    """The CRD admits a role template whose pods the API server refuses (a volume mount of a
    volume that does not exist): no RoleSet is replaced or rewritten, no pod goes, the
    StormService says why; a fixed template rolls out."""
    name = f"rej-{strategy.lower()}"
    env.apply(storm(name, replicas=2, strategy={"type": strategy}))
    before = await env.wait_settled(name)
    rolesets = {rs["metadata"]["uid"]: rs["metadata"]["generation"] for rs in await env.rolesets(name)}
    pods = {p["metadata"]["uid"] for p in await env.pods(name)}
    broken = [
        *set_image(IMAGE_V2),
        {
            "op": "add",
            "path": "/spec/template/spec/roles/1/template/spec/containers/0/volumeMounts",
            "value": [{"name": "missing", "mountPath": "/data"}],
        },
    ]
    await env.patch_spec(name, broken)

    async def rejected() -> dict[str, Any] | None:
        ss = await env.ss(name)
        status = ss.get("status") or {}
        if status.get("observedGeneration") != ss["metadata"]["generation"]:
            return None
        c = next((c for c in status.get("conditions") or () if c["type"] == "ReplicaFailure"), None)
        return c if c and c["reason"] == "InvalidPodTemplate" else None

    failure = await env.eventually(rejected, "ReplicaFailure InvalidPodTemplate")
    assert "volumeMounts[0].name" in failure["message"], failure
    ss = await env.ss(name)
    assert ss["status"]["currentRevision"] == before["status"]["currentRevision"]
    assert {
        rs["metadata"]["uid"]: rs["metadata"]["generation"] for rs in await env.rolesets(name)
    } == rolesets
    assert {p["metadata"]["uid"] for p in await env.pods(name)} == pods

    await env.patch_spec(
        name,
        [{"op": "remove", "path": "/spec/template/spec/roles/1/template/spec/containers/0/volumeMounts"}],
    )
    after = await env.wait_settled(name)
    assert after["status"]["updateRevision"] != before["status"]["updateRevision"]
    assert not any(c["type"] == "ReplicaFailure" for c in after["status"]["conditions"])


async def test_scale_subresource(env: Env) -> None:
    env.apply(storm("scaled", replicas=1))
    await env.wait_settled("scaled")
    env.kubectl("scale", "storm/scaled", "--replicas=4", "-n", env.namespace)
    ss = await env.wait_settled("scaled")
    assert ss["status"]["replicas"] == 4
    scale = json.loads(
        env.kubectl(
            "get", "--raw", f"/apis/{API}/namespaces/{env.namespace}/stormservices/scaled/scale"
        ).stdout
    )
    assert scale["spec"]["replicas"] == 4
    assert scale["status"]["replicas"] == 4
    assert scale["status"]["selector"] == "storm-service-name=scaled"
    # The selector finds the pods (what an HPA averages its metrics over).
    selected = env.kubectl.get_json("pods", "-n", env.namespace, "-l", scale["status"]["selector"])["items"]
    assert len(selected) == 4 * pods_per_roleset(ss)
    indexes = sorted(
        int(rs["metadata"]["annotations"]["stormservice.orchestration.aibrix.ai/roleset-index"])
        for rs in await env.rolesets("scaled")
    )
    assert indexes == [0, 1, 2, 3]
    env.kubectl("scale", "storm/scaled", "--replicas=2", "-n", env.namespace)
    ss = await env.wait_settled("scaled")
    assert len(await env.rolesets("scaled")) == 2
    # Settled means quiet: status is written only when it changes.
    await asyncio.sleep(3)
    assert (await env.ss("scaled"))["metadata"]["resourceVersion"] == ss["metadata"]["resourceVersion"]


async def test_changing_role_replicas_restarts_no_pod(env: Env) -> None:
    env.apply(storm("roles", replicas=2, prefill=1, decode=1))
    before = await env.wait_settled("roles")
    pods_before = {p["metadata"]["uid"] for p in await env.pods("roles")}
    rolesets_before = {rs["metadata"]["uid"] for rs in await env.rolesets("roles")}
    revisions_before = [r["metadata"]["name"] for r in await env.revisions("roles")]
    env.monitor.deleted_pods.clear()
    env.monitor.frozen_names = {rs["metadata"]["name"] for rs in await env.rolesets("roles")}
    await env.patch_spec(
        "roles", [{"op": "replace", "path": "/spec/template/spec/roles/0/replicas", "value": 3}]
    )
    after = await env.wait_settled("roles")
    assert after["status"]["updateRevision"] == before["status"]["updateRevision"]
    assert [r["metadata"]["name"] for r in await env.revisions("roles")] == revisions_before
    assert {rs["metadata"]["uid"] for rs in await env.rolesets("roles")} == rolesets_before
    pods_after = {p["metadata"]["uid"] for p in await env.pods("roles")}
    assert pods_before <= pods_after, "a pod was replaced"
    assert len(pods_after) == 2 * (3 + 2)
    assert env.monitor.deleted_pods == []
    prefill = next(r for r in after["status"]["roleStatuses"] if r["name"] == "prefill")
    assert (prefill["replicas"], prefill["readyReplicas"], prefill["updatedReplicas"]) == (6, 6, 6)


async def test_rollback_by_reapplying_the_old_template(env: Env) -> None:
    manifest = storm("rollback", replicas=2)
    env.apply(manifest)
    v1 = (await env.wait_settled("rollback"))["status"]["updateRevision"]
    upgraded = copy.deepcopy(manifest)
    for r in upgraded["spec"]["template"]["spec"]["roles"]:
        r["template"]["spec"]["containers"][0]["image"] = IMAGE_V2
    env.apply(upgraded)
    env.monitor.arm(replicas=2, max_surge=1, max_unavailable=1)
    v2 = (await env.wait_settled("rollback"))["status"]["updateRevision"]
    assert v2 != v1
    env.apply(manifest)  # the old template again
    ss = await env.wait_settled("rollback")
    assert ss["status"]["updateRevision"] == v1
    revisions = await env.revisions("rollback")
    assert [(r["metadata"]["name"], r["revision"]) for r in revisions] == [(v2, 2), (v1, 3)]
    assert {revision_of(rs) for rs in await env.rolesets("rollback")} == {v1}


async def test_pause_and_resume(env: Env) -> None:
    env.apply(storm("paused", replicas=2))
    v1 = (await env.wait_settled("paused"))["status"]["updateRevision"]
    await env.patch_spec(
        "paused", [{"op": "replace", "path": "/spec/paused", "value": True}, *set_image(IMAGE_V2)]
    )

    async def paused_with_new_revision() -> Obj | None:
        ss = await env.ss("paused")
        status = ss.get("status") or {}
        progressing: dict[str, Any] = next(
            (c for c in status.get("conditions") or () if c["type"] == "Progressing"), {}
        )
        if (
            status.get("observedGeneration") == ss["metadata"]["generation"]
            and progressing.get("reason") == "Paused"
        ):
            # Not a failure (False is for a rollout that cannot go on): Unknown, as Deployments.
            assert progressing.get("status") == "Unknown", progressing
            return ss
        return None

    ss = await env.eventually(paused_with_new_revision, "the paused status")
    v2 = ss["status"]["updateRevision"]
    assert v2 != v1 and ss["status"]["currentRevision"] == v1
    env.monitor.forbidden_revision = v2
    await asyncio.sleep(5)  # a paused StormService does not start the rollout
    assert {revision_of(rs) for rs in await env.rolesets("paused")} == {v1}
    # Scaling while paused keeps the (single, current) revision.
    env.kubectl("scale", "storm/paused", "--replicas=3", "-n", env.namespace)
    await env.eventually(
        lambda: _count_ready(env, "paused", 3), "three ready RoleSets of the current revision while paused"
    )
    assert {revision_of(rs) for rs in await env.rolesets("paused")} == {v1}
    env.monitor.forbidden_revision = None
    env.monitor.arm(replicas=3, max_surge=1, max_unavailable=1)
    await env.patch_spec("paused", [{"op": "replace", "path": "/spec/paused", "value": False}])
    ss = await env.wait_settled("paused")
    assert ss["status"]["currentRevision"] == v2


async def _count_ready(env: Env, name: str, n: int) -> bool:
    rolesets = await env.rolesets(name)
    return len(rolesets) == n and all(roleset_ready(rs) for rs in rolesets)


async def test_delete_removes_everything_through_garbage_collection(env: Env) -> None:
    env.apply(storm("gone", replicas=2))
    await env.wait_settled("gone")
    assert await env.revisions("gone")
    env.kubectl("delete", "storm/gone", "-n", env.namespace, "--wait=false")

    async def all_gone() -> bool:
        if await env.rolesets("gone") or await env.pods("gone") or await env.revisions("gone"):
            return False
        try:
            await env.kube.get(SERVICES, env.namespace, "gone")
        except NotFound:
            return True
        return False

    await env.eventually(all_gone, "RoleSets, pods, revisions and the Service to be collected")


async def test_controller_killed_mid_rollout_converges(env: Env) -> None:
    manifest = storm(
        "crash", replicas=4, prefill=2, strategy={"type": "RollingUpdate", "maxSurge": 1, "maxUnavailable": 1}
    )
    env.apply(manifest)
    v1 = (await env.wait_settled("crash"))["status"]["updateRevision"]
    env.monitor.arm(replicas=4, max_surge=1, max_unavailable=1)
    await env.patch_spec("crash", set_image(IMAGE_V2))

    async def mid_rollout() -> bool:
        revs = {revision_of(rs) for rs in await env.rolesets("crash")}
        return len(revs) == 2 and v1 in revs

    await env.eventually(mid_rollout, "a RoleSet of the new revision next to old ones")
    env.controller.proc.kill()  # SIGKILL: no graceful shutdown
    env.controller.proc.wait(timeout=10)
    await asyncio.sleep(1)
    env.controller = env.start_controller(name="restarted")
    ss = await env.wait_settled("crash", within=240)
    assert ss["status"]["currentRevision"] != v1
    rolesets = await env.rolesets("crash")
    assert len(rolesets) == 4
    live = {rs["metadata"]["name"] for rs in rolesets}
    pods = await env.pods("crash")
    assert len(pods) == 4 * pods_per_roleset(manifest)
    assert {p["metadata"]["labels"]["roleset-name"] for p in pods} == live
    # and it stays that way
    await asyncio.sleep(3)
    assert len(await env.rolesets("crash")) == 4
    assert len(await env.pods("crash")) == 4 * pods_per_roleset(manifest)


async def test_pdb_per_role_follows_disruption_tolerance(env: Env) -> None:
    manifest = storm("budget", replicas=2)  # prefill: 1 pod per instance, decode: groups of 2
    manifest["spec"]["disruptionTolerance"] = {"maxUnavailable": 1}
    env.apply(manifest)
    ss = await env.wait_settled("budget")
    uid = ss["metadata"]["uid"]

    async def budgets(want: dict[str, tuple[int, int]]) -> dict[str, Obj] | None:
        """The StormService's PDBs once they are {name: (minAvailable, pods selected)}, as the
        disruption controller has evaluated them."""
        items, _ = await list_all(env.kube, POD_DISRUPTION_BUDGETS, env.namespace)
        ours = {
            p["metadata"]["name"]: p
            for p in items
            if any(
                r.get("uid") == uid and r.get("controller")
                for r in p["metadata"].get("ownerReferences") or ()
            )
        }
        seen = {
            n: (p["spec"].get("minAvailable"), (p.get("status") or {}).get("expectedPods"))
            for n, p in ours.items()
        }
        if seen != want or any(
            (p.get("status") or {}).get("observedGeneration") != p["metadata"].get("generation")
            for p in ours.values()
        ):
            return None
        return ours

    def check(pdbs: dict[str, Obj], allowed: dict[str, int]) -> None:
        for role_name, disruptions in allowed.items():
            pdb = pdbs[f"budget-{role_name}"]
            assert pdb["spec"]["selector"] == {
                "matchLabels": {"storm-service-name": "budget", "role-name": role_name}
            }
            assert "maxUnavailable" not in pdb["spec"]
            cond = next(c for c in pdb["status"]["conditions"] if c["type"] == "DisruptionAllowed")
            assert (cond["status"], cond["reason"]) == ("True", "SufficientPods"), cond
            # Evictions are possible, exactly as many as the tolerance allows.
            assert pdb["status"]["disruptionsAllowed"] == disruptions

    # 1 instance: prefill 1 of 2 pods; decode 1 of 4 pods, since a group of 2 is broken as soon
    # as one member is gone (allowing 2 would let a drain break both groups).
    pdbs = await env.eventually(
        lambda: budgets({"budget-prefill": (1, 2), "budget-decode": (3, 4)}), "a PDB per role"
    )
    check(pdbs, {"prefill": 1, "decode": 1})
    uids = {n: p["metadata"]["uid"] for n, p in pdbs.items()}

    # A change of the StormService-wide value (no new revision, no rollout) is followed in place.
    # A percent counts instances: 60% of 2 rounds up to 2, every instance, so nothing is
    # protected: every pod may go.
    await env.patch_spec(
        "budget", [{"op": "replace", "path": "/spec/disruptionTolerance/maxUnavailable", "value": "60%"}]
    )
    pdbs = await env.eventually(
        lambda: budgets({"budget-prefill": (0, 2), "budget-decode": (0, 4)}), "the PDBs to follow 60%"
    )
    check(pdbs, {"prefill": 2, "decode": 4})
    assert {n: p["metadata"]["uid"] for n, p in pdbs.items()} == uids

    # Scaling moves the floor with the desired pods: 3 RoleSets, 60% of 3 instances is 2, so 2
    # pods of either role (one member gone breaks a group).
    env.kubectl("scale", "storm/budget", "--replicas=3", "-n", env.namespace)
    await env.wait_settled("budget")
    pdbs = await env.eventually(
        lambda: budgets({"budget-prefill": (1, 3), "budget-decode": (4, 6)}), "the PDBs to follow the scale"
    )
    check(pdbs, {"prefill": 2, "decode": 2})

    # Dropping the tolerance removes them.
    await env.patch_spec("budget", [{"op": "remove", "path": "/spec/disruptionTolerance"}])

    async def none_left() -> bool:
        return await budgets({}) == {}

    await env.eventually(none_left, "the PDBs to be deleted")
    assert len(await env.rolesets("budget")) == 3


async def test_deleting_a_namespace_under_a_scaling_stormservice_logs_no_error(
    kube: KubeClient, kubectl: Any, crds: list[str], run_controller: Any
) -> None:
    """The namespace controller empties a namespace while both controllers still create
    RoleSets, pods and events in it: the API server's 403 (NamespaceTerminating), NotFound and
    conflicts that follow are expected answers, not failures. Nothing is logged as an error and
    no stack trace appears."""
    ns = f"t-nsgone-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    controller = run_controller("--log-level=debug")
    kubectl.apply(storm("gone", replicas=6, decode=2), "-n", ns)

    async def some_pods() -> bool:
        items, _ = await list_all(kube, PODS, ns, label_selector="storm-service-name=gone")
        return len(items) >= 3

    deadline = time.monotonic() + 120
    while not await some_pods():
        assert time.monotonic() < deadline, "no pods"
        await asyncio.sleep(POLL)
    # A finalizer holds the namespace in Terminating while its content goes, so that the
    # controllers keep working in it; scaling up as the deletion starts makes them create.
    held = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "held", "finalizers": ["test/hold"]},
    }
    await kube.create(CONFIGMAPS, ns, held)
    await kube.patch(STORMSERVICES, ns, "gone", {"spec": {"replicas": 12}})
    kubectl("delete", "namespace", ns, "--wait=false")

    async def emptied() -> bool:
        for resource in (STORMSERVICES, ROLESETS, PODS):
            items, _ = await list_all(kube, resource, ns)
            if items:
                return False
        return True

    while not await emptied():
        assert time.monotonic() < deadline + 180, "namespace not emptied"
        await asyncio.sleep(0.5)
    await kube.patch(CONFIGMAPS, ns, "held", {"metadata": {"finalizers": None}})
    while kubectl("get", "namespace", ns, check=False).returncode == 0:
        assert time.monotonic() < deadline + 240, "namespace not gone"
        await asyncio.sleep(0.5)
    assert controller.alive()
    lines = [json.loads(line) for line in controller.log_text().splitlines() if line.startswith("{")]
    bad = [e for e in lines if e.get("level") in ("error", "critical") or "exception" in e]
    assert bad == [], bad[:3]
    assert "Traceback" not in controller.log_text()
