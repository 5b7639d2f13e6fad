"""What one connection may cost the bridge (SPEC §11), tested on real sockets.

Header and body timeouts, the connection cap, the 2,048-message cap (REST and gRPC), the metrics
listener, and the header cap against a `python -m rest_bridge` process (RSS, /healthz latency).
The header cap's byte accounting is in test_http_protocol.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from native1api.gateway.v1 import chat_pb2, gateway_service_pb2
from rest_bridge.http_protocol import LINGER_SECONDS
from tests.bridge.support import (
    Bridge,
    bridge_settings,
    chat_body,
    open_raw,
    read_response,
    read_to_close,
    serve_bridge,
    stream_chat,
)
from tests.support.procs import Service, free_port, run_module
from tests.support.rpc import error_details
from tests.support.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

TIMEOUT = 0.5  # the short header and body timeouts of `timed_bridge`
GET_HEALTHZ = b"GET /healthz HTTP/1.1\r\nhost: bridge\r\n\r\n"


def refused(bridge: Bridge, reason: str) -> float:
    value = bridge.state.metrics.registry.get_sample_value(
        "native1api_bridge_http_connections_refused_total", {"reason": reason}
    )
    return value or 0.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def timed_bridge(stack: Stack) -> AsyncIterator[Bridge]:
    settings = bridge_settings(
        stack.gateway_address,
        stack.vault_address,
        header_timeout_seconds=TIMEOUT,
        body_timeout_seconds=TIMEOUT,
    )
    async with serve_bridge(settings) as bridge:
        yield bridge


# Header timeout ---------------------------------------------------------------------------------


async def test_a_connection_that_never_sends_a_byte_is_closed(timed_bridge: Bridge) -> None:
    before = refused(timed_bridge, "header_timeout")
    reader, writer = await open_raw(timed_bridge)
    started = time.monotonic()
    try:
        data = await read_to_close(reader, within=5)
    finally:
        writer.close()
    elapsed = time.monotonic() - started
    assert data == b""  # nothing to answer: closed silently
    assert TIMEOUT * 0.8 <= elapsed < TIMEOUT + 2.5
    assert refused(timed_bridge, "header_timeout") == before + 1


async def test_half_sent_headers_get_408_then_close(timed_bridge: Bridge) -> None:
    reader, writer = await open_raw(timed_bridge)
    started = time.monotonic()
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: bridge\r\nx-partial: yes")
        response = await read_response(reader, within=5)
        elapsed = time.monotonic() - started
        assert await read_to_close(reader, within=5) == b""
    finally:
        writer.close()
    assert response.status == 408
    assert response.headers["connection"] == "close"
    error = response.error()
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_timeout")
    assert TIMEOUT * 0.8 <= elapsed < TIMEOUT + 2.5


async def test_a_trickled_head_does_not_extend_its_deadline(timed_bridge: Bridge) -> None:
    """One byte every 50 ms is progress, but the head must be complete in time all the same."""
    reader, writer = await open_raw(timed_bridge)

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for byte in b"GET /healthz HTTP/1.1\r\nx-slow: " + b"a" * 1000:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)

    started = time.monotonic()
    task = asyncio.create_task(trickle())
    try:
        response = await read_response(reader, within=5)
    finally:
        task.cancel()
        writer.close()
    assert response.status == 408
    assert time.monotonic() - started < TIMEOUT + 2.5


async def test_a_kept_alive_connection_may_idle_longer_than_the_header_timeout(
    timed_bridge: Bridge,
) -> None:
    """Between requests the keep-alive timeout applies; the next head then has its own clock."""
    reader, writer = await open_raw(timed_bridge)
    try:
        writer.write(GET_HEALTHZ)
        assert (await read_response(reader)).status == 200
        await asyncio.sleep(TIMEOUT * 2)  # idle, longer than the header timeout
        writer.write(GET_HEALTHZ)
        assert (await read_response(reader)).status == 200
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # then a head that never ends
        started = time.monotonic()
        response = await read_response(reader, within=5)
        assert response.status == 408
        assert TIMEOUT * 0.8 <= time.monotonic() - started < TIMEOUT + 2.5
        assert await read_to_close(reader, within=5) == b""
    finally:
        writer.close()


async def test_a_slow_head_within_the_timeout_is_served(timed_bridge: Bridge) -> None:
    reader, writer = await open_raw(timed_bridge)
    try:
        for piece in (b"GET /healthz HT", b"TP/1.1\r\nhost: bri", b"dge\r\n\r\n"):
            writer.write(piece)
            await asyncio.sleep(TIMEOUT / 5)
        assert (await read_response(reader)).status == 200
    finally:
        writer.close()


# Body timeout -----------------------------------------------------------------------------------


def chat_head(token: str | None, framing: str) -> bytes:
    auth = f"authorization: Bearer {token}\r\n" if token else ""
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: bridge\r\n{auth}"
        f"content-type: application/json\r\n{framing}\r\n"
    ).encode()


@pytest.mark.parametrize(
    "framing",
    ["content-length: 500\r\n", "transfer-encoding: chunked\r\n"],
    ids=["content-length", "chunked"],
)
async def test_an_unfinished_body_gets_408_then_close(
    stack: Stack, timed_bridge: Bridge, framing: str
) -> None:
    before = refused(timed_bridge, "body_timeout")
    partial = b'{"model": "m", "mess' if "length" in framing else b'14\r\n{"model": "m", "mess'
    reader, writer = await open_raw(timed_bridge)
    try:
        writer.write(chat_head(stack.tokens.mint("edge-body"), framing) + partial)
        started = time.monotonic()
        response = await read_response(reader, within=5)
        elapsed = time.monotonic() - started
        assert await read_to_close(reader, within=5) == b""
    finally:
        writer.close()
    assert response.status == 408, response
    error = response.error()
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_timeout")
    assert "body" in error["message"]
    assert TIMEOUT * 0.8 <= elapsed < TIMEOUT + 2.5
    assert refused(timed_bridge, "body_timeout") == before + 1


async def test_an_unfinished_body_closes_even_after_an_early_answer(timed_bridge: Bridge) -> None:
    """Without a token the bridge answers 401 at once; the rest of the body must still come."""
    reader, writer = await open_raw(timed_bridge)
    try:
        writer.write(chat_head(None, "content-length: 500\r\n") + b"{")
        response = await read_response(reader, within=5)
        started = time.monotonic()
        assert response.status == 401
        assert await read_to_close(reader, within=5) == b""  # no second answer, just closed
        assert time.monotonic() - started < TIMEOUT + 2.5
    finally:
        writer.close()


async def test_a_response_longer_than_the_timeouts_is_not_cut(
    stack: Stack, timed_bridge: Bridge
) -> None:
    """The clocks only run while the client owes bytes, not while the bridge answers."""
    prompt = "slow edge [[fake:chunks=4,chunk_delay=0.4]]"
    async with timed_bridge.client(stack.tokens.mint("edge-slow")) as client:
        started = time.monotonic()
        result = await stream_chat(client, chat_body(prompt, stream=True))
        assert time.monotonic() - started > TIMEOUT * 2
        assert result.data[-1] == "[DONE]"
        # The same kept-alive connection serves the next request.
        assert (await client.get("/healthz")).status_code == 200


# Connection cap ---------------------------------------------------------------------------------


async def test_connections_past_the_cap_get_503_until_others_close(stack: Stack) -> None:
    settings = bridge_settings(stack.gateway_address, stack.vault_address, max_connections=5)
    async with serve_bridge(settings) as bridge:
        held = [await open_raw(bridge) for _ in range(5)]
        try:
            for reader, writer in held:  # each served once, so each is surely counted
                writer.write(GET_HEALTHZ)
                assert (await read_response(reader)).status == 200
            gauge = bridge.state.metrics.registry.get_sample_value(
                "native1api_bridge_http_connections"
            )
            assert gauge == 5

            for _ in range(3):
                reader, writer = await open_raw(bridge)
                try:
                    writer.write(GET_HEALTHZ)
                    response = await read_response(reader)
                    assert await read_to_close(reader) == b""
                finally:
                    writer.close()
                assert response.status == 503
                assert response.headers["retry-after"] == "1"
                assert response.headers["connection"] == "close"
                error = response.error()
                assert error["code"] == "server_overloaded"
                assert error["type"] == "service_unavailable_error"
            assert refused(bridge, "too_many_connections") == 3

            # An ordinary client reads the answer too.
            async with bridge.client() as http:
                response_httpx = await http.get("/healthz")
            assert response_httpx.status_code == 503
            assert response_httpx.json()["error"]["code"] == "server_overloaded"

            # The held connections are still served.
            reader, writer = held[0]
            writer.write(GET_HEALTHZ)
            assert (await read_response(reader)).status == 200

            # One closes: a new connection is served again (once the bridge has seen the close).
            _, closing = held.pop()
            closing.close()
            await closing.wait_closed()
            async with asyncio.timeout(5):
                while True:
                    reader, writer = await open_raw(bridge)
                    writer.write(GET_HEALTHZ)
                    status = (await read_response(reader)).status
                    if status == 200:
                        held.append((reader, writer))
                        break
                    writer.close()
                    await asyncio.sleep(0.05)
        finally:
            for _, writer in held:
                writer.close()


# At most 2,048 messages -------------------------------------------------------------------------


def messages_body(count: int) -> dict[str, Any]:
    return chat_body("x", messages=[{"role": "user", "content": "hi"}] * count)


async def test_rest_accepts_2048_messages_and_refuses_2049(stack: Stack, bridge: Bridge) -> None:
    async with bridge.client(stack.tokens.mint("edge-messages")) as http:
        refused_response = await http.post("/v1/chat/completions", json=messages_body(2049))
        accepted = await http.post("/v1/chat/completions", json=messages_body(2048))
    assert refused_response.status_code == 400
    error = refused_response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages"
    assert error["code"] == "array_above_max_length"
    assert "2048" in error["message"]
    assert accepted.status_code == 200, accepted.text


def grpc_chat(count: int) -> gateway_service_pb2.CreateChatCompletionRequest:
    return gateway_service_pb2.CreateChatCompletionRequest(
        request=chat_pb2.ChatCompletionRequest(
            model="@cf/meta/llama-3.2-3b-instruct",
            messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, text="hi")] * count,
        )
    )


async def test_grpc_accepts_2048_messages_and_refuses_2049(stack: Stack) -> None:
    metadata = stack.user("edge-grpc-messages")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.gateway.CreateChatCompletion(grpc_chat(2049), metadata=metadata)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(info.value).metadata["param"] == "messages"
    reply = await stack.gateway.CreateChatCompletion(grpc_chat(2048), metadata=metadata)
    assert reply.completion.choices[0].message.content


# The header cap against the real process --------------------------------------------------------


FLOOD_SECONDS = 2.0


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


async def oversized_header(url: str, size: int) -> tuple[int, float, float]:
    """Send a head with a `size`-byte header as fast as the bridge takes it.

    Returns the answer's status, and the seconds from the first byte sent to the status line and
    to the end of the connection (the bridge stops reading, then closes).
    """
    host, _, port = url.removeprefix("http://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: bridge\r\nx-big: ")
            sent = 0
            while sent < size:
                writer.write(b"a" * 65536)
                sent += 65536
                await writer.drain()
            writer.write(b"\r\n\r\n")
            await writer.drain()

    started = time.monotonic()
    sender = asyncio.create_task(send())
    try:
        response = await read_response(reader, within=10)
        answered = time.monotonic() - started
        async with asyncio.timeout(10):
            await sender  # blocked by the bridge's paused reading until it closes
        return response.status, answered, time.monotonic() - started
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        writer.close()


@pytest.mark.e2e
async def test_header_flood_costs_the_process_neither_memory_nor_latency(
    tmp_path: Path,
) -> None:
    port, metrics_port = free_port(), free_port()
    env = {
        "BRIDGE_LISTEN_ADDR": f"127.0.0.1:{port}",
        "BRIDGE_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
        # Nothing listens there: /healthz needs no backend.
        "GATEWAY_ADDR": f"127.0.0.1:{free_port()}",
        "VAULT_ADDR": f"127.0.0.1:{free_port()}",
        "LOG_LEVEL": "INFO",
    }
    service = Service("rest_bridge", env, tmp_path / "bridge.log").start()
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(service.wait_http_ready, f"{base}/healthz")
        assert service.process is not None
        pid = service.process.pid
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            # Warm up every path the flood takes, then measure.
            quiet: list[float] = []
            for _ in range(20):
                started = time.monotonic()
                assert (await http.get("/healthz")).status_code == 200
                quiet.append(time.monotonic() - started)
            warm_up, answered, _ = await oversized_header(base, 1024 * 1024)
            assert warm_up == 431
            assert answered < 1.0
            await asyncio.sleep(0.2)
            before = memory_kib(pid)

            latencies: list[float] = []
            flood_done = asyncio.Event()

            async def probe() -> None:
                while not flood_done.is_set():
                    started = time.monotonic()
                    response = await http.get("/healthz")
                    latencies.append(time.monotonic() - started)
                    assert response.status_code == 200
                    await asyncio.sleep(0.02)

            prober = asyncio.create_task(probe())
            try:
                results: list[tuple[int, float, float]] = []
                flood_ends = time.monotonic() + FLOOD_SECONDS

                async def attacker() -> None:
                    # One connection after another, each with a 16 MiB header.
                    while time.monotonic() < flood_ends:
                        results.append(await oversized_header(base, 16 * 1024 * 1024))

                await asyncio.gather(*(attacker() for _ in range(20)))
            finally:
                flood_done.set()
                await prober
            after = memory_kib(pid)

            public_metrics = await http.get("/metrics")
        async with httpx.AsyncClient(timeout=10) as scraper:
            scraped = await scraper.get(f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        status = await asyncio.to_thread(service.terminate)
    slowest_431 = max(answered for _, answered, _ in results)
    slowest_close = max(closed for _, _, closed in results)
    growth_rss = (after["VmRSS"] - before["VmRSS"]) / 1024
    growth_peak = (after["VmHWM"] - before["VmHWM"]) / 1024
    print(  # noqa: T201 (numbers for the report, shown with -s)
        f"\n20 clients for {FLOOD_SECONDS:g} s: 431 in at most {slowest_431 * 1000:.0f} ms over "
        f"{len(results)} connections, closed in at most {slowest_close:.2f} s; "
        f"RSS {before['VmRSS'] / 1024:.1f} -> {after['VmRSS'] / 1024:.1f} MiB "
        f"(peak +{growth_peak:.1f} MiB); /healthz max {max(latencies) * 1000:.0f} ms over "
        f"{len(latencies)} probes (max {max(quiet) * 1000:.0f} ms before the flood)"
    )
    assert status == 0, service.log[-3000:]

    assert {code for code, _, _ in results} == {431}
    assert slowest_431 < 1.0
    assert slowest_close < LINGER_SECONDS + 2
    assert growth_rss < 5, (before, after)
    assert growth_peak < 5, (before, after)
    assert latencies and max(latencies) < 0.5, latencies

    assert public_metrics.status_code == 404
    assert public_metrics.json()["error"]["code"] == "unknown_url"
    assert scraped.status_code == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
    }
    key = ("native1api_bridge_http_connections_refused_total", (("reason", "header_too_large"),))
    assert samples[key] == len(results) + 1  # and the warm-up
    assert "Traceback" not in service.log


@pytest.mark.e2e
async def test_a_taken_metrics_address_fails_the_start_naming_the_variable() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "BRIDGE_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
            "BRIDGE_METRICS_ADDR": f"127.0.0.1:{port}",
        }
        result = await asyncio.to_thread(run_module, "rest_bridge", [], env, 30)
    assert result.returncode == 1
    assert "BRIDGE_METRICS_ADDR" in result.stderr
    assert "Traceback" not in result.stderr
