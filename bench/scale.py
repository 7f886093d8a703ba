"""End-to-end benchmarks at scale: this controller next to kube-controller-manager, in one run.

Both run against one local control plane (hack/localcluster.py: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok), with the same client QPS and burst, and do the
same work one after the other, so that what the machine does meanwhile weighs on both:

- S1 create: 50 StormServices x 1 RoleSet x (prefill 10 + decode 10) = 1,000 pods, until every
  StormService is Ready; baseline 100 ReplicaSets x 10 pods until all are ready.
- S1' create: 100 RoleSets x 10 pods made directly (the RoleSet controller alone).
- S2 rolling update (new image) of the 50 StormServices vs 100 Deployments x 10 pods (25%/25%).
- S3 in-place image update of the 50 StormServices (pods keep their UIDs; kwok restarts their
  containers on the new image as a kubelet would, see hack/controlplane/kwok-extra-stages.yaml)
  vs S2's Deployments rolling to another image. `--no-in-place` skips it.
- S4 scale 10 StormServices 1 -> 3 (+40 pods each) vs 10 ReplicaSets 20 -> 60 pods.
- idle: writes and CPU seconds of our controller for IDLE_SECONDS after everything converged.
- memory: RSS of our controller with all caches synced and empty, then after S1, per cached pod
  (small pods); at the end, per cached realistic pod (bench/pods.py: one pod of a vLLM
  StormService, ~10 KB of JSON), at 1,000 and at 10,000 such pods, to show how it grows.

Next to our writes in each scenario is the minimum the work needs (every object the scenario
must create, delete or change, and one status write per StormService and RoleSet it touches):
what we write beyond it is the cost of reporting progress and of events.

Our controller runs as the image ships it: from a virtualenv with only the runtime dependencies
of requirements.lock (made once under ~/.cache/stormservice-controller/), not from the
development venv, whose extra packages change what gets imported (structlog imports rich when
it is there: +3.8 MiB of RSS the image never has).

CPU seconds come from /proc/PID/stat of each process over each phase; API requests by verb from
our controller's rest_client_requests_total; cached objects from its
stormservice_informer_cached_objects. Prints a table, then one JSON object with every
figure (also written to bench/results/scale-<time>.json).

    python -m bench.scale [--check] [--keep DIR] [--smoke] [--no-in-place] [--profile DIR]

`--profile DIR` runs our controller under py-spy (found as $PY_SPY or on PATH; sampling without
pausing it) and writes its stacks, collapsed, to DIR/ours.txt: `python -m bench.profile
DIR/ours.txt` prints the top entries, flamegraph.pl or speedscope draw them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.pods import PodFactory
from controller.runtime.client import ApiClient, PatchType, create_client
from controller.runtime.resources import (
    NAMESPACES,
    NODES,
    PODS,
    ROLESETS,
    STORMSERVICES,
    Resource,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
# hack/build-controlplane.sh's cache root, by its rules.
CACHE_DIR = Path(
    os.environ.get("STORMSERVICE_CACHE_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stormservice-controller"
)
API = "orchestration.aibrix.ai/v1alpha1"
IMAGE = "registry.k8s.io/pause:3.10"
IMAGE_V2 = "registry.k8s.io/pause:3.9"
IMAGE_V3 = "registry.k8s.io/pause:3.8"

QPS = 100
BURST = 200
STORMSERVICES_S1 = 50
ROLE_PODS = 10
ROLESETS_S1P = 100
REPLICASETS_S1 = 100
DEPLOYMENTS_S2 = 100
SCALED_S4 = 10
IDLE_SECONDS = 60.0
REALISTIC_PODS = (1_000, 10_000)
REALISTIC_LABEL = "bench-memory"
CONVERGE_TIMEOUT = 900.0

DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
REPLICASETS = Resource("apps", "v1", "replicasets", "ReplicaSet")

Obj = dict[str, Any]


# --------------------------------------------------------------------------------------------
# processes


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its own threads; children are not counted)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    return (int(fields[11]) + int(fields[12])) / _clock_ticks()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def runtime_python() -> str:
    """The interpreter of a venv with requirements.lock installed, as the Dockerfile installs it
    (hashes required, wheels only, no dependencies beyond the lock); made once per lock."""
    lock = REPO_ROOT / "requirements.lock"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:12]
    venv = CACHE_DIR / f"runtime-venv-{sys.version_info.major}.{sys.version_info.minor}-{digest}"
    python = venv / "bin" / "python"
    if (venv / ".complete").is_file():
        return str(python)
    print(f"making {venv} (requirements.lock only, as in the image)", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [
            sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
            "--no-cache-dir", "--require-hashes", "--no-deps", "--only-binary=:all:", "-r", str(lock),
        ],
        check=True,
    )  # fmt: skip
    (venv / ".complete").touch()
    return str(python)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def load_localcluster() -> ModuleType:
    existing = sys.modules.get("localcluster")
    if existing is not None:
        return existing
    spec = importlib.util.spec_from_file_location("localcluster", REPO_ROOT / "hack" / "localcluster.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["localcluster"] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Controller:
    """Our controller as a subprocess, with the client QPS and burst kube-controller-manager has."""

    kubeconfig: Path
    log_path: Path
    python: str = sys.executable
    metrics_port: int = field(default_factory=free_port)
    profile_dir: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    _pid: int | None = None

    def start(self) -> None:
        argv: list[str] = [
            self.python,
            "-m",
            "controller",
            "--kubeconfig",
            str(self.kubeconfig),
            "--leader-elect=false",
            f"--metrics-bind-address=127.0.0.1:{self.metrics_port}",
            "--health-probe-bind-address=127.0.0.1:0",
            f"--kube-api-qps={QPS}",
            f"--kube-api-burst={BURST}",
            "--log-format=json",
            "--log-level=warning",
        ]
        if self.profile_dir is not None:
            argv = [*py_spy_record(self.profile_dir / "ours.txt"), "--", *argv]
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child keeps it; closed at exit
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)

    @property
    def pid(self) -> int:
        """The controller's own pid (under py-spy, py-spy's child), for /proc figures."""
        assert self.proc is not None
        if self.profile_dir is None:
            return self.proc.pid
        deadline = time.monotonic() + 30
        while self._pid is None:
            children = _children(self.proc.pid)
            if children:
                self._pid = children[0]
            elif time.monotonic() > deadline:
                raise RuntimeError("py-spy started no controller")
            else:
                time.sleep(0.1)
        return self._pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.profile_dir is not None:
                # py-spy writes its file once the process it runs has exited (a signal to py-spy
                # itself would lose the profile).
                os.kill(self.pid, signal.SIGTERM)
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            text = await resp.text()
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    async def cached_objects(self, resource: Resource) -> int:
        """Objects of `resource` in our informers' caches (stormservice_informer_cached_objects)."""
        samples = await self.metrics()
        return round(samples.get(("stormservice_informer_cached_objects", (("resource", str(resource)),)), 0))

    async def ready(self) -> bool:
        try:
            samples = await self.metrics()
        except aiohttp.ClientError:
            return False
        return any(name == "workqueue_depth" for name, _ in samples)


def py_spy_record(output: Path) -> list[str]:
    py_spy = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--profile needs py-spy: set PY_SPY or put it on PATH")
    output.parent.mkdir(parents=True, exist_ok=True)
    return [py_spy, "record", "--nonblocking", "--rate", "100", "--format", "raw", "-o", str(output)]


def _children(pid: int) -> list[int]:
    with contextlib.suppress(FileNotFoundError):
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def writes_by_resource(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    writes: dict[str, float] = {}
    for (name, labels), value in samples.items():
        if name == "stormservice_api_writes_total":
            key = "{verb} {resource}".format(**dict(labels))
            writes[key] = writes.get(key, 0.0) + value
    return writes


def requests_by_verb(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    verbs: dict[str, float] = {}
    for (name, labels), value in samples.items():
        if name == "rest_client_requests_total":
            method = dict(labels).get("method", "?")
            verbs[method] = verbs.get(method, 0.0) + value
    return verbs


def work_queue_adds(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(v for (name, _), v in samples.items() if name == "workqueue_adds_total")


def writes_total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(v for (name, _), v in samples.items() if name == "stormservice_api_writes_total")


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {k: round(after.get(k, 0.0) - before.get(k, 0.0)) for k in sorted(set(after) | set(before))}


# --------------------------------------------------------------------------------------------
# workloads


def pod_template(labels: dict[str, str], image: str = IMAGE) -> Obj:
    return {
        "metadata": {"labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "engine", "image": image}],
        },
    }


ROLES = ("prefill", "decode")


def stormservice(name: str) -> Obj:
    """RollingUpdate at the StormService level (S2 replaces the RoleSet); the roles update in
    place when the StormService switches to InPlaceUpdate (S3), which is no new revision."""
    roles = [
        {
            "name": role,
            "replicas": ROLE_PODS,
            "stateful": False,
            # Deployments' 25%/25%, so that both sides move the same share of pods at a time.
            "updateStrategy": {"type": "InPlaceIfPossible", "maxSurge": "25%", "maxUnavailable": "25%"},
            "template": pod_template({"bench": name, "role": role}),
        }
        for role in ROLES
    ]
    strategy: Obj = {"type": "RollingUpdate", "maxSurge": "25%", "maxUnavailable": "25%"}
    return {
        "apiVersion": API,
        "kind": "StormService",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"bench": name}},
            "updateStrategy": strategy,
            "template": {
                "metadata": {"labels": {"bench": name}},
                "spec": {"updateStrategy": "Parallel", "roles": roles},
            },
        },
    }


def roleset(name: str) -> Obj:
    return {
        "apiVersion": API,
        "kind": "RoleSet",
        "metadata": {"name": name},
        "spec": {
            "updateStrategy": "Parallel",
            "roles": [
                {
                    "name": "worker",
                    "replicas": ROLE_PODS,
                    "stateful": False,
                    "template": pod_template({"bench": name, "role": "worker"}),
                }
            ],
        },
    }


def replicaset(name: str, replicas: int = ROLE_PODS) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"bench": name}},
            "template": pod_template({"bench": name}),
        },
    }


def deployment(name: str) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": ROLE_PODS,
            "selector": {"matchLabels": {"bench": name}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": pod_template({"bench": name}),
        },
    }


def realistic_pod(factory: PodFactory, i: int, node: str) -> Obj:
    """The i-th pod of bench/pods.py as a client creates it: without what the API server sets,
    without its owner (a RoleSet that does not exist here: the garbage collector would delete the
    pod), bound to a kwok node (scheduling is not what the memory phase measures). It keeps its
    labels, which put it in our pod informer's cache, and kwok gives it a running status."""
    pod = factory.pod(i)
    meta = pod["metadata"]
    for set_by_server in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
        meta.pop(set_by_server, None)
    meta.pop("ownerReferences", None)
    meta["labels"][REALISTIC_LABEL] = "realistic"
    pod.pop("status", None)
    pod["spec"]["nodeName"] = node
    return pod


def minimum_writes(scenario: str, *, stormservices: int, rolesets: int, pods: int) -> dict[str, int]:
    """The writes a scenario cannot do without, in writes_by_resource's keys: every object it must
    create, delete or change, and one status write per StormService and RoleSet it touches (each
    must report the new state at least once). Events are not needed by the work."""
    status = {"patch rolesets/status": rolesets} | (
        {"patch stormservices/status": stormservices} if stormservices else {}
    )
    if scenario == "create":  # S1 (StormServices) and S1' (RoleSets alone)
        made = (
            {
                "create controllerrevisions": stormservices,
                "create services": stormservices,
                "create rolesets": rolesets,
            }
            if stormservices
            else {}
        )
        return {"create pods": pods} | made | status
    if scenario == "rolling":  # S2: a new RoleSet per StormService replaces the old one
        return {
            "create controllerrevisions": stormservices,
            "create rolesets": rolesets,
            "delete rolesets": rolesets,
            "create pods": pods,
        } | status
    if scenario == "in-place":  # S3: the RoleSets take the new template, each pod its new image
        return {
            "create controllerrevisions": stormservices,
            "patch rolesets": rolesets,
            "patch pods": pods,
        } | status
    if scenario == "scale":  # S4: new RoleSets and their pods
        return {"create rolesets": rolesets, "create pods": pods} | status
    raise ValueError(f"unknown scenario {scenario!r}")


# --------------------------------------------------------------------------------------------
# convergence checks (pure, on listed objects)


def _condition(obj: Obj, kind: str) -> str | None:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == kind:
            status: str = cond.get("status", "")
            return status
    return None


def _observed(obj: Obj) -> bool:
    return bool(obj.get("status", {}).get("observedGeneration") == obj["metadata"].get("generation"))


def stormservice_done(obj: Obj) -> bool:
    status = obj.get("status", {})
    replicas = obj["spec"].get("replicas", 1)
    return (
        _observed(obj)
        and _condition(obj, "Ready") == "True"
        and status.get("readyReplicas") == replicas
        and status.get("updatedReplicas") == replicas
        and status.get("currentRevision") == status.get("updateRevision")
    )


def roleset_done(obj: Obj) -> bool:
    return _observed(obj) and _condition(obj, "Ready") == "True"


def replicaset_done(obj: Obj) -> bool:
    status = obj.get("status", {})
    replicas = obj["spec"]["replicas"]
    return _observed(obj) and status.get("readyReplicas") == replicas and status.get("replicas") == replicas


def deployment_done(obj: Obj) -> bool:
    status = obj.get("status", {})
    replicas = obj["spec"]["replicas"]
    return (
        _observed(obj)
        and status.get("updatedReplicas") == replicas
        and status.get("readyReplicas") == replicas
        and status.get("availableReplicas") == replicas
        and status.get("replicas") == replicas
    )


# --------------------------------------------------------------------------------------------
# the run


async def poll_until(progress: Callable[[], Awaitable[str | None]], *, every: float) -> None:
    """Calls `progress` every `every` seconds until it returns None (done); what it returned
    last (how far it got) is the TimeoutError's message after CONVERGE_TIMEOUT."""
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    while (got := await progress()) is not None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{got} after {CONVERGE_TIMEOUT:.0f}s")
        await asyncio.sleep(every)


@dataclass
class Phase:
    name: str
    seconds: float
    cpu_ours: float | None = None
    cpu_kcm: float | None = None
    requests: dict[str, int] = field(default_factory=dict)
    writes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Sizes:
    stormservices: int = STORMSERVICES_S1
    rolesets: int = ROLESETS_S1P
    replicasets: int = REPLICASETS_S1
    deployments: int = DEPLOYMENTS_S2
    scaled: int = SCALED_S4
    idle_seconds: float = IDLE_SECONDS
    in_place: bool = True
    realistic_pods: tuple[int, ...] = REALISTIC_PODS

    @classmethod
    def smoke(cls) -> Sizes:
        """A tenth of the work: checks the harness, not the figures."""
        return cls(5, 10, 10, 10, 2, 5.0, realistic_pods=(100, 1_000))


class Bench:
    def __init__(self, kube: ApiClient, ours: Controller, kcm_pid: int, sizes: Sizes) -> None:
        self.sizes = sizes
        self.kube = kube
        self.ours = ours
        self.kcm_pid = kcm_pid
        self.figures: dict[str, Any] = {}
        self.phases: list[Phase] = []

    async def namespace(self, name: str) -> str:
        await self.kube.create(
            NAMESPACES, None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
        return name

    async def create_all(self, resource: Resource, namespace: str, objs: list[Obj]) -> None:
        # The benchmark's own client is not throttled (see main); creating all at once makes the
        # start the same instant for every object, for both controllers.
        await asyncio.gather(*(self.kube.create(resource, namespace, o) for o in objs))

    async def wait_all(
        self, resource: Resource, namespace: str, count: int, done: Callable[[Obj], bool], what: str
    ) -> None:
        async def progress() -> str | None:
            listed = await self.kube.list(resource, namespace)
            items = listed.get("items") or []
            finished = sum(1 for o in items if done(o))
            return None if len(items) == count and finished == count else f"{what}: {finished}/{count} done"

        await poll_until(progress, every=0.25)

    async def measure(self, name: str, action: Callable[[], Awaitable[None]], *, by: str) -> Phase:
        """Runs `action` (start + wait) and records its wall time, the CPU seconds of the process
        doing the work (`by`: ours or kcm), and our controller's requests by verb."""
        before_ours, before_kcm = cpu_seconds(self.ours.pid), cpu_seconds(self.kcm_pid)
        before_samples = await self.ours.metrics()
        start = time.monotonic()
        await action()
        seconds = time.monotonic() - start
        phase = Phase(name, seconds)
        phase.cpu_ours = cpu_seconds(self.ours.pid) - before_ours
        phase.cpu_kcm = cpu_seconds(self.kcm_pid) - before_kcm
        if by == "ours":
            after_samples = await self.ours.metrics()
            phase.requests = delta(requests_by_verb(after_samples), requests_by_verb(before_samples))
            writes = delta(writes_by_resource(after_samples), writes_by_resource(before_samples))
            phase.writes = {k: n for k, n in writes.items() if n}
        self.phases.append(phase)
        print(
            f"  {name:<34} {seconds:8.1f} s   cpu ours {phase.cpu_ours:6.1f} s   kcm {phase.cpu_kcm:6.1f} s",
            flush=True,
        )
        return phase

    # --- scenarios ---------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        ns_storm = await self.namespace("bench-storm")
        ns_roleset = await self.namespace("bench-roleset")
        ns_kcm = await self.namespace("bench-kcm")
        ns_deploy = await self.namespace("bench-deploy")
        # Our caches synced and empty: the memory baseline.
        await asyncio.sleep(5)  # settle: let the controller's startup garbage be collected
        rss_empty = rss_mib(self.ours.pid)

        storms = [stormservice(f"s{i:03d}") for i in range(self.sizes.stormservices)]
        rs_kcm = [replicaset(f"r{i:03d}") for i in range(self.sizes.replicasets)]
        pods_s1 = len(storms) * len(ROLES) * ROLE_PODS

        async def s1_kcm() -> None:
            await self.create_all(REPLICASETS, ns_kcm, rs_kcm)
            await self.wait_all(REPLICASETS, ns_kcm, len(rs_kcm), replicaset_done, "S1 ReplicaSets")

        async def s1_ours() -> None:
            await self.create_all(STORMSERVICES, ns_storm, storms)
            await self.wait_all(STORMSERVICES, ns_storm, len(storms), stormservice_done, "S1 StormServices")

        print(f"S1 create {pods_s1} pods", flush=True)
        p_kcm = await self.measure(f"S1 kcm: {len(rs_kcm)} ReplicaSets x {ROLE_PODS}", s1_kcm, by="kcm")
        p_ours = await self.measure(
            f"S1 ours: {len(storms)} StormServices x {len(ROLES) * ROLE_PODS}", s1_ours, by="ours"
        )
        await asyncio.sleep(5)
        rss_full = rss_mib(self.ours.pid)
        self.figures["s1"] = self._pair(
            p_ours,
            p_kcm,
            pods_s1,
            minimum_writes("create", stormservices=len(storms), rolesets=len(storms), pods=pods_s1),
        )
        self.figures["memory"] = {
            "rss_empty_mib": round(rss_empty, 1),
            "rss_after_s1_mib": round(rss_full, 1),
            "kib_per_cached_small_pod": round((rss_full - rss_empty) * 1024 / pods_s1, 1),
        }

        rolesets = [roleset(f"rs{i:03d}") for i in range(self.sizes.rolesets)]

        async def s1p_ours() -> None:
            await self.create_all(ROLESETS, ns_roleset, rolesets)
            await self.wait_all(ROLESETS, ns_roleset, len(rolesets), roleset_done, "S1' RoleSets")

        print(f"S1' create {len(rolesets) * ROLE_PODS} pods through RoleSets directly", flush=True)
        p_ours = await self.measure(f"S1' ours: {len(rolesets)} RoleSets x {ROLE_PODS}", s1p_ours, by="ours")
        # Same pods, same kcm work as S1's baseline: compare with it.
        self.figures["s1_rolesets"] = self._pair(
            p_ours,
            self.phases[0],
            len(rolesets) * ROLE_PODS,
            minimum_writes("create", stormservices=0, rolesets=len(rolesets), pods=len(rolesets) * ROLE_PODS),
        )

        # S2: Deployments made (not measured), then both roll a new image.
        deployments = [deployment(f"d{i:03d}") for i in range(self.sizes.deployments)]
        await self.create_all(DEPLOYMENTS, ns_deploy, deployments)
        await self.wait_all(DEPLOYMENTS, ns_deploy, len(deployments), deployment_done, "S2 setup")

        async def s2_kcm() -> None:
            await self.patch_all(
                DEPLOYMENTS,
                ns_deploy,
                [d["metadata"]["name"] for d in deployments],
                _deployment_image(IMAGE_V2),
            )
            await self.wait_all(DEPLOYMENTS, ns_deploy, len(deployments), deployment_done, "S2 Deployments")

        async def s2_ours() -> None:
            await self.patch_all(
                STORMSERVICES, ns_storm, [s["metadata"]["name"] for s in storms], _storm_image(IMAGE_V2)
            )
            await self.wait_all(STORMSERVICES, ns_storm, len(storms), stormservice_done, "S2 StormServices")

        print("S2 rolling update", flush=True)
        p_kcm = await self.measure(f"S2 kcm: {len(deployments)} Deployments", s2_kcm, by="kcm")
        p_ours = await self.measure(f"S2 ours: {len(storms)} StormServices", s2_ours, by="ours")
        self.figures["s2"] = self._pair(
            p_ours,
            p_kcm,
            pods_s1,
            minimum_writes("rolling", stormservices=len(storms), rolesets=len(storms), pods=pods_s1),
        )

        if self.sizes.in_place:
            await self.in_place(ns_storm, ns_deploy, storms, deployments, pods_s1)

        # S4: scale.
        scaled = [s["metadata"]["name"] for s in storms[: self.sizes.scaled]]
        rs_scaled = [r["metadata"]["name"] for r in rs_kcm[: self.sizes.scaled]]

        async def s4_kcm() -> None:
            await self.patch_all(REPLICASETS, ns_kcm, rs_scaled, {"spec": {"replicas": 3 * 2 * ROLE_PODS}})
            await self.wait_all(REPLICASETS, ns_kcm, len(rs_kcm), replicaset_done, "S4 ReplicaSets")

        async def s4_ours() -> None:
            await self.patch_all(STORMSERVICES, ns_storm, scaled, {"spec": {"replicas": 3}})
            await self.wait_all(STORMSERVICES, ns_storm, len(storms), stormservice_done, "S4 StormServices")

        print(f"S4 scale {len(scaled)} x (1 -> 3)", flush=True)
        p_kcm = await self.measure(f"S4 kcm: {len(rs_scaled)} ReplicaSets 20->60", s4_kcm, by="kcm")
        p_ours = await self.measure(f"S4 ours: {len(scaled)} StormServices 1->3", s4_ours, by="ours")
        pods_s4 = len(scaled) * 2 * len(ROLES) * ROLE_PODS
        self.figures["s4"] = self._pair(
            p_ours,
            p_kcm,
            pods_s4,
            minimum_writes("scale", stormservices=len(scaled), rolesets=2 * len(scaled), pods=pods_s4),
        )

        # Idle.
        await asyncio.sleep(5)
        before = await self.ours.metrics()
        cpu_before = cpu_seconds(self.ours.pid)
        await asyncio.sleep(self.sizes.idle_seconds)
        after = await self.ours.metrics()
        self.figures["idle"] = {
            "seconds": self.sizes.idle_seconds,
            "writes": round(writes_total(after) - writes_total(before)),
            "requests": delta(requests_by_verb(after), requests_by_verb(before)),
            "cpu_seconds": round(cpu_seconds(self.ours.pid) - cpu_before, 2),
        }
        self.figures["memory"]["rss_final_mib"] = round(rss_mib(self.ours.pid), 1)
        if self.sizes.realistic_pods:
            await self.realistic_memory()
        return self.figures

    async def realistic_memory(self) -> None:
        """RSS per cached realistic pod: the pods of bench/pods.py created at the end (owned by
        nothing, so no controller acts on them; our pod informer caches them), with RSS read once
        our cache holds every one with its running status, at each count of Sizes.realistic_pods."""
        print(f"memory: realistic pods, up to {max(self.sizes.realistic_pods):,}", flush=True)
        factory = PodFactory()
        listed = await self.kube.list(NODES, label_selector="type=kwok")
        nodes = sorted(n["metadata"]["name"] for n in listed.get("items") or [])
        cached_before = await self.ours.cached_objects(PODS)
        rss_before = await self.settled_rss()
        namespaces: set[str] = set()
        made = 0
        steps: list[dict[str, Any]] = []
        for total in sorted(self.sizes.realistic_pods):
            start = time.monotonic()
            for first in range(made, total, 500):
                pods = [
                    realistic_pod(factory, i, nodes[i % len(nodes)])
                    for i in range(first, min(total, first + 500))
                ]
                for namespace in sorted({p["metadata"]["namespace"] for p in pods} - namespaces):
                    namespaces.add(await self.namespace(namespace))
                await self.create_bounded(PODS, pods)
            made = total
            await self.wait_realistic_running(total)
            await self.wait_cached(PODS, cached_before + total)
            seconds = time.monotonic() - start
            rss = await self.settled_rss()
            steps.append(
                {
                    "pods": total,
                    "seconds_to_cached": round(seconds, 1),
                    "rss_mib": round(rss, 1),
                    "kib_per_pod": round((rss - rss_before) * 1024 / total, 1),
                }
            )
            print(
                f"  {total:>6,} realistic pods cached: RSS {rss:6.1f} MiB, {steps[-1]['kib_per_pod']} KiB per pod",
                flush=True,
            )
        self.figures["memory"] |= {
            "rss_before_realistic_mib": round(rss_before, 1),
            "realistic": steps,
            "kib_per_cached_realistic_pod": steps[-1]["kib_per_pod"],
        }

    async def create_bounded(self, resource: Resource, objs: list[Obj], concurrency: int = 64) -> None:
        """Creates `objs`, each in the namespace its metadata names, at most `concurrency` at a time."""
        slots = asyncio.Semaphore(concurrency)

        async def create(obj: Obj) -> None:
            async with slots:
                await self.kube.create(resource, obj["metadata"]["namespace"], obj)

        await asyncio.gather(*(create(o) for o in objs))

    async def wait_realistic_running(self, count: int) -> None:
        """Until kwok has given every realistic pod its running status (container statuses and
        conditions included: what a cached pod holds in a cluster)."""

        async def progress() -> str | None:
            # Only the pods not running yet come back: the list shrinks as kwok works.
            waiting, _ = await self.kube.list_all(
                PODS, label_selector=f"{REALISTIC_LABEL}=realistic", field_selector="status.phase!=Running"
            )
            return f"{len(waiting)} of {count} realistic pods not running" if waiting else None

        await poll_until(progress, every=2)

    async def wait_cached(self, resource: Resource, count: int) -> None:
        async def progress() -> str | None:
            cached = await self.ours.cached_objects(resource)
            return None if cached >= count else f"our cache holds {cached} of {count} {resource.plural}"

        await poll_until(progress, every=1)

    async def settled_rss(self) -> float:
        """Our RSS once no key has been added to a work queue for 3 s, and a few seconds more
        for the heap trimmer (which waits for such a pause) and for the last watch events."""
        deadline = time.monotonic() + CONVERGE_TIMEOUT
        adds = work_queue_adds(await self.ours.metrics())
        while True:
            await asyncio.sleep(3)
            now = work_queue_adds(await self.ours.metrics())
            if now == adds or time.monotonic() > deadline:
                break
            adds = now
        await asyncio.sleep(5)
        return rss_mib(self.ours.pid)

    async def in_place(
        self, ns_storm: str, ns_deploy: str, storms: list[Obj], deployments: list[Obj], pods_s1: int
    ) -> None:
        # S3: in place. The StormServices switch to InPlaceUpdate (a strategy change is not a new
        # revision), then take a new image; kcm's comparison is S2's rolling update again.
        await self.patch_all(
            STORMSERVICES, ns_storm, [s["metadata"]["name"] for s in storms], _storm_in_place()
        )
        await self.wait_all(STORMSERVICES, ns_storm, len(storms), stormservice_done, "S3 setup")
        uids_before = await self.pod_uids(ns_storm)

        async def s3_kcm() -> None:
            await self.patch_all(
                DEPLOYMENTS,
                ns_deploy,
                [d["metadata"]["name"] for d in deployments],
                _deployment_image(IMAGE_V3),
            )
            await self.wait_all(DEPLOYMENTS, ns_deploy, len(deployments), deployment_done, "S3 Deployments")

        async def s3_ours() -> None:
            await self.patch_all(
                STORMSERVICES, ns_storm, [s["metadata"]["name"] for s in storms], _storm_image(IMAGE_V3)
            )
            await self.wait_all(STORMSERVICES, ns_storm, len(storms), stormservice_done, "S3 StormServices")
            await self.wait_images(ns_storm, IMAGE_V3, pods_s1)

        print("S3 in-place image update", flush=True)
        p_kcm = await self.measure(f"S3 kcm: {len(deployments)} Deployments (rolling)", s3_kcm, by="kcm")
        p_ours = await self.measure(f"S3 ours: {len(storms)} StormServices in place", s3_ours, by="ours")
        uids_after = await self.pod_uids(ns_storm)
        minimum = minimum_writes("in-place", stormservices=len(storms), rolesets=len(storms), pods=pods_s1)
        self.figures["s3"] = self._pair(p_ours, p_kcm, pods_s1, minimum) | {
            "pods_kept_uid": len(uids_before & uids_after),
            "pods": pods_s1,
        }

    def _pair(self, ours: Phase, kcm: Phase, pods: int, minimum: dict[str, int]) -> dict[str, Any]:
        assert ours.cpu_ours is not None and kcm.cpu_kcm is not None
        return {
            "pods": pods,
            "seconds_ours": round(ours.seconds, 2),
            "seconds_kcm": round(kcm.seconds, 2),
            "ratio": round(ours.seconds / kcm.seconds, 3),
            "cpu_seconds_ours": round(ours.cpu_ours, 2),
            "cpu_seconds_kcm": round(kcm.cpu_kcm, 2),
            "cpu_ratio": round(ours.cpu_ours / max(kcm.cpu_kcm, 0.01), 3),
            "cpu_seconds_per_1000_pods_ours": round(ours.cpu_ours * 1000 / pods, 2),
            "requests_ours": ours.requests,
            "writes_ours": ours.writes,
            "writes_minimum": minimum,
        }

    async def patch_all(
        self, resource: Resource, namespace: str, names: list[str], patch: Obj | list[Obj]
    ) -> None:
        patch_type: PatchType = "json" if isinstance(patch, list) else "merge"
        await asyncio.gather(
            *(self.kube.patch(resource, namespace, n, patch, patch_type=patch_type) for n in names)
        )

    async def pod_uids(self, namespace: str) -> set[str]:
        listed = await self.kube.list(PODS, namespace)
        return {
            p["metadata"]["uid"]
            for p in listed.get("items") or []
            if not p["metadata"].get("deletionTimestamp")
        }

    async def wait_images(self, namespace: str, image: str, count: int) -> None:
        """In place is done when every pod runs the new image, as its status reports."""

        async def progress() -> str | None:
            listed = await self.kube.list(PODS, namespace)
            running = sum(
                1
                for p in listed.get("items") or []
                if all(c.get("image") == image for c in p.get("status", {}).get("containerStatuses") or [{}])
            )
            return None if running >= count else f"in place: {running}/{count} pods run {image}"

        await poll_until(progress, every=0.25)


def _deployment_image(image: str) -> Obj:
    return {"spec": {"template": {"spec": {"containers": [{"name": "engine", "image": image}]}}}}


def _storm_image(image: str) -> list[Obj]:
    return [
        {
            "op": "replace",
            "path": f"/spec/template/spec/roles/{i}/template/spec/containers/0/image",
            "value": image,
        }
        for i in range(len(ROLES))
    ]


def _storm_in_place() -> list[Obj]:
    # In place, a RoleSet cannot surge: with one replica, 25% unavailable (0) would block it.
    return [
        {
            "op": "replace",
            "path": "/spec/updateStrategy",
            "value": {"type": "InPlaceUpdate", "maxUnavailable": 1},
        }
    ]


# --------------------------------------------------------------------------------------------
# main


@contextlib.contextmanager
def local_cluster(keep: Path | None, nodes: int) -> Iterator[Any]:
    localcluster = load_localcluster()
    state_dir = keep or Path(tempfile.mkdtemp(prefix="stormservice-bench-"))
    cluster = localcluster.LocalCluster(state_dir, nodes=nodes, kube_api_qps=QPS, kube_api_burst=BURST)
    cluster.up(reuse=False)
    try:
        yield cluster
    finally:
        cluster.down()


def kcm_pid(cluster: Any) -> int:
    state = cluster.load_state()
    for proc in state.procs:
        if proc.name == "kube-controller-manager":
            pid: int = proc.pid
            return pid
    raise RuntimeError("kube-controller-manager is not running")


def install_crds(cluster: Any) -> None:
    kubectl = [str(Path(cluster.bin_dir) / "kubectl"), "--kubeconfig", str(cluster.kubeconfig)]
    crds = str(REPO_ROOT / "manifests" / "crds")
    subprocess.run([*kubectl, "apply", "--server-side", "-k", crds], check=True, capture_output=True)
    # Polled rather than `kubectl wait`, which fails outright when its first look comes too early.
    established = '{.status.conditions[?(@.type=="Established")].status}'
    deadline = time.monotonic() + 120
    for name in ("stormservices.orchestration.aibrix.ai", "rolesets.orchestration.aibrix.ai"):
        while True:
            got = subprocess.run(
                [*kubectl, "get", "crd", name, "-o", f"jsonpath={established}"],
                capture_output=True,
                text=True,
            )
            if got.stdout.strip() == "True":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not Established within 120 s: {got.stderr.strip()}")
            time.sleep(0.5)


@contextlib.asynccontextmanager
async def controller_serving(
    cluster: Any, profile_dir: Path | None
) -> AsyncIterator[tuple[Controller, ApiClient]]:
    """Our controller started and serving /metrics, and the benchmark's own client."""
    ours = Controller(
        cluster.kubeconfig, cluster.dir / "controller.log", python=runtime_python(), profile_dir=profile_dir
    )
    ours.start()
    # The benchmark's own client must never be the bottleneck.
    kube = await create_client(str(cluster.kubeconfig), qps=5000, burst=5000)
    try:
        deadline = time.monotonic() + 120
        while not await ours.ready():
            if time.monotonic() > deadline:
                raise TimeoutError("the controller did not serve /metrics within 120 s")
            await asyncio.sleep(0.5)
        yield ours, kube
    finally:
        await kube.close()
        ours.stop()


async def run(cluster: Any, sizes: Sizes, profile_dir: Path | None = None) -> dict[str, Any]:
    async with controller_serving(cluster, profile_dir) as (ours, kube):
        return await Bench(kube, ours, kcm_pid(cluster), sizes).run()


def targets(figures: dict[str, Any]) -> list[tuple[str, float, str, float]]:
    """(name, value, comparison, target) for every target of issue 12 this run measured."""
    checks: list[tuple[str, float, str, float]] = [
        ("ratio_create (S1 seconds ours / kcm)", figures["s1"]["ratio"], "<=", 1.0),
        ("ratio_rollout (S2 seconds ours / kcm)", figures["s2"]["ratio"], "<=", 1.0),
        ("S1 CPU seconds ours / kcm", figures["s1"]["cpu_ratio"], "<=", 1.5),
        ("KiB RSS per cached small pod", figures["memory"]["kib_per_cached_small_pod"], "<=", 10.0),
        ("idle RSS with empty caches (MiB)", figures["memory"]["rss_empty_mib"], "<=", 60.0),
        ("writes while idle", figures["idle"]["writes"], "<=", 0.0),
    ]
    if "s3" in figures:
        checks.append(("ratio in place (S3 seconds ours / kcm)", figures["s3"]["ratio"], "<=", 1.0))
    realistic = figures["memory"].get("realistic")
    if realistic:
        largest = realistic[-1]
        checks.append(
            (f"KiB RSS per cached realistic pod ({largest['pods']:,})", largest["kib_per_pod"], "<=", 10.0)
        )
    return checks


SCENARIOS = (
    ("s1", "S1 create"),
    ("s1_rolesets", "S1' RoleSets"),
    ("s2", "S2 rolling"),
    ("s3", "S3 in place"),
    ("s4", "S4 scale"),
)


def writes_table(figures: dict[str, Any]) -> list[str]:
    """Our writes per scenario next to the minimum the work needs, and what is beyond it."""
    lines = [f"{'writes':<14} {'ours':>6} {'minimum':>8}   beyond the minimum"]
    for key, title in SCENARIOS:
        if key not in figures:
            continue
        ours: dict[str, int] = figures[key]["writes_ours"]
        minimum: dict[str, int] = figures[key]["writes_minimum"]
        beyond = {k: ours.get(k, 0) - minimum.get(k, 0) for k in sorted(ours.keys() | minimum.keys())}
        extra = ", ".join(f"{k} {n:+d}" for k, n in beyond.items() if n)
        lines.append(f"{title:<14} {sum(ours.values()):>6} {sum(minimum.values()):>8}   {extra or '-'}")
    return lines


def report(figures: dict[str, Any]) -> bool:
    ok = True
    print()
    for line in writes_table(figures):
        print(line)
    print()
    for name, value, cmp, target in targets(figures):
        met = value <= target
        ok = ok and met
        print(f"{name:<42} {value:>10,.2f}   (target {cmp} {target:g}) {'ok' if met else 'MISSED'}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / time.strftime("scale-%Y%m%dT%H%M%S.json")
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written to {path.relative_to(REPO_ROOT)}")
    print(json.dumps(figures))
    return ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--keep", type=Path, help="cluster state directory (kept for inspection)")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument(
        "--no-in-place", dest="in_place", action="store_false", help="skip S3 (the in-place image update)"
    )
    parser.add_argument("--profile", type=Path, help="run our controller under py-spy, stacks into DIR")
    parser.add_argument("--smoke", action="store_true", help="a tenth of the work, to check the harness")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with local_cluster(args.keep, nodes=args.nodes) as cluster:
        install_crds(cluster)
        sizes = Sizes.smoke() if args.smoke else Sizes()
        figures = asyncio.run(
            run(cluster, dataclasses.replace(sizes, in_place=args.in_place), profile_dir=args.profile)
        )
    ok = report(figures)
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
