"""The Python SDK against a recorded-response test double (httpx.MockTransport): the cases the
live stack cannot produce on demand (SSE framing variants, odd bodies, retry timing)."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.sdk.loader import load_sdk

if TYPE_CHECKING:
    import native1api_client as n1
else:
    n1 = load_sdk()

BASE = "http://gateway.test"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.unit-test-token.c2lnbmF0dXJl"
MODEL = "@cf/meta/llama-3.2-3b-instruct"
MESSAGES = [{"role": "user", "content": "hi"}]

# A recorded OpenAI stream (reference/wire-formats.md §1.4), content made multi-byte on purpose.
CHUNKS: list[dict[str, Any]] = [
    {
        "id": "chatcmpl-9f2c",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
        "usage": None,
    },
    {
        "id": "chatcmpl-9f2c",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": MODEL,
        "choices": [
            {"index": 0, "delta": {"content": "Héllo ✓"}, "logprobs": None, "finish_reason": None}
        ],
        "usage": None,
    },
    {
        "id": "chatcmpl-9f2c",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": MODEL,
        "choices": [
            {"index": 0, "delta": {"content": " 🎉\nbye"}, "logprobs": None, "finish_reason": None}
        ],
        "usage": None,
    },
    {
        "id": "chatcmpl-9f2c",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": MODEL,
        "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
        "usage": None,
    },
]

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1767225600,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def frames(
    *, eol: str = "\n", ping: bool = False, pretty: bool = False, extras: bool = False
) -> bytes:
    """An SSE body carrying CHUNKS then [DONE], in one of the framings a server may use."""
    out: list[str] = []
    if ping:
        out.append(f": ping{eol}{eol}")
    for chunk in CHUNKS:
        if extras:
            out.append(f"event: message{eol}id: 7{eol}retry: 1000{eol}")
        if pretty:  # several data lines, which the client joins with "\n"
            out += [f"data: {line}{eol}" for line in json.dumps(chunk, indent=1).splitlines()]
        else:
            out.append(f"data: {compact(chunk)}{eol}")
        out.append(eol)
        if ping:
            out.append(f": keep-alive{eol}")
    out.append(f"data: [DONE]{eol}{eol}")
    return "".join(out).encode()


class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body delivered in the given pieces (to split lines and characters)."""

    def __init__(self, pieces: list[bytes], *, then_raise: Exception | None = None) -> None:
        self.pieces = pieces
        self.then_raise = then_raise

    def __iter__(self) -> Iterator[bytes]:
        yield from self.pieces
        if self.then_raise is not None:
            raise self.then_raise

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece
        if self.then_raise is not None:
            raise self.then_raise


def sse(body: bytes, *, split: int | None = None, **kwargs: Any) -> httpx.Response:
    pieces = [body[i : i + split] for i in range(0, len(body), split)] if split else [body]
    return httpx.Response(
        200,
        headers={
            "content-type": "text/event-stream; charset=utf-8",
            "x-request-id": "rid-stream",
            "x-native1api-provider": "workers-ai",
        },
        stream=Body(pieces, **kwargs),
    )


def error(
    status: int, code: str | None = None, *, headers: dict[str, str] | None = None, **fields: Any
) -> httpx.Response:
    detail = {
        "message": f"failed with {status}",
        "type": "server_error",
        "param": None,
        "code": code,
    }
    detail.update(fields)
    return httpx.Response(
        status, json={"error": detail}, headers={"x-request-id": f"rid-{status}", **(headers or {})}
    )


Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler answering from a script and keeping the requests."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def client(self, **kwargs: Any) -> n1.Native1API:
        kwargs.setdefault("token", TOKEN)
        http = httpx.Client(transport=httpx.MockTransport(self))
        return n1.Native1API(BASE, http_client=http, **kwargs)

    def async_client(self, **kwargs: Any) -> n1.AsyncNative1API:
        kwargs.setdefault("token", TOKEN)
        http = httpx.AsyncClient(transport=httpx.MockTransport(self))
        return n1.AsyncNative1API(BASE, http_client=http, **kwargs)


FRAMINGS = {
    "lf": {"body": frames()},
    "crlf": {"body": frames(eol="\r\n")},
    "cr": {"body": frames(eol="\r")},
    "pings-and-comments": {"body": frames(ping=True)},
    "multi-line-data": {"body": frames(pretty=True)},
    "event-id-retry-fields": {"body": frames(extras=True)},
    "bom": {"body": b"\xef\xbb\xbf" + frames()},
    "no-space-after-colon": {"body": frames().replace(b"data: ", b"data:")},
    "lf-byte-by-byte": {"body": frames(), "split": 1},
    "crlf-byte-by-byte": {"body": frames(eol="\r\n", ping=True), "split": 1},
    "cr-split-in-3s": {"body": frames(eol="\r", pretty=True), "split": 3},
    "after-done-ignored": {"body": frames() + b'data: {"error": {"message": "late"}}\n\n'},
}


@pytest.mark.parametrize("framing", FRAMINGS.values(), ids=FRAMINGS.keys())
def test_sync_stream_parses_every_framing(framing: dict[str, Any]) -> None:
    recorder = Recorder(sse(framing["body"], split=framing.get("split")))
    with recorder.client() as client:
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        assert list(stream) == CHUNKS
        assert stream.request_id == "rid-stream"
        assert stream.provider == "workers-ai"


@pytest.mark.parametrize("framing", FRAMINGS.values(), ids=FRAMINGS.keys())
async def test_async_stream_parses_every_framing(framing: dict[str, Any]) -> None:
    recorder = Recorder(sse(framing["body"], split=framing.get("split")))
    async with recorder.async_client() as client:
        stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        assert [chunk async for chunk in stream] == CHUNKS


def test_stream_request_shape() -> None:
    recorder = Recorder(sse(frames()))
    with recorder.client() as client:
        list(
            client.chat.completions.create(
                model=MODEL,
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
                temperature=0.5,
                extra_headers={"x-request-id": "mine", "Authorization": "Bearer not-this"},
            )
        )
    [request] = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/v1/chat/completions"
    assert request.headers.get_list("authorization") == [f"Bearer {TOKEN}"]
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["x-request-id"] == "mine"
    assert request.headers["user-agent"].startswith("native1api-python/")
    assert json.loads(request.content) == {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.5,
    }


def test_vault_and_models_request_shapes() -> None:
    recorder = Recorder(
        httpx.Response(200, json={"exists": True, "provider": "together"}),
    )
    with recorder.client() as client:
        client.vault.put("tgp_v1_abc", provider="together", validate=True)
        client.vault.exists()
        client.vault.delete()
        recorder.responses = [httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]})]
        assert client.models.list() == [{"id": "m"}]
    put, get, delete, models = recorder.requests
    assert (put.method, put.url.path) == ("POST", "/v1/vault")
    assert json.loads(put.content) == {
        "apiKey": "tgp_v1_abc",
        "provider": "together",
        "validate": True,
    }
    assert (get.method, get.url.path, get.content) == ("GET", "/v1/vault", b"")
    assert (delete.method, delete.url.path) == ("DELETE", "/v1/vault")
    assert (models.method, models.url.path) == ("GET", "/v1/models")
    assert all(r.headers["accept"] == "application/json" for r in recorder.requests)


def test_vault_put_sends_only_what_was_given() -> None:
    recorder = Recorder(httpx.Response(200, json={"exists": True, "provider": "openrouter"}))
    with recorder.client() as client:
        client.vault.put("sk-or-v1-abc")
    assert json.loads(recorder.requests[0].content) == {"apiKey": "sk-or-v1-abc"}


def test_stream_error_frame_raises_after_the_chunks_before_it() -> None:
    body = (
        f"data: {compact(CHUNKS[0])}\n\n"
        f"data: {compact(CHUNKS[1])}\n\n"
        'data: {"error": {"message": "upstream went away", "type": "server_error",'
        ' "param": null, "code": "upstream_stream_interrupted"}}\n\n'
    ).encode()
    received: list[dict[str, Any]] = []
    with Recorder(sse(body)).client() as client:
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        with pytest.raises(n1.StreamError) as info:
            received.extend(stream)
    assert received == CHUNKS[:2]
    assert info.value.message == "upstream went away"
    assert info.value.code == "upstream_stream_interrupted"
    assert info.value.type == "server_error"
    assert info.value.status_code is None
    assert info.value.request_id == "rid-stream"


def test_openrouter_style_error_chunk_raises() -> None:
    chunk = {
        "id": "gen-1",
        "error": {"code": 502, "message": "Provider disconnected"},
        "choices": [],
    }
    with Recorder(sse(f"data: {compact(chunk)}\n\n".encode())).client() as client:
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        with pytest.raises(n1.StreamError) as info:
            next(stream)
    assert info.value.code == "502"
    assert info.value.message == "Provider disconnected"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (f"data: {compact(CHUNKS[0])}\n\n".encode(), "stream_truncated"),
        (
            f"data: {compact(CHUNKS[0])}\n\ndata: [DONE]".encode(),
            "stream_truncated",
        ),  # unterminated
        (b"data: not json\n\n", "invalid_stream_frame"),
        (b"data: [1, 2]\n\n", "invalid_stream_frame"),
    ],
    ids=["no-done", "unterminated-done", "not-json", "not-an-object"],
)
async def test_broken_streams_raise_stream_error(body: bytes, code: str) -> None:
    async with Recorder(sse(body)).async_client() as client:
        stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        with pytest.raises(n1.StreamError) as info:
            await stream_all(stream)
    assert info.value.code == code


async def stream_all(stream: n1.AsyncChatCompletionStream) -> list[dict[str, Any]]:
    return [chunk async for chunk in stream]


def test_connection_lost_mid_stream_is_stream_error() -> None:
    response = sse(
        f"data: {compact(CHUNKS[0])}\n\n".encode(),
        then_raise=httpx.RemoteProtocolError("peer closed connection"),
    )
    with Recorder(response).client() as client:
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        assert next(stream) == CHUNKS[0]
        with pytest.raises(n1.StreamError) as info:
            next(stream)
    assert info.value.code == "stream_interrupted"
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)


def test_stream_that_is_not_an_event_stream() -> None:
    client = Recorder(httpx.Response(200, json=COMPLETION)).client()
    with client, pytest.raises(n1.Native1APIError) as info:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert type(info.value) is n1.Native1APIError
    assert "application/json" in info.value.message


def test_create_returns_the_completion_dict() -> None:
    recorder = Recorder(httpx.Response(200, json=COMPLETION))
    with recorder.client() as client:
        assert client.chat.completions.create(model=MODEL, messages=MESSAGES, n=1) == COMPLETION
    body = json.loads(recorder.requests[0].content)
    assert body == {"model": MODEL, "messages": MESSAGES, "n": 1}


@pytest.mark.parametrize(
    ("response", "kind", "status", "message"),
    [
        (error(409, "conflict"), n1.Native1APIError, 409, "failed with 409"),
        (error(413, "request_too_large"), n1.Native1APIError, 413, "failed with 413"),
        (error(403, "model_not_allowed"), n1.PermissionDeniedError, 403, "failed with 403"),
        (error(504, "upstream_timeout"), n1.InternalServerError, 504, "failed with 504"),
        (
            httpx.Response(502, text="<html><body>Bad Gateway</body></html>"),
            n1.InternalServerError,
            502,
            "<html><body>Bad Gateway</body></html>",
        ),
        (
            httpx.Response(500, json={"error": "plain string"}),
            n1.InternalServerError,
            500,
            "plain string",
        ),
        (httpx.Response(404, content=b""), n1.NotFoundError, 404, "HTTP 404 Not Found"),
    ],
    ids=["409", "413", "403", "504", "html-502", "string-error", "empty-404"],
)
def test_error_bodies(
    response: httpx.Response, kind: type[n1.Native1APIError], status: int, message: str
) -> None:
    with Recorder(response).client() as client, pytest.raises(n1.Native1APIError) as info:
        client.models.list()
    assert type(info.value) is kind
    assert info.value.status_code == status
    assert info.value.message == message


def test_a_token_echoed_by_the_server_is_redacted() -> None:
    echo = error(401, "invalid_api_key", message=f"bad token {TOKEN}", param=TOKEN)
    with Recorder(echo).client() as client, pytest.raises(n1.AuthenticationError) as info:
        client.models.list()
    for text in (str(info.value), repr(info.value), repr(vars(info.value))):
        assert TOKEN not in text
    assert "[redacted]" in info.value.message


def test_the_api_key_echoed_by_the_server_is_redacted() -> None:
    key = "sk-or-v1-secret-key-material-0123"
    echo = error(400, "invalid_api_key", message=f"key {key} refused")
    with Recorder(echo).client() as client, pytest.raises(n1.BadRequestError) as info:
        client.vault.put(key)
    assert key not in str(info.value) and key not in repr(vars(info.value))


def test_rate_limit_retry_after_forms() -> None:
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    client = Recorder(error(429, headers={"retry-after": later})).client()
    with client, pytest.raises(n1.RateLimitError) as dated:
        client.models.list()
    assert dated.value.retry_after is not None and 25 <= dated.value.retry_after <= 31
    with (
        Recorder(
            error(429, headers={"retry-after-ms": "1500", "retry-after": "9"})
        ).client() as client,
        pytest.raises(n1.RateLimitError) as ms,
    ):
        client.models.list()
    assert ms.value.retry_after == 1.5
    with Recorder(error(429)).client() as client, pytest.raises(n1.RateLimitError) as none:
        client.models.list()
    assert none.value.retry_after is None


def test_retries_429_502_503_with_a_fresh_token_each_time() -> None:
    fast = {"retry-after-ms": "5"}
    recorder = Recorder(
        error(429, headers=fast),
        error(502, headers=fast),
        error(503, headers=fast),
        httpx.Response(200, json=COMPLETION),
    )
    issued: list[str] = []

    def provider() -> str:
        issued.append(f"{TOKEN}-{len(issued)}")
        return issued[-1]

    with recorder.client(token=None, token_provider=provider, max_retries=3) as client:
        assert client.chat.completions.create(model=MODEL, messages=MESSAGES) == COMPLETION
    assert [r.headers["authorization"] for r in recorder.requests] == [
        f"Bearer {t}" for t in issued
    ]
    assert len(issued) == 4


def test_retries_stop_at_max_retries_and_skip_other_statuses() -> None:
    fast = {"retry-after-ms": "1"}
    recorder = Recorder(error(503, headers=fast))
    with recorder.client(max_retries=2) as client, pytest.raises(n1.InternalServerError):
        client.models.list()
    assert len(recorder.requests) == 3
    for status in (400, 401, 404, 500, 504):
        recorder = Recorder(error(status, headers=fast))
        with recorder.client(max_retries=2) as client, pytest.raises(n1.Native1APIError):
            client.models.list()
        assert len(recorder.requests) == 1, status


def test_retry_after_is_capped() -> None:
    recorder = Recorder(
        error(429, headers={"retry-after": "3600"}), httpx.Response(200, json=COMPLETION)
    )
    started = time.monotonic()
    with recorder.client(max_retries=1, max_retry_delay=0.05) as client:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert time.monotonic() - started < 1


async def test_async_retries_and_refused_connections() -> None:
    recorder = Recorder(
        httpx.ConnectError("connection refused"),
        error(503, headers={"retry-after-ms": "1"}),
        httpx.Response(200, json=COMPLETION),
    )
    async with recorder.async_client(max_retries=2, max_retry_delay=0.01) as client:
        assert await client.chat.completions.create(model=MODEL, messages=MESSAGES) == COMPLETION
    assert len(recorder.requests) == 3


def test_connection_errors() -> None:
    recorder = Recorder(httpx.ConnectError(f"cannot connect {TOKEN}"))
    with recorder.client() as client, pytest.raises(n1.APIConnectionError) as refused:
        client.models.list()
    assert type(refused.value) is n1.APIConnectionError
    assert TOKEN not in str(refused.value)
    # A read timeout may have reached the server: never retried.
    recorder = Recorder(httpx.ReadTimeout("timed out"))
    with recorder.client(max_retries=3) as client, pytest.raises(n1.APITimeoutError):
        client.models.list()
    assert len(recorder.requests) == 1


async def test_async_token_provider_and_empty_tokens() -> None:
    recorder = Recorder(httpx.Response(200, json={"exists": False}))

    async def provider() -> str:
        return ""

    async with recorder.async_client(token=None, token_provider=provider) as client:
        with pytest.raises(n1.AuthenticationError) as info:
            await client.vault.exists()
    assert info.value.code == "missing_token"
    assert recorder.requests == []  # nothing was sent without a token


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        n1.Native1API(BASE)
    with pytest.raises(ValueError, match="exactly one"):
        n1.Native1API(BASE, token=TOKEN, token_provider=lambda: TOKEN)
    with pytest.raises(ValueError, match="non-empty"):
        n1.Native1API(BASE, token=" ")
    with pytest.raises(ValueError, match="http"):
        n1.Native1API("gateway.test", token=TOKEN)
    with pytest.raises(ValueError, match="max_retries"):
        n1.AsyncNative1API(BASE, token=TOKEN, max_retries=-1)
    client = n1.Native1API(BASE + "/v1/", token=TOKEN, timeout=3.0)
    assert client.base_url == BASE
    assert client.timeout == 3.0
    assert TOKEN not in repr(client)
    client.close()


def test_an_injected_http_client_is_not_closed() -> None:
    http = httpx.Client(
        transport=httpx.MockTransport(Recorder(httpx.Response(200, json={}))), timeout=7.0
    )
    with n1.Native1API(BASE, token=TOKEN, http_client=http) as client:
        assert client.timeout == http.timeout
    assert not http.is_closed
    http.close()
    own = n1.Native1API(BASE, token=TOKEN)
    with own:
        pass
    assert own._http.is_closed


def test_closing_a_stream_early_closes_the_response() -> None:
    response = sse(frames(), split=10)
    with Recorder(response).client() as client:
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        assert next(stream) == CHUNKS[0]
        stream.close()
        assert response.is_closed
        assert list(stream) == []


# --- Firebase App Check ------------------------------------------------------------------------

APP_CHECK = "eyJhbGciOiJSUzI1NiJ9.app-check-token.c2ln"


def app_check_answers() -> Recorder:
    listing = httpx.Response(200, json={"object": "list", "data": []})
    saved = httpx.Response(200, json={"exists": True, "provider": "openrouter"})
    return Recorder(
        httpx.Response(200, json=COMPLETION),
        sse(frames()),
        listing,
        saved,
        saved,
        httpx.Response(200, json={"exists": False}),
    )


def test_app_check_token_is_sent_on_every_request_fresh_each_time() -> None:
    recorder = app_check_answers()
    issued: list[str] = []

    def provider() -> str:
        issued.append(f"{APP_CHECK}-{len(issued)}")
        return issued[-1]

    # The provider's token wins over one given by hand.
    stale = {"X-Firebase-AppCheck": "stale"}
    with recorder.client(app_check_token_provider=provider, default_headers=stale) as client:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers=stale)
        assert list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
        client.models.list()
        client.vault.put("sk-or-v1-abc")
        client.vault.exists()
        client.vault.delete()
    assert len(issued) == 6
    assert [r.headers.get_list("x-firebase-appcheck") for r in recorder.requests] == [
        [token] for token in issued
    ]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in recorder.requests)


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_async_app_check_provider_may_be_async_or_plain(kind: str) -> None:
    recorder = app_check_answers()
    calls: list[int] = []

    def plain() -> str:
        calls.append(1)
        return f"{APP_CHECK}-{len(calls)}"

    async def coroutine() -> str:
        return plain()

    provider = coroutine if kind == "async" else plain
    async with recorder.async_client(app_check_token_provider=provider) as client:
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        assert [chunk async for chunk in stream] == CHUNKS
        await client.models.list()
        await client.vault.put("sk-or-v1-abc")
        await client.vault.exists()
        await client.vault.delete()
    assert [r.headers.get("x-firebase-appcheck") for r in recorder.requests] == [
        f"{APP_CHECK}-{n}" for n in range(1, 7)
    ]


def test_without_an_app_check_provider_no_header_is_added() -> None:
    recorder = Recorder(httpx.Response(200, json={"exists": False}))
    with recorder.client() as client:
        client.vault.exists()
    with recorder.client(default_headers={"x-firebase-appcheck": "by-hand"}) as client:
        client.vault.exists()
    assert [r.headers.get("x-firebase-appcheck") for r in recorder.requests] == [None, "by-hand"]


async def test_an_empty_app_check_token_sends_nothing() -> None:
    recorder = Recorder(httpx.Response(200, json={"exists": False}))
    with (
        recorder.client(app_check_token_provider=lambda: " ") as client,
        pytest.raises(n1.AuthenticationError) as info,
    ):
        client.vault.exists()
    assert info.value.code == "missing_app_check_token"

    async def empty() -> str:
        return ""

    async with recorder.async_client(app_check_token_provider=empty) as aclient:
        with pytest.raises(n1.AuthenticationError) as ainfo:
            await aclient.models.list()
    assert ainfo.value.code == "missing_app_check_token"
    assert recorder.requests == []
    with pytest.raises(TypeError, match="app_check_token_provider"):
        n1.Native1API(BASE, token=TOKEN, app_check_token_provider=APP_CHECK)  # type: ignore[arg-type]


def test_an_app_check_token_echoed_by_the_server_is_redacted() -> None:
    echo = error(401, "invalid_app_check_token", message=f"App Check token rejected: {APP_CHECK}")
    recorder = Recorder(echo)
    with (
        recorder.client(app_check_token_provider=lambda: APP_CHECK) as client,
        pytest.raises(n1.AuthenticationError) as info,
    ):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert info.value.code == "invalid_app_check_token"
    for text in (str(info.value), repr(info.value), repr(vars(info.value))):
        assert APP_CHECK not in text
    assert APP_CHECK not in repr(client)
