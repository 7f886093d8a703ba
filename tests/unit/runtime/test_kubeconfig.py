"""controller.runtime.kubeconfig against a local TLS server that asks for a client certificate:
what a kubeconfig or the in-cluster service account says must be what reaches the server."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from controller.runtime.client import ApiClient, Obj
from controller.runtime.errors import ServerError
from controller.runtime.kubeconfig import (
    ClientConfig,
    ConfigError,
    ExecConfig,
    ExecCredentials,
    TokenFileCredentials,
    load_config,
    load_incluster_config,
    load_kubeconfig,
    read_kubeconfig,
)
from controller.runtime.resources import PODS

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CA, serving certificate for 127.0.0.1, and a client certificate (CN admin), made by the
    local control plane's own generator."""
    spec = importlib.util.spec_from_file_location("localcluster_pki", REPO_ROOT / "hack" / "localcluster.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["localcluster_pki"] = module
    spec.loader.exec_module(module)
    directory = tmp_path_factory.mktemp("pki")
    module.generate_pki(directory)
    return directory


@pytest.fixture
async def server(pki: Path) -> AsyncIterator[str]:
    """HTTPS; answers every request with the client certificate's CN and the Authorization
    header it received."""

    async def whoami(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        cn = None
        for rdn in (peer or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    cn = value
        return web.json_response({"cn": cn, "authorization": request.headers.get("Authorization")})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", whoami)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "apiserver.crt", pki / "apiserver.key")
    context.load_verify_locations(pki / "ca.crt")
    context.verify_mode = ssl.CERT_OPTIONAL
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server(ssl=context)
    try:
        yield str(test_server.make_url("")).rstrip("/")
    finally:
        await test_server.close()


async def whoami(config: ClientConfig) -> Obj:
    client = ApiClient(config, request_timeout=20)
    try:
        return await client.get(PODS, "ns", "p")
    finally:
        await client.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_config(
    path: Path,
    server: str,
    cluster: dict[str, Any],
    user: dict[str, Any],
    *,
    current_context: str | None = "ctx",
    namespace: str | None = None,
) -> Path:
    context: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": context}],
    }
    if current_context:
        doc["current-context"] = current_context
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


PLUGIN = """#!{python}
import json, os, sys
from datetime import datetime, timedelta, timezone
runs = os.environ["PLUGIN_RUNS"]
with open(runs, "a") as f:
    f.write(os.environ["KUBERNETES_EXEC_INFO"] + "\\n")
count = len(open(runs).read().splitlines())
status = {{}}
if os.environ.get("PLUGIN_TOKEN"):
    status["token"] = os.environ["PLUGIN_TOKEN"] + "-" + "-".join(sys.argv[1:]) + "-" + str(count)
if os.environ.get("PLUGIN_CERT"):
    status["clientCertificateData"] = open(os.environ["PLUGIN_CERT"]).read()
    status["clientKeyData"] = open(os.environ["PLUGIN_KEY"]).read()
if os.environ.get("PLUGIN_EXPIRES_IN"):
    expiry = datetime.now(timezone.utc) + timedelta(seconds=float(os.environ["PLUGIN_EXPIRES_IN"]))
    status["expirationTimestamp"] = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
print(json.dumps({{"apiVersion": os.environ.get("PLUGIN_API_VERSION", "client.authentication.k8s.io/v1"),
                  "kind": "ExecCredential", "status": status}}))
sys.exit(int(os.environ.get("PLUGIN_EXIT", "0")))
"""


def write_plugin(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PLUGIN.format(python=sys.executable))
    path.chmod(0o755)
    return path


def exec_user(command: str, runs: Path, *, args: tuple[str, ...] = ("a",), **env: str) -> dict[str, Any]:
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": command,
            "args": list(args),
            "env": [
                {"name": "PLUGIN_RUNS", "value": str(runs)},
                *({"name": k, "value": v} for k, v in env.items()),
            ],
            "interactiveMode": "Never",
            "provideClusterInfo": True,
        }
    }


def plugin_runs(runs: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in runs.read_text().splitlines()] if runs.exists() else []


# --- what reaches the server, by kubeconfig ---------------------------------------------------------


@dataclass
class Case:
    name: str
    # (tmp dir, pki dir) -> (cluster fields, user fields); the kubeconfig is tmp/kube/config
    stanzas: Callable[[Path, Path], tuple[dict[str, Any], dict[str, Any]]]
    cn: str | None
    authorization: str | None


def _relative_files(tmp: Path, pki: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    certs = tmp / "kube" / "certs"
    certs.mkdir(parents=True)
    for name in ("ca.crt", "admin.crt", "admin.key"):
        (certs / name).write_bytes((pki / name).read_bytes())
    (certs / "token").write_text("from-relative-file\n")
    return (
        {"certificate-authority": "certs/ca.crt"},
        {
            "client-certificate": "certs/admin.crt",
            "client-key": "certs/admin.key",
            "tokenFile": "certs/token",
        },
    )


CASES = [
    Case(
        "base64 -data fields",
        lambda tmp, pki: (
            {"certificate-authority-data": b64((pki / "ca.crt").read_bytes())},
            {
                "client-certificate-data": b64((pki / "admin.crt").read_bytes()),
                "client-key-data": b64((pki / "admin.key").read_bytes()),
            },
        ),
        cn="admin",
        authorization=None,
    ),
    Case(
        "paths relative to the kubeconfig's directory, not the working directory",
        _relative_files,
        cn="admin",
        authorization="Bearer from-relative-file",
    ),
    Case(
        "absolute paths",
        lambda tmp, pki: (
            {"certificate-authority": str(pki / "ca.crt")},
            {"client-certificate": str(pki / "admin.crt"), "client-key": str(pki / "admin.key")},
        ),
        cn="admin",
        authorization=None,
    ),
    Case(
        "token",
        lambda tmp, pki: ({"certificate-authority": str(pki / "ca.crt")}, {"token": "t0ken"}),
        cn=None,
        authorization="Bearer t0ken",
    ),
    Case(
        "tokenFile wins over token while it can be read (client-go)",
        lambda tmp, pki: (
            {"certificate-authority": str(pki / "ca.crt")},
            {"token": "inline", "tokenFile": str(_write(tmp / "tok", "in-file"))},
        ),
        cn=None,
        authorization="Bearer in-file",
    ),
    Case(
        "username and password",
        lambda tmp, pki: (
            {"certificate-authority": str(pki / "ca.crt")},
            {"username": "ann", "password": "pw"},
        ),
        cn=None,
        authorization="Basic " + b64(b"ann:pw"),
    ),
    Case(
        "insecure-skip-tls-verify: no CA needed",
        lambda tmp, pki: ({"insecure-skip-tls-verify": True}, {"token": "x"}),
        cn=None,
        authorization="Bearer x",
    ),
    Case(
        "tls-server-name: the name the serving certificate has, for an address it lacks",
        lambda tmp, pki: (
            {"certificate-authority": str(pki / "ca.crt"), "tls-server-name": "kubernetes"},
            {},
        ),
        cn=None,
        authorization=None,
    ),
    Case(
        "exec plugin token (relative command path)",
        lambda tmp, pki: (
            {"certificate-authority": str(pki / "ca.crt")},
            exec_user(
                str(Path("plugins") / write_plugin(tmp / "kube" / "plugins" / "cred").name),
                tmp / "runs",
                PLUGIN_TOKEN="tok",
            ),
        ),
        cn=None,
        authorization="Bearer tok-a-1",
    ),
    Case(
        "exec plugin client certificate",
        lambda tmp, pki: (
            {"certificate-authority": str(pki / "ca.crt")},
            exec_user(
                str(write_plugin(tmp / "cred")),
                tmp / "runs",
                PLUGIN_CERT=str(pki / "admin.crt"),
                PLUGIN_KEY=str(pki / "admin.key"),
            ),
        ),
        cn="admin",
        authorization=None,
    ),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_kubeconfig_reaches_the_server(
    case: Case, server: str, pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, user = case.stanzas(tmp_path, pki)
    kubeconfig = write_config(tmp_path / "kube" / "config", server, cluster, user)
    monkeypatch.chdir(tmp_path)  # relative paths must not depend on it
    config = await load_kubeconfig(str(kubeconfig))
    assert await whoami(config) == {"cn": case.cn, "authorization": case.authorization}


async def test_wrong_ca_is_refused(server: str, pki: Path, tmp_path: Path) -> None:
    """The CA given replaces the system's roots; a server it did not sign is not trusted."""
    other = tmp_path / "other-pki"
    spec_module = sys.modules["localcluster_pki"]
    spec_module.generate_pki(other)
    kubeconfig = write_config(
        tmp_path / "config", server, {"certificate-authority": str(other / "ca.crt")}, {}
    )
    config = await load_kubeconfig(str(kubeconfig))
    with pytest.raises(ServerError, match="CERTIFICATE_VERIFY_FAILED") as raised:
        await whoami(config)
    assert raised.value.reason == "TransportError"


# --- merging ----------------------------------------------------------------------------------------


async def test_kubeconfig_env_files_merge_first_wins(server: str, pki: Path, tmp_path: Path) -> None:
    """As kubectl merges $KUBECONFIG: a name defined in two files keeps the first file's entry,
    current-context is the first one set, entries combine across files, missing files are skipped."""
    first = {
        "clusters": [{"name": "shared", "cluster": {"server": server, "certificate-authority": "ca.crt"}}],
        "users": [{"name": "me", "user": {"token": "first"}}],
    }
    second = {
        "current-context": "mine",
        "clusters": [{"name": "shared", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "me", "user": {"token": "second"}}],
        "contexts": [{"name": "mine", "context": {"cluster": "shared", "user": "me", "namespace": "team"}}],
    }
    third = {"current-context": "ignored", "contexts": [{"name": "mine", "context": {"cluster": "nope"}}]}
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "ca.crt").write_bytes((pki / "ca.crt").read_bytes())
    paths = [tmp_path / "a" / "config", tmp_path / "missing", tmp_path / "b", tmp_path / "c"]
    paths[0].write_text(orjson.dumps(first).decode())
    paths[2].write_text(orjson.dumps(second).decode())
    paths[3].write_text(orjson.dumps(third).decode())
    joined = os.pathsep.join(str(p) for p in paths)

    merged = read_kubeconfig(joined)
    assert merged.current_context == "mine"
    config = await load_kubeconfig(joined)
    assert config.namespace == "team"
    assert await whoami(config) == {"cn": None, "authorization": "Bearer first"}


async def test_yaml_kubeconfig_and_explicit_context(server: str, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        f"""apiVersion: v1
kind: Config
current-context: other
clusters:
- name: local
  cluster:
    server: {server}/
    insecure-skip-tls-verify: true
users:
- name: me
  user:
    token: yaml-token
contexts:
- name: other
  context: {{cluster: local}}
- name: mine
  context: {{cluster: local, user: me, namespace: ns1}}
"""
    )
    config = await load_kubeconfig(str(kubeconfig), context="mine")
    assert (config.host, config.namespace) == (server, "ns1")
    # YAML's flow style looks like JSON at first sight.
    flow = tmp_path / "flow"
    flow.write_text(
        f"{{current-context: mine, clusters: [{{name: local, cluster: {{server: '{server}', "
        "insecure-skip-tls-verify: true}}], contexts: [{name: mine, context: {cluster: local}}]}"
    )
    assert (await load_kubeconfig(str(flow))).host == server
    assert (await whoami(config))["authorization"] == "Bearer yaml-token"
    assert (await whoami(await load_kubeconfig(str(kubeconfig))))["authorization"] is None


@pytest.mark.parametrize(
    ("doc", "context", "message"),
    [
        ({"contexts": [{"name": "x", "context": {"cluster": "c"}}]}, None, "sets no current-context"),
        ({"current-context": "x"}, None, 'context "x" does not exist'),
        (
            {"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "c"}}]},
            "y",
            '"y" does not',
        ),
        (
            {"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "c"}}]},
            None,
            'cluster "c"',
        ),
        (
            {
                "current-context": "x",
                "clusters": [{"name": "c", "cluster": {"server": "https://h"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            },
            None,
            'user "u" does not exist',
        ),
        (
            {
                "current-context": "x",
                "clusters": [{"name": "c", "cluster": {}}],
                "contexts": [{"name": "x", "context": {"cluster": "c"}}],
            },
            None,
            "has no server",
        ),
        (
            {
                "current-context": "x",
                "clusters": [
                    {"name": "c", "cluster": {"server": "https://h", "proxy-url": "socks5://p:1080"}}
                ],
                "contexts": [{"name": "x", "context": {"cluster": "c"}}],
            },
            None,
            "not an http",
        ),
        (
            {
                "current-context": "x",
                "clusters": [
                    {"name": "c", "cluster": {"server": "https://h", "insecure-skip-tls-verify": True}}
                ],
                "users": [{"name": "u", "user": {"client-certificate": "/nonexistent.crt"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            },
            None,
            "client-certificate and client-key go together",
        ),
        (
            {
                "current-context": "x",
                "clusters": [{"name": "c", "cluster": {"server": "https://h"}}],
                "users": [{"name": "u", "user": {"tokenFile": "no-such-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            },
            None,
            "cannot read token file",
        ),
    ],
    ids=[
        "no current-context",
        "current-context missing",
        "explicit context missing",
        "cluster missing",
        "user missing",
        "no server",
        "socks proxy",
        "certificate without key",
        "unreadable token file",
    ],
)
async def test_kubeconfig_errors_say_what_is_wrong(
    doc: dict[str, Any], context: str | None, message: str, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(orjson.dumps(doc).decode())
    with pytest.raises(ConfigError, match=message):
        await load_kubeconfig(str(kubeconfig), context)


async def test_no_kubeconfig_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no kubeconfig at"):
        await load_kubeconfig(os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))


async def test_load_config_without_cluster_or_path_reads_kubeconfig_env(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = write_config(
        tmp_path / "config", server, {"insecure-skip-tls-verify": True}, {"token": "env"}
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(tmp_path / "missing"), str(kubeconfig)]))
    config = await load_config()
    assert (await whoami(config))["authorization"] == "Bearer env"


# --- token files ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_token_file_is_reread_every_minute_and_after_a_401(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one\n")
    clock = Clock()
    credentials = TokenFileCredentials(token, clock=clock)
    assert await credentials.headers() == {"Authorization": "Bearer one"}

    token.write_text("two")
    clock.now += 59
    assert await credentials.headers() == {"Authorization": "Bearer one"}
    clock.now += 1
    assert await credentials.headers() == {"Authorization": "Bearer two"}

    # A 401 re-reads at once; a retry is worth it only when the token changed.
    refused = await credentials.headers()
    assert await credentials.refresh(refused) is False
    token.write_text("three")
    assert await credentials.refresh(refused) is True
    assert await credentials.headers() == {"Authorization": "Bearer three"}

    # Unreadable for a while (being rotated): the last token read stays.
    token.unlink()
    clock.now += 60
    assert await credentials.headers() == {"Authorization": "Bearer three"}


# --- exec plugins -----------------------------------------------------------------------------------


async def test_exec_plugin_gets_args_env_and_cluster_info(server: str, pki: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    plugin = write_plugin(tmp_path / "bin" / "kube-cred")
    cluster = {
        "certificate-authority": str(pki / "ca.crt"),
        "extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {"audience": "x"}}],
    }
    user = exec_user(str(plugin), runs, args=("p", "q"), PLUGIN_TOKEN="tok")
    config = await load_kubeconfig(str(write_config(tmp_path / "config", server, cluster, user)))
    assert await whoami(config) == {"cn": None, "authorization": "Bearer tok-p-q-1"}
    [info] = plugin_runs(runs)
    assert info["apiVersion"] == "client.authentication.k8s.io/v1"
    assert info["kind"] == "ExecCredential"
    assert info["spec"]["interactive"] is False
    assert info["spec"]["cluster"]["server"] == server
    assert info["spec"]["cluster"]["config"] == {"audience": "x"}
    assert (
        base64.b64decode(info["spec"]["cluster"]["certificate-authority-data"])
        == (pki / "ca.crt").read_bytes()
    )


async def test_exec_plugin_found_in_path(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_plugin(tmp_path / "bin" / "kube-cred-path")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    user = exec_user("kube-cred-path", tmp_path / "runs", PLUGIN_TOKEN="p")
    config = await load_kubeconfig(
        str(write_config(tmp_path / "k" / "config", server, {"insecure-skip-tls-verify": True}, user))
    )
    assert (await whoami(config))["authorization"] == "Bearer p-a-1"


@pytest.mark.parametrize(
    ("expires_in", "runs_after_three_requests"),
    [("-1", 4), ("3600", 1), ("", 1)],
    ids=["expired: re-run for each request", "valid for an hour: run once", "no expiry: run once"],
)
async def test_exec_plugin_reruns_when_its_credential_expires(
    expires_in: str, runs_after_three_requests: int, server: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    user = exec_user(
        str(write_plugin(tmp_path / "cred")), runs, PLUGIN_TOKEN="t", PLUGIN_EXPIRES_IN=expires_in
    )
    config = await load_kubeconfig(
        str(write_config(tmp_path / "config", server, {"insecure-skip-tls-verify": True}, user))
    )
    # The plugin runs once as the kubeconfig is loaded (a broken one fails there), then as needed.
    seen = [(await whoami(config))["authorization"] for _ in range(3)]
    assert len(plugin_runs(runs)) == runs_after_three_requests
    assert seen[-1] == f"Bearer t-a-{runs_after_three_requests}"


async def test_exec_plugin_reruns_after_a_401_once_for_concurrent_refusals(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    config = ExecConfig(
        command=str(write_plugin(tmp_path / "cred")),
        api_version="client.authentication.k8s.io/v1",
        env=(("PLUGIN_RUNS", str(runs)), ("PLUGIN_TOKEN", "t")),
    )
    credentials = ExecCredentials(config, None)
    refused = await credentials.headers()
    assert refused == {"Authorization": "Bearer t--1"}
    assert await credentials.refresh(refused) is True
    renewed = await credentials.headers()
    assert renewed == {"Authorization": "Bearer t--2"}
    # A second request refused with the old credential finds it renewed already.
    assert await credentials.refresh(refused) is True
    assert len(plugin_runs(runs)) == 2


@pytest.mark.parametrize(
    ("exec_overrides", "env", "message"),
    [
        ({"interactiveMode": None}, {}, "interactiveMode must be set"),
        ({"interactiveMode": "Always"}, {}, "needs a terminal"),
        ({}, {"PLUGIN_EXIT": "3"}, "exited with status 3"),
        ({}, {"PLUGIN_API_VERSION": "client.authentication.k8s.io/v1beta1"}, "configured for"),
        ({}, {}, "neither a token nor a client certificate"),
        ({"command": "/nonexistent/kube-cred", "installHint": "install kube-cred"}, {}, "install kube-cred"),
    ],
    ids=[
        "v1 without interactiveMode",
        "interactive",
        "plugin fails",
        "wrong apiVersion",
        "empty status",
        "missing",
    ],
)
async def test_exec_plugin_errors(
    exec_overrides: dict[str, Any], env: dict[str, str], message: str, tmp_path: Path
) -> None:
    user = exec_user(str(write_plugin(tmp_path / "cred")), tmp_path / "runs")
    user["exec"]["env"] += [{"name": k, "value": v} for k, v in env.items()]
    user["exec"].update(exec_overrides)
    user["exec"] = {k: v for k, v in user["exec"].items() if v is not None}
    kubeconfig = write_config(
        tmp_path / "config", "https://127.0.0.1:1", {"insecure-skip-tls-verify": True}, user
    )
    with pytest.raises(ConfigError, match=message):
        await load_kubeconfig(str(kubeconfig))


async def test_exec_plugin_v1beta1_defaults_interactive_mode(server: str, tmp_path: Path) -> None:
    user = exec_user(
        str(write_plugin(tmp_path / "cred")),
        tmp_path / "runs",
        PLUGIN_TOKEN="b",
        PLUGIN_API_VERSION="client.authentication.k8s.io/v1beta1",
    )
    user["exec"]["apiVersion"] = "client.authentication.k8s.io/v1beta1"
    del user["exec"]["interactiveMode"]
    config = await load_kubeconfig(
        str(write_config(tmp_path / "config", server, {"insecure-skip-tls-verify": True}, user))
    )
    assert (await whoami(config))["authorization"] == "Bearer b-a-1"


# --- in-cluster ------------------------------------------------------------------------------------


async def test_incluster_config_follows_token_rotation(server: str, pki: Path, tmp_path: Path) -> None:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "ca.crt").write_bytes((pki / "ca.crt").read_bytes())
    (sa / "token").write_text("sa-1")
    (sa / "namespace").write_text("team-ns")
    host, port = server.removeprefix("https://").rsplit(":", 1)
    clock = Clock()
    config = load_incluster_config(
        {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}, sa, clock=clock
    )
    assert (config.host, config.namespace) == (server, "team-ns")
    assert await whoami(config) == {"cn": None, "authorization": "Bearer sa-1"}

    (sa / "token").write_text("sa-2")  # the kubelet rotated it
    clock.now += 61
    assert await whoami(config) == {"cn": None, "authorization": "Bearer sa-2"}


@pytest.mark.parametrize(
    ("env", "files", "message"),
    [
        ({}, {"token": "t", "ca.crt": ""}, "not in a cluster"),
        (
            {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": ""},
            {"token": "t"},
            "not in a cluster",
        ),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}, {}, "token"),
    ],
    ids=["no service host", "empty port", "no token"],
)
def test_incluster_config_errors(
    env: dict[str, str], files: dict[str, str], message: str, tmp_path: Path
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_incluster_config(env, tmp_path)


def test_incluster_ipv6_host(pki: Path, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t")
    (tmp_path / "ca.crt").write_bytes((pki / "ca.crt").read_bytes())
    config = load_incluster_config(
        {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, tmp_path
    )
    assert config.host == "https://[fd00::1]:443"
    assert config.namespace is None


# --- what is imported ------------------------------------------------------------------------------


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )


def test_controller_and_kubeconfig_do_not_import_kubernetes_asyncio(tmp_path: Path) -> None:
    """kubernetes_asyncio costs ~33 MB of RSS at import: the controller must not pay it for a
    kubeconfig our loader reads; nor a YAML parser's ~1 MB for a kubeconfig in JSON."""
    kubeconfig = write_config(
        tmp_path / "config",
        "https://127.0.0.1:1",
        {"insecure-skip-tls-verify": True},
        {"token": "t"},
    )
    result = run_python(
        f"""
import asyncio, sys
import controller.__main__
from controller.runtime.client import create_client
async def main():
    client = await create_client({str(kubeconfig)!r})
    await client.close()
asyncio.run(main())
print(sorted(m for m in sys.modules if m.split(".")[0] in ("kubernetes_asyncio", "yaml")))
""",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_auth_provider_falls_back_to_kubernetes_asyncio_and_says_so(tmp_path: Path) -> None:
    def segment(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    expires = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
    id_token = f"{segment({'alg': 'none'})}.{segment({'exp': expires, 'sub': 'me'})}.sig"
    user = {
        "auth-provider": {
            "name": "oidc",
            "config": {"id-token": id_token, "client-id": "c", "idp-issuer-url": "https://issuer"},
        }
    }
    kubeconfig = write_config(
        tmp_path / "config", "https://127.0.0.1:1", {"insecure-skip-tls-verify": True}, user
    )
    result = run_python(
        f"""
import asyncio, sys
from controller.runtime.logging import configure_logging
from controller.runtime.kubeconfig import load_kubeconfig
configure_logging("info", "json")
async def main():
    config = await load_kubeconfig({str(kubeconfig)!r})
    print(dict(await config.credentials.headers()))
asyncio.run(main())
print("kubernetes_asyncio" in sys.modules)
""",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str({"Authorization": f"Bearer {id_token}"}), "True"]
    logged = [json.loads(line) for line in result.stderr.splitlines()]
    [fallback] = [entry for entry in logged if "unsupported" in entry]
    assert "kubernetes_asyncio" in fallback["event"]
    assert fallback["unsupported"] == "auth-provider oidc"
