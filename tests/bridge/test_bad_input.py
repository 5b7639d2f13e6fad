"""Every bad input gets a clear 4xx in the OpenAI envelope, never a 422 or a 5xx."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rest_bridge.app import create_app
from rest_bridge.config import BridgeSettings
from tests.bridge.support import LLAMA, Bridge, bridge_settings, chat_body, serve_bridge
from tests.support.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHAT = "/v1/chat/completions"
LIMIT = 2048


def assert_envelope(
    response: httpx.Response, status: int, param: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert error["param"] == param
    return error


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def small_bridge(stack: Stack) -> AsyncIterator[Bridge]:
    """A bridge with a 2 KiB body limit."""
    settings = bridge_settings(stack.gateway_address, stack.vault_address, max_body_bytes=LIMIT)
    async with serve_bridge(settings) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def client(stack: Stack, bridge: Bridge) -> AsyncIterator[httpx.AsyncClient]:
    async with bridge.client(stack.tokens.mint("bad-input")) as http:
        yield http


def _messages(**fields: Any) -> dict[str, Any]:
    return {"model": LLAMA, "messages": [{"role": "user", "content": "hi"}], **fields}


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model", None),
        ({"model": LLAMA}, "messages", None),
        ({"model": 5, "messages": [{"role": "user", "content": "hi"}]}, "model", None),
        (_messages(temperature="hot"), "temperature", None),
        (_messages(temperature=3), "temperature", "decimal_above_max_value"),
        (_messages(top_p=1.5), "top_p", None),
        (_messages(n=0), "n", None),
        (_messages(max_tokens=0), "max_tokens", None),
        (_messages(presence_penalty=-3), "presence_penalty", None),
        (_messages(stop=["a", "b", "c", "d", "e"]), "stop", None),
        (_messages(stream="yes"), "stream", None),
        (_messages(stream_options={"include_usage": True}), "stream_options", None),
        ({"model": LLAMA, "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", None),
        ({"model": LLAMA, "messages": []}, "messages", None),
        ({"model": LLAMA, "messages": "hi"}, "messages", None),
    ],
)  # fmt: skip
async def test_invalid_chat_fields_are_400_naming_the_param(
    client: httpx.AsyncClient, body: dict[str, Any], param: str, code: str | None
) -> None:
    error = assert_envelope(await client.post(CHAT, json=body), 400, param)
    if code is not None:
        assert error["code"] == code


@pytest.mark.parametrize(
    "content",
    [b'{"model": ', b"", b"[]", b"null", b'"text"', b"\xff\xfe{}", b'{"model": NaN}', b"[" * 5000],
    ids=["truncated", "empty", "array", "null", "string", "bad-utf8", "nan", "deep"],
)
async def test_malformed_json_is_400(client: httpx.AsyncClient, content: bytes) -> None:
    response = await client.post(
        CHAT, content=content, headers={"content-type": "application/json"}
    )
    assert_envelope(response, 400)


async def test_unsupported_content_type_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        CHAT, content=json.dumps(chat_body("hi")), headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


async def test_missing_content_type_is_tolerated(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, content=json.dumps(chat_body("no type")))
    assert response.status_code == 200


@pytest.mark.parametrize(
    "header", [None, b"", b"Basic dXNlcjpwYXNz", b"Bearer", b"Bearer a b", b"Bearer tok\xc3\xa9n"]
)
async def test_missing_or_malformed_authorization_is_401(
    bridge: Bridge, header: bytes | None
) -> None:
    headers = {} if header is None else {b"authorization": header}
    async with httpx.AsyncClient(base_url=bridge.base_url) as http:
        for method, path in (("POST", CHAT), ("GET", "/v1/models"), ("GET", "/v1/vault")):
            response = await http.request(method, path, json=chat_body("x"), headers=headers)
            error = assert_envelope(response, 401)
            assert error["code"] == "invalid_api_key"
            assert response.headers["www-authenticate"].startswith("Bearer")


async def test_body_over_the_limit_is_413_from_content_length(
    stack: Stack, small_bridge: Bridge
) -> None:
    body = chat_body("x" * (LIMIT + 10))
    async with small_bridge.client(stack.tokens.mint("big")) as http:
        response = await http.post(CHAT, json=body)
        error = assert_envelope(response, 413)
        assert str(LIMIT) in error["message"]
        # The vault endpoint (FastAPI-parsed body) is bounded the same way.
        response = await http.post("/v1/vault", json={"apiKey": "k" * (LIMIT + 10)})
        assert_envelope(response, 413)


async def test_body_over_the_limit_is_413_while_streaming_it_in(
    stack: Stack, small_bridge: Bridge
) -> None:
    """No Content-Length (a chunked upload): the limit is enforced as the bytes arrive."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": "' + LLAMA.encode() + b'", "messages": [{"role": "user", "content": "'
        for _ in range(64):
            yield b"y" * 1024
        yield b'"}]}'

    async with small_bridge.client(stack.tokens.mint("big")) as http:
        response = await http.post(CHAT, content=chunks())
    assert_envelope(response, 413)


async def test_body_limit_stops_reading_at_the_limit() -> None:
    """At the ASGI level: the app reads no further than the chunk that crosses the limit."""
    app = create_app(BridgeSettings(max_body_bytes=LIMIT))
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": CHAT,
        "raw_path": CHAT.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"authorization", b"Bearer abc.def.ghi"),
            (b"content-type", b"application/json"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    assert reads == LIMIT // 1024 + 1
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", CHAT, "POST"),
        ("PUT", "/v1/vault", "DELETE, GET, POST"),
        ("POST", "/v1/models", "GET"),
        ("DELETE", "/healthz", "GET"),
    ],
)
async def test_wrong_method_is_405_with_allow(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path)
    assert_envelope(response, 405)
    assert response.headers["allow"] == allow


@pytest.mark.parametrize("path", ["/v1/nope", "/", "/v1/chat/completions/extra", "/docs"])
async def test_unknown_route_is_404(client: httpx.AsyncClient, path: str) -> None:
    error = assert_envelope(await client.get(path), 404)
    assert path in error["message"]


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({}, "apiKey", "missing"),
        ({"apiKey": 5}, "apiKey", "string_type"),
        ({"apiKey": "sk-or-v1-abc", "validate": "yes"}, "validate", "bool_type"),
        ({"apiKey": "sk-or-v1-abc", "provider": "openai"}, "provider", "literal_error"),
        ({"apiKey": "sk-or-v1-abc", "api_key": "again"}, "api_key", "extra_forbidden"),
        (["sk-or-v1-abc"], None, "model_attributes_type"),
    ],
)
async def test_fastapi_validation_is_400_never_422(
    client: httpx.AsyncClient, body: Any, param: str | None, code: str
) -> None:
    response = await client.post("/v1/vault", json=body)
    error = assert_envelope(response, 400, param)
    assert error["code"] == code
    assert response.headers["cache-control"] == "no-store"
    assert "sk-or-v1-abc" not in response.text


async def test_openapi_schema_describes_every_endpoint_without_422(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert {
        "/v1/chat/completions",
        "/v1/models",
        "/v1/vault",
        "/healthz",
        "/readyz",
    } <= set(schema["paths"])
    assert "/metrics" not in schema["paths"]  # served on the metrics listener only
    assert set(schema["paths"]["/v1/vault"]) == {"get", "post", "delete"}
    assert "requestBody" in schema["paths"]["/v1/chat/completions"]["post"]
    assert "422" not in json.dumps(schema["paths"])


# Property-based: whatever arrives, the answer is never a 5xx and always an envelope -------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "developer", "x"]) | _json},
    optional={"content": st.text(max_size=30) | _json, "name": _json, "tool_calls": _json},
)
_chat = st.fixed_dictionaries(
    {"model": st.sampled_from([LLAMA, "", "openai/gpt-4o", "@cf/none/such"]) | _json},
    optional={
        "messages": st.lists(_message, max_size=3) | _json,
        "temperature": st.floats() | _json,
        "top_p": st.floats(),
        "n": st.integers(),
        "max_tokens": st.integers(),
        "stop": st.lists(st.text(max_size=5), max_size=6) | _json,
        "stream": st.booleans() | _json,
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}) | _json,
        "tools": _json,
        "tool_choice": _json,
        "response_format": _json,
        "logit_bias": _json,
        "seed": st.integers(),
        "user": _json,
        "something_else": _json,
    },
)
_bodies = (
    _chat.map(lambda body: json.dumps(body).encode())
    | _json.map(lambda body: json.dumps(body).encode())
    | st.binary(max_size=60)
)
_routes = st.tuples(
    st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD", "FOO"]),
    st.sampled_from(["/v1/chat/completions", "/v1/models", "/v1/vault", "/healthz", "/metrics", "/v1", "/v1/models/x"]),
)  # fmt: skip
_fuzz = settings(
    max_examples=120,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400 and response.request.method != "HEAD":
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}


async def test_no_input_makes_the_bridge_fail(stack: Stack, bridge: Bridge) -> None:
    """Random JSON (OpenAI-shaped and not), random bytes, random methods on every route."""
    headers = {
        "authorization": f"Bearer {stack.tokens.mint('fuzz')}",
        "content-type": "application/json",
    }

    def run() -> None:
        with httpx.Client(base_url=bridge.base_url, headers=headers, timeout=10) as http:

            @_fuzz
            @given(body=_bodies)
            def chat(body: bytes) -> None:
                _check(http.post(CHAT, content=body))

            @_fuzz
            @given(body=_bodies)
            def vault(body: bytes) -> None:
                _check(http.post("/v1/vault", content=body))

            @_fuzz
            @given(route=_routes, body=st.binary(max_size=20))
            def anything(route: tuple[str, str], body: bytes) -> None:
                method, path = route
                _check(http.request(method, path, content=body if method != "GET" else None))

            chat()
            vault()
            anything()

    # The stack serves on this loop, so the blocking client runs in a worker thread.
    await asyncio.to_thread(run)


async def test_two_authorization_headers_are_401(bridge: Bridge, stack: Stack) -> None:
    token = stack.tokens.mint("two-headers")
    headers = [(b"authorization", f"Bearer {token}".encode()), (b"authorization", b"Bearer x.y.z")]
    async with bridge.client() as http:
        for method, path, body in (
            ("POST", CHAT, {"model": LLAMA, "messages": [{"role": "user", "content": "hi"}]}),
            ("GET", "/v1/models", None),
            ("GET", "/v1/vault", None),
        ):
            response = await http.request(method, path, headers=headers, json=body)
            assert response.status_code == 401, path
            error = response.json()["error"]
            assert error["code"] == "invalid_api_key"
            assert "More than one Authorization header" in error["message"]
            assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_client_gone_mid_body_is_499_not_an_error(
    bridge: Bridge, stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = bridge.base_url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    token = stack.tokens.mint("gone")
    writer.write(
        f"POST {CHAT} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n"
        'content-type: application/json\r\ncontent-length: 1000\r\n\r\n{"model":'.encode()
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()
    for _ in range(50):
        if any(" 499 " in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.02)
    assert any(
        r.name == "rest_bridge.access" and f"POST {CHAT} 499" in r.getMessage()
        for r in caplog.records
    )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
