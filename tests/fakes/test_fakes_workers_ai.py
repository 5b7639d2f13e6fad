"""Conformance of the Workers AI fake to reference/wire-formats.md §2 and §6, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest

from fakes import workers_ai
from fakes.app import FakeApp
from fakes.content import reply_text
from fakes.server import serve_in_thread
from fakes.testing import DONE, sse_frames, user

TOKEN = "cf-test-token"
ACCT = "acct123"
LLAMA = "@cf/meta/llama-3.2-3b-instruct"
SCOUT = "@cf/meta/llama-4-scout-17b-16e-instruct"
QWEN3 = "@cf/qwen/qwen3-30b-a3b-fp8"
GPT_OSS = "@cf/openai/gpt-oss-20b"
RUN = f"/accounts/{ACCT}/ai/run/"
V1 = f"/accounts/{ACCT}/ai/v1/chat/completions"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "square_root",
            "description": "sqrt",
            "parameters": {
                "type": "object",
                "properties": {"number": {"type": "number"}},
                "required": ["number"],
            },
        },
    }
]


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeApp, str]]:
    app = workers_ai.create_app(tokens=[TOKEN], account_id=ACCT, chunks=4)
    with serve_in_thread(app) as base_url:
        yield app, base_url


@pytest.fixture
async def client(fake: tuple[FakeApp, str]) -> AsyncIterator[httpx.AsyncClient]:
    app, base_url = fake
    app.control.reset()
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    ) as c:
        yield c


def control(fake: tuple[FakeApp, str]) -> Any:
    return fake[0].control


async def test_base_url_mirrors_the_real_layout(fake: tuple[FakeApp, str]) -> None:
    assert fake[1].endswith("/client/v4")
    assert fake[0].base_path == workers_ai.BASE_PATH


# ---- auth and routing errors ----------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic abc"])
async def test_bad_token_is_401_code_10000(client: httpx.AsyncClient, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    client.headers.pop("Authorization")
    r = await client.post(RUN + LLAMA, json=user("hi", max_tokens=10), headers=headers)
    assert r.status_code == 401
    assert r.json() == {
        "result": None,
        "success": False,
        "errors": [{"code": 10000, "message": "Authentication error"}],
        "messages": [],
    }


async def test_wrong_account_is_an_auth_error(client: httpx.AsyncClient) -> None:
    r = await client.post(f"/accounts/other/ai/run/{LLAMA}", json=user("hi"))
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == 10000


async def test_unknown_model_is_400_code_7000(client: httpx.AsyncClient) -> None:
    r = await client.post(RUN + "bad%20model", json=user("hi"))
    assert r.status_code == 400
    assert r.json() == {
        "success": False,
        "errors": [{"code": 7000, "message": "No route for that URI"}],
        "messages": [],
        "result": None,
    }
    r = await client.post(RUN + "@cf/foo/bar", json=user("hi"))
    assert r.json()["errors"][0]["code"] == 7000


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
            "'/messages/0/content', 'list'",
        ),
        ({"messages": [{"role": "assistant", "content": None}]}, "'null' not in 'string'"),
        ({"max_tokens": 5}, "required properties at '/' are 'prompt'"),
        (user("hi", temperature=7), "'/temperature' must be"),
        (user("hi", seed=0), "'/seed' must be"),
        (user("hi", presence_penalty=-1), "'/presence_penalty' must be"),
    ],
)
async def test_native_schema_violations_are_400_bad_input(
    client: httpx.AsyncClient, body: dict[str, Any], fragment: str
) -> None:
    r = await client.post(RUN + LLAMA, json=body)
    assert r.status_code == 400
    error = r.json()["errors"][0]
    assert error["code"] == 5006 and fragment in error["message"]


async def test_vision_model_accepts_content_parts(client: httpx.AsyncClient) -> None:
    body = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 50,
    }
    r = await client.post(RUN + "@cf/meta/llama-3.2-11b-vision-instruct", json=body)
    assert r.status_code == 200 and r.json()["result"]["response"] == reply_text("hi", 4)


# ---- native non-stream -------------------------------------------------------------------------


async def test_native_non_stream_envelope(
    client: httpx.AsyncClient, fake: tuple[FakeApp, str]
) -> None:
    r = await client.post(
        RUN + LLAMA,
        json={
            "messages": [
                {"role": "system", "content": "be terse"},
                {"role": "user", "content": "Say hello"},
            ],
            "max_tokens": 64,
        },
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert {"cf-ray", "cf-ai-req-id"} <= set(r.headers)
    body = r.json()
    assert body == {
        "result": {
            "response": reply_text("Say hello", 4),
            "usage": {"prompt_tokens": 15, "completion_tokens": 4, "total_tokens": 19},
        },
        "success": True,
        "errors": [],
        "messages": [],
    }
    record = control(fake).last
    assert record.body["max_tokens"] == 64 and record.header("authorization") == f"Bearer {TOKEN}"
    assert record.notes["max_tokens_defaulted"] is False and record.outcome == "completed"


async def test_default_max_tokens_256_truncates_silently(
    client: httpx.AsyncClient, fake: tuple[FakeApp, str]
) -> None:
    r = await client.post(RUN + LLAMA, json=user("long please [[fake:chunks=300]]"))
    result = r.json()["result"]
    assert result["usage"]["completion_tokens"] == 256
    assert result["response"] == reply_text("long please", 300, max_tokens=256)
    assert "finish_reason" not in result
    notes = control(fake).last.notes
    assert notes["max_tokens_defaulted"] is True and notes["truncated_by_default"] is True
    # With an explicit max_tokens the same request is not truncated.
    r = await client.post(
        RUN + LLAMA, json=user("long please [[fake:chunks=300]]", max_tokens=1000)
    )
    assert r.json()["result"]["usage"]["completion_tokens"] == 300


async def test_flat_tool_call_non_stream(client: httpx.AsyncClient) -> None:
    r = await client.post(RUN + LLAMA, json=user("sqrt of 9", tools=TOOLS, max_tokens=100))
    result = r.json()["result"]
    assert result["response"] is None
    (call,) = result["tool_calls"]
    assert call["name"] == "square_root" and isinstance(call["arguments"], dict)
    assert isinstance(call["arguments"]["number"], float)


async def test_openai_like_tool_call_non_stream(client: httpx.AsyncClient) -> None:
    r = await client.post(RUN + SCOUT, json=user("sqrt of 9", tools=TOOLS, max_tokens=100))
    result = r.json()["result"]
    assert "response" not in result
    (call,) = result["tool_calls"]
    assert call["id"].startswith("chatcmpl-tool-") and call["type"] == "function"
    assert call["function"]["name"] == "square_root"
    assert isinstance(orjson.loads(call["function"]["arguments"])["number"], float)


async def test_json_schema_gives_an_object_response(client: httpx.AsyncClient) -> None:
    schema = {
        "type": "object",
        "properties": {"is_fruit": {"type": "boolean"}},
        "required": ["is_fruit"],
    }
    r = await client.post(
        RUN + LLAMA,
        json=user(
            "apple?", max_tokens=100, response_format={"type": "json_schema", "json_schema": schema}
        ),
    )
    result = r.json()["result"]
    assert result["response"] == {"is_fruit": True} and result["tool_calls"] == []


async def test_vllm_model_returns_chat_completion_inside_result(client: httpx.AsyncClient) -> None:
    r = await client.post(RUN + QWEN3, json=user("hi", max_tokens=100))
    result = r.json()["result"]
    assert result["object"] == "chat.completion"
    choice = result["choices"][0]
    assert choice["message"]["content"] == reply_text("hi", 4) and choice["finish_reason"] == "stop"
    assert "reasoning_content" in choice["message"] and result["usage"]["completion_tokens"] == 4


async def test_gpt_oss_answers_json_even_when_streaming(client: httpx.AsyncClient) -> None:
    r = await client.post(
        RUN + GPT_OSS, json={"input": "hello there", "instructions": "be brief", "stream": True}
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    result = r.json()["result"]
    assert result["object"] == "response"
    message = result["output"][-1]
    assert message["content"][0]["text"] == reply_text("hello there", 4)


# ---- native stream -----------------------------------------------------------------------------


async def test_native_stream_frames(client: httpx.AsyncClient) -> None:
    response, frames = await sse_frames(
        client, RUN + LLAMA, user("stream me", stream=True, max_tokens=100)
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert frames[-1] == DONE
    usage_frame = frames[-2]
    assert usage_frame == {
        "response": "",
        "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
    }
    data = frames[:-2]
    assert {} in data  # the bare `data: {}` frame
    assert any(set(f) == {"tool_calls", "p"} and f["tool_calls"] == [] for f in data)
    text_frames = [f for f in data if "response" in f]
    assert all(isinstance(f["p"], str) and f["p"] for f in text_frames)
    assert "".join(f["response"] for f in text_frames) == reply_text("stream me", 4)
    assert not any("finish_reason" in f for f in frames if isinstance(f, dict))


async def test_native_stream_stops_at_max_tokens_without_finish_reason(
    client: httpx.AsyncClient,
) -> None:
    _, frames = await sse_frames(
        client, RUN + LLAMA, user("x [[fake:chunks=10]]", stream=True, max_tokens=3)
    )
    text = "".join(f.get("response") or "" for f in frames if isinstance(f, dict))
    assert text == reply_text("x", 10, max_tokens=3)
    assert frames[-2]["usage"]["completion_tokens"] == 3


async def test_flat_model_streams_tool_call_as_text(client: httpx.AsyncClient) -> None:
    _, frames = await sse_frames(
        client, RUN + LLAMA, user("sqrt", stream=True, tools=TOOLS, max_tokens=100)
    )
    text = "".join(f.get("response") or "" for f in frames if isinstance(f, dict))
    call = orjson.loads(text)
    assert call["name"] == "square_root" and isinstance(call["parameters"]["number"], str)


async def test_scout_streams_top_level_tool_call_deltas(client: httpx.AsyncClient) -> None:
    _, frames = await sse_frames(
        client, RUN + SCOUT, user("sqrt", stream=True, tools=TOOLS, max_tokens=100)
    )
    deltas = [f["tool_calls"][0] for f in frames if isinstance(f, dict) and f.get("tool_calls")]
    assert deltas[0]["id"].startswith("chatcmpl-tool-") and deltas[0]["function"] == {
        "name": "square_root"
    }
    arguments = "".join(d["function"].get("arguments", "") for d in deltas)
    assert "number" in orjson.loads(arguments)
    assert frames[0] == {"response": "", "tool_calls": [], "p": frames[0]["p"]}


async def test_vllm_model_streams_openai_chunks_on_ai_run(client: httpx.AsyncClient) -> None:
    _, frames = await sse_frames(client, RUN + QWEN3, user("hi", stream=True, max_tokens=100))
    chunks = frames[:-1]
    assert frames[-1] == DONE
    assert all(c["object"] == "chat.completion.chunk" and "usage" in c for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == reply_text("hi", 4)


async def test_shape_markers_force_openai_frames_or_json(client: httpx.AsyncClient) -> None:
    _, frames = await sse_frames(
        client, RUN + LLAMA, user("hi [[fake:shape=openai]]", stream=True, max_tokens=9)
    )
    assert frames[0]["object"] == "chat.completion.chunk"
    r = await client.post(
        RUN + LLAMA, json=user("hi [[fake:shape=json]]", stream=True, max_tokens=9)
    )
    assert r.headers["content-type"] == "application/json" and r.json()["result"][
        "response"
    ] == reply_text("hi", 4)


# ---- faults ------------------------------------------------------------------------------------


async def test_capacity_429_with_retry_after(
    client: httpx.AsyncClient, fake: tuple[FakeApp, str]
) -> None:
    control(fake).fail_next(429, retry_after=1)
    r = await client.post(RUN + LLAMA, json=user("hi"))
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert r.json()["errors"] == [
        {"code": 3040, "message": "Capacity temporarily exceeded, please try again."}
    ]
    r = await client.post(RUN + LLAMA, json=user("hi [[fake:status=429,code=3036]]"))
    assert (
        r.status_code == 429
        and r.json()["errors"][0]["code"] == 3036
        and "retry-after" not in r.headers
    )


async def test_500_is_a_text_body_and_503_an_envelope(client: httpx.AsyncClient) -> None:
    r = await client.post(RUN + LLAMA, json=user("hi [[fake:status=500]]"))
    assert (
        r.status_code == 500
        and r.text == "Internal Server Error"
        and r.headers["content-type"].startswith("text/plain")
    )
    r = await client.post(RUN + LLAMA, json=user("hi [[fake:status=503,retry_after=2]]"))
    assert (
        r.status_code == 503
        and r.json()["errors"][0]["code"] == 7009
        and r.headers["retry-after"] == "2"
    )


async def test_reject_if_busy(client: httpx.AsyncClient) -> None:
    r = await client.post(
        RUN + LLAMA, json=user("hi [[fake:busy]]", options={"rejectIfBusy": True})
    )
    assert r.status_code == 429 and r.json()["errors"][0]["code"] == 3040


async def test_mid_stream_error_frame_then_no_done(
    client: httpx.AsyncClient, fake: tuple[FakeApp, str]
) -> None:
    _, frames = await sse_frames(
        client, RUN + LLAMA, user("hi [[fake:error_after=2]]", stream=True, max_tokens=10)
    )
    assert DONE not in frames
    assert frames[-1]["success"] is False and frames[-1]["errors"][0]["code"] == 3043
    assert sum(1 for f in frames if f.get("response")) == 2
    assert control(fake).last.outcome == "error_frame"


async def test_bad_marker_is_a_400(client: httpx.AsyncClient) -> None:
    r = await client.post(RUN + LLAMA, json=user("hi [[fake:explode=1]]"))
    assert r.status_code == 400 and "unknown fake marker key" in r.json()["errors"][0]["message"]


# ---- OpenAI-compatible endpoint ----------------------------------------------------------------


async def test_v1_non_stream(client: httpx.AsyncClient) -> None:
    r = await client.post(V1, json={"model": LLAMA, **user("hi", max_tokens=50)})
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == LLAMA
    assert body["choices"][0]["message"]["content"] == reply_text("hi", 4)
    assert body["choices"][0]["finish_reason"] == "stop" and body["usage"]["total_tokens"] == 12


async def test_v1_stream_usage_only_when_asked(client: httpx.AsyncClient) -> None:
    _, frames = await sse_frames(
        client, V1, {"model": LLAMA, **user("hi", stream=True, max_tokens=50)}
    )
    assert frames[-1] == DONE and frames[-2]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in f for f in frames[:-1])
    body = {
        "model": LLAMA,
        **user("hi", stream=True, max_tokens=50, stream_options={"include_usage": True}),
    }
    _, frames = await sse_frames(client, V1, body)
    assert frames[-2]["choices"] == [] and frames[-2]["usage"]["completion_tokens"] == 4
    assert frames[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}


async def test_v1_tool_call_stream(client: httpx.AsyncClient) -> None:
    _, frames = await sse_frames(
        client, V1, {"model": SCOUT, **user("sqrt", stream=True, tools=TOOLS, max_tokens=50)}
    )
    deltas = [f["choices"][0]["delta"] for f in frames[:-1] if f["choices"]]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["function"]["name"] == "square_root"
    assert frames[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_v1_errors_in_both_envelopes(client: httpx.AsyncClient) -> None:
    r = await client.post(V1, json={"model": "@cf/foo/bar", **user("hi")})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == 5007
    r = await client.post(
        V1, json={"model": LLAMA, **user("hi [[fake:status=429,envelope=openai]]")}
    )
    assert r.status_code == 429 and r.json()["error"]["code"] == "3040"
    r = await client.post(
        V1, json={"model": LLAMA, **user("hi")}, headers={"Authorization": "Bearer nope"}
    )
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == 10000


# ---- catalog and token verification ------------------------------------------------------------


async def test_models_search_text_generation(client: httpx.AsyncClient) -> None:
    r = await client.get(
        f"/accounts/{ACCT}/ai/models/search", params={"task": "Text Generation", "per_page": 100}
    )
    body = r.json()
    assert body["success"] is True and body["errors"] == [] and body["messages"] == []
    names = [m["name"] for m in body["result"]]
    assert len(names) == 28 and LLAMA in names and "@cf/baai/bge-base-en-v1.5" not in names
    info = body["result_info"]
    assert (
        info["count"] == 28
        and info["page"] == 1
        and info["per_page"] == 100
        and info["total_count"] > 28
    )
    llama = next(m for m in body["result"] if m["name"] == LLAMA)
    props = {p["property_id"]: p["value"] for p in llama["properties"]}
    assert props["context_window"] == "80000" and props["lora"] == "true"
    assert props["price"][0] == {"unit": "per M input tokens", "price": 0.0509, "currency": "USD"}
    assert llama["task"]["name"] == "Text Generation" and " " in llama["created_at"]


async def test_models_search_paginates_until_empty(client: httpx.AsyncClient) -> None:
    seen: list[str] = []
    for page in range(1, 10):
        r = await client.get(
            f"/accounts/{ACCT}/ai/models/search",
            params={"task": "Text Generation", "per_page": 10, "page": page},
        )
        result = r.json()["result"]
        if not result:
            break
        seen += [m["name"] for m in result]
    assert len(seen) == len(set(seen)) == 28
    r = await client.get(
        f"/accounts/{ACCT}/ai/models/search",
        params={"hide_experimental": "true", "task": "Text Generation", "per_page": 100},
    )
    assert not any(
        m["name"].endswith("-lora") and "beta" in str(m["properties"]) for m in r.json()["result"]
    )


async def test_models_search_bad_token_is_400_10001(client: httpx.AsyncClient) -> None:
    r = await client.get(
        f"/accounts/{ACCT}/ai/models/search", headers={"Authorization": "Bearer nope"}
    )
    assert r.status_code == 400
    assert r.json() == {
        "success": False,
        "errors": [{"code": 10001, "message": "Unable to authenticate request"}],
    }


async def test_token_verify(client: httpx.AsyncClient) -> None:
    r = await client.get("/user/tokens/verify")
    body = r.json()
    assert r.status_code == 200 and body["result"]["status"] == "active"
    assert body["messages"] == [
        {"code": 10000, "message": "This API Token is valid and active", "type": None}
    ]
    r = await client.get(
        f"/accounts/{ACCT}/tokens/verify", headers={"Authorization": "Bearer nope"}
    )
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == 1000


async def test_unknown_path_is_recorded_and_enveloped(
    client: httpx.AsyncClient, fake: tuple[FakeApp, str]
) -> None:
    r = await client.get("/accounts/x/ai/nothing")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == 7000
    assert control(fake).count("/client/v4/accounts/x/ai/nothing") == 1
