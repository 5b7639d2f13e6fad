"""The Python SDK (`sdk/python/native1api_client.py`), sync and async, against the live stack:
fake upstreams, the real vault and gateway, and the real REST bridge on loopback."""

from __future__ import annotations

import time
import traceback
from collections.abc import AsyncIterable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from fakes.content import reply_text
from tests.sdk.conftest import LLAMA, Live, dead_address
from tests.sdk.loader import load_sdk
from tests.support.stack import OPENROUTER_KEY

if TYPE_CHECKING:
    import native1api_client as n1
else:
    n1 = load_sdk()


def user(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def content_and_finishes(chunks: Iterable[Mapping[str, Any]]) -> tuple[str, list[str]]:
    """The streamed text and every non-null finish_reason, in order."""
    text: list[str] = []
    finishes: list[str] = []
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        for choice in chunk["choices"]:
            text.append(choice["delta"].get("content") or "")
            if choice.get("finish_reason") is not None:
                finishes.append(choice["finish_reason"])
    return "".join(text), finishes


def exception_texts(error: BaseException) -> list[str]:
    """str, repr and attributes of the error and of every exception chained to it, and the
    lines a traceback prints for them (without the source lines, which quote the test itself)."""
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(vars(current))]
        texts += traceback.format_exception_only(current)
        current = current.__cause__ or current.__context__
    return texts


def drain(stream: Iterable[dict[str, Any]], into: list[dict[str, Any]]) -> None:
    """Read a stream to its end, keeping every chunk that arrived (also when it raises)."""
    for chunk in stream:
        into.append(chunk)


async def adrain(stream: AsyncIterable[dict[str, Any]], into: list[dict[str, Any]]) -> None:
    async for chunk in stream:
        into.append(chunk)


def assert_secret_free(error: BaseException, *secrets: str) -> None:
    """No secret in any text of the exception or its causes."""
    texts = exception_texts(error)
    for secret in secrets:
        assert secret
        for text in texts:
            assert secret not in text


def expired_token(live: Live, uid: str) -> str:
    now = int(time.time())
    token = live.stack.tokens.mint(uid, iat=now - 7200, auth_time=now - 7200, exp=now - 3600)
    live.minted.append(token)
    return token


# ---- errors: one table for both clients -------------------------------------------------------


@dataclass(frozen=True)
class ErrorCase:
    error: type[n1.Native1APIError]
    status: int
    code: str
    type: str
    param: str | None = None
    prompt: str = "hello errors"
    model: str = LLAMA
    extra: dict[str, Any] = field(default_factory=dict)
    token: str = "valid"  # "valid", "garbage" or "expired"
    down: bool = False  # use the bridge whose gateway is down
    retry_after: float | None = None


ERROR_CASES = {
    "400-temperature": ErrorCase(
        n1.BadRequestError,
        400,
        "decimal_above_max_value",
        "invalid_request_error",
        param="temperature",
        extra={"temperature": 3},
    ),
    "401-garbage-token": ErrorCase(
        n1.AuthenticationError, 401, "invalid_api_key", "invalid_request_error", token="garbage"
    ),
    "401-expired-token": ErrorCase(
        n1.AuthenticationError, 401, "invalid_api_key", "invalid_request_error", token="expired"
    ),
    "404-unknown-model": ErrorCase(
        n1.NotFoundError,
        404,
        "model_not_found",
        "invalid_request_error",
        param="model",
        model="openai/gpt-4o",
    ),
    "429-rate-limited": ErrorCase(
        n1.RateLimitError,
        429,
        "rate_limit_exceeded",
        "requests",
        prompt="slow down [[fake:status=429,retry_after=1]]",
        retry_after=1.0,
    ),
    "502-upstream-failed": ErrorCase(
        n1.InternalServerError,
        502,
        "upstream_error",
        "server_error",
        prompt="broken [[fake:status=500]]",
    ),
    "503-backend-down": ErrorCase(
        n1.InternalServerError, 503, "service_unavailable", "service_unavailable_error", down=True
    ),
}


def case_token(live: Live, uid: str, case: ErrorCase) -> str:
    if case.token == "garbage":
        return "not-a-firebase-token-0123456789"
    if case.token == "expired":
        return expired_token(live, uid)
    return live.token(uid)


def check_error(error: n1.Native1APIError, case: ErrorCase, token: str) -> None:
    assert type(error) is case.error
    assert error.status_code == case.status
    assert error.code == case.code
    assert error.type == case.type
    assert error.param == case.param
    assert error.message
    assert error.request_id and len(error.request_id) >= 16
    assert error.headers["x-request-id"] == error.request_id
    if isinstance(error, n1.RateLimitError):
        assert error.retry_after == case.retry_after
    assert_secret_free(error, token)


@pytest.mark.parametrize("case", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_sync_errors_raise_their_class(live: Live, uid: str, case: ErrorCase) -> None:
    token = case_token(live, uid, case)
    base_url = live.down_url if case.down else live.base_url
    with n1.Native1API(base_url, token=token) as client:
        with pytest.raises(case.error) as info:
            client.chat.completions.create(
                model=case.model, messages=user(case.prompt), **case.extra
            )
        check_error(info.value, case, token)
        # Streaming requests fail the same way, before any chunk: the status is the error.
        with pytest.raises(case.error) as streamed:
            client.chat.completions.create(
                model=case.model, messages=user(case.prompt), stream=True, **case.extra
            )
        check_error(streamed.value, case, token)


@pytest.mark.parametrize("case", ERROR_CASES.values(), ids=ERROR_CASES.keys())
async def test_async_errors_raise_their_class(live: Live, uid: str, case: ErrorCase) -> None:
    token = case_token(live, uid, case)
    base_url = live.down_url if case.down else live.base_url
    async with n1.AsyncNative1API(base_url, token=token) as client:
        with pytest.raises(case.error) as info:
            await client.chat.completions.create(
                model=case.model, messages=user(case.prompt), **case.extra
            )
        check_error(info.value, case, token)
        with pytest.raises(case.error) as streamed:
            await client.chat.completions.create(
                model=case.model, messages=user(case.prompt), stream=True, **case.extra
            )
        check_error(streamed.value, case, token)


def test_errors_are_exception_hierarchy() -> None:
    for case in ERROR_CASES.values():
        assert issubclass(case.error, n1.Native1APIError)
    assert issubclass(n1.StreamError, n1.Native1APIError)
    assert issubclass(n1.APITimeoutError, n1.APIConnectionError)
    assert issubclass(n1.APIConnectionError, n1.Native1APIError)


# ---- sync client ---------------------------------------------------------------------------


def test_sync_create_returns_the_completion(live: Live, uid: str) -> None:
    prompt = f"hello sync {uid}"
    with n1.Native1API(live.base_url, token=live.token(uid)) as client:
        completion = client.chat.completions.create(
            model=LLAMA, messages=user(prompt), temperature=0.2, max_tokens=64
        )
    assert completion["object"] == "chat.completion"
    assert completion["model"] == LLAMA
    assert completion["id"].startswith("chatcmpl-")
    [choice] = completion["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == reply_text(prompt)
    assert choice["finish_reason"] == "stop"
    assert completion["usage"]["completion_tokens"] == 6
    # The OpenAI fields went through to the upstream.
    [record] = live.upstream_records(prompt)
    assert record.body["temperature"] == 0.2
    assert record.body["max_tokens"] == 64


def test_sync_stream_yields_chunks_until_done(live: Live, uid: str) -> None:
    prompt = f"stream sync {uid}"
    with (
        n1.Native1API(live.base_url, token=live.token(uid)) as client,
        client.chat.completions.create(
            model=LLAMA, messages=user(prompt), stream=True, stream_options={"include_usage": True}
        ) as stream,
    ):
        assert stream.provider == "workers-ai"
        assert stream.request_id
        assert stream.response_headers["content-type"].startswith("text/event-stream")
        chunks = list(stream)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text, finishes = content_and_finishes(chunks)
    assert text == reply_text(prompt)
    assert finishes == ["stop"]
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 6


def test_sync_models_list(live: Live, uid: str) -> None:
    with n1.Native1API(live.base_url + "/v1/", token=live.token(uid)) as client:
        models = client.models.list()
    ids = [model["id"] for model in models]
    assert LLAMA in ids
    assert all(model["object"] == "model" and model["owned_by"] for model in models)


def test_sync_vault_put_exists_delete_and_byok_stream(live: Live, uid: str) -> None:
    token = live.token(uid)
    prompt = f"byok sync {uid}"
    with n1.Native1API(live.base_url, token=token) as client:
        assert client.vault.exists() == {"exists": False}
        assert client.vault.put(OPENROUTER_KEY) == {"exists": True, "provider": "openrouter"}
        assert client.vault.exists() == {"exists": True, "provider": "openrouter"}

        with client.chat.completions.create(
            model=LLAMA, messages=user(prompt), stream=True
        ) as stream:
            assert stream.provider == "openrouter"
            text, finishes = content_and_finishes(stream)
        assert text == reply_text(prompt)
        assert finishes == ["stop"]
        [record] = live.upstream_records(prompt)
        assert record.header("authorization") == f"Bearer {OPENROUTER_KEY}"
        assert "@cf/" not in client.models.list()[0]["id"]  # the BYOK provider's catalog

        assert client.vault.delete() == {"exists": False}
        assert client.vault.delete() == {"exists": False}  # idempotent
        assert client.vault.exists() == {"exists": False}
        with client.chat.completions.create(
            model=LLAMA, messages=user(prompt + " again"), stream=True
        ) as stream:
            assert stream.provider == "workers-ai"
            assert content_and_finishes(stream)[0] == reply_text(prompt + " again")


def test_sync_vault_errors_never_contain_the_key(live: Live, uid: str) -> None:
    key = "plainkey-without-a-known-prefix-0123456789"
    token = live.token(uid)
    with n1.Native1API(live.base_url, token=token) as client:
        with pytest.raises(n1.BadRequestError) as info:
            client.vault.put(key)  # no provider and no recognisable prefix
        assert info.value.param == "provider"
        assert_secret_free(info.value, key, token)
        # (validate=True is covered by the unit tests: the test stack's vault is not pointed at
        # the fake OpenRouter for key checks.)
        with pytest.raises(n1.BadRequestError) as spaced:
            client.vault.put("sk-or-v1-with space 0123456789")
        assert_secret_free(spaced.value, "sk-or-v1-with space 0123456789", token)
        assert client.vault.exists() == {"exists": False}


def test_sync_token_provider_is_called_per_request(live: Live, uid: str) -> None:
    tokens = [expired_token(live, uid), live.token(uid), live.token(uid), live.token(uid)]
    calls: list[str] = []

    def provider() -> str:
        calls.append(tokens[len(calls)])
        return calls[-1]

    with n1.Native1API(live.base_url, token_provider=provider) as client:
        with pytest.raises(n1.AuthenticationError) as info:
            client.models.list()  # the first token had expired...
        assert_secret_free(info.value, tokens[0])
        assert client.models.list()  # ...the provider's refreshed one works
        client.chat.completions.create(model=LLAMA, messages=user("provider"))
        assert content_and_finishes(
            client.chat.completions.create(model=LLAMA, messages=user("provider"), stream=True)
        )[0] == reply_text("provider")
    assert calls == tokens


def test_sync_mid_stream_error_raises_stream_error(live: Live, uid: str) -> None:
    token = live.token(uid)
    prompt = f"cut sync {uid} [[fake:cut_after=2]]"
    received: list[dict[str, Any]] = []
    with n1.Native1API(live.base_url, token=token) as client:
        stream = client.chat.completions.create(model=LLAMA, messages=user(prompt), stream=True)
        with pytest.raises(n1.StreamError) as info:
            drain(stream, received)
    error = info.value
    assert error.status_code is None
    assert error.code == "upstream_stream_interrupted"
    assert error.type == "server_error"
    assert error.request_id == stream.request_id
    text, finishes = content_and_finishes(received)
    assert reply_text(prompt).startswith(text) and text  # the part that did arrive...
    assert finishes == []  # ...and never a finish that pretends the answer was complete
    assert_secret_free(error, token)


def test_sync_closing_a_stream_cancels_the_upstream(live: Live, uid: str) -> None:
    prompt = f"close sync {uid} [[fake:chunks=200,chunk_delay=0.02]]"
    with n1.Native1API(live.base_url, token=live.token(uid)) as client:
        stream = client.chat.completions.create(model=LLAMA, messages=user(prompt), stream=True)
        first = [next(stream), next(stream)]
        stream.close()
        assert list(stream) == []
    assert first[1]["choices"][0]["delta"]["content"]
    live.wait_for_outcome(prompt, "disconnected")


def test_sync_max_retries_honours_retry_after(live: Live, uid: str) -> None:
    prompt = f"retry {uid} [[fake:status=429,retry_after=1,times=1]]"
    calls = 0

    def provider() -> str:
        nonlocal calls
        calls += 1
        return live.token(uid)

    with n1.Native1API(live.base_url, token_provider=provider, max_retries=2) as client:
        started = time.monotonic()
        completion = client.chat.completions.create(model=LLAMA, messages=user(prompt))
        elapsed = time.monotonic() - started
    assert completion["choices"][0]["message"]["content"] == reply_text(prompt)
    assert 0.9 <= elapsed < 5
    assert calls == 2  # one token per attempt
    assert len(live.upstream_records(prompt)) == 2


def test_sync_connection_error(live: Live, uid: str) -> None:
    token = live.token(uid)
    client = n1.Native1API(f"http://{dead_address()}", token=token, timeout=2.0)
    with client, pytest.raises(n1.APIConnectionError) as info:
        client.models.list()
    assert info.value.status_code is None
    assert_secret_free(info.value, token)


def test_sync_client_repr_and_context_manager_hide_the_token(live: Live, uid: str) -> None:
    token = live.token(uid)
    client = n1.Native1API(live.base_url, token=token)
    with client as entered:
        assert entered is client
        stream = client.chat.completions.create(model=LLAMA, messages=user("repr"), stream=True)
        for text in (repr(client), str(client), repr(stream), repr(client.chat.completions)):
            assert token not in text
        stream.close()
    assert client._http.is_closed


# ---- async client --------------------------------------------------------------------------


async def test_async_create_stream_and_models(live: Live, uid: str) -> None:
    prompt = f"hello async {uid}"
    async with n1.AsyncNative1API(live.base_url, token=live.token(uid)) as client:
        completion = await client.chat.completions.create(model=LLAMA, messages=user(prompt))
        assert completion["object"] == "chat.completion"
        assert completion["model"] == LLAMA
        assert completion["choices"][0]["message"]["content"] == reply_text(prompt)
        assert completion["choices"][0]["finish_reason"] == "stop"

        stream = await client.chat.completions.create(
            model=LLAMA, messages=user(prompt), stream=True
        )
        assert stream.provider == "workers-ai"
        chunks = [chunk async for chunk in stream]
        text, finishes = content_and_finishes(chunks)
        assert text == reply_text(prompt)
        assert finishes == ["stop"]
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"

        models = await client.models.list()
        assert LLAMA in [model["id"] for model in models]


async def test_async_vault_and_byok_stream(live: Live, uid: str) -> None:
    prompt = f"byok async {uid}"
    async with n1.AsyncNative1API(live.base_url, token=live.token(uid)) as client:
        assert await client.vault.exists() == {"exists": False}
        saved = await client.vault.put(OPENROUTER_KEY, provider="openrouter")
        assert saved == {"exists": True, "provider": "openrouter"}
        assert await client.vault.exists() == {"exists": True, "provider": "openrouter"}
        async with await client.chat.completions.create(
            model=LLAMA, messages=user(prompt), stream=True
        ) as stream:
            assert stream.provider == "openrouter"
            text, finishes = content_and_finishes([chunk async for chunk in stream])
        assert text == reply_text(prompt)
        assert finishes == ["stop"]
        assert await client.vault.delete() == {"exists": False}
        assert await client.vault.exists() == {"exists": False}


async def test_async_token_provider_sync_or_async_called_per_request(live: Live, uid: str) -> None:
    calls = 0

    async def async_provider() -> str:
        nonlocal calls
        calls += 1
        return live.token(uid)

    async with n1.AsyncNative1API(live.base_url, token_provider=async_provider) as client:
        await client.models.list()
        await client.vault.exists()
        stream = await client.chat.completions.create(model=LLAMA, messages=user("tp"), stream=True)
        assert content_and_finishes([chunk async for chunk in stream])[0] == reply_text("tp")
    assert calls == 3

    plain_calls: list[str] = []

    def sync_provider() -> str:
        plain_calls.append(live.token(uid))
        return plain_calls[-1]

    async with n1.AsyncNative1API(live.base_url, token_provider=sync_provider) as client:
        await client.models.list()
        await client.chat.completions.create(model=LLAMA, messages=user("tp"))
    assert len(plain_calls) == 2


async def test_async_mid_stream_error_raises_stream_error(live: Live, uid: str) -> None:
    token = live.token(uid)
    prompt = f"cut async {uid} [[fake:cut_after=3]]"
    received: list[dict[str, Any]] = []
    async with n1.AsyncNative1API(live.base_url, token=token) as client:
        stream = await client.chat.completions.create(
            model=LLAMA, messages=user(prompt), stream=True
        )
        with pytest.raises(n1.StreamError) as info:
            await adrain(stream, received)
    assert info.value.code == "upstream_stream_interrupted"
    assert info.value.type == "server_error"
    assert info.value.status_code is None
    text, finishes = content_and_finishes(received)
    assert text and reply_text(prompt).startswith(text)
    assert finishes == []
    assert_secret_free(info.value, token)


async def test_async_closing_a_stream_cancels_the_upstream(live: Live, uid: str) -> None:
    prompt = f"close async {uid} [[fake:chunks=200,chunk_delay=0.02]]"
    async with (
        n1.AsyncNative1API(live.base_url, token=live.token(uid)) as client,
        await client.chat.completions.create(
            model=LLAMA, messages=user(prompt), stream=True
        ) as stream,
    ):
        async for chunk in stream:
            if chunk["choices"][0]["delta"].get("content"):
                break
    live.wait_for_outcome(prompt, "disconnected")
