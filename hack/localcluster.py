#!/usr/bin/env python3
"""A real, local Kubernetes control plane for integration tests and `make run`.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (simulating N nodes and
the pods on them) run as loopback-only processes built from the official Go modules by
hack/build-controlplane.sh. Everything the cluster owns lives in one state directory: certs,
kubeconfig, etcd data, logs and state.json, which records the PID and start time of every
process this module started so that `down` stops exactly those and nothing else.

CLI:
    python hack/localcluster.py up   [--dir DIR] [--nodes 10] [--bin-dir DIR]
    python hack/localcluster.py down [--dir DIR]
    python hack/localcluster.py env  [--dir DIR]      # prints `export KUBECONFIG=... PATH=...`
    python hack/localcluster.py status [--dir DIR]

Library (pytest fixtures):
    cluster = LocalCluster(state_dir, nodes=10)
    cluster.up()          # builds or reuses the binaries, starts everything, waits until ready
    cluster.kubeconfig    # admin kubeconfig (client cert, O=system:masters)
    cluster.down()

Choices worth knowing:
- The ServiceAccount admission plugin is disabled. Pods created right after their namespace
  would otherwise be rejected until the serviceaccount controller has created the namespace's
  `default` ServiceAccount, a race every test would have to wait out. The serviceaccount and
  serviceaccount-token controllers still run, so ServiceAccounts and their tokens exist; pods
  simply get no automatic `serviceAccountName` or token volume (kwok runs no containers).
- OwnerReferencesPermissionEnforcement is on (it is off by default; OpenShift and hardened
  clusters turn it on): setting blockOwnerDeletion needs `update` on the owner's finalizers,
  and changing ownerReferences needs `delete` on the object, so tests that run the controller
  with the shipped RBAC prove it is enough there too. Admin identities are not affected.
- The apiserver advertises 127.0.0.1, which EndpointSlice validation refuses for the
  `kubernetes` Service, so the endpoint reconciler is off (`--endpoint-reconciler-type=none`).
- Fake nodes carry the annotation kwok.x-k8s.io/node=fake and no taint. kwok, given kwokctl's
  default stages (collected by the build script into kwok-stages.yaml; standalone kwok has no
  built-in ones), keeps them Ready via node leases and moves pods bound to them to
  Running/Ready, and finishes their deletion. Our own stages
  (hack/controlplane/kwok-extra-stages.yaml, read from the checkout at each start) report what
  a kubelet would after that: a container image patched in place restarts the container (not
  ready, then running the new image with a new imageID and containerID, restartCount+1; opt a
  pod out with the annotation pod-container-image-update.stage.kwok.x-k8s.io/disabled=true),
  and a pod left Ready=False by the node lifecycle controller (while ContainersReady and its
  readiness gates are True) is Ready again 2-5 s later. ContainersReady=False, a failing
  readiness probe, is left as it is.

Only the Python standard library is needed, except `cryptography` for making certificates
(imported lazily, so `down` and `env` work from any python3).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HACK_DIR = Path(__file__).resolve().parent
REPO_ROOT = HACK_DIR.parent
DEFAULT_STATE_DIR = REPO_ROOT / ".cluster"
BUILD_SCRIPT = HACK_DIR / "build-controlplane.sh"
KWOK_EXTRA_STAGES = HACK_DIR / "controlplane" / "kwok-extra-stages.yaml"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")

SERVICE_CIDR = "10.0.0.0/24"
# Pod IPs are strings kwok writes into pod status; nothing ever connects to them.
POD_CIDR = "10.244.0.1/16"
FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
ZONES = ("zone-a", "zone-b", "zone-c")
NODE_CAPACITY = {
    "cpu": "256",
    "memory": "2Ti",
    "pods": "1000",
    "ephemeral-storage": "10Ti",
    "nvidia.com/gpu": "8",
}
# Start order; `down` stops in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class ClusterError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[localcluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# binaries


def find_bin_dir(build: bool = True) -> Path:
    """The directory holding the control-plane binaries: $STORMSERVICE_CONTROLPLANE_BIN if set,
    else the build script's cache directory, building into it first when `build` is true."""
    override = os.environ.get("STORMSERVICE_CONTROLPLANE_BIN")
    if override:
        bin_dir = Path(override)
    else:
        args = [str(BUILD_SCRIPT)] + ([] if build else ["--print-bin-dir"])
        # The last stdout line is the directory. Progress (stderr) is passed through as it
        # comes, and its last lines go into the error if the build fails.
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None and proc.stdout is not None
        tail: list[str] = []
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail = [*tail[-9:], line.rstrip()]
        stdout = proc.stdout.read()
        if proc.wait() != 0:
            raise ClusterError(f"{BUILD_SCRIPT.name} failed (exit {proc.returncode}):\n" + "\n".join(tail))
        bin_dir = Path(stdout.strip().splitlines()[-1])
    missing = [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if not (bin_dir / "kwok-stages.yaml").is_file():
        missing.append("kwok-stages.yaml")
    if missing:
        raise ClusterError(f"missing binaries in {bin_dir}: {', '.join(missing)} (run {BUILD_SCRIPT})")
    return bin_dir


# --------------------------------------------------------------------------------------------
# certificates


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def generate_pki(pki: Path) -> None:
    """CA, apiserver serving cert (127.0.0.1/localhost), admin client cert (O=system:masters)
    and the service-account signing key pair. Reused when already present."""
    if all((pki / n).exists() for n in ("ca.crt", "apiserver.crt", "admin.crt", "sa.key", "sa.pub")):
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    until = now + datetime.timedelta(days=365)

    def key_pem(key: Any) -> bytes:
        pem: bytes = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return pem

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("stormservice-local-ca")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(subject: x509.Name, usage: Any, sans: list[x509.GeneralName] | None = None) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_encipherment=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    content_commitment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    import ipaddress

    serving_key, serving_cert = leaf(
        name("kube-apiserver"),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        ],
    )
    admin_key, admin_cert = leaf(name("admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    pem = serialization.Encoding.PEM
    _write_private(pki / "ca.key", key_pem(ca_key))
    (pki / "ca.crt").write_bytes(ca_cert.public_bytes(pem))
    _write_private(pki / "apiserver.key", key_pem(serving_key))
    (pki / "apiserver.crt").write_bytes(serving_cert.public_bytes(pem))
    _write_private(pki / "admin.key", key_pem(admin_key))
    (pki / "admin.crt").write_bytes(admin_cert.public_bytes(pem))
    _write_private(pki / "sa.key", key_pem(sa_key))
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def write_kubeconfig(path: Path, server: str, pki: Path) -> None:
    """Admin kubeconfig with the certs embedded, so it stays valid if copied elsewhere."""

    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")}}
        ],
        "users": [
            {
                "name": "admin",
                "user": {"client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")},
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
        "current-context": "local",
    }
    tmp = path.with_suffix(".tmp")
    # JSON is valid YAML; kubectl and every client library read it.
    _write_private(tmp, json.dumps(config, indent=2).encode())
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# processes


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports. The sockets are held until all are chosen so the kernel
    does not hand out the same port twice; a race with another program is still possible."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def proc_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), or None
    if it no longer exists or is a zombie. With the PID it identifies a process uniquely."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass
class ProcRecord:
    name: str
    pid: int
    start_time: int
    argv: list[str]
    log: str

    def alive(self) -> bool:
        return proc_start_time(self.pid) == self.start_time


@dataclass
class ClusterState:
    bin_dir: str
    ports: dict[str, int]
    nodes: int
    procs: list[ProcRecord] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "bin_dir": self.bin_dir,
                "ports": self.ports,
                "nodes": self.nodes,
                "procs": [p.__dict__ for p in self.procs],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> ClusterState:
        raw = json.loads(text)
        return cls(
            bin_dir=raw["bin_dir"],
            ports=raw["ports"],
            nodes=raw["nodes"],
            procs=[ProcRecord(**p) for p in raw.get("procs", [])],
        )


def _terminate(
    records: list[ProcRecord], timeout: float, children: list[subprocess.Popen[bytes]]
) -> list[str]:
    """SIGTERM each live recorded process, SIGKILL what is left after `timeout`. Returns the
    names of processes that were still alive at the end (should be none). `children` are the
    Popen handles of this process's own children, polled so exited ones do not linger as
    zombies (only those: a waitpid(-1) would steal other subprocesses' exit codes)."""

    def reap() -> None:
        for child in children:
            child.poll()

    live = [r for r in records if r.alive()]
    for r in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(r.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(r.alive() for r in live):
        reap()
        time.sleep(0.05)
    for r in live:
        if r.alive():
            log(f"{r.name} (pid {r.pid}) ignored SIGTERM for {timeout:.0f}s; sending SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(r.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(r.alive() for r in live):
        reap()
        time.sleep(0.05)
    return [r.name for r in live if r.alive()]


# --------------------------------------------------------------------------------------------
# the API, with the standard library only


class Api:
    def __init__(self, server: str, pki: Path) -> None:
        self.server = server
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:
            raw = e.read()
            status = e.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")


def _api_ok(api: Api, path: str) -> bool:
    try:
        return api.request("GET", path, timeout=2)[0] == 200
    except (urllib.error.URLError, OSError):
        return False


def _http_ok(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _insecure_ctx() -> ssl.SSLContext:
    # The controller-manager and scheduler serve /healthz with self-signed certs they make at
    # startup; only liveness is checked through it.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def fake_node(name: str, index: int) -> dict[str, Any]:
    zone = ZONES[index % len(ZONES)]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                FAKE_NODE_ANNOTATION[0]: FAKE_NODE_ANNOTATION[1],
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
                "topology.kubernetes.io/zone": zone,
                "topology.kubernetes.io/region": "local",
            },
        },
        "spec": {"providerID": f"kwok://{name}"},
        "status": {
            "capacity": dict(NODE_CAPACITY),
            "allocatable": dict(NODE_CAPACITY),
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
                "containerRuntimeVersion": "kwok",
                "kernelVersion": "",
                "osImage": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
            "phase": "Running",
        },
    }


# --------------------------------------------------------------------------------------------
# the cluster


class LocalCluster:
    def __init__(
        self,
        state_dir: Path | str = DEFAULT_STATE_DIR,
        *,
        nodes: int = 10,
        bin_dir: Path | str | None = None,
        kube_api_qps: int = 100,
        kube_api_burst: int = 200,
    ) -> None:
        self.dir = Path(state_dir).resolve()
        self.nodes = nodes
        self._bin_dir = Path(bin_dir) if bin_dir else None
        self.kube_api_qps = kube_api_qps
        self.kube_api_burst = kube_api_burst
        self.pki = self.dir / "pki"
        self.logs = self.dir / "logs"
        self.kubeconfig = self.dir / "kubeconfig"
        self.state_file = self.dir / "state.json"
        self._children: list[subprocess.Popen[bytes]] = []

    # --- state ---------------------------------------------------------------------------

    def load_state(self) -> ClusterState | None:
        try:
            return ClusterState.from_json(self.state_file.read_text())
        except FileNotFoundError:
            return None

    def _save_state(self, state: ClusterState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        tmp.replace(self.state_file)

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            state = self.load_state()
            self._bin_dir = Path(state.bin_dir) if state else find_bin_dir(build=False)
        return self._bin_dir

    @property
    def server(self) -> str:
        state = self.load_state()
        if state is None:
            raise ClusterError(f"no cluster state in {self.dir}")
        return f"https://127.0.0.1:{state.ports['apiserver']}"

    def running(self) -> bool:
        state = self.load_state()
        return bool(state and state.procs and all(p.alive() for p in state.procs))

    def env(self) -> dict[str, str]:
        """Environment for tools: KUBECONFIG, and PATH with our kubectl first."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    # --- up ------------------------------------------------------------------------------

    def up(self, *, timeout: float = 120, reuse: bool = True) -> None:
        """Start the cluster and wait until the API is ready and all nodes are Ready. If this
        state directory already has a running, healthy cluster and `reuse` is true, keep it."""
        if reuse and self.running() and self.healthy():
            state = self.load_state()
            log(
                f"cluster in {self.dir} is already running ({state.nodes if state else '?'} nodes); reusing it"
            )
            return
        self.down(quiet=True)
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir(build=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        generate_pki(self.pki)
        for attempt in range(1, 4):
            try:
                self._up_once(self._bin_dir, timeout)
                return
            except ClusterError as e:
                # Ports are picked free but only bound later by the components, so another
                # program can take one in between; that is worth a retry with new ports.
                if "address already in use" not in str(e) or attempt == 3:
                    raise
                log(f"a port was taken meanwhile ({e}); retrying with new ports")

    def _up_once(self, bin_dir: Path, timeout: float) -> None:
        t0 = time.monotonic()
        # Each `up` is a fresh cluster: old etcd data would bring back old objects.
        shutil.rmtree(self.dir / "etcd", ignore_errors=True)
        names = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        state = ClusterState(bin_dir=str(bin_dir), ports=ports, nodes=self.nodes)
        self._save_state(state)
        server = f"https://127.0.0.1:{ports['apiserver']}"
        write_kubeconfig(self.kubeconfig, server, self.pki)
        deadline = t0 + timeout

        try:
            self._start(state, "etcd", self._etcd_argv(ports))
            self._wait(state, "etcd", deadline, lambda: _http_ok(f"http://127.0.0.1:{ports['etcd']}/health"))

            self._start(state, "kube-apiserver", self._apiserver_argv(ports))
            api = Api(server, self.pki)
            self._wait(state, "kube-apiserver", deadline, lambda: _api_ok(api, "/readyz"))

            self._start(state, "kube-controller-manager", self._controller_manager_argv(ports))
            self._start(state, "kube-scheduler", self._scheduler_argv(ports))
            self._start(state, "kwok", self._kwok_argv(ports))

            for i in range(self.nodes):
                status, body = api.request("POST", "/api/v1/nodes", fake_node(f"kwok-node-{i}", i))
                if status not in (201, 409):
                    raise ClusterError(f"creating node kwok-node-{i}: HTTP {status}: {body}")

            insecure = _insecure_ctx()
            self._wait(
                state,
                "kube-controller-manager",
                deadline,
                lambda: _http_ok(f"https://127.0.0.1:{ports['controller-manager']}/healthz", insecure),
            )
            self._wait(
                state,
                "kube-scheduler",
                deadline,
                lambda: _http_ok(f"https://127.0.0.1:{ports['scheduler']}/healthz", insecure),
            )
            self._wait(
                state, f"{self.nodes} Ready nodes", deadline, lambda: self._ready_nodes(api) >= self.nodes
            )
        except BaseException:
            log(f"startup failed; logs are in {self.logs}")
            self.down(quiet=True)
            raise
        log(f"cluster up in {time.monotonic() - t0:.1f}s: {server}, kubeconfig {self.kubeconfig}")

    def healthy(self) -> bool:
        try:
            return _api_ok(Api(self.server, self.pki), "/readyz")
        except (ClusterError, OSError):
            return False

    def _ready_nodes(self, api: Api) -> int:
        try:
            status, body = api.request("GET", "/api/v1/nodes?labelSelector=type%3Dkwok", timeout=5)
        except (urllib.error.URLError, OSError):
            return 0
        if status != 200:
            return 0
        ready = 0
        for node in body.get("items", []):
            for cond in node.get("status", {}).get("conditions", []) or []:
                if cond.get("type") == "Ready" and cond.get("status") == "True":
                    ready += 1
        return ready

    def _start(self, state: ClusterState, name: str, argv: list[str]) -> None:
        log_path = self.logs / f"{name}.log"
        with open(log_path, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
            out.flush()
            # A session of its own: a Ctrl-C in the terminal that ran `up` does not reach the
            # cluster, and the processes outlive the `up` command.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.dir,
            )
        self._children.append(proc)
        start = None
        for _ in range(100):
            start = proc_start_time(proc.pid)
            if start is not None or proc.poll() is not None:
                break
            time.sleep(0.01)
        if start is None:
            raise ClusterError(f"{name} exited at once (code {proc.poll()}); see {log_path}")
        state.procs.append(ProcRecord(name, proc.pid, start, argv, str(log_path)))
        self._save_state(state)

    def _wait(self, state: ClusterState, what: str, deadline: float, check: Any) -> None:
        t = time.monotonic()
        while True:
            dead = [p for p in state.procs if not p.alive()]
            if dead:
                tail = _tail(Path(dead[0].log))
                raise ClusterError(f"{dead[0].name} exited while waiting for {what}; last log lines:\n{tail}")
            if check():
                log(f"{what} ready ({time.monotonic() - t:.1f}s)")
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out waiting for {what}; logs in {self.logs}")
            time.sleep(0.1)

    # --- argv ----------------------------------------------------------------------------

    def _bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _etcd_argv(self, ports: dict[str, int]) -> list[str]:
        client = f"http://127.0.0.1:{ports['etcd']}"
        peer = f"http://127.0.0.1:{ports['etcd-peer']}"
        return [
            self._bin("etcd"),
            "--name=local",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=local={peer}",
            "--initial-cluster-state=new",
            # Test data is thrown away; fsync would make every write wait on the disk.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_argv(self, ports: dict[str, int]) -> list[str]:
        pki = self.pki
        return [
            self._bin("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}",
            f"--cert-dir={self.dir / 'apiserver'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer=https://127.0.0.1:{ports['apiserver']}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            # See the module docstring for both.
            "--disable-admission-plugins=ServiceAccount",
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=1",
        ]

    def _component_common(self, ports: dict[str, int], port_name: str) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports[port_name]}",
            f"--cert-dir={self.dir / port_name}",
            "--leader-elect=false",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            f"--kube-api-qps={self.kube_api_qps}",
            f"--kube-api-burst={self.kube_api_burst}",
            "--v=1",
        ]

    def _controller_manager_argv(self, ports: dict[str, int]) -> list[str]:
        return [
            self._bin("kube-controller-manager"),
            *self._component_common(ports, "controller-manager"),
            # "*" is every default controller: garbagecollector, namespace, serviceaccount, ...;
            # serviceaccount-token runs because a private key is given.
            "--controllers=*",
            f"--root-ca-file={self.pki / 'ca.crt'}",
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            "--use-service-account-credentials=false",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        ]

    def _scheduler_argv(self, ports: dict[str, int]) -> list[str]:
        return [self._bin("kube-scheduler"), *self._component_common(ports, "scheduler")]

    def _kwok_argv(self, ports: dict[str, int]) -> list[str]:
        key, value = FAKE_NODE_ANNOTATION
        stages = self.bin_dir / "kwok-stages.yaml"
        if not stages.is_file():
            raise ClusterError(f"{stages} is missing; run {BUILD_SCRIPT}")
        if not KWOK_EXTRA_STAGES.is_file():
            raise ClusterError(f"{KWOK_EXTRA_STAGES} is missing from the checkout")
        return [
            self._bin("kwok"),
            f"--kubeconfig={self.kubeconfig}",
            # kwok on its own has no built-in stages (only kwokctl adds defaults); the build
            # script collects kwokctl's default ones (node init, lease heartbeat, pod
            # ready/complete/delete) into this file. kwok loads every --config it is given.
            f"--config={stages}",
            # Ours, read from the checkout so that editing them needs no rebuild: in-place
            # image updates and readiness after a node comes back, as a kubelet reports them.
            f"--config={KWOK_EXTRA_STAGES}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={key}={value}",
            f"--cidr={POD_CIDR}",
            "--node-ip=127.0.0.1",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{ports['kwok']}",
            "--v=INFO",
        ]

    # --- restart one component (chaos tests) ---------------------------------------------

    def stop_component(self, name: str, *, timeout: float = 15) -> ProcRecord:
        """Stops one running component (SIGTERM, SIGKILL after `timeout`); returns its record,
        which `start_component` takes to start it again with the same command line and ports."""
        state = self.load_state()
        if state is None:
            raise ClusterError(f"no cluster state in {self.dir}")
        record = next((r for r in state.procs if r.name == name), None)
        if record is None:
            raise ClusterError(f"no {name} in {self.dir}")
        left = _terminate([record], timeout, self._children)
        if left:
            raise ClusterError(f"could not stop {name}")
        state.procs.remove(record)
        self._save_state(state)
        return record

    def start_component(self, record: ProcRecord, *, timeout: float = 90) -> None:
        """Starts a component stopped by `stop_component` and waits until it serves again."""
        state = self.load_state()
        if state is None:
            raise ClusterError(f"no cluster state in {self.dir}")
        self._start(state, record.name, record.argv)
        ports = state.ports
        checks = {
            "etcd": lambda: _http_ok(f"http://127.0.0.1:{ports['etcd']}/health"),
            "kube-apiserver": lambda: _api_ok(Api(self.server, self.pki), "/readyz"),
        }
        check = checks.get(record.name)
        if check is not None:
            self._wait(state, record.name, time.monotonic() + timeout, check)

    def restart_component(self, name: str, *, down_seconds: float = 0.0) -> None:
        record = self.stop_component(name)
        time.sleep(down_seconds)
        self.start_component(record)

    # --- down ----------------------------------------------------------------------------

    def down(self, *, timeout: float = 15, quiet: bool = False) -> None:
        """Stop every process this state directory records (only those: each is matched by PID
        and start time), newest first. Logs, certs and kubeconfig stay for inspection."""
        state = self.load_state()
        if state is None:
            if not quiet:
                log(f"no cluster state in {self.dir}; nothing to stop")
            return
        order = {name: i for i, name in enumerate(COMPONENTS)}
        records = sorted(state.procs, key=lambda r: order.get(r.name, -1), reverse=True)
        # kwok, scheduler and controller-manager first, so none of them logs a storm of errors
        # about a vanished apiserver; then the apiserver; etcd last.
        clients = [r for r in records if r.name not in ("kube-apiserver", "etcd")]
        kids = self._children
        left = _terminate(clients, timeout, kids)
        left += _terminate([r for r in records if r.name == "kube-apiserver"], timeout, kids)
        left += _terminate([r for r in records if r.name == "etcd"], timeout, kids)
        # A child started but not yet recorded (interrupted inside _start) is ours all the same.
        for child in kids:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(5)
        self._children = []
        if left:
            raise ClusterError(f"could not stop: {', '.join(left)}")
        state.procs = []
        self._save_state(state)
        if not quiet:
            log(f"stopped {len(records)} processes; logs kept in {self.logs}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


@contextlib.contextmanager
def running_cluster(state_dir: Path | str, **kwargs: Any) -> Iterator[LocalCluster]:
    cluster = LocalCluster(state_dir, **kwargs)
    cluster.up(reuse=False)
    try:
        yield cluster
    finally:
        cluster.down()


# --------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down", "env", "status"))
    parser.add_argument(
        "--dir", default=str(DEFAULT_STATE_DIR), help="state directory (default: %(default)s)"
    )
    parser.add_argument("--nodes", type=int, default=10, help="fake nodes to create (default: %(default)s)")
    parser.add_argument("--bin-dir", help="use binaries from here instead of hack/build-controlplane.sh")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for readiness")
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.dir, nodes=args.nodes, bin_dir=args.bin_dir)
    try:
        if args.command == "up":
            cluster.up(timeout=args.timeout)
            _print_env(cluster)
        elif args.command == "down":
            cluster.down()
        elif args.command == "env":
            if cluster.load_state() is None:
                log(f"no cluster in {cluster.dir}; run: {sys.argv[0]} up --dir {cluster.dir}")
                return 1
            _print_env(cluster)
        elif args.command == "status":
            state = cluster.load_state()
            if state is None:
                print("no cluster")
                return 1
            for p in state.procs:
                print(f"{p.name:24} pid {p.pid:<8} {'running' if p.alive() else 'DEAD'}  log {p.log}")
            print(f"api: {'ready' if cluster.healthy() else 'not ready'} {cluster.server}")
            return 0 if cluster.running() else 1
    except ClusterError as e:
        log(f"error: {e}")
        return 1
    return 0


def _print_env(cluster: LocalCluster) -> None:
    env = cluster.env()
    print(f"export KUBECONFIG={env['KUBECONFIG']}")
    print(f"export PATH={cluster.bin_dir}:$PATH")


if __name__ == "__main__":
    sys.exit(main())
