"""Conformance of the OpenRouter fake to reference/wire-formats.md §3 and §6, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import orjson
import pytest

from fakes import openrouter
from fakes.app import FakeApp
from fakes.content import reply_text
from fakes.server import serve_in_thread
from fakes.testing import DONE, sse_frames, user

KEY = "sk-or-v1-0123456789abcdef0123"
MODEL = "meta-llama/llama-3.2-3b-instruct"
REASONING_MODEL = "qwen/qwen3.5-35b-a3b"


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeApp, str]]:
    app = openrouter.create_app(tokens=[KEY], chunks=3)
    with serve_in_thread(app) as base_url:
        yield app, base_url


@pytest.fixture
async def client(fake: tuple[FakeApp, str]) -> AsyncIterator[httpx.AsyncClient]:
    app, base_url = fake
    app.control.reset()
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=5
    ) as c:
        yield c


async def test_base_url_layout(fake: tuple[FakeApp, str]) -> None:
    assert fake[1].endswith("/api/v1")


async def test_non_stream_body_is_padded_with_whitespace(client: httpx.AsyncClient) -> None:
    r = await client.post("/chat/completions", json={"model": MODEL, **user("hi")})
    assert r.status_code == 200
    assert r.text.startswith("\n") and r.text.lstrip().startswith("{")
    body = orjson.loads(r.content)  # JSON parsers accept the leading whitespace
    assert body["object"] == "chat.completion" and body["provider"]
    choice = body["choices"][0]
    assert choice["message"]["content"] == reply_text("hi", 3)
    assert choice["finish_reason"] == "stop" and choice["native_finish_reason"] == "stop"
    usage = body["usage"]
    assert (
        usage["cost"] > 0
        and usage["is_byok"] is False
        and usage["total_tokens"] == usage["prompt_tokens"] + 3
    )


async def test_response_model_is_the_dated_slug(client: httpx.AsyncClient) -> None:
    r = await client.post("/chat/completions", json={"model": REASONING_MODEL, **user("hi")})
    body = orjson.loads(r.content)
    assert body["model"] == "qwen/qwen3.5-35b-a3b-20260224"
    message = body["choices"][0]["message"]
    assert message["reasoning"] and message["reasoning_details"][0]["type"] == "reasoning.text"
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 1


async def test_stream_comments_chunks_and_usage_chunk(client: httpx.AsyncClient) -> None:
    async with client.stream(
        "POST", "/chat/completions", json={"model": MODEL, **user("hi", stream=True)}
    ) as r:
        raw = (await r.aread()).decode()
    assert (
        raw.startswith(": OPENROUTER PROCESSING\n\n") and raw.count(": OPENROUTER PROCESSING") == 2
    )
    response, frames = await sse_frames(
        client, "/chat/completions", {"model": MODEL, **user("hi", stream=True)}
    )
    assert response.headers["x-generation-id"].startswith("gen-")
    assert frames[-1] == DONE
    chunks = frames[:-1]
    assert all(c["provider"] and c["id"].startswith("gen-") for c in chunks)
    assert all(c["choices"][0]["delta"]["role"] == "assistant" for c in chunks)
    finish, usage_chunk = chunks[-2], chunks[-1]
    assert finish["choices"][0]["finish_reason"] == "stop" and "usage" not in finish
    # The usage chunk repeats finish_reason and keeps a non-empty choices list.
    assert (
        usage_chunk["choices"][0]["finish_reason"] == "stop"
        and usage_chunk["choices"][0]["native_finish_reason"] == "stop"
    )
    assert usage_chunk["usage"]["completion_tokens"] == 3 and "cost" in usage_chunk["usage"]
    text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks[:-2])
    assert text == reply_text("hi", 3)


async def test_stream_reasoning_and_length_finish(client: httpx.AsyncClient) -> None:
    _, frames = await sse_frames(
        client,
        "/chat/completions",
        {"model": REASONING_MODEL, **user("hi [[fake:chunks=5]]", stream=True, max_tokens=2)},
    )
    first = frames[0]["choices"][0]["delta"]
    assert first["content"] == "" and first["reasoning"].startswith("Thinking")
    assert frames[-2]["choices"][0]["finish_reason"] == "length"
    assert frames[-2]["usage"]["completion_tokens"] == 3  # 2 content tokens + 1 reasoning token


async def test_tool_call_stream(client: httpx.AsyncClient) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    _, frames = await sse_frames(
        client, "/chat/completions", {"model": MODEL, **user("find", stream=True, tools=tools)}
    )
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in frames[:-1]
        if "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls[0]["function"]["name"] == "lookup"
    assert orjson.loads("".join(c["function"]["arguments"] for c in calls))["q"]
    assert frames[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_mid_stream_error_chunk(client: httpx.AsyncClient) -> None:
    _, frames = await sse_frames(
        client,
        "/chat/completions",
        {"model": MODEL, **user("hi [[fake:error_after=1]]", stream=True)},
    )
    assert DONE not in frames
    last = frames[-1]
    assert last["error"] == {
        "code": "server_error",
        "message": "Provider disconnected unexpectedly",
    }
    assert last["choices"][0]["finish_reason"] == "error"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing Authentication header"),
        ({"Authorization": "Bearer sk-or-v1-bad"}, "No auth credentials found"),
    ],
)
async def test_auth_errors(
    client: httpx.AsyncClient, headers: dict[str, str], message: str
) -> None:
    client.headers.pop("Authorization")
    r = await client.post("/chat/completions", json={"model": MODEL, **user("hi")}, headers=headers)
    assert r.status_code == 401 and r.json() == {"error": {"message": message, "code": 401}}


async def test_unknown_model_is_400_with_user_id(client: httpx.AsyncClient) -> None:
    r = await client.post("/chat/completions", json={"model": "bad/model", **user("hi")})
    body = r.json()
    assert r.status_code == 400 and body["error"] == {
        "message": "bad/model is not a valid model ID",
        "code": 400,
    }
    assert body["user_id"].startswith("user_")
    r = await client.post(
        "/chat/completions", json={"model": "some-org/some-new-model:free", **user("hi")}
    )
    assert r.status_code == 200  # non-strict: plausible ids the catalog lacks are served


@pytest.mark.parametrize("status", [400, 402, 403, 408, 429, 502, 503])
async def test_fault_statuses_use_int_codes(client: httpx.AsyncClient, status: int) -> None:
    r = await client.post(
        "/chat/completions", json={"model": MODEL, **user(f"hi [[fake:status={status}]]")}
    )
    assert r.status_code == status
    error = r.json()["error"]
    assert error["code"] == status and error["message"]
    if status == 403:
        assert error["metadata"]["reasons"] and error["metadata"]["model_slug"] == MODEL
    if status == 429:
        assert r.headers["x-ratelimit-remaining"] == "0"
    if status == 502:
        assert error["metadata"]["provider_name"]


async def test_attribution_headers_are_recorded(
    client: httpx.AsyncClient, fake: tuple[FakeApp, str]
) -> None:
    headers = {
        "HTTP-Referer": "https://app.example",
        "X-OpenRouter-Title": "Native1API",
        "X-Title": "Native1API",
    }
    await client.post("/chat/completions", json={"model": MODEL, **user("hi")}, headers=headers)
    assert fake[0].control.last.notes["attribution"] == {
        "http-referer": "https://app.example",
        "x-openrouter-title": "Native1API",
        "x-title": "Native1API",
    }


async def test_key_endpoint(client: httpx.AsyncClient) -> None:
    r = await client.get("/key")
    data = r.json()["data"]
    assert (
        data["label"] == "sk-or-v1-012...123"
        and data["limit_remaining"] == 74.5
        and data["is_free_tier"] is False
    )
    assert (await client.get("/auth/key")).status_code == 200
    r = await client.get("/key", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == 401


async def test_models_listing_is_public(client: httpx.AsyncClient) -> None:
    client.headers.pop("Authorization")
    r = await client.get("/models")
    body = r.json()
    assert (
        r.status_code == 200
        and body["total_count"] == len(body["data"])
        and body["links"] == {"next": None}
    )
    item = next(m for m in body["data"] if m["id"] == MODEL)
    assert isinstance(item["pricing"]["prompt"], str) and item["top_provider"]["context_length"] > 0
    assert "supported_parameters" in item and item["architecture"]["modality"] == "text->text"
