"""Fixtures for tests against a real kube-apiserver.

With KUBECONFIG set, tests run against that cluster (kind, a shared dev cluster, or one started
by `make cluster-up`). Without it, the session builds or reuses the control-plane binaries
(hack/build-controlplane.sh) and starts its own local cluster (hack/localcluster.py) in
.cluster/pytest-<worker>, torn down when the session ends; its logs stay there.

Fixtures:
    cluster         session: ClusterHandle (kubeconfig, kubectl binary, external or local)
    kubeconfig      session: path to the admin kubeconfig (str)
    kubectl         session: Kubectl, call it like kubectl(*args) -> CompletedProcess[str]
    namespace       function: a fresh namespace, deleted afterwards
    crds            session: applies manifests/crds/*.yaml and waits until Established
    kube            function: async API client from controller.runtime.client.create_client
    run_controller  function: starts `python -m controller ...` as a subprocess

Environment knobs: STORMSERVICE_TEST_CLUSTER_DIR (state dir of the session's local cluster),
STORMSERVICE_TEST_NODES (fake nodes, default 10), STORMSERVICE_KUBECTL (kubectl binary for an
external cluster), STORMSERVICE_CONTROLPLANE_BIN (prebuilt binaries directory).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = REPO_ROOT / "manifests" / "crds"
LOCALCLUSTER_PY = REPO_ROOT / "hack" / "localcluster.py"


def _load_localcluster() -> ModuleType:
    """hack/ is not a package; load hack/localcluster.py by path (once)."""
    existing = sys.modules.get("localcluster")
    if existing is not None:
        return existing
    spec = importlib.util.spec_from_file_location("localcluster", LOCALCLUSTER_PY)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["localcluster"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# cluster


@dataclass
class ClusterHandle:
    kubeconfig: Path
    kubectl_bin: str
    external: bool
    local: Any = None  # localcluster.LocalCluster when the session started its own

    @property
    def log_dir(self) -> Path | None:
        return self.local.logs if self.local is not None else None


def _external_kubectl() -> str:
    explicit = os.environ.get("STORMSERVICE_KUBECTL")
    if explicit:
        return explicit
    # Prefer our own build (a known version) when it is cached; never build just for kubectl.
    try:
        bin_dir = _load_localcluster().find_bin_dir(build=False)
        return str(bin_dir / "kubectl")
    except Exception:
        found = shutil.which("kubectl")
        if not found:
            raise pytest.UsageError(
                "KUBECONFIG is set but no kubectl was found: set STORMSERVICE_KUBECTL, put kubectl "
                "on PATH, or run hack/build-controlplane.sh"
            ) from None
        return found


def pytest_collection_finish(session: pytest.Session) -> None:
    """Builds the control-plane binaries, when they are not cached yet, before any test runs:
    a cold build takes over ten minutes, longer than pytest-timeout allows a test's setup."""
    if os.environ.get("KUBECONFIG") or session.config.option.collectonly:
        return
    if not any(
        item.get_closest_marker("integration") or item.get_closest_marker("chaos") for item in session.items
    ):
        return
    lc = _load_localcluster()
    try:
        lc.find_bin_dir(build=False)
        return
    except lc.ClusterError:
        pass
    capman = session.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        print(
            "\nbuilding the local control plane (hack/build-controlplane.sh; a cold build takes 10+ minutes)"
        )
        # A failure is reported by the `cluster` fixture, which tries again.
        with contextlib.suppress(lc.ClusterError):
            lc.find_bin_dir(build=True)


@pytest.fixture(scope="session")
def cluster(worker_id: str) -> Iterator[ClusterHandle]:
    external = os.environ.get("KUBECONFIG")
    if external:
        # A multi-path KUBECONFIG (a:b) is passed through as is to kubectl; clients use the first.
        yield ClusterHandle(Path(external.split(os.pathsep)[0]), _external_kubectl(), external=True)
        return
    lc = _load_localcluster()
    state_dir = Path(
        os.environ.get("STORMSERVICE_TEST_CLUSTER_DIR", REPO_ROOT / ".cluster" / f"pytest-{worker_id}")
    )
    local = lc.LocalCluster(state_dir, nodes=int(os.environ.get("STORMSERVICE_TEST_NODES", "10")))
    try:
        local.up(reuse=False)
    except lc.ClusterError as e:
        pytest.fail(f"could not start the local control plane: {e}", pytrace=False)
    try:
        yield ClusterHandle(local.kubeconfig, str(local.bin_dir / "kubectl"), external=False, local=local)
    finally:
        local.down()


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    """pytest-xdist's worker id ("gw0", ...) or "main"; each worker gets its own local cluster.
    (Overridden by xdist's own fixture of the same name when it is installed.)"""
    return str(getattr(request.config, "workerinput", {}).get("workerid", "main"))


@pytest.fixture(scope="session")
def kubeconfig(cluster: ClusterHandle) -> str:
    return str(cluster.kubeconfig)


# ---------------------------------------------------------------------------------------------
# kubectl


class KubectlError(AssertionError):
    pass


@dataclass
class Kubectl:
    """Runs the cluster's kubectl with its kubeconfig. Calls raise KubectlError (with stderr)
    on a non-zero exit unless check=False."""

    binary: str
    kubeconfig: str
    default_timeout: float = 60

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, f"--kubeconfig={self.kubeconfig}", *args]
        proc = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout or self.default_timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise KubectlError(
                f"kubectl {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
            )
        return proc

    def apply(
        self, obj: dict[str, Any] | str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """kubectl apply -f - of an object (dict) or YAML text."""
        text = obj if isinstance(obj, str) else json.dumps(obj)
        return self("apply", "-f", "-", *args, input=text, check=check)

    def create(
        self, obj: dict[str, Any] | str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = obj if isinstance(obj, str) else json.dumps(obj)
        return self("create", "-f", "-", *args, input=text, check=check)

    def get_json(self, *args: str) -> Any:
        return json.loads(self("get", "-o", "json", *args).stdout)

    def exists(self, *args: str) -> bool:
        """True if `kubectl get ARGS` finds the object, False on NotFound; raises otherwise."""
        proc = self("get", "-o", "name", *args, check=False)
        if proc.returncode == 0:
            return True
        if "NotFound" in proc.stderr or "not found" in proc.stderr:
            return False
        raise KubectlError(f"kubectl get {' '.join(args)}: {proc.stderr.strip()}")


@pytest.fixture(scope="session")
def kubectl(cluster: ClusterHandle) -> Kubectl:
    return Kubectl(cluster.kubectl_bin, str(cluster.kubeconfig))


# ---------------------------------------------------------------------------------------------
# namespace


def _namespace_name(test_name: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{base}-{uuid.uuid4().hex[:6]}"


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kubectl: Kubectl) -> Iterator[str]:
    name = _namespace_name(request.node.name)
    kubectl("create", "namespace", name)

    # Hand the test a settled namespace, as it looks a moment after creation on any cluster:
    # the controller-manager adds the `kube-root-ca.crt` ConfigMap (so a list of ConfigMaps
    # taken too early would change under the test) and the `default` ServiceAccount (without
    # which real clusters' ServiceAccount admission refuses pods; the local cluster disables
    # that plugin, but waiting costs nothing there).
    # Polled rather than `kubectl wait --for=create`: on a freshly started cluster that exited at
    # once with NotFound instead of waiting.
    def settled() -> bool:
        got = kubectl(
            "get",
            "-n",
            name,
            "configmap/kube-root-ca.crt",
            "serviceaccount/default",
            "--ignore-not-found",
            "-o",
            "name",
            check=False,
        )
        return got.returncode == 0 and len(got.stdout.split()) == 2

    wait_until(settled, 120, f"namespace {name}: kube-root-ca.crt and the default ServiceAccount", 0.5)
    try:
        yield name
    finally:
        # Don't wait for finalization: the namespace controller empties it in the background.
        kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


# ---------------------------------------------------------------------------------------------
# CRDs


def crd_manifests() -> list[Path]:
    # kustomization.yaml lists the CRDs for `kubectl apply -k`; it is no object to apply.
    return sorted(
        p for p in CRD_DIR.glob("*.y*ml") if p.suffix in (".yaml", ".yml") and p.name != "kustomization.yaml"
    )


def crd_names(paths: Sequence[Path]) -> list[str]:
    names = []
    for path in paths:
        # libyaml when available: the CRDs are ~250 KB each, which pure-Python YAML takes
        # seconds to parse.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        for doc in yaml.load_all(path.read_text(), Loader=loader):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                names.append(doc["metadata"]["name"])
    return names


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> list[str]:
    """Applies every CRD in manifests/crds/ (server-side) and waits until each is Established
    and served. Returns the CRD names."""
    paths = crd_manifests()
    names = crd_names(paths)
    if not names:
        pytest.skip(f"no CustomResourceDefinition manifests in {CRD_DIR.relative_to(REPO_ROOT)}/ yet")
    args = ["apply", "--server-side", "--force-conflicts", "--field-manager=stormservice-tests"]
    for p in paths:
        args += ["-f", str(p)]
    kubectl(*args)

    # Polled rather than `kubectl wait --for=condition=Established`: on a just-created CRD,
    # before the apiserver has written any status, kubectl wait fails with
    # ".status.conditions accessor error" instead of waiting.
    def established() -> bool:
        got = kubectl.get_json("crd", *names)
        items = got.get("items", [got])
        return len(items) == len(names) and all(
            any(
                c["type"] == "Established" and c["status"] == "True"
                for c in (i.get("status") or {}).get("conditions") or []
            )
            for i in items
        )

    wait_until(established, 60, f"CRDs Established: {', '.join(names)}")

    # Established means the API is registered; discovery (and so kubectl's resource mapping)
    # may lag by a moment.
    def discovered(plural: str, group: str) -> bool:
        out = kubectl("api-resources", f"--api-group={group}", "-o", "name", check=False).stdout
        return f"{plural}.{group}" in out.split()

    # A new resource's watch cache answers 429 "storage is (re)initializing" for a moment
    # after Established; a successful list means it is serving.
    def listable(name: str) -> bool:
        return kubectl("get", name, "--all-namespaces", "-o", "name", check=False).returncode == 0

    for name in names:
        plural, _, group = name.partition(".")
        wait_until(functools.partial(discovered, plural, group), 30, f"{name} in discovery")
        wait_until(functools.partial(listable, name), 30, f"{name} listable")
    if "rolesets.orchestration.aibrix.ai" in names:
        wait_for_garbage_collector(kubectl)
    return names


def wait_for_garbage_collector(kubectl: Kubectl) -> None:
    """Waits until kube-controller-manager's garbage collector handles RoleSets. It notices a
    new kind only at its next discovery pass (every 30 s); until then a RoleSet deleted with
    foreground propagation (a rollout's old RoleSet) stays Terminating, and a test's rollout
    stalls for up to half a minute (long enough to trip a progress deadline). A probe RoleSet
    deleted that way is gone once the collector knows the kind."""
    name = f"gc-probe-{uuid.uuid4().hex[:8]}"
    probe = {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "RoleSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "roles": [
                {
                    "name": "probe",
                    "replicas": 0,
                    "template": {"spec": {"containers": [{"name": "probe", "image": "probe"}]}},
                }
            ]
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(probe))
    kubectl("delete", "roleset", name, "-n", "default", "--cascade=foreground", "--wait=false")
    wait_until(
        lambda: not kubectl.exists("roleset", name, "-n", "default"),
        90,
        "the garbage collector to handle RoleSets (a foreground deletion finished)",
    )


# ---------------------------------------------------------------------------------------------
# kubeconfigs for other identities and routes


def derived_kubeconfig(
    admin_kubeconfig: str, path: Path, *, token: str | None = None, server: str | None = None
) -> Path:
    """A copy of the admin kubeconfig (loaded as YAML, which includes JSON) that authenticates
    with `token` instead of the admin certificate and/or talks to `server` (same CA, so the
    server name must stay one the API server's certificate names, e.g. 127.0.0.1)."""
    config = yaml.safe_load(Path(admin_kubeconfig).read_text())
    if server is not None:
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = server
    if token is not None:
        for user in config["users"]:
            user["user"] = {"token": token}
    path.write_text(json.dumps(config))
    return path


def api_server_address(admin_kubeconfig: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    config = yaml.safe_load(Path(admin_kubeconfig).read_text())
    url = urlsplit(config["clusters"][0]["cluster"]["server"])
    assert url.hostname is not None
    return url.hostname, url.port or 443


def service_account_kubeconfig(
    kubectl: Kubectl,
    admin_kubeconfig: str,
    namespace: str,
    name: str,
    rules: list[dict[str, Any]],
    path: Path,
) -> Path:
    """A ServiceAccount `name` in `namespace` bound to a Role with `rules` (and nothing else),
    and a kubeconfig that authenticates with a token of that ServiceAccount."""
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": namespace},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]
    kubectl.apply({"apiVersion": "v1", "kind": "List", "items": objects})
    token = kubectl("create", "token", name, "-n", namespace, "--duration=2h").stdout.strip()
    return derived_kubeconfig(admin_kubeconfig, path, token=token)


# ---------------------------------------------------------------------------------------------
# async client


@pytest.fixture
async def kube(kubeconfig: str) -> AsyncIterator[Any]:
    """The project's own async client (controller.runtime.client.create_client)."""
    from controller.runtime.client import create_client

    client = await create_client(kubeconfig)
    try:
        yield client
    finally:
        await client.close()


# ---------------------------------------------------------------------------------------------
# the controller as a subprocess


def controller_argv(kubeconfig: str, *extra: str) -> list[str]:
    """The one place that knows how the controller is started; adjust here when flags change."""
    return [
        sys.executable,
        "-m",
        "controller",
        "--kubeconfig",
        kubeconfig,
        "--leader-elect=false",
        "--metrics-bind-address=127.0.0.1:0",
        # Its default (:8081) is every interface, and a second controller would collide on it.
        "--health-probe-bind-address=127.0.0.1:0",
        *extra,
    ]


@dataclass
class ControllerProcess:
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes]
    _log_file: Any = field(repr=False, default=None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str | re.Pattern[str], timeout: float = 30) -> str:
        """Waits until the log contains `needle` (substring or regex); returns the matching line."""
        pattern = needle if isinstance(needle, re.Pattern) else re.compile(re.escape(needle))
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_text().splitlines():
                if pattern.search(line):
                    return line
            if not self.alive():
                raise AssertionError(
                    f"controller exited ({self.proc.returncode}) before logging {pattern.pattern!r}:\n"
                    + "\n".join(self.log_text().splitlines()[-30:])
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"controller did not log {pattern.pattern!r} within {timeout}s")
            time.sleep(0.1)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM (the controller's graceful shutdown), then SIGKILL after `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.proc.returncode


ControllerFactory = Callable[..., ControllerProcess]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keeps each phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def run_controller(
    request: pytest.FixtureRequest, kubeconfig: str, tmp_path: Path
) -> Iterator[ControllerFactory]:
    """A factory: run_controller(*extra_args, env=None, name="controller") starts the
    controller against the test cluster, logging to tmp_path/<name>.log. Every process it
    started is stopped after the test; the log tail is printed if the test failed."""
    started: list[ControllerProcess] = []

    def start(*extra: str, env: dict[str, str] | None = None, name: str = "controller") -> ControllerProcess:
        argv = controller_argv(kubeconfig, *extra)
        log_path = tmp_path / f"{name}-{len(started)}.log"
        log_file = open(log_path, "wb")  # noqa: SIM115 - closed by ControllerProcess.stop
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "KUBECONFIG": kubeconfig, **(env or {})}
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=REPO_ROOT,
        )
        cp = ControllerProcess(argv, log_path, proc, log_file)
        started.append(cp)
        return cp

    yield start
    for cp in started:
        with contextlib.suppress(Exception):
            cp.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for cp in started:
            tail = "\n".join(cp.log_text().splitlines()[-50:])
            rep.sections.append((f"controller log {cp.log_path} (last 50 lines)", tail))
