"""API client adapter over kubernetes-asyncio.

Objects travel as plain dicts decoded with orjson: the generated models are slow and the
controller never needs them. The concrete client (`ApiClient`) is below the protocol; tests use
`controller.runtime.fake.FakeClient`, which implements the same protocol in memory.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import gc
import ipaddress
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog

from controller.runtime import metrics
from controller.runtime.errors import (
    AlreadyExists,
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    MethodNotAllowed,
    NotFound,
    ServerError,
    StatusCause,
    TooManyRequests,
    Unauthorized,
)
from controller.runtime.kubeconfig import ClientConfig, ConfigError, load_config
from controller.runtime.listbody import split_list
from controller.runtime.ratelimit import TokenBucket
from controller.runtime.resources import Resource

Obj = dict[str, Any]
PatchType = Literal["merge", "json", "strategic", "apply"]
PropagationPolicy = Literal["Background", "Foreground", "Orphan"]


class KubeClient(Protocol):
    """What the runtime and the controllers may ask of the API server. Every method raises a
    subclass of `controller.runtime.errors.ApiError` on failure."""

    async def get(self, resource: Resource, namespace: str | None, name: str) -> Obj: ...

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
        """One page of a list: {"metadata": {"resourceVersion", "continue"}, "items": [...]}."""
        ...

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
        """Watch events {"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": {...}}.
        Ends normally when the server closes the stream; an ERROR event with code 410 raises Gone."""
        ...

    async def create(
        self, resource: Resource, namespace: str | None, body: Obj, *, dry_run: bool = False
    ) -> Obj:
        """POST; with dry_run the server validates and admits the object (dryRun=All) and
        returns it as it would be stored, without storing it."""
        ...

    async def replace(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        body: Obj,
        *,
        subresource: str | None = None,
    ) -> Obj:
        """PUT; with subresource="status" writes the status subresource."""
        ...

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
    ) -> Obj: ...

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
    ) -> None: ...

    async def api_resources(self, group_version: str) -> set[str] | None:
        """API discovery: the resources (plurals) the server serves in `group_version` ("v1",
        "apps/v1"), None when it does not serve that group-version at all."""
        ...

    async def close(self) -> None: ...


def object_key(obj: Mapping[str, Any]) -> str:
    """The cache/work-queue key of an object: "namespace/name", or "name" when cluster-scoped."""
    meta = obj["metadata"]
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else str(meta["name"])


def split_key(key: str) -> tuple[str | None, str]:
    namespace, sep, name = key.partition("/")
    return (namespace, name) if sep else (None, namespace)


# --- errors ---------------------------------------------------------------------------------------

_ERRORS_BY_CODE: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    410: Gone,
    422: Invalid,
    429: TooManyRequests,
}


def api_error_from_status(
    status: Mapping[str, Any], code: int | None = None, *, retry_after_seconds: float | None = None
) -> ApiError:
    """The typed error for a metav1.Status (a response body, or the object of a watch ERROR event).
    `code` is the HTTP status when known; otherwise Status.code is used."""
    if code is None or code == 200:
        raw_code = status.get("code")
        code = raw_code if isinstance(raw_code, int) else 500
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or "")
    details = status.get("details")
    causes: builtins.list[StatusCause] = []
    if isinstance(details, Mapping):
        for cause in details.get("causes") or ():
            if isinstance(cause, Mapping):
                causes.append(
                    StatusCause(
                        reason=str(cause.get("reason") or ""),
                        message=str(cause.get("message") or ""),
                        field=str(cause.get("field") or ""),
                    )
                )
        if retry_after_seconds is None and isinstance(details.get("retryAfterSeconds"), int | float):
            retry_after_seconds = float(details["retryAfterSeconds"])
    cls: type[ApiError]
    if code == 409:
        cls = AlreadyExists if reason == "AlreadyExists" else Conflict
    elif code >= 500:
        cls = ServerError
    else:
        cls = _ERRORS_BY_CODE.get(code, ApiError)
    return cls(
        code=code,
        reason=reason,
        message=message,
        causes=causes,
        retry_after_seconds=retry_after_seconds,
        body=dict(status),
    )


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date; the API server sends seconds


def error_from_response(code: int, body: bytes, retry_after: str | None = None) -> ApiError:
    """The typed error for a non-2xx response; bodies that are not a Status keep their text."""
    retry_after_seconds = _parse_retry_after(retry_after)
    try:
        decoded = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        decoded = None
    if isinstance(decoded, dict) and decoded.get("kind") == "Status":
        return api_error_from_status(decoded, code, retry_after_seconds=retry_after_seconds)
    text = body[:2000].decode("utf-8", "replace").strip()
    return api_error_from_status(
        {"code": code, "reason": _REASON_BY_CODE.get(code, ""), "message": text},
        code,
        retry_after_seconds=retry_after_seconds,
    )


_REASON_BY_CODE = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def is_expired(err: BaseException) -> bool:
    """The watch/list resourceVersion is too old (client-go's isExpiredError): relist."""
    if isinstance(err, Gone):
        return True
    if isinstance(err, ApiError):
        if err.reason in ("Expired", "Gone"):
            return True
        text = err.message.lower()
        return "too old resource version" in text or ("resourceversion" in text and "expired" in text)
    return False


def _transport_error(err: BaseException, what: str) -> ServerError:
    reason = "Timeout" if isinstance(err, TimeoutError) else "TransportError"
    detail = str(err) or type(err).__name__
    return ServerError(code=0, reason=reason, message=f"{what}: {detail}")


def _set_kind(item: Obj, resource: Resource) -> None:
    if "kind" not in item:
        item["apiVersion"] = resource.api_version
        item["kind"] = resource.kind


def _kinded_items(items: Iterator[Obj], resource: Resource, path: str) -> Iterator[Obj]:
    try:
        for item in items:
            _set_kind(item, resource)
            yield item
            del item  # not held while the consumer asks for the next one
    except orjson.JSONDecodeError as err:
        raise ServerError(code=0, reason="BadResponse", message=f"GET {path}: {err}") from err


# --- pagination helper ----------------------------------------------------------------------------


@dataclass(slots=True)
class Page:
    # A list, or an iterator that decodes the items as they are taken (ApiClient.list_lazily).
    items: Iterable[Obj]
    # The list's resourceVersion so far (the one of the last page is the list's).
    resource_version: str
    # The continue token expired half-way and this page is a complete, unpaginated list:
    # forget the items of the pages before it.
    restart: bool = False


async def list_pages(
    client: KubeClient,
    resource: Resource,
    namespace: str | None = None,
    *,
    label_selector: str | None = None,
    field_selector: str | None = None,
    page_size: int = 500,
) -> AsyncIterator[Page]:
    """The pages of a list, following `continue` (client-go's ListPager, as an async iterator).
    If the continue token expires half-way (410), the last page is one unpaginated list of
    everything, with `restart` set, as client-go's pager falls back to a full list.

    No reference to a page is kept once the consumer asks for the next one, so an informer's
    relist holds at most one page of raw items at a time (as long as it drops them too). With a
    client that has `list_lazily` (ApiClient), a page's items are an iterator that decodes them
    one at a time from the page's body, to be consumed before the next page is asked for."""
    continue_token: str | None = None
    resource_version = ""
    list_lazily = getattr(client, "list_lazily", None)
    while True:
        items: Iterable[Obj] | None = None
        try:
            if list_lazily is not None:
                body, items = await list_lazily(
                    resource,
                    namespace,
                    label_selector=label_selector,
                    field_selector=field_selector,
                    limit=page_size if page_size > 0 else None,
                    continue_token=continue_token,
                )
            else:
                body = await client.list(
                    resource,
                    namespace,
                    label_selector=label_selector,
                    field_selector=field_selector,
                    limit=page_size if page_size > 0 else None,
                    continue_token=continue_token,
                )
        except Gone:
            if continue_token is None:
                raise
            body = await client.list(
                resource, namespace, label_selector=label_selector, field_selector=field_selector
            )
            meta = body.get("metadata") or {}
            page = Page(list(body.get("items") or []), str(meta.get("resourceVersion") or ""), restart=True)
            del body, meta
            yield page
            return
        meta = body.get("metadata") or {}
        resource_version = str(meta.get("resourceVersion") or resource_version)
        continue_token = meta.get("continue") or None
        page = Page(body.get("items") or [] if items is None else items, resource_version)
        # Nothing of this page may be held here across the next request: body and meta go now,
        # the page as soon as the consumer asks for the next one.
        del body, meta, items
        yield page
        del page
        if not continue_token:
            return


async def list_all(
    client: KubeClient,
    resource: Resource,
    namespace: str | None = None,
    *,
    label_selector: str | None = None,
    field_selector: str | None = None,
    page_size: int = 500,
) -> tuple[builtins.list[Obj], str]:
    """Every item of a list (`list_pages`, gathered), and the list's resourceVersion."""
    items: builtins.list[Obj] = []
    resource_version = ""
    async for page in list_pages(
        client,
        resource,
        namespace,
        label_selector=label_selector,
        field_selector=field_selector,
        page_size=page_size,
    ):
        if page.restart:
            items = []
        items.extend(page.items)
        resource_version = page.resource_version
    return items, resource_version


# --- the real client ------------------------------------------------------------------------------

_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}

log = structlog.get_logger(__name__)

# A Retry-After longer than this is taken as a misbehaving server, not a schedule.
MAX_RETRY_AFTER_SECONDS = 60.0

# The API server's watch cache sends every watcher with bookmarks one about every minute, and
# one 2 s before the watch's own timeout (k8s.io/apiserver cacher: defaultBookmarkFrequency,
# nextBookmarkTime), so a healthy watch is never silent for longer than that. One silent for
# that long plus a margin is taken as dead (a load balancer that dropped the connection without
# a reset) and resumed from its last resourceVersion; client-go notices the same with HTTP/2
# pings (30 s idle + 15 s ping timeout). A false alarm costs one re-watch.
BOOKMARK_HEARTBEAT_SECONDS = 60.0
WATCH_SILENCE_MARGIN_SECONDS = 8.0


def watch_idle_timeout(timeout_seconds: int | None) -> float:
    """The longest a healthy watch with bookmarks stays silent, plus a margin."""
    longest = BOOKMARK_HEARTBEAT_SECONDS
    if timeout_seconds:
        longest = min(longest, max(0.0, timeout_seconds - 2.0))
    return longest + WATCH_SILENCE_MARGIN_SECONDS


# TCP keepalive, as Go's net.Dialer does it (probes after 30 s idle): a peer host that vanished
# is noticed by the kernel even on a connection the application is only reading from.
TCP_KEEPALIVE_IDLE_SECONDS = 30
TCP_KEEPALIVE_INTERVAL_SECONDS = 10
TCP_KEEPALIVE_PROBES = 3

_Query = builtins.list[tuple[str, str]]


def _keepalive_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; macOS has only TCP_KEEPALIVE (idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, TCP_KEEPALIVE_IDLE_SECONDS)
    if hasattr(socket, "TCP_KEEPINTVL"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, TCP_KEEPALIVE_INTERVAL_SECONDS)
    if hasattr(socket, "TCP_KEEPCNT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, TCP_KEEPALIVE_PROBES)
    return sock


def new_session(ssl_context: ssl.SSLContext | None, *, max_connections: int) -> aiohttp.ClientSession:
    """The aiohttp session an ApiClient owns: the configuration's TLS, TCP keepalive on every
    connection, and room for the watches (each pins an HTTP/1.1 connection for minutes)."""
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        ssl=ssl_context if ssl_context is not None else True,
        socket_factory=_keepalive_socket,
    )
    # read_bufsize: a watch event of a large object exceeds aiohttp's 64 KiB default buffer
    # (etcd accepts objects up to 1.5 MiB). No trust_env: it reads the proxy variables and
    # ~/.netrc again on every request, in a thread (a fifth of the CPU at 1,000 pods); the
    # ApiClient resolves the environment's proxy once instead (proxy_from_environment).
    return aiohttp.ClientSession(connector=connector, read_bufsize=2**21)


def proxy_from_environment(url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The proxy for `url` from HTTPS_PROXY / HTTP_PROXY / NO_PROXY (either case), as client-go's
    http.ProxyFromEnvironment picks it when the kubeconfig names none; None: connect directly."""
    env = os.environ if environ is None else environ
    parts = urlsplit(url)
    scheme = parts.scheme or "https"
    proxy = env.get(f"{scheme}_proxy") or env.get(f"{scheme.upper()}_PROXY")
    if not proxy:
        return None
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    if _bypasses_proxy(parts.hostname or "", parts.port, no_proxy):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _bypasses_proxy(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether NO_PROXY exempts `host` (Go's httpproxy rules: `*`, exact names, domain suffixes
    with or without a leading dot, IPs and CIDRs, optional :port); loopback never goes through
    a proxy."""
    host = host.lower().strip("[]")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if host == "localhost" or (address is not None and address.is_loopback):
        return True
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if address is not None:
            with contextlib.suppress(ValueError):
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and port is not None and entry_port != str(port):
            continue
        name = name.strip("[]")
        if name.startswith("*."):
            name = name[1:]
        # "y.com" covers y.com and its subdomains, ".y.com" only its subdomains.
        if name.startswith("."):
            if host.endswith(name):
                return True
        elif host == name or host.endswith("." + name):
            return True
    return False


class ApiClient:
    """KubeClient over HTTP, from a connection configuration (controller.runtime.kubeconfig:
    kubeconfig or in-cluster, credentials, TLS); the aiohttp session, requests and JSON decoding
    are ours (orjson, no models).

    Every request but watches passes the client-side token bucket and carries `request_timeout`.
    The only automatic retries are client-go's: a 429, or a 5xx with Retry-After (API Priority
    and Fairness rejected the request before doing anything), is retried after the seconds the
    server asks for, up to `max_retries` times. Every other error surfaces typed, and the work
    queue's backoff retries.
    """

    def __init__(
        self,
        configuration: ClientConfig,
        *,
        qps: float = 50,
        burst: int = 100,
        request_timeout: float = 30,
        user_agent: str = "stormservice-controller",
        max_connections: int = 100,
        max_retries: int = 10,
        max_retry_after: float = MAX_RETRY_AFTER_SECONDS,
        watch_idle_timeout: float | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.configuration = configuration
        # A client made by `with_own_rate_limit` borrows its parent's session: one connection
        # pool, one TLS context; the parent closes it.
        self._owns_session = session is None
        self._session = session or new_session(configuration.ssl_context, max_connections=max_connections)
        self._max_connections = max_connections
        self._base_url = configuration.host.rstrip("/")
        self.host = urlsplit(self._base_url).netloc or self._base_url
        self.limiter = TokenBucket(qps, burst)
        self.request_timeout = request_timeout
        self.max_retries = max_retries
        self.max_retry_after = max_retry_after
        self.watch_idle_timeout = watch_idle_timeout
        self.user_agent = user_agent
        self._extra: dict[str, Any] = {}
        if configuration.proxy:
            self._extra["proxy"] = configuration.proxy
        if configuration.tls_server_name:
            self._extra["server_hostname"] = configuration.tls_server_name
        if "proxy" not in self._extra and (env_proxy := proxy_from_environment(self._base_url)):
            self._extra["proxy"] = env_proxy

    # --- plumbing ------------------------------------------------------------------------------

    async def _headers(self, content_type: str | None = None) -> tuple[dict[str, str], Mapping[str, str]]:
        """The request's headers, and the credentials among them (to say which were refused)."""
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            credentials = await self.configuration.credentials.headers()
        except ConfigError as err:  # e.g. an exec plugin that fails: an ApiError, as promised
            raise ServerError(code=0, reason="CredentialsUnavailable", message=str(err)) from err
        headers.update(credentials)
        return headers, credentials

    async def _refresh_credentials(self, refused: Mapping[str, str]) -> bool:
        try:
            return await self.configuration.credentials.refresh(refused)
        except Exception as err:
            log.warning("cannot renew the API credentials", error=str(err))
            return False

    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: _Query | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        write: tuple[str, str] | None = None,
        raw: bool = False,
    ) -> Any:
        """The decoded response body; with `raw`, its bytes."""
        if write is not None:
            metrics.API_WRITES.labels(verb=write[0], resource=write[1]).inc()
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        url = self._base_url + path
        refreshed = False
        retries = 0
        while True:
            waited = await self.limiter.wait()
            metrics.REST_CLIENT_RATE_LIMITER_DURATION.labels(verb=method, host=self.host).observe(waited)
            headers, credentials = await self._headers(content_type if body is not None else None)
            code_label = "<error>"
            start = time.monotonic()
            try:
                async with self._session.request(
                    method,
                    url,
                    params=query or None,
                    data=body,
                    headers=headers,
                    timeout=timeout,
                    **self._extra,
                ) as resp:
                    data = await resp.read()
                    code_label = str(resp.status)
                    if 200 <= resp.status < 300:
                        if raw:
                            return data
                        return decode_json(data) if data else {}
                    if resp.status == 401 and not refreshed and await self._refresh_credentials(credentials):
                        refreshed = True
                        continue  # an exec/OIDC token expired: reload it and try once more
                    error = error_from_response(resp.status, data, resp.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                raise _transport_error(err, f"{method} {path}") from err
            except orjson.JSONDecodeError as err:
                raise ServerError(code=0, reason="BadResponse", message=f"{method} {path}: {err}") from err
            finally:
                metrics.REST_CLIENT_REQUESTS.labels(code=code_label, method=method, host=self.host).inc()
                metrics.REST_CLIENT_REQUEST_DURATION.labels(verb=method, host=self.host).observe(
                    time.monotonic() - start
                )
            delay = self._retry_delay(error)
            if delay is None or retries >= self.max_retries:
                raise error
            retries += 1
            metrics.REST_CLIENT_REQUEST_RETRIES.labels(code=code_label, verb=method, host=self.host).inc()
            log.debug(
                "retrying after the server's Retry-After",
                method=method,
                path=path,
                code=error.code,
                retry_after=delay,
                retry=retries,
            )
            await asyncio.sleep(delay)

    def _retry_delay(self, error: ApiError) -> float | None:
        """Seconds to wait before retrying, when the server asked for a retry (client-go's
        checkWait: 429 or 5xx, with a Retry-After header); None when the error is final."""
        if error.retry_after_seconds is None or not (error.code == 429 or error.code >= 500):
            return None
        return min(error.retry_after_seconds, self.max_retry_after)

    @staticmethod
    def _path(
        resource: Resource, namespace: str | None, name: str | None = None, subresource: str | None = None
    ) -> str:
        if resource.namespaced and name is not None and not namespace:
            raise ValueError(f"{resource} is namespaced: a namespace is required to address {name!r}")
        return resource.path(namespace if resource.namespaced else None, name, subresource)

    @staticmethod
    def _write_label(resource: Resource, subresource: str | None) -> str:
        return f"{resource.plural}/{subresource}" if subresource else resource.plural

    # --- KubeClient ----------------------------------------------------------------------------

    async def get(self, resource: Resource, namespace: str | None, name: str) -> Obj:
        obj: Obj = await self._request("GET", self._path(resource, namespace, name))
        return obj

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
        query = _list_query(label_selector, field_selector, limit, continue_token, resource_version)
        page: Obj = await self._request("GET", self._path(resource, namespace), query=query)
        items = page.get("items")
        if items is None:
            page["items"] = items = []
        # List items come without apiVersion/kind; cached objects should say what they are.
        for item in items:
            _set_kind(item, resource)
        return page

    async def list_lazily(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> tuple[Obj, Iterator[Obj]]:
        """`list`, as the page without its items and an iterator that decodes the items one at
        a time (controller/runtime/listbody.py), for list_pages: an informer slims each item
        before the next is decoded, and a page's decoded items never all exist at once."""
        query = _list_query(label_selector, field_selector, limit, continue_token, None)
        path = self._path(resource, namespace)
        body: bytes = await self._request("GET", path, query=query, raw=True)
        try:
            page, items = split_list(body, decode_json)
        except orjson.JSONDecodeError as err:
            raise ServerError(code=0, reason="BadResponse", message=f"GET {path}: {err}") from err
        return page, _kinded_items(items, resource, path)

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
        query: _Query = [("watch", "true")]
        if resource_version is not None:
            query.append(("resourceVersion", resource_version))
        if allow_bookmarks:
            query.append(("allowWatchBookmarks", "true"))
        if timeout_seconds is not None:
            query.append(("timeoutSeconds", str(int(timeout_seconds))))
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        # sock_read bounds the silence between two reads, not the stream: a watch with bookmarks
        # hears from a healthy server at least every minute (see watch_idle_timeout). Without
        # bookmarks, silence is normal: only the server's own timeout bounds it.
        if allow_bookmarks:
            idle: float | None = self.watch_idle_timeout or watch_idle_timeout(timeout_seconds)
        else:
            idle = (timeout_seconds + self.request_timeout) if timeout_seconds else None
        return self._watch(self._path(resource, namespace), query, idle)

    async def _watch(self, path: str, query: _Query, idle_timeout: float | None) -> AsyncIterator[Obj]:
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self.request_timeout,
            sock_connect=self.request_timeout,
            sock_read=idle_timeout,
        )
        url = self._base_url + path
        headers, _ = await self._headers()
        start = time.monotonic()
        try:
            resp = await self._session.request(
                "GET", url, params=query, headers=headers, timeout=timeout, **self._extra
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            metrics.REST_CLIENT_REQUESTS.labels(code="<error>", method="WATCH", host=self.host).inc()
            raise _transport_error(err, f"WATCH {path}") from err
        metrics.REST_CLIENT_REQUESTS.labels(code=str(resp.status), method="WATCH", host=self.host).inc()
        metrics.REST_CLIENT_REQUEST_DURATION.labels(verb="WATCH", host=self.host).observe(
            time.monotonic() - start
        )
        finished = False
        try:
            if resp.status != 200:
                data = await resp.read()
                raise error_from_response(resp.status, data, resp.headers.get("Retry-After"))
            # Lines are split here rather than with StreamReader.readline(), which has a line
            # length limit (aiohttp "Line is too long" on large objects).
            buf = bytearray()
            async for chunk in resp.content.iter_any():
                search_from = len(buf)
                buf += chunk
                if buf.find(b"\n", search_from) < 0:
                    continue
                lines = buf.split(b"\n")
                buf = lines.pop()
                for line in lines:
                    if line.strip():
                        yield _decode_event(line)
            if buf.strip():
                yield _decode_event(buf)
            finished = True
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise _transport_error(err, f"WATCH {path}") from err
        finally:
            if finished:
                resp.release()
            else:
                resp.close()

    async def create(
        self, resource: Resource, namespace: str | None, body: Obj, *, dry_run: bool = False
    ) -> Obj:
        ns = namespace or body.get("metadata", {}).get("namespace")
        obj: Obj = await self._request(
            "POST",
            self._path(resource, ns if resource.namespaced else None),
            query=[("dryRun", "All")] if dry_run else None,
            body=orjson.dumps(body),
            content_type="application/json",
            write=None if dry_run else ("create", resource.plural),
        )
        return obj

    async def replace(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        body: Obj,
        *,
        subresource: str | None = None,
    ) -> Obj:
        obj: Obj = await self._request(
            "PUT",
            self._path(resource, namespace, name, subresource),
            body=orjson.dumps(body),
            content_type="application/json",
            write=("update", self._write_label(resource, subresource)),
        )
        return obj

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
        try:
            content_type = _PATCH_CONTENT_TYPES[patch_type]
        except KeyError:
            raise ValueError(f"unknown patch type {patch_type!r}") from None
        query: _Query = []
        if patch_type == "apply":
            query.append(("fieldManager", field_manager or self.user_agent))
            if force:
                query.append(("force", "true"))
        elif field_manager:
            query.append(("fieldManager", field_manager))
        obj: Obj = await self._request(
            "PATCH",
            self._path(resource, namespace, name, subresource),
            query=query,
            body=orjson.dumps(patch),
            content_type=content_type,
            write=("patch", self._write_label(resource, subresource)),
        )
        return obj

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
        options: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        preconditions: dict[str, str] = {}
        if uid_precondition:
            preconditions["uid"] = uid_precondition
        if resource_version_precondition:
            preconditions["resourceVersion"] = resource_version_precondition
        if preconditions:
            options["preconditions"] = preconditions
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        await self._request(
            "DELETE",
            self._path(resource, namespace, name),
            body=orjson.dumps(options),
            content_type="application/json",
            write=("delete", resource.plural),
        )

    async def api_resources(self, group_version: str) -> set[str] | None:
        path = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
        try:
            body = await self._request("GET", path)
        except NotFound:
            return None
        return {
            str(r["name"])
            for r in body.get("resources") or ()
            if isinstance(r, dict) and "/" not in str(r.get("name", ""))
        }

    def with_own_rate_limit(self, *, qps: float, burst: int, user_agent: str) -> ApiClient:
        """A client on this one's connections and credentials with a token bucket of its own,
        as kube-controller-manager gives each controller its own clientset: one controller's
        burst of writes never waits behind another's. Closing it leaves the connections open."""
        return ApiClient(
            self.configuration,
            qps=qps,
            burst=burst,
            request_timeout=self.request_timeout,
            user_agent=user_agent,
            max_connections=self._max_connections,
            max_retries=self.max_retries,
            max_retry_after=self.max_retry_after,
            watch_idle_timeout=self.watch_idle_timeout,
            session=self._session,
        )

    async def close(self) -> None:
        if self._owns_session:
            await self._session.close()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _list_query(
    label_selector: str | None,
    field_selector: str | None,
    limit: int | None,
    continue_token: str | None,
    resource_version: str | None,
) -> _Query:
    query: _Query = []
    if label_selector:
        query.append(("labelSelector", label_selector))
    if field_selector:
        query.append(("fieldSelector", field_selector))
    if limit:
        query.append(("limit", str(limit)))
    if continue_token:
        query.append(("continue", continue_token))
    if resource_version is not None:
        query.append(("resourceVersion", resource_version))
    return query


# Bodies above this size are decoded with the cyclic garbage collector paused.
_GC_PAUSE_MIN_BYTES = 64 * 1024


def decode_json(data: bytes | bytearray) -> Any:
    """orjson.loads, with the cyclic GC paused for large bodies. Decoding a list page allocates
    hundreds of thousands of dicts; each allocation burst triggers collections that walk the
    whole cache, which made relists of 20k pods 4-5x slower (see `make bench`). Decoded JSON holds
    no reference cycles, so nothing is lost by collecting later."""
    if len(data) < _GC_PAUSE_MIN_BYTES or not gc.isenabled():
        return orjson.loads(data)
    gc.disable()
    try:
        return orjson.loads(data)
    finally:
        gc.enable()


def _decode_event(line: bytes | bytearray) -> Obj:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as err:
        raise ServerError(code=0, reason="BadResponse", message=f"undecodable watch event: {err}") from err
    if not isinstance(event, dict):
        raise ServerError(code=0, reason="BadResponse", message="watch event is not an object")
    if event.get("type") == "ERROR":
        status = event.get("object")
        raise api_error_from_status(status if isinstance(status, Mapping) else {"message": str(status)})
    return event


async def create_client(
    kubeconfig: str | None = None,
    *,
    context: str | None = None,
    qps: float = 50,
    burst: int = 100,
    request_timeout: float = 30,
    user_agent: str = "stormservice-controller",
) -> ApiClient:
    """An ApiClient from a kubeconfig file (or several joined with os.pathsep); with kubeconfig
    None, the in-cluster service account, falling back to $KUBECONFIG, then ~/.kube/config.
    Raises kubeconfig.ConfigError when there is no usable configuration."""
    configuration = await load_config(kubeconfig, context=context)
    return ApiClient(
        configuration,
        qps=qps,
        burst=burst,
        request_timeout=request_timeout,
        user_agent=user_agent,
    )
