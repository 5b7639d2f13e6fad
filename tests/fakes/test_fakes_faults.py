"""Fault modes, timing knobs, disconnect detection, recording and the runner, over real uvicorn."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from httpx_sse import aconnect_sse

from fakes import openrouter, workers_ai
from fakes.app import FakeApp
from fakes.behavior import Behavior
from fakes.content import reply_text
from fakes.server import serve, serve_in_thread
from fakes.testing import DONE, sse_data_into, sse_frames, user

TOKEN = "t0k"
MODEL = "@cf/meta/llama-3.2-3b-instruct"
RUN = f"/accounts/acct/ai/run/{MODEL}"


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeApp, str]]:
    app = workers_ai.create_app(tokens=[TOKEN], chunks=4)
    with serve_in_thread(app) as base_url:
        yield app, base_url


@pytest.fixture
def app(fake: tuple[FakeApp, str]) -> Iterator[FakeApp]:
    fake[0].control.reset()
    defaults = fake[0].control.defaults
    yield fake[0]
    fake[0].control.defaults = defaults


@pytest.fixture
async def client(fake: tuple[FakeApp, str], app: FakeApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=fake[1], headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    ) as c:
        yield c


# ---- abrupt cuts -------------------------------------------------------------------------------


async def test_stream_cut_is_an_abrupt_close_after_k_chunks(
    client: httpx.AsyncClient, app: FakeApp
) -> None:
    received: list[str] = []
    body = user("cut me [[fake:cut_after=3]]", stream=True, max_tokens=50)
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
        await sse_data_into(client, RUN, body, received)
    contents = [d for d in received if '"response":"' in d and '"response":""' not in d]
    assert len(contents) == 3 and DONE not in received
    record = app.control.last
    assert record.outcome == "cut" and record.notes["cut_after_chunks"] == 3


async def test_cut_after_more_chunks_than_exist_drops_usage_and_done(
    client: httpx.AsyncClient,
) -> None:
    received: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        await sse_data_into(
            client, RUN, user("x [[fake:cut_after=99]]", stream=True, max_tokens=50), received
        )
    assert len(received) > 4 and not any("usage" in d for d in received) and DONE not in received


@pytest.mark.parametrize("after", [0, 1, 5])
async def test_non_stream_cut_breaks_the_json_body(
    client: httpx.AsyncClient, app: FakeApp, after: int
) -> None:
    app.control.cut_next(after)
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post(RUN, json=user("x", max_tokens=50))
    # The connection is gone, not the fake: the next request works.
    assert (await client.post(RUN, json=user("x", max_tokens=50))).status_code == 200


async def test_cut_does_not_log_a_traceback(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR), pytest.raises(httpx.RemoteProtocolError):
        await client.post(RUN, json=user("x [[fake:cut_after=1]]", stream=True, max_tokens=50))
    await asyncio.sleep(0.05)
    assert not [r for r in caplog.records if "Exception in ASGI application" in r.getMessage()]


# ---- timing --------------------------------------------------------------------------------------


async def test_slow_first_byte(client: httpx.AsyncClient) -> None:
    start = time.monotonic()
    r = await client.post(RUN, json=user("x [[fake:delay_first=0.3]]", max_tokens=50))
    assert r.status_code == 200 and time.monotonic() - start >= 0.3


async def test_chunk_delay_spaces_the_chunks(client: httpx.AsyncClient, app: FakeApp) -> None:
    app.control.delay_next(chunk=0.05)
    start = time.monotonic()
    _, frames = await sse_frames(client, RUN, user("x", stream=True, max_tokens=50))
    assert time.monotonic() - start >= 0.15  # 4 chunks, 3 gaps
    assert frames[-1] == DONE


async def test_fault_status_can_be_slow_too(client: httpx.AsyncClient, app: FakeApp) -> None:
    app.control.push(Behavior(status=503, retry_after=1, delay_first=0.2))
    start = time.monotonic()
    r = await client.post(RUN, json=user("x"))
    assert r.status_code == 503 and time.monotonic() - start >= 0.2


# ---- disconnect detection ---------------------------------------------------------------------


async def test_client_disconnect_mid_stream_is_seen_quickly(
    client: httpx.AsyncClient, app: FakeApp
) -> None:
    body = user("long [[fake:chunks=200,chunk_delay=0.1]]", stream=True, max_tokens=500)
    async with aconnect_sse(client, "POST", RUN, json=body) as source:
        async for _event in source.aiter_sse():
            break  # got the first frame; leaving the block closes the connection
    closed_at = time.monotonic()
    event = await app.control.wait_for_disconnect(1.0)
    assert event.phase == "streaming" and 1 <= event.content_chunks_sent < 200
    assert event.at - closed_at < 1.0
    assert app.control.last.outcome == "disconnected"


async def test_client_disconnect_before_first_byte_is_seen(
    fake: tuple[FakeApp, str], app: FakeApp
) -> None:
    app.control.delay_next(first=5.0)
    async with httpx.AsyncClient(
        base_url=fake[1], headers={"Authorization": f"Bearer {TOKEN}"}, timeout=0.2
    ) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post(RUN, json=user("x", max_tokens=5))
    event = await app.control.wait_for_disconnect(1.0)
    assert (
        event.phase == "before_headers" and event.content_chunks_sent == 0 and event.elapsed < 1.5
    )


async def test_wait_for_disconnect_times_out(app: FakeApp) -> None:
    with pytest.raises(TimeoutError):
        await app.control.wait_for_disconnect(0.05)
    with pytest.raises(TimeoutError):
        app.control.wait_for_disconnect_sync(0.05)


# ---- concurrency, queue and records ------------------------------------------------------------


async def test_concurrent_streams_each_get_their_own_content(
    client: httpx.AsyncClient, app: FakeApp
) -> None:
    app.control.defaults = app.control.defaults.merged(Behavior(chunk_delay=0.005, chunks=8))

    async def one(i: int) -> tuple[str, str]:
        prompt = f"client number {i}"
        _, frames = await sse_frames(client, RUN, user(prompt, stream=True, max_tokens=50))
        return prompt, "".join(f.get("response") or "" for f in frames if isinstance(f, dict))

    results = await asyncio.gather(*(one(i) for i in range(24)))
    for prompt, text in results:
        assert text == reply_text(prompt, 8)
    assert app.control.count(f"/client/v4{RUN}") == 24


async def test_queued_faults_apply_in_order_then_stop(
    client: httpx.AsyncClient, app: FakeApp
) -> None:
    app.control.fail_next(503, retry_after=1, times=2)
    app.control.error_next(1)
    statuses = [
        (await client.post(RUN, json=user("x", max_tokens=5))).status_code for _ in range(2)
    ]
    assert statuses == [503, 503]
    _, frames = await sse_frames(client, RUN, user("x", stream=True, max_tokens=5))
    assert frames[-1]["success"] is False
    assert (await client.post(RUN, json=user("x", max_tokens=5))).status_code == 200


async def test_marker_times_fails_once_then_lets_the_retry_succeed(
    client: httpx.AsyncClient,
) -> None:
    body = user("flaky [[fake:status=503,retry_after=1,times=1]]", max_tokens=5)
    first = await client.post(RUN, json=body)
    second = await client.post(RUN, json=body)
    assert (first.status_code, first.headers["retry-after"]) == (503, "1")
    assert second.status_code == 200 and second.json()["result"]["response"] == reply_text(
        "flaky", 4
    )


async def test_scope_any_reaches_non_chat_endpoints(
    client: httpx.AsyncClient, app: FakeApp
) -> None:
    app.control.fail_next(500, text=False, scope="any")
    r = await client.get("/accounts/acct/ai/models/search")
    assert r.status_code == 500 and r.json()["errors"][0]["code"] == 3043
    assert (await client.get("/accounts/acct/ai/models/search")).status_code == 200


async def test_every_request_is_recorded(client: httpx.AsyncClient, app: FakeApp) -> None:
    await client.post(
        RUN + "?trace=1", json=user("record me", max_tokens=5), headers={"X-Extra": "yes"}
    )
    await client.get("/accounts/acct/ai/models/search")
    first, second = app.control.requests
    assert (first.method, first.path, first.query) == ("POST", f"/client/v4{RUN}", "trace=1")
    assert first.header("X-EXTRA") == "yes" and first.body["messages"][0]["content"] == "record me"
    assert first.status == 200 and first.behavior is not None and first.behavior.chunks == 4
    assert second.method == "GET" and second.body is None
    assert app.control.counts == {
        f"/client/v4{RUN}": 1,
        "/client/v4/accounts/acct/ai/models/search": 1,
    }


async def test_invalid_json_body_is_recorded_and_refused(
    client: httpx.AsyncClient, app: FakeApp
) -> None:
    r = await client.post(RUN, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == 3003
    assert app.control.last.raw_body == b"{not json" and app.control.last.body is None


# ---- runner ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_thread", [True, False])
async def test_async_runner_serves_and_stops(in_thread: bool) -> None:
    app = openrouter.create_app(tokens=["k"])
    async with (
        serve(app, in_thread=in_thread) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=5) as c,
    ):
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/api/v1")
        r = await c.get("/models")
        assert r.status_code == 200
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=1) as c:
            await c.get(base_url + "/models")
