"""Conformance of the Together fake to reference/wire-formats.md §4 and §6, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import orjson
import pytest

from fakes import together
from fakes.app import FakeApp
from fakes.content import reply_text
from fakes.server import serve_in_thread
from fakes.testing import DONE, sse_frames, user

KEY = "tgp_v1_testkey"
LLAMA = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
GPT_OSS = "openai/gpt-oss-20b"


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeApp, str]]:
    app = together.create_app(tokens=[KEY], chunks=3)
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


async def test_non_stream_shape(client: httpx.AsyncClient) -> None:
    r = await client.post("/chat/completions", json={"model": GPT_OSS, **user("hi")})
    assert r.text.startswith("{\n  ")  # pretty-printed
    assert {"x-api-received", "x-inference-version"} <= set(r.headers)
    body = r.json()
    assert body["prompt"] == [] and body["metadata"] == {"weight_version": "default"}
    choice = body["choices"][0]
    assert (
        choice["message"]["content"] == reply_text("hi", 3)
        and choice["message"]["tool_calls"] == []
    )
    assert choice["message"]["reasoning"] and "seed" in choice and choice["finish_reason"] == "stop"
    assert body["usage"]["reasoning_tokens"] == 0 and body["usage"]["completion_tokens"] == 3


async def test_llama_finishes_with_eos_unless_overridden(client: httpx.AsyncClient) -> None:
    r = await client.post("/chat/completions", json={"model": LLAMA, **user("hi")})
    assert r.json()["choices"][0]["finish_reason"] == "eos"
    r = await client.post(
        "/chat/completions", json={"model": LLAMA, **user("hi [[fake:finish=stop]]")}
    )
    assert r.json()["choices"][0]["finish_reason"] == "stop"
    r = await client.post("/chat/completions", json={"model": LLAMA, **user("hi", max_tokens=1)})
    assert r.json()["choices"][0]["finish_reason"] == "length"


async def test_stream_fields_and_unsolicited_usage_chunk(client: httpx.AsyncClient) -> None:
    response, frames = await sse_frames(
        client, "/chat/completions", {"model": LLAMA, **user("hi", stream=True)}
    )
    assert response.headers["content-type"] == "text/event-stream;charset=utf-8"
    assert frames[-1] == DONE
    chunks = frames[:-1]
    assert "usage" not in chunks[0] and all(c["usage"] is None for c in chunks[1:-1])
    for chunk in chunks[:-1]:
        choice = chunk["choices"][0]
        assert "text" in choice and {"token_id", "role", "content", "reasoning"} <= set(
            choice["delta"]
        )
    content = chunks[1:-2]
    assert all(isinstance(c["choices"][0]["delta"]["token_id"], int) for c in content)
    assert "".join(c["choices"][0]["text"] for c in content) == reply_text("hi", 3)
    finish = chunks[-2]["choices"][0]
    assert finish["finish_reason"] == "eos" and isinstance(finish["seed"], int)
    # Sent although the request had no stream_options.
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


async def test_gpt_oss_stream_has_null_token_ids(client: httpx.AsyncClient) -> None:
    _, frames = await sse_frames(
        client, "/chat/completions", {"model": GPT_OSS, **user("hi", stream=True)}
    )
    assert all(f["choices"][0]["delta"]["token_id"] is None for f in frames[:-2])
    assert frames[-3]["choices"][0]["finish_reason"] == "stop"


async def test_mid_stream_error_frame(client: httpx.AsyncClient) -> None:
    _, frames = await sse_frames(
        client,
        "/chat/completions",
        {"model": LLAMA, **user("hi [[fake:error_after=2]]", stream=True)},
    )
    assert DONE not in frames
    assert set(frames[-1]) == {"error"} and frames[-1]["error"]["type"] == "server_error"


async def test_bad_key_error_has_top_level_id(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/chat/completions",
        json={"model": LLAMA, **user("hi")},
        headers={"Authorization": "Bearer nope"},
    )
    body = r.json()
    assert r.status_code == 401 and body["id"]
    assert (
        body["error"]["code"] == "invalid_api_key"
        and body["error"]["type"] == "invalid_request_error"
    )
    assert body["error"]["param"] is None and body["error"]["message"].startswith(
        "Invalid API key provided"
    )


@pytest.mark.parametrize("model", ["bad model", "meta-llama/llama-3.3-70b-instruct-turbo"])
async def test_unknown_or_wrong_case_model_is_404(client: httpx.AsyncClient, model: str) -> None:
    r = await client.post("/chat/completions", json={"model": model, **user("hi")})
    body = r.json()
    assert r.status_code == 404 and body["error"]["code"] == "model_not_available" and body["id"]
    assert body["error"]["message"].startswith(f"Unable to access model {model}.")


async def test_faults(client: httpx.AsyncClient, fake: tuple[FakeApp, str]) -> None:
    fake[0].control.fail_next(503, retry_after=1)
    r = await client.post("/chat/completions", json={"model": LLAMA, **user("hi")})
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["id"]
    r = await client.post(
        "/chat/completions", json={"model": LLAMA, **user("hi [[fake:status=402]]")}
    )
    assert r.json() == {"error": {"message": "Credit limit exceeded", "type": "credit_limit"}}
    r = await client.post(
        "/chat/completions", json={"model": LLAMA, **user("hi [[fake:status=503,text]]")}
    )
    assert r.headers["content-type"].startswith("text/plain") and r.text
    r = await client.post(
        "/chat/completions", json={"model": LLAMA, **user("hi [[fake:status=429]]")}
    )
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"


async def test_models_is_a_bare_array_and_the_key_check(client: httpx.AsyncClient) -> None:
    r = await client.get("/models")
    models = r.json()
    assert isinstance(models, list) and any(
        m["id"] == LLAMA and m["type"] == "chat" for m in models
    )
    item = models[0]
    assert {
        "id",
        "object",
        "created",
        "type",
        "running",
        "display_name",
        "organization",
        "context_length",
        "config",
        "pricing",
    } <= set(item)
    assert isinstance(item["pricing"]["input"], float)
    r = await client.get("/models", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and orjson.loads(r.content) == {
        "error": {"message": "Unauthorized"}
    }
