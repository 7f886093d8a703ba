"""Where the API server is and how to authenticate to it: the in-cluster service account, or a
kubeconfig read as client-go's clientcmd reads it.

Our own loader, because kubernetes_asyncio's imports its whole generated client (~35 MB of RSS,
a third of an idle controller) for what is a few YAML lookups. It covers what clusters use:
  - in-cluster: $KUBERNETES_SERVICE_HOST/PORT, the service account's ca.crt, namespace and
    token, the token re-read every minute (the kubelet rotates it) and after a 401;
  - kubeconfig: $KUBECONFIG's files merged as kubectl merges them (the first file that names a
    cluster, user or context wins; the first current-context wins), relative paths relative to
    the file that holds them, server, certificate-authority(-data), insecure-skip-tls-verify,
    tls-server-name, an http(s) proxy-url, token / tokenFile, client-certificate(-data) and
    client-key(-data), username/password, and exec credential plugins
    (client.authentication.k8s.io/v1 and v1beta1; re-run when their credential expires or is
    refused).
A user this does not cover (auth-provider, impersonation, an older exec API version) is loaded
by kubernetes_asyncio's loader, imported only then, and a log line says so.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog

log = structlog.get_logger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# client-go's cached file token source re-reads the file once a minute.
TOKEN_FILE_REREAD_SECONDS = 60.0
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
IMPERSONATION_FIELDS = ("as", "as-uid", "as-groups", "as-user-extra")


class ConfigError(Exception):
    """The connection configuration is missing or invalid."""


class Credentials(Protocol):
    async def headers(self) -> Mapping[str, str]:
        """The authentication headers of the next request (cheap: called on every request)."""
        ...

    async def refresh(self, refused: Mapping[str, str]) -> bool:
        """The server answered 401 to a request sent with `refused`: renew what can be renewed.
        True when a retry may now succeed."""
        ...


@dataclass
class ClientConfig:
    host: str
    ssl_context: ssl.SSLContext | None = None  # None: plain http
    credentials: Credentials = field(default_factory=lambda: NoCredentials())
    tls_server_name: str | None = None
    proxy: str | None = None
    namespace: str | None = None  # the context's namespace, or the service account's


# --- credentials ----------------------------------------------------------------------------------


class NoCredentials:
    async def headers(self) -> Mapping[str, str]:
        return {}

    async def refresh(self, refused: Mapping[str, str]) -> bool:
        return False


class StaticCredentials:
    """A token or username/password written in the kubeconfig: nothing to renew."""

    def __init__(self, authorization: str) -> None:
        self._headers = {"Authorization": authorization}

    async def headers(self) -> Mapping[str, str]:
        return self._headers

    async def refresh(self, refused: Mapping[str, str]) -> bool:
        return False


def basic_authorization(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class TokenFileCredentials:
    """A bearer token read from a file, re-read every minute and after a 401, as client-go's
    cached file token source does: the kubelet rotates projected service account tokens in place.
    While the file cannot be read, the last token read (or `token`, the kubeconfig's own) is kept."""

    def __init__(
        self,
        path: str | Path,
        *,
        token: str | None = None,
        reread_seconds: float = TOKEN_FILE_REREAD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self._reread_seconds = reread_seconds
        self._clock = clock
        self._headers: Mapping[str, str] = {"Authorization": f"Bearer {token}"} if token else {}
        self._next_read = 0.0
        self._read(initial=token is None)

    def _read(self, *, initial: bool = False) -> None:
        self._next_read = self._clock() + self._reread_seconds
        try:
            token = self.path.read_text().strip()
            if not token:
                raise ConfigError(f"token file {self.path} is empty")
        except (OSError, UnicodeDecodeError, ConfigError) as err:
            if initial:
                raise ConfigError(f"cannot read token file {self.path}: {err}") from err
            log.warning(
                "cannot read the token file, keeping the last token", path=str(self.path), error=str(err)
            )
            return
        if self._headers.get("Authorization") != f"Bearer {token}":
            self._headers = {"Authorization": f"Bearer {token}"}

    async def headers(self) -> Mapping[str, str]:
        if self._clock() >= self._next_read:
            self._read()
        return self._headers

    async def refresh(self, refused: Mapping[str, str]) -> bool:
        self._read()
        return self._headers.get("Authorization") != refused.get("Authorization")


@dataclass(frozen=True)
class ExecConfig:
    """A user's `exec` stanza; `command` already resolved against the kubeconfig's directory
    when it names a path."""

    command: str
    api_version: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    interactive_mode: str = "IfAvailable"
    install_hint: str = ""
    cluster: Mapping[str, Any] | None = None  # spec.cluster of KUBERNETES_EXEC_INFO when provideClusterInfo


class ExecCredentials:
    """A credential plugin's token and/or client certificate, as client-go's exec authenticator
    gets them: the plugin runs on first use, again once its expirationTimestamp has passed, and
    again when the server refuses the credential it gave. It never gets a terminal (a controller
    has none): interactiveMode Always cannot work and is refused.

    A client certificate is loaded into the shared SSLContext, so that new connections present
    it; connections already open keep the one they were opened with."""

    def __init__(
        self,
        config: ExecConfig,
        ssl_context: ssl.SSLContext | None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if config.interactive_mode == "Always":
            raise ConfigError(f"exec plugin {config.command} needs a terminal (interactiveMode: Always)")
        self.config = config
        self._ssl_context = ssl_context
        self._now = now
        self._lock = asyncio.Lock()
        self._headers: Mapping[str, str] = {}
        self._ran = False
        self._expiry: datetime | None = None
        self._certificate: tuple[bytes, bytes] | None = None
        self.runs = 0

    def _fresh(self) -> bool:
        return self._ran and (self._expiry is None or self._now() < self._expiry)

    async def headers(self) -> Mapping[str, str]:
        if not self._fresh():
            async with self._lock:
                if not self._fresh():
                    await self._run()
        return self._headers

    async def refresh(self, refused: Mapping[str, str]) -> bool:
        async with self._lock:
            # Another request's 401 may have renewed it already.
            if self._headers is refused or not self._ran:
                await self._run()
        return True

    async def _run(self) -> None:
        config = self.config
        spec: dict[str, Any] = {"interactive": False}
        if config.cluster is not None:
            spec["cluster"] = dict(config.cluster)
        exec_info = {"apiVersion": config.api_version, "kind": "ExecCredential", "spec": spec}
        env = {**os.environ, **dict(config.env), "KUBERNETES_EXEC_INFO": orjson.dumps(exec_info).decode()}
        hint = f" ({config.install_hint.strip()})" if config.install_hint.strip() else ""
        try:
            proc = await asyncio.create_subprocess_exec(
                config.command,
                *config.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as err:
            raise ConfigError(f"exec plugin {config.command}: {err}{hint}") from err
        out, _ = await proc.communicate()
        self.runs += 1
        if proc.returncode != 0:
            raise ConfigError(f"exec plugin {config.command} exited with status {proc.returncode}")
        status = _exec_status(out, config)
        token = status.get("token") or ""
        cert, key = status.get("clientCertificateData") or "", status.get("clientKeyData") or ""
        if bool(cert) != bool(key):
            raise ConfigError(f"exec plugin {config.command} returned a client certificate or key, not both")
        if not token and not cert:
            raise ConfigError(
                f"exec plugin {config.command} returned neither a token nor a client certificate"
            )
        expiry = status.get("expirationTimestamp")
        self._expiry = (
            parse_time(expiry, f"exec plugin {config.command} expirationTimestamp") if expiry else None
        )
        if cert and self._ssl_context is not None:
            certificate = (str(cert).encode(), str(key).encode())
            if certificate != self._certificate:
                load_cert_chain_data(self._ssl_context, *certificate)
                self._certificate = certificate
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._ran = True


def _exec_status(out: bytes, config: ExecConfig) -> Mapping[str, Any]:
    try:
        credential = orjson.loads(out)
    except orjson.JSONDecodeError as err:
        raise ConfigError(f"exec plugin {config.command} did not print an ExecCredential: {err}") from err
    if not isinstance(credential, dict) or credential.get("kind") != "ExecCredential":
        raise ConfigError(f"exec plugin {config.command} did not print an ExecCredential")
    if credential.get("apiVersion") != config.api_version:
        raise ConfigError(
            f"exec plugin {config.command} is configured for {config.api_version}, "
            f"it returned {credential.get('apiVersion')!r}"
        )
    status = credential.get("status")
    if not isinstance(status, dict):
        raise ConfigError(f"exec plugin {config.command} returned an ExecCredential without status")
    return status


def parse_time(value: Any, what: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as err:
        raise ConfigError(f"{what}: not an RFC 3339 time: {value!r}") from err
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# --- TLS ----------------------------------------------------------------------------------------


def new_ssl_context(
    *, ca_file: str | None = None, ca_data: bytes | None = None, insecure: bool = False
) -> ssl.SSLContext:
    """The server's CA only when one is given (as client-go: no system roots then), else the
    system's roots; no verification at all with insecure-skip-tls-verify."""
    if insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        if ca_data is not None:
            return ssl.create_default_context(cadata=ca_data.decode("ascii"))
        return ssl.create_default_context(cafile=ca_file)
    except (ssl.SSLError, OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"cannot load the certificate authority {ca_file or '(data)'}: {err}") from err


def load_cert_chain_data(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """load_cert_chain reads files only: the PEM goes through a private temporary directory,
    removed as soon as OpenSSL has read it."""
    with tempfile.TemporaryDirectory(prefix="stormservice-tls-") as directory:
        paths = []
        for name, data in (("tls.crt", cert), ("tls.key", key)):
            path = os.path.join(directory, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            paths.append(path)
        try:
            context.load_cert_chain(paths[0], paths[1])
        except ssl.SSLError as err:
            raise ConfigError(f"invalid client certificate or key: {err}") from err


# --- in-cluster ---------------------------------------------------------------------------------


def join_host_port(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def load_incluster_config(
    environ: Mapping[str, str] | None = None,
    directory: Path = SERVICE_ACCOUNT_DIR,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> ClientConfig:
    """The pod's service account, as client-go's rest.InClusterConfig. ConfigError when not in a
    cluster (no service host/port, or no token)."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError("not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
    credentials = TokenFileCredentials(directory / "token", clock=clock)
    try:
        namespace: str | None = (directory / "namespace").read_text().strip() or None
    except OSError:
        namespace = None
    return ClientConfig(
        host="https://" + join_host_port(host, port),
        ssl_context=new_ssl_context(ca_file=str(directory / "ca.crt")),
        credentials=credentials,
        namespace=namespace,
    )


# --- kubeconfig ---------------------------------------------------------------------------------


@dataclass
class Kubeconfig:
    """$KUBECONFIG's files merged: each named entry with the directory of the file it came from."""

    paths: tuple[str, ...]
    current_context: str | None = None
    clusters: dict[str, tuple[Mapping[str, Any], Path]] = field(default_factory=dict)
    users: dict[str, tuple[Mapping[str, Any], Path]] = field(default_factory=dict)
    contexts: dict[str, Mapping[str, Any]] = field(default_factory=dict)


def kubeconfig_paths(kubeconfig: str | Sequence[str]) -> tuple[str, ...]:
    """A path, or several joined with os.pathsep as in $KUBECONFIG; duplicates once."""
    parts = kubeconfig.split(os.pathsep) if isinstance(kubeconfig, str) else list(kubeconfig)
    return tuple(dict.fromkeys(os.path.expanduser(p) for p in parts if p))


def read_kubeconfig(kubeconfig: str | Sequence[str]) -> Kubeconfig:
    """The merged kubeconfig. Missing files are skipped, as kubectl skips them in $KUBECONFIG;
    ConfigError when none exists or one cannot be parsed."""
    paths = kubeconfig_paths(kubeconfig)
    merged = Kubeconfig(paths=paths)
    found = False
    for path in paths:
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            continue
        except OSError as err:
            raise ConfigError(f"cannot read kubeconfig {path}: {err}") from err
        found = True
        document = _parse(text, path)
        if not isinstance(document, dict):
            raise ConfigError(f"kubeconfig {path} is not a mapping")
        origin = Path(path).resolve().parent
        merged.current_context = merged.current_context or document.get("current-context") or None
        for key, target in (("clusters", merged.clusters), ("users", merged.users)):
            inner = key[:-1]
            for entry in document.get(key) or ():
                if isinstance(entry, dict) and entry.get("name") is not None:
                    target.setdefault(str(entry["name"]), (entry.get(inner) or {}, origin))
        for entry in document.get("contexts") or ():
            if isinstance(entry, dict) and entry.get("name") is not None:
                merged.contexts.setdefault(str(entry["name"]), entry.get("context") or {})
    if not found:
        raise ConfigError(f"no kubeconfig at {os.pathsep.join(paths) or '(no path)'}")
    return merged


def _parse(text: str, path: str) -> Any:
    """A kubeconfig in JSON (as generated ones often are) is read without importing a YAML
    parser, which an in-cluster controller never needs otherwise (~1 MB of RSS)."""
    if text.lstrip().startswith("{"):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # YAML's flow style starts with "{" too
    import yaml

    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse kubeconfig {path}: {err}") from err


def _resolve(path: str, origin: Path) -> str:
    return str(origin / os.path.expanduser(path))  # an absolute path stays as it is


def _file_or_data(entry: Mapping[str, Any], key: str, origin: Path) -> tuple[str | None, bytes | None]:
    """A `key` file (resolved) or `key-data` (base64), data winning as in client-go."""
    data = entry.get(f"{key}-data")
    if data:
        try:
            return None, base64.b64decode(str(data), validate=False)
        except ValueError as err:
            raise ConfigError(f"{key}-data is not base64: {err}") from err
    path = entry.get(key)
    return (_resolve(str(path), origin), None) if path else (None, None)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err}") from err


def unsupported(user: Mapping[str, Any]) -> str | None:
    """What in a kubeconfig user this loader does not implement, if anything."""
    if user.get("auth-provider"):
        return f"auth-provider {(user.get('auth-provider') or {}).get('name', '')}".strip()
    for key in IMPERSONATION_FIELDS:
        if user.get(key):
            return f"impersonation ({key})"
    exec_ = user.get("exec")
    if exec_ and (exec_.get("apiVersion") not in EXEC_API_VERSIONS):
        return f"exec plugin apiVersion {exec_.get('apiVersion')}"
    return None


def select_context(kubeconfig: Kubeconfig, context: str | None) -> tuple[str, Mapping[str, Any]]:
    name = context or kubeconfig.current_context
    where = os.pathsep.join(kubeconfig.paths)
    if not name:
        raise ConfigError(f"kubeconfig {where} sets no current-context: pick one with --context")
    if name not in kubeconfig.contexts:
        raise ConfigError(f'context "{name}" does not exist in kubeconfig {where}')
    return name, kubeconfig.contexts[name]


def _exec_config(
    exec_: Mapping[str, Any], origin: Path, cluster_info: Mapping[str, Any] | None
) -> ExecConfig:
    command = str(exec_.get("command") or "")
    if not command:
        raise ConfigError("exec plugin without a command")
    if os.sep in command:  # a bare name is looked up in PATH, as client-go does
        command = _resolve(command, origin)
    api_version = str(exec_.get("apiVersion"))
    mode = exec_.get("interactiveMode")
    if not mode:
        if api_version.endswith("/v1"):
            raise ConfigError(f"exec plugin {command}: interactiveMode must be set for {api_version}")
        mode = "IfAvailable"
    return ExecConfig(
        command=command,
        api_version=api_version,
        args=tuple(str(a) for a in exec_.get("args") or ()),
        env=tuple(
            (str(e["name"]), str(e.get("value", ""))) for e in exec_.get("env") or () if isinstance(e, dict)
        ),
        interactive_mode=str(mode),
        install_hint=str(exec_.get("installHint") or ""),
        cluster=cluster_info if exec_.get("provideClusterInfo") else None,
    )


async def load_kubeconfig(kubeconfig: str | Sequence[str], context: str | None = None) -> ClientConfig:
    """The connection of `context` (default: current-context) in the merged kubeconfig."""
    merged = read_kubeconfig(kubeconfig)
    context_name, ctx = select_context(merged, context)
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    if not cluster_name or str(cluster_name) not in merged.clusters:
        raise ConfigError(f'context "{context_name}": cluster "{cluster_name or ""}" does not exist')
    cluster, cluster_origin = merged.clusters[str(cluster_name)]
    if user_name and str(user_name) not in merged.users:
        raise ConfigError(f'context "{context_name}": user "{user_name}" does not exist')
    user, user_origin = merged.users[str(user_name)] if user_name else ({}, cluster_origin)
    missing = unsupported(user)
    if missing:
        return await _fallback_config(merged, context_name, missing)

    server = str(cluster.get("server") or "").rstrip("/")
    if not server:
        raise ConfigError(f'cluster "{cluster_name}" has no server')
    if "://" not in server:
        server = "https://" + server
    proxy = cluster.get("proxy-url") or None
    if proxy and not str(proxy).startswith(("http://", "https://")):
        raise ConfigError(f'cluster "{cluster_name}": proxy-url {proxy} is not an http(s) proxy')
    ca_file, ca_data = _file_or_data(cluster, "certificate-authority", cluster_origin)
    insecure = bool(cluster.get("insecure-skip-tls-verify"))
    ssl_context = (
        new_ssl_context(ca_file=ca_file, ca_data=ca_data, insecure=insecure)
        if server.startswith("https://")
        else None
    )

    cert_file, cert_data = _file_or_data(user, "client-certificate", user_origin)
    key_file, key_data = _file_or_data(user, "client-key", user_origin)
    has_cert = bool(cert_file or cert_data)
    if has_cert != bool(key_file or key_data):
        raise ConfigError(f'user "{user_name}": client-certificate and client-key go together')
    if has_cert and ssl_context is not None:
        if cert_file and key_file:
            try:
                ssl_context.load_cert_chain(cert_file, key_file)
            except (ssl.SSLError, OSError) as err:
                raise ConfigError(
                    f"cannot load client certificate {cert_file} / key {key_file}: {err}"
                ) from err
        else:
            load_cert_chain_data(
                ssl_context,
                cert_data if cert_data is not None else _read(str(cert_file), "client certificate"),
                key_data if key_data is not None else _read(str(key_file), "client key"),
            )

    credentials: Credentials
    token, token_file = user.get("token") or None, user.get("tokenFile") or None
    if token_file:
        credentials = TokenFileCredentials(_resolve(str(token_file), user_origin), token=token)
    elif token:
        credentials = StaticCredentials(f"Bearer {token}")
    elif user.get("username") and user.get("password") is not None:
        credentials = StaticCredentials(basic_authorization(str(user["username"]), str(user["password"])))
    elif user.get("exec") and not has_cert:
        # client-go runs the plugin only when the user has no token, password or certificate.
        ca_bytes = (
            ca_data if ca_data is not None else (_read(ca_file, "certificate authority") if ca_file else None)
        )
        cluster_info = {
            "server": server,
            "tls-server-name": cluster.get("tls-server-name"),
            "insecure-skip-tls-verify": insecure or None,
            "certificate-authority-data": base64.b64encode(ca_bytes).decode() if ca_bytes else None,
            "proxy-url": proxy,
            "config": _exec_extension(cluster),
        }
        exec_config = _exec_config(
            user["exec"], user_origin, {k: v for k, v in cluster_info.items() if v is not None}
        )
        credentials = ExecCredentials(exec_config, ssl_context)
        await credentials.headers()  # a plugin that cannot run fails here, not on the first request
    else:
        credentials = NoCredentials()
    return ClientConfig(
        host=server,
        ssl_context=ssl_context,
        credentials=credentials,
        tls_server_name=cluster.get("tls-server-name") or None,
        proxy=proxy,
        namespace=ctx.get("namespace") or None,
    )


def _exec_extension(cluster: Mapping[str, Any]) -> Any:
    """The cluster's client.authentication.k8s.io/exec extension, passed to the plugin as
    spec.cluster.config."""
    for entry in cluster.get("extensions") or ():
        if isinstance(entry, dict) and entry.get("name") == "client.authentication.k8s.io/exec":
            return entry.get("extension")
    return None


# --- kubernetes_asyncio's loader, for what ours does not implement -------------------------------


class _FallbackCredentials:
    def __init__(self, configuration: Any, loader: Any) -> None:
        self._configuration = configuration
        self._loader = loader

    async def headers(self) -> Mapping[str, str]:
        auth = await self._configuration.auth_settings()
        bearer = auth.get("BearerToken")
        if bearer and bearer.get("value"):
            return {"Authorization": str(bearer["value"])}
        return {}

    async def refresh(self, refused: Mapping[str, str]) -> bool:
        try:
            await self._loader.load_and_set(self._configuration)
        except Exception:
            return False
        return True


async def _fallback_config(merged: Kubeconfig, context: str, missing: str) -> ClientConfig:
    log.info(
        "kubeconfig user needs what our loader does not implement: loading it with kubernetes_asyncio",
        unsupported=missing,
        context=context,
    )
    from kubernetes_asyncio.client.configuration import Configuration
    from kubernetes_asyncio.config import ConfigException, load_kube_config

    configuration = Configuration()
    try:
        # persist_config=False: never rewrite the user's kubeconfig on token refresh.
        loader = await load_kube_config(
            config_file=os.pathsep.join(merged.paths),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except ConfigException as err:
        raise ConfigError(str(err)) from err
    host = str(configuration.host).rstrip("/")
    ssl_context = None
    if host.startswith("https://"):
        ssl_context = new_ssl_context(
            ca_file=configuration.ssl_ca_cert or None, insecure=not configuration.verify_ssl
        )
        if configuration.cert_file:
            ssl_context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    return ClientConfig(
        host=host,
        ssl_context=ssl_context,
        credentials=_FallbackCredentials(configuration, loader),
        tls_server_name=getattr(configuration, "tls_server_name", None) or None,
        proxy=configuration.proxy or None,
        namespace=merged.contexts[context].get("namespace") or None,
    )


# --- the controller's rule ------------------------------------------------------------------------


def default_kubeconfig() -> str:
    """$KUBECONFIG (read at call time), else ~/.kube/config."""
    return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


async def load_config(kubeconfig: str | None = None, *, context: str | None = None) -> ClientConfig:
    """`kubeconfig` (one path or several joined with os.pathsep); without it, the in-cluster
    service account, else $KUBECONFIG, else ~/.kube/config."""
    if kubeconfig is None:
        try:
            return load_incluster_config()
        except ConfigError:
            kubeconfig = default_kubeconfig()
    return await load_kubeconfig(kubeconfig, context)
