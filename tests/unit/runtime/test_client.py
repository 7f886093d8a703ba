"""ApiClient against a local aiohttp server that answers like the API server (Status bodies,
chunked watch streams)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from controller.runtime import metrics
from controller.runtime.client import ApiClient, KubeClient, Obj, create_client
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
    TooManyRequests,
    Unauthorized,
)
from controller.runtime.informer import Informer
from controller.runtime.kubeconfig import ClientConfig, ConfigError, StaticCredentials
from controller.runtime.ratelimit import FakeClock, TokenBucket
from controller.runtime.resources import PODS, STORMSERVICES

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# An upper bound only (a loaded machine can be slow).
PATIENCE = 30


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeApiServer:
    """Routes (method, path) to handlers; records every request."""

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path, dict(request.query), dict(request.headers), body))
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return status_response(404, "NotFound", f"no route {request.method} {request.path}")
        return await handler(request)

    def on(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def reply(
        self, method: str, path: str, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        async def handler(request: web.Request) -> web.StreamResponse:
            raw = body if isinstance(body, bytes) else orjson.dumps(body)
            return web.Response(status=status, body=raw, headers=headers, content_type="application/json")

        self.on(method, path, handler)


def status_body(code: int, reason: str, message: str = "", **details: Any) -> Obj:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
    if details:
        body["details"] = details
    return body


def status_response(code: int, reason: str, message: str = "") -> web.Response:
    return web.Response(
        status=code, body=orjson.dumps(status_body(code, reason, message)), content_type="application/json"
    )


@pytest.fixture
async def server() -> AsyncIterator[tuple[FakeApiServer, TestServer]]:
    api = FakeApiServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api.dispatch)
    test_server = TestServer(app)
    await test_server.start_server()
    try:
        yield api, test_server
    finally:
        await test_server.close()


def base_url(test_server: TestServer) -> str:
    return str(test_server.make_url("")).rstrip("/")


@pytest.fixture
async def api(server: tuple[FakeApiServer, TestServer]) -> AsyncIterator[FakeApiServer]:
    yield server[0]


@pytest.fixture
async def client(server: tuple[FakeApiServer, TestServer]) -> AsyncIterator[ApiClient]:
    configuration = ClientConfig(host=base_url(server[1]), credentials=StaticCredentials("Bearer s3cret"))
    # Retry-After is honoured up to 5 ms here, so that retried answers keep the tests fast.
    api_client = ApiClient(configuration, qps=1000, burst=1000, request_timeout=2, max_retry_after=0.005)
    try:
        yield api_client
    finally:
        await api_client.close()


POD_PATH = "/api/v1/namespaces/ns/pods/p"


def test_implements_protocol() -> None:
    def check(client: KubeClient) -> None: ...

    check(ApiClient.__new__(ApiClient))


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected", "reason"),
    [
        (400, status_body(400, "BadRequest", "bad"), None, BadRequest, "BadRequest"),
        (401, status_body(401, "Unauthorized"), None, Unauthorized, "Unauthorized"),
        (403, status_body(403, "Forbidden", "no"), None, Forbidden, "Forbidden"),
        (404, status_body(404, "NotFound", 'pods "p" not found'), None, NotFound, "NotFound"),
        (405, status_body(405, "MethodNotAllowed"), None, MethodNotAllowed, "MethodNotAllowed"),
        (409, status_body(409, "AlreadyExists", "exists"), None, AlreadyExists, "AlreadyExists"),
        (409, status_body(409, "Conflict", "the object has been modified"), None, Conflict, "Conflict"),
        (410, status_body(410, "Expired", "too old resource version"), None, Gone, "Expired"),
        (415, status_body(415, "UnsupportedMediaType"), None, ApiError, "UnsupportedMediaType"),
        (429, status_body(429, "TooManyRequests"), {"Retry-After": "3"}, TooManyRequests, "TooManyRequests"),
        (500, status_body(500, "InternalError", "boom"), None, ServerError, "InternalError"),
        (503, status_body(503, "ServiceUnavailable"), None, ServerError, "ServiceUnavailable"),
        (502, b"<html>bad gateway</html>", None, ServerError, ""),
    ],
)
async def test_status_codes_map_to_typed_errors(
    api: FakeApiServer,
    client: ApiClient,
    status: int,
    body: Any,
    headers: dict[str, str] | None,
    expected: type[ApiError],
    reason: str,
) -> None:
    api.reply("GET", POD_PATH, status, body, headers)
    with pytest.raises(ApiError) as err:
        await client.get(PODS, "ns", "p")
    assert type(err.value) is expected
    assert err.value.code == status
    if reason:
        assert err.value.reason == reason
    if status == 429:
        assert err.value.retry_after_seconds == 3.0
        assert len(api.seen) == 1 + client.max_retries, "a 429 with Retry-After is retried"
    else:
        assert len(api.seen) == 1, "no retry without Retry-After"
    if status == 502:
        assert "bad gateway" in err.value.message


@pytest.mark.parametrize(
    ("status", "reason", "headers", "retried"),
    [
        (429, "TooManyRequests", {"Retry-After": "1"}, True),
        (503, "ServiceUnavailable", {"Retry-After": "1"}, True),
        (500, "InternalError", {"Retry-After": "0"}, True),
        (429, "TooManyRequests", None, False),  # client-go retries only when the server says when
        (503, "ServiceUnavailable", None, False),
        (409, "Conflict", {"Retry-After": "1"}, False),  # not a throttling answer
    ],
)
async def test_retry_after_is_honoured_then_succeeds(
    api: FakeApiServer,
    client: ApiClient,
    status: int,
    reason: str,
    headers: dict[str, str] | None,
    retried: bool,
) -> None:
    answers = [(status, status_body(status, reason, "busy")), (status, status_body(status, reason, "busy"))]

    async def handler(request: web.Request) -> web.StreamResponse:
        if answers:
            code, body = answers.pop(0)
            return web.Response(
                status=code, body=orjson.dumps(body), headers=headers, content_type="application/json"
            )
        return web.json_response({"metadata": {"name": "p"}})

    api.on("POST", "/api/v1/namespaces/ns/pods", handler)
    before = (
        metrics.REGISTRY.get_sample_value(
            "rest_client_request_retries_total", {"code": str(status), "verb": "POST", "host": client.host}
        )
        or 0.0
    )
    if retried:
        assert await client.create(PODS, "ns", {"metadata": {"name": "p"}}) == {"metadata": {"name": "p"}}
        assert len(api.seen) == 3
        after = metrics.REGISTRY.get_sample_value(
            "rest_client_request_retries_total", {"code": str(status), "verb": "POST", "host": client.host}
        )
        assert after == before + 2
    else:
        with pytest.raises(ApiError) as err:
            await client.create(PODS, "ns", {"metadata": {"name": "p"}})
        assert err.value.code == status
        assert len(api.seen) == 1


async def test_retry_after_waits_the_seconds_asked(server: tuple[FakeApiServer, TestServer]) -> None:
    api, test_server = server
    calls: list[float] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return web.Response(
                status=429,
                body=orjson.dumps(status_body(429, "TooManyRequests")),
                headers={"Retry-After": "1"},
                content_type="application/json",
            )
        return web.json_response({"ok": True})

    api.on("GET", POD_PATH, handler)
    api_client = ApiClient(ClientConfig(host=base_url(test_server)), request_timeout=5)
    try:
        assert await api_client.get(PODS, "ns", "p") == {"ok": True}
    finally:
        await api_client.close()
    assert calls[1] - calls[0] >= 0.95


async def test_invalid_carries_causes(api: FakeApiServer, client: ApiClient) -> None:
    causes = [
        {"reason": "FieldValueInvalid", "message": "must be >= 0", "field": "spec.replicas"},
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.template"},
    ]
    api.reply("POST", "/apis/orchestration.aibrix.ai/v1alpha1/namespaces/ns/stormservices", 422,
              status_body(422, "Invalid", "StormService is invalid", causes=causes, name="s"))  # fmt: skip
    with pytest.raises(Invalid) as err:
        await client.create(STORMSERVICES, "ns", {"metadata": {"name": "s"}})
    assert [(c.field, c.reason) for c in err.value.causes] == [
        ("spec.replicas", "FieldValueInvalid"),
        ("spec.template", "FieldValueRequired"),
    ]
    assert "spec.replicas: must be >= 0" in str(err.value)


async def test_transport_errors_are_server_error_code_0() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    api_client = ApiClient(ClientConfig(host=f"http://127.0.0.1:{port}"), request_timeout=2)
    try:
        with pytest.raises(ServerError) as err:
            await api_client.get(PODS, "ns", "p")
        assert err.value.code == 0
        with pytest.raises(ServerError) as err:
            await anext(aiter(api_client.watch(PODS, "ns")))
        assert err.value.code == 0
    finally:
        await api_client.close()


async def test_request_timeout(server: tuple[FakeApiServer, TestServer]) -> None:
    api, test_server = server

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response(text="{}")

    api.on("GET", POD_PATH, slow)
    api_client = ApiClient(ClientConfig(host=base_url(test_server)), request_timeout=0.1)
    try:
        with pytest.raises(ServerError) as err:
            await api_client.get(PODS, "ns", "p")
        assert (err.value.code, err.value.reason) == (0, "Timeout")
    finally:
        await api_client.close()


# --- request shapes ---------------------------------------------------------------------------------


async def test_get_sends_auth_and_user_agent(api: FakeApiServer, client: ApiClient) -> None:
    api.reply("GET", POD_PATH, 200, {"metadata": {"name": "p"}})
    assert await client.get(PODS, "ns", "p") == {"metadata": {"name": "p"}}
    seen = api.seen[-1]
    assert seen.headers["Authorization"] == "Bearer s3cret"
    assert seen.headers["User-Agent"] == "stormservice-controller"
    with pytest.raises(ValueError):
        await client.get(PODS, None, "p")  # namespaced resources need a namespace


async def test_list_query_and_item_kinds(api: FakeApiServer, client: ApiClient) -> None:
    api.reply("GET", "/api/v1/namespaces/ns/pods", 200,
              {"metadata": {"resourceVersion": "7", "continue": "c2"}, "items": [{"metadata": {"name": "p"}}]})  # fmt: skip
    page = await client.list(
        PODS,
        "ns",
        label_selector="a in (x,y),!b",
        field_selector="status.phase=Running",
        limit=10,
        continue_token="c1",
    )
    assert api.seen[-1].query == {
        "labelSelector": "a in (x,y),!b",
        "fieldSelector": "status.phase=Running",
        "limit": "10",
        "continue": "c1",
    }
    assert page["metadata"]["continue"] == "c2"
    assert page["items"] == [{"metadata": {"name": "p"}, "apiVersion": "v1", "kind": "Pod"}]
    api.reply("GET", "/api/v1/pods", 200, {"metadata": {"resourceVersion": "8"}, "items": None})
    assert (await client.list(PODS))["items"] == []  # all namespaces; null items normalised


async def test_list_lazily_decodes_the_items_as_they_are_taken(api: FakeApiServer, client: ApiClient) -> None:
    items = [{"metadata": {"name": n}} for n in "ab"]
    body = orjson.dumps(
        {"kind": "PodList", "metadata": {"resourceVersion": "7", "continue": "c2"}, "items": items}
    )
    api.reply("GET", "/api/v1/namespaces/ns/pods", 200, body)
    page, lazy = await client.list_lazily(PODS, "ns", label_selector="a=b", limit=2, continue_token="c1")
    assert api.seen[-1].query == {"labelSelector": "a=b", "limit": "2", "continue": "c1"}
    assert page == {"kind": "PodList", "metadata": {"resourceVersion": "7", "continue": "c2"}, "items": []}
    assert list(lazy) == [{**i, "apiVersion": "v1", "kind": "Pod"} for i in items]

    # The second item is decoded when it is taken: its error comes then, as an API error.
    api.reply("GET", "/api/v1/namespaces/ns/pods", 200, body.replace(b'"name":"b"', b'"name":b"'))
    _, lazy = await client.list_lazily(PODS, "ns")
    assert next(lazy)["metadata"] == {"name": "a"}
    with pytest.raises(ServerError) as err:
        next(lazy)
    assert err.value.reason == "BadResponse"

    api.reply("GET", "/api/v1/namespaces/ns/pods", 200, b"<html>")
    with pytest.raises(ServerError) as err:
        await client.list_lazily(PODS, "ns")
    assert err.value.reason == "BadResponse"


async def test_list_all_follows_continue_and_falls_back_on_410(api: FakeApiServer, client: ApiClient) -> None:
    pages = {
        None: {
            "metadata": {"resourceVersion": "5", "continue": "t1"},
            "items": [{"metadata": {"name": "a"}}],
        },
        "t1": {
            "metadata": {"resourceVersion": "5", "continue": "t2"},
            "items": [{"metadata": {"name": "b"}}],
        },
        "t2": {"metadata": {"resourceVersion": "5"}, "items": [{"metadata": {"name": "c"}}]},
    }
    expire_t2 = False

    async def handler(request: web.Request) -> web.StreamResponse:
        token = request.query.get("continue")
        if token == "t2" and expire_t2:
            return status_response(410, "Expired", "The provided continue parameter is too old")
        if "limit" not in request.query:
            full = {
                "metadata": {"resourceVersion": "9"},
                "items": [{"metadata": {"name": n}} for n in "abcd"],
            }
            return web.json_response(full)
        return web.json_response(pages[token])

    api.on("GET", "/api/v1/namespaces/ns/pods", handler)
    items, rv = await client.list_all(PODS, "ns", page_size=1)
    assert ([i["metadata"]["name"] for i in items], rv) == (["a", "b", "c"], "5")
    assert [s.query.get("limit") for s in api.seen] == ["1", "1", "1"]
    expire_t2 = True
    items, rv = await client.list_all(PODS, "ns", page_size=1)
    assert ([i["metadata"]["name"] for i in items], rv) == (["a", "b", "c", "d"], "9")


async def test_writes_paths_bodies_and_write_metric(api: FakeApiServer, client: ApiClient) -> None:
    base = "/apis/orchestration.aibrix.ai/v1alpha1/namespaces/ns/stormservices"
    api.reply("POST", base, 201, {"metadata": {"name": "s"}})
    api.reply("PUT", f"{base}/s", 200, {"metadata": {"name": "s"}})
    api.reply("PUT", f"{base}/s/status", 200, {"metadata": {"name": "s"}})
    api.reply("DELETE", f"{base}/s", 200, status_body(200, "", "") | {"status": "Success"})

    def writes(verb: str, resource: str) -> float:
        return (
            metrics.sample_value("stormservice_api_writes_total", {"verb": verb, "resource": resource}) or 0.0
        )

    before = (
        writes("create", "stormservices"),
        writes("update", "stormservices/status"),
        writes("delete", "stormservices"),
    )
    await client.create(STORMSERVICES, "ns", {"metadata": {"name": "s"}, "spec": {"replicas": 1}})
    assert orjson.loads(api.seen[-1].body) == {"metadata": {"name": "s"}, "spec": {"replicas": 1}}
    assert api.seen[-1].headers["Content-Type"] == "application/json"
    await client.replace(STORMSERVICES, "ns", "s", {"metadata": {"name": "s"}})
    await client.replace(
        STORMSERVICES, "ns", "s", {"metadata": {"name": "s"}, "status": {}}, subresource="status"
    )
    assert api.seen[-1].path == f"{base}/s/status"
    await client.delete(
        STORMSERVICES,
        "ns",
        "s",
        uid_precondition="u-1",
        resource_version_precondition="42",
        propagation_policy="Foreground",
        grace_period_seconds=0,
    )
    assert orjson.loads(api.seen[-1].body) == {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "preconditions": {"uid": "u-1", "resourceVersion": "42"},
        "propagationPolicy": "Foreground",
        "gracePeriodSeconds": 0,
    }
    after = (
        writes("create", "stormservices"),
        writes("update", "stormservices/status"),
        writes("delete", "stormservices"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1.0, 1.0, 1.0]
    host = client.host
    assert (
        metrics.sample_value("rest_client_requests_total", {"code": "201", "method": "POST", "host": host})
        or 0
    ) >= 1
    assert (
        metrics.sample_value("rest_client_request_duration_seconds_count", {"verb": "PUT", "host": host}) or 0
    ) >= 2


async def test_delete_not_found_raises(api: FakeApiServer, client: ApiClient) -> None:
    with pytest.raises(NotFound):
        await client.delete(PODS, "ns", "p")


@pytest.mark.parametrize(
    ("patch_type", "content_type", "query"),
    [
        ("merge", "application/merge-patch+json", {}),
        ("json", "application/json-patch+json", {}),
        ("strategic", "application/strategic-merge-patch+json", {}),
        (
            "apply",
            "application/apply-patch+yaml",
            {"fieldManager": "stormservice-controller", "force": "true"},
        ),
    ],
)
async def test_patch_content_types(
    api: FakeApiServer, client: ApiClient, patch_type: Any, content_type: str, query: dict[str, str]
) -> None:
    api.reply("PATCH", POD_PATH, 200, {"metadata": {"name": "p"}})
    body: Any = (
        [{"op": "remove", "path": "/x"}] if patch_type == "json" else {"metadata": {"labels": {"a": "b"}}}
    )
    await client.patch(PODS, "ns", "p", body, patch_type=patch_type, force=True)
    seen = api.seen[-1]
    assert seen.headers["Content-Type"] == content_type
    assert seen.query == query
    assert orjson.loads(seen.body) == body


async def test_apply_with_field_manager_on_subresource(api: FakeApiServer, client: ApiClient) -> None:
    api.reply("PATCH", f"{POD_PATH}/status", 200, {"metadata": {"name": "p"}})
    await client.patch(
        PODS, "ns", "p", {"status": {}}, patch_type="apply", field_manager="mine", subresource="status"
    )
    assert api.seen[-1].query == {"fieldManager": "mine"}


async def test_unauthorized_refreshes_credentials_once(server: tuple[FakeApiServer, TestServer]) -> None:
    api, test_server = server

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer fresh":
            return status_response(401, "Unauthorized")
        return web.json_response({"ok": True})

    api.on("GET", POD_PATH, handler)

    class Renewing:
        refused: list[Mapping[str, str]] = []
        current: Mapping[str, str] = {"Authorization": "Bearer stale"}

        async def headers(self) -> Mapping[str, str]:
            return self.current

        async def refresh(self, refused: Mapping[str, str]) -> bool:
            self.refused.append(refused)
            self.current = {"Authorization": "Bearer fresh"}
            return True

    credentials = Renewing()
    api_client = ApiClient(ClientConfig(host=base_url(test_server), credentials=credentials))
    try:
        assert await api_client.get(PODS, "ns", "p") == {"ok": True}
        assert credentials.refused == [{"Authorization": "Bearer stale"}]
    finally:
        await api_client.close()


async def test_credentials_that_cannot_be_had_are_an_api_error(
    server: tuple[FakeApiServer, TestServer],
) -> None:
    api, test_server = server

    class Failing:
        async def headers(self) -> Mapping[str, str]:
            raise ConfigError("exec plugin kube-cred exited with status 1")

        async def refresh(self, refused: Mapping[str, str]) -> bool:
            return False

    api_client = ApiClient(ClientConfig(host=base_url(test_server), credentials=Failing()))
    try:
        with pytest.raises(ServerError, match="kube-cred exited") as raised:
            await api_client.get(PODS, "ns", "p")
        assert raised.value.reason == "CredentialsUnavailable"
        assert api.seen == []
    finally:
        await api_client.close()


async def test_unauthorized_without_renewable_credentials_is_final(
    server: tuple[FakeApiServer, TestServer],
) -> None:
    api, test_server = server
    api.reply("GET", POD_PATH, 401, status_body(401, "Unauthorized"))
    api_client = ApiClient(
        ClientConfig(host=base_url(test_server), credentials=StaticCredentials("Bearer x"))
    )
    try:
        with pytest.raises(Unauthorized):
            await api_client.get(PODS, "ns", "p")
        assert len(api.seen) == 1
    finally:
        await api_client.close()


async def test_informer_items_carry_api_version_and_kind(api: FakeApiServer, client: ApiClient) -> None:
    """The API server's list items have no apiVersion/kind (watch objects do): whatever reaches
    the informer's store through list_all, paged or after a 410 fallback to one full list,
    says what it is, as handlers and owner references need."""
    expire = False
    watch_started = asyncio.Event()

    def bare(name: str) -> Obj:
        return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": "5"}}

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") == "true":
            response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            await response.prepare(request)
            watch_started.set()
            await asyncio.sleep(PATIENCE)
            return response
        token = request.query.get("continue")
        if "limit" not in request.query:
            return web.json_response({"metadata": {"resourceVersion": "9"}, "items": [bare("a"), bare("b")]})
        if token is None:
            return web.json_response(
                {"metadata": {"resourceVersion": "5", "continue": "t1"}, "items": [bare("a")]}
            )
        if expire:
            return status_response(410, "Expired", "The provided continue parameter is too old")
        return web.json_response({"metadata": {"resourceVersion": "5"}, "items": [bare("b")]})

    api.on("GET", "/api/v1/namespaces/ns/pods", handler)
    for expire in (False, True):
        items, _ = await client.list_all(PODS, "ns", page_size=1)
        assert [(i["apiVersion"], i["kind"]) for i in items] == [("v1", "Pod")] * 2, expire

        watch_started.clear()
        informer = Informer(client, PODS, namespace="ns", page_size=1)
        task = asyncio.create_task(informer.run())
        try:
            assert await informer.wait_for_sync(PATIENCE)
            await asyncio.wait_for(watch_started.wait(), PATIENCE)
            cached = sorted(informer.store.list(), key=lambda o: o["metadata"]["name"])
            assert [(o["metadata"]["name"], o["apiVersion"], o["kind"]) for o in cached] == [
                ("a", "v1", "Pod"),
                ("b", "v1", "Pod"),
            ], expire
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- watch ------------------------------------------------------------------------------------------


def watch_handler(chunks: list[bytes], delay: float = 0.0) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
            if delay:
                await asyncio.sleep(delay)
        await response.write_eof()
        return response

    return handler


def line(event: Obj) -> bytes:
    return orjson.dumps(event) + b"\n"


async def collect(stream: AsyncIterator[Obj]) -> list[Obj]:
    return [event async for event in stream]


async def test_watch_streams_split_lines_and_large_objects(api: FakeApiServer, client: ApiClient) -> None:
    big = {
        "type": "ADDED",
        "object": {"metadata": {"name": "big", "resourceVersion": "11"}, "data": "x" * 300_000},
    }
    raw = (
        line({"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "10"}}})
        + line(big)
        + line({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}})
        + orjson.dumps({"type": "DELETED", "object": {"metadata": {"name": "a", "resourceVersion": "13"}}})
    )  # the last event has no trailing newline
    chunks = [raw[i : i + 7000] for i in range(0, len(raw), 7000)]
    api.on("GET", "/api/v1/namespaces/ns/pods", watch_handler(chunks))
    events = await collect(
        client.watch(PODS, "ns", resource_version="9", timeout_seconds=290, label_selector="a=b")
    )
    assert [(e["type"], e["object"]["metadata"]["resourceVersion"]) for e in events] == [
        ("ADDED", "10"),
        ("ADDED", "11"),
        ("BOOKMARK", "12"),
        ("DELETED", "13"),
    ]
    assert len(events[1]["object"]["data"]) == 300_000
    assert api.seen[-1].query == {
        "watch": "true",
        "resourceVersion": "9",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "290",
        "labelSelector": "a=b",
    }


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (status_body(410, "Expired", "too old resource version: 1 (5)"), Gone),
        (status_body(500, "InternalError", "etcd unhappy"), ServerError),
        (status_body(403, "Forbidden", "no"), Forbidden),
    ],
)
async def test_watch_error_events_raise(
    api: FakeApiServer, client: ApiClient, status: Obj, expected: type[ApiError]
) -> None:
    chunks = [
        line({"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "10"}}}),
        line({"type": "ERROR", "object": status}),
        line({"type": "ADDED", "object": {"metadata": {"name": "never", "resourceVersion": "11"}}}),
    ]
    api.on("GET", "/api/v1/namespaces/ns/pods", watch_handler(chunks))
    seen: list[Obj] = []
    with pytest.raises(ApiError) as err:
        async for event in client.watch(PODS, "ns", resource_version="9"):
            seen.append(event)
    assert type(err.value) is expected
    assert [e["object"]["metadata"]["name"] for e in seen] == ["a"]


async def test_watch_refused_at_start(api: FakeApiServer, client: ApiClient) -> None:
    api.reply("GET", "/api/v1/namespaces/ns/pods", 403, status_body(403, "Forbidden", "rbac"))
    with pytest.raises(Forbidden):
        await collect(client.watch(PODS, "ns"))


async def test_watch_closed_early_by_consumer(api: FakeApiServer, client: ApiClient) -> None:
    chunks = [line({"type": "ADDED", "object": {"metadata": {"name": f"p{i}"}}}) for i in range(50)]
    api.on("GET", "/api/v1/namespaces/ns/pods", watch_handler(chunks, delay=0.001))
    stream = client.watch(PODS, "ns")
    assert (await anext(aiter(stream)))["type"] == "ADDED"
    await stream.aclose()  # type: ignore[attr-defined]
    api.reply("GET", POD_PATH, 200, {"metadata": {"name": "p"}})
    assert await client.get(PODS, "ns", "p") == {"metadata": {"name": "p"}}  # the session still works


async def test_a_silent_watch_is_given_up_after_the_idle_timeout(
    server: tuple[FakeApiServer, TestServer],
) -> None:
    """A connection that stops delivering without being closed (a load balancer dropped it) ends
    the watch with a transport error once nothing arrived for watch_idle_timeout, even though
    the server's own watch timeout is minutes away."""
    api, test_server = server
    held = asyncio.Event()

    async def silent_after_one_event(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(
            line({"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "10"}}})
        )
        await held.wait()  # never set: the stream stays open and silent
        return resp

    api.on("GET", "/api/v1/namespaces/ns/pods", silent_after_one_event)
    api_client = ApiClient(ClientConfig(host=base_url(test_server)), watch_idle_timeout=0.5)
    seen: list[Obj] = []
    started = time.monotonic()
    try:
        with pytest.raises(ServerError) as err:
            async with asyncio.timeout(PATIENCE):
                async for event in api_client.watch(PODS, "ns", timeout_seconds=300):
                    seen.append(event)
    finally:
        await api_client.close()
    assert [e["object"]["metadata"]["name"] for e in seen] == ["a"]
    assert (err.value.code, err.value.reason) == (0, "Timeout")
    assert time.monotonic() - started < PATIENCE


async def test_connections_use_tcp_keepalive(api: FakeApiServer, client: ApiClient) -> None:
    """The kernel probes idle connections, so a vanished peer host is noticed on a connection we
    only read from."""
    api.reply("GET", POD_PATH, 200, {})
    await client.get(PODS, "ns", "p")
    connector = client._session.connector
    assert connector is not None
    pooled = [proto for conns in connector._conns.values() for proto, _ in conns]
    assert pooled, "the connection went back to the pool"
    transport = pooled[0].transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    if hasattr(socket, "TCP_KEEPIDLE"):
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30


# --- rate limiting ----------------------------------------------------------------------------------


async def test_qps_limit_applies_to_requests_not_watches(api: FakeApiServer, client: ApiClient) -> None:
    api.reply("GET", POD_PATH, 200, {})
    api.on("GET", "/api/v1/namespaces/ns/pods", watch_handler([line({"type": "BOOKMARK", "object": {}})]))
    clock = FakeClock()
    client.limiter = TokenBucket(1.0, 1, clock=clock)
    await client.get(PODS, "ns", "p")  # takes the only token
    assert not client.limiter.try_accept()
    # A watch does not wait for a token (it would sleep a whole second here).
    events = await asyncio.wait_for(collect(client.watch(PODS, "ns")), 0.5)
    assert events[0]["type"] == "BOOKMARK"
    # Another request must wait for the bucket.
    get = asyncio.create_task(client.get(PODS, "ns", "p"))
    await asyncio.sleep(0.05)
    assert not get.done()
    get.cancel()


async def test_real_limiter_spaces_requests(server: tuple[FakeApiServer, TestServer]) -> None:
    api, test_server = server
    api.reply("GET", POD_PATH, 200, {})
    api_client = ApiClient(ClientConfig(host=base_url(test_server)), qps=40, burst=1)
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(3):
            await api_client.get(PODS, "ns", "p")
        assert loop.time() - start >= 0.045  # two waits of 25 ms
    finally:
        await api_client.close()


async def test_own_rate_limit_client_has_its_own_tokens_and_user_agent(
    api: FakeApiServer, client: ApiClient
) -> None:
    api.reply("GET", POD_PATH, 200, {})
    clock = FakeClock()
    client.limiter = TokenBucket(1.0, 1, clock=clock)
    sibling = client.with_own_rate_limit(qps=1.0, burst=1, user_agent="stormservice-controller/roleset")
    await client.get(PODS, "ns", "p")  # the parent's only token
    assert not client.limiter.try_accept()
    # The sibling does not wait for the parent's bucket (it would sleep a whole second here).
    await asyncio.wait_for(sibling.get(PODS, "ns", "p"), 0.5)
    assert api.seen[-1].headers["User-Agent"] == "stormservice-controller/roleset"
    assert not sibling.limiter.try_accept()
    # Taking a token of the sibling left the parent's bucket alone, and the other way round.
    parent_waits = asyncio.create_task(client.get(PODS, "ns", "p"))
    await asyncio.sleep(0.05)
    assert not parent_waits.done()
    parent_waits.cancel()


async def test_own_rate_limit_client_borrows_the_connections(
    server: tuple[FakeApiServer, TestServer],
) -> None:
    api, test_server = server
    api.reply("GET", POD_PATH, 200, {})
    parent = ApiClient(ClientConfig(host=base_url(test_server)))
    sibling = parent.with_own_rate_limit(qps=10.0, burst=5, user_agent="x")
    assert sibling._session is parent._session
    await sibling.close()
    await parent.get(PODS, "ns", "p")  # closing the sibling left the shared session open
    await parent.close()
    assert parent._session.closed


# --- configuration ----------------------------------------------------------------------------------


def write_kubeconfig(path: Path, server_url: str, token: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server_url}},
            {"name": "other", "cluster": {"server": "http://127.0.0.1:1"}},
        ],
        "users": [{"name": "me", "user": {"token": token}}],
        "contexts": [
            {"name": "good", "context": {"cluster": "local", "user": "me"}},
            {"name": "bad", "context": {"cluster": "other", "user": "me"}},
        ],
        "current-context": "bad",
    }
    path.write_text(orjson.dumps(config).decode())


async def test_create_client_from_kubeconfig_and_env(
    server: tuple[FakeApiServer, TestServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, test_server = server
    api.reply("GET", POD_PATH, 200, {"metadata": {"name": "p"}})
    kubeconfig = tmp_path / "config"
    write_kubeconfig(kubeconfig, base_url(test_server), "tok-1")
    original = kubeconfig.read_text()

    api_client = await create_client(str(kubeconfig), context="good", user_agent="tests/1.0")
    try:
        assert await api_client.get(PODS, "ns", "p") == {"metadata": {"name": "p"}}
        assert api.seen[-1].headers["Authorization"] == "Bearer tok-1"
        assert api.seen[-1].headers["User-Agent"] == "tests/1.0"
    finally:
        await api_client.close()

    # kubeconfig None, not in a cluster: $KUBECONFIG.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    api_client = await create_client(context="good")
    try:
        assert await api_client.get(PODS, "ns", "p") == {"metadata": {"name": "p"}}
    finally:
        await api_client.close()
    assert kubeconfig.read_text() == original  # never rewritten
