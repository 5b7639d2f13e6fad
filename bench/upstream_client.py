"""CPU cost of the gateway's upstream HTTP leg, per request and per streamed answer.

Run: `.venv/bin/python -m bench.upstream_client [--requests N] [--rounds R] [--concurrency C]`.

A minimal HTTP/1.1 server in a child process (so its CPU is not counted) answers, over loopback
with keep-alive, either a Workers-AI-shaped JSON body (~0.6 KB) to a 1.3 KB POST, or a chunked
`text/event-stream` of 32 token events plus the usage event and `[DONE]`, one chunk per event
(`--event-gap-ms` apart, as a model streams). The client process runs each variant's whole
upstream leg — build the request, send it, read the body or every event's data, give the
connection back — and reports its own CPU time (`time.process_time`) per request / per stream,
the median over interleaved rounds:

- `httpx`: httpx/httpcore with httpx-sse, configured as the gateway's client was before aiohttp;
- `httpx+aiohttp`: the same httpx client code on the `httpx-aiohttp` transport (only if
  importable: it is not a project dependency; `pip install --target DIR httpx-aiohttp` and put
  DIR on PYTHONPATH);
- `aiohttp`: the gateway's client today (`upstream_http.make_client` + `open_stream`, events
  from `sse_decoder`), i.e. exactly the adapters' code path.

Then the SSE decoders alone, in process, per event: `sse_decoder.SSEDecoder` against httpx-sse's
line decoder + event decoder on the same bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import socket
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
from httpx_sse import EventSource
from yarl import URL

from gateway_service import errors as gateway_errors
from gateway_service.upstream_http import (
    HttpSettings,
    UpstreamClient,
    drain_after_done,
    make_client,
    open_stream,
)

EVENTS = 32
AUTH = {"Authorization": "Bearer cf-bench-token-0123456789abcdef"}


# ---- the upstream (child process) ------------------------------------------------------------


def _request_body() -> bytes:
    """A 1.3 KB chat request, as the gateway sends Workers AI."""
    text = "Summarise the following paragraph in one sentence. " * 22
    body = orjson.dumps(
        {
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": text[:1180]},
            ],
            "max_tokens": 256,
        }
    )
    return body


def _completion_body() -> bytes:
    return orjson.dumps(
        {
            "result": {
                "response": "A short answer of a few words, as a small model gives it. " * 6,
                "usage": {"prompt_tokens": 290, "completion_tokens": 64, "total_tokens": 354},
            },
            "success": True,
            "errors": [],
            "messages": [],
        }
    )


def _stream_frames() -> list[bytes]:
    frames = [
        b"data: " + orjson.dumps({"response": f" tok{i}", "p": "abcdefghijklmnop"[: i % 16]})
        for i in range(EVENTS)
    ]
    usage = {"prompt_tokens": 290, "completion_tokens": EVENTS, "total_tokens": 290 + EVENTS}
    frames.append(b"data: " + orjson.dumps({"response": "", "usage": usage}))
    frames.append(b"data: [DONE]")
    return [frame + b"\n\n" for frame in frames]


class _Upstream(asyncio.Protocol):
    """Just enough HTTP/1.1: Content-Length request bodies, keep-alive, chunked streams."""

    def __init__(self, gap: float) -> None:
        self.gap = gap
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.completion = _completion_body()
        self.frames = [b"%x\r\n%s\r\n" % (len(f), f) for f in _stream_frames()]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            path = head.split(" ", 2)[1]
            if path.endswith("/stream"):
                asyncio.get_running_loop().create_task(self._stream())
            else:
                self._answer()

    def _answer(self) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (len(self.completion), self.completion)
        )

    async def _stream(self) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        for frame in self.frames:
            if self.gap:
                await asyncio.sleep(self.gap)
            transport.write(frame)
        transport.write(b"0\r\n\r\n")


def _serve(sock: socket.socket, gap: float) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Upstream(gap), sock=sock)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


# ---- the variants --------------------------------------------------------------------------

Leg = Callable[[bool], Awaitable[int]]
"""One request: `stream` -> the number of events (or 1 for a whole body)."""


def _httpx_client(transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    # As the gateway configured it before the move (upstream_http at d61a625).
    from http.cookiejar import CookieJar, DefaultCookiePolicy

    class NoCookies(DefaultCookiePolicy):
        def set_ok(self, cookie: Any, request: Any) -> bool:
            return False

    settings = HttpSettings()
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(
            connect=settings.connect_timeout_seconds,
            read=settings.read_timeout_seconds,
            write=settings.read_timeout_seconds,
            pool=settings.pool_timeout_seconds,
        ),
        limits=httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
            keepalive_expiry=60.0,
        ),
        follow_redirects=False,
        trust_env=False,
        cookies=CookieJar(policy=NoCookies()),
    )


def _httpx_leg(client: httpx.AsyncClient, base: str, body: bytes) -> Leg:
    async def leg(stream: bool) -> int:
        request = client.build_request(
            "POST",
            base + ("/stream" if stream else "/run"),
            content=body,
            headers={
                **AUTH,
                "Content-Type": "application/json",
                "Accept": "text/event-stream" if stream else "application/json",
            },
        )
        response = await client.send(request, stream=True)
        try:
            if not stream:
                await response.aread()
                return 1
            count = 0
            async with contextlib.aclosing(EventSource(response).aiter_sse()) as events:
                async for event in events:
                    if event.data.startswith("[DONE]"):
                        break
                    count += 1
                await drain_after_done(events)
            return count
        finally:
            await response.aclose()

    return leg


def _aiohttp_leg(client: UpstreamClient, base: str, body: bytes) -> Leg:
    def fail(status: int, raw: bytes, headers: Any) -> gateway_errors.UpstreamHTTPError:
        return gateway_errors.UpstreamHTTPError(status, "failed")

    settings = client.settings
    stream_headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    json_headers = {"Content-Type": "application/json", "Accept": "application/json"}
    stream_url, run_url = URL(base + "/stream"), URL(base + "/run")

    async def leg(stream: bool) -> int:
        response = await open_stream(
            client,
            "POST",
            stream_url if stream else run_url,
            headers={**(stream_headers if stream else json_headers), **AUTH},
            body=body,
            provider="workers-ai",
            byok=False,
            parse_error=fail,
            settings=settings,
        )
        try:
            if not stream:
                await response.read()
                return 1
            count = 0
            async with contextlib.aclosing(response.events()) as events:
                async for event in events:
                    if event.data.startswith("[DONE]"):
                        break
                    count += 1
                await drain_after_done(events)
            return count
        finally:
            await response.aclose()

    return leg


@contextlib.asynccontextmanager
async def _variants(base: str) -> AsyncIterator[dict[str, Leg]]:
    body = _request_body()
    async with contextlib.AsyncExitStack() as stack:
        legs: dict[str, Leg] = {}
        plain = _httpx_client(None)
        stack.push_async_callback(plain.aclose)
        legs["httpx"] = _httpx_leg(plain, base, body)
        try:
            import aiohttp
            from httpx_aiohttp import AiohttpTransport  # type: ignore[import-not-found]
        except ImportError:
            print("(httpx-aiohttp not importable: that variant is skipped)")
        else:
            session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),
                connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=60),
            )
            transported = _httpx_client(AiohttpTransport(client=session))
            stack.push_async_callback(transported.aclose)
            stack.push_async_callback(session.close)
            legs["httpx+aiohttp"] = _httpx_leg(transported, base, body)
        ours = make_client(HttpSettings())
        stack.push_async_callback(ours.aclose)
        legs["aiohttp"] = _aiohttp_leg(ours, base, body)
        yield legs


async def _cpu_per_request(leg: Leg, stream: bool, requests: int, concurrency: int) -> float:
    """CPU milliseconds of this process per request."""
    per_worker = max(1, requests // concurrency)
    expected = EVENTS + 1 if stream else 1

    async def worker() -> None:
        for _ in range(per_worker):
            got = await leg(stream)
            assert got == expected, got

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - started) * 1000 / (per_worker * concurrency)


async def _measure(args: argparse.Namespace, base: str) -> None:
    async with _variants(base) as legs:
        for stream in (False, True):
            what = f"{EVENTS}-event stream" if stream else "1.3 KB POST, whole JSON body"
            count = args.streams if stream else args.requests
            samples: dict[str, list[float]] = {name: [] for name in legs}
            for leg in legs.values():  # warm-up: connections, caches
                await _cpu_per_request(leg, stream, min(50, count), args.concurrency)
            for _ in range(args.rounds):
                for name, leg in legs.items():
                    samples[name].append(
                        await _cpu_per_request(leg, stream, count, args.concurrency)
                    )
            unit = "stream" if stream else "request"
            print(f"\n{what}: client CPU ms per {unit} (median of {args.rounds} rounds [min-max])")
            for name, values in samples.items():
                print(
                    f"  {name:<14} {statistics.median(values):7.3f}  "
                    f"[{min(values):.3f}-{max(values):.3f}]"
                )


def _decoders(repeat: int) -> None:
    """The SSE decoders alone: µs per event, one network chunk per event."""
    from httpx_sse._decoders import SSEDecoder as HttpxSSEDecoder
    from httpx_sse._decoders import SSELineDecoder

    from gateway_service.sse_decoder import SSEDecoder

    frames = _stream_frames()
    events = len(frames) * repeat

    def ours() -> None:
        decoder = SSEDecoder()
        for _ in range(repeat):
            for frame in frames:
                for _event in decoder.feed(frame):
                    pass

    def httpx_sse() -> None:
        import codecs

        text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        lines = SSELineDecoder()
        decoder = HttpxSSEDecoder()
        for _ in range(repeat):
            for frame in frames:
                for line in lines.decode(text.decode(frame)):
                    decoder.decode(line.rstrip("\n"))

    print(f"\nSSE decoding alone, µs per event ({len(frames)}-frame streams, one chunk per event)")
    for name, run in (("sse_decoder", ours), ("httpx-sse", httpx_sse)):
        best = min(_timed(run) for _ in range(5))
        print(f"  {name:<14} {best * 1e6 / events:7.3f}")


def _timed(run: Callable[[], None]) -> float:
    started = time.process_time()
    run()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000, help="whole-body requests per round")
    parser.add_argument("--streams", type=int, default=300, help="streams per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--event-gap-ms", type=float, default=0.2)
    parser.add_argument("--no-uvloop", action="store_true", help="asyncio's own loop")
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    server = multiprocessing.get_context("fork").Process(
        target=_serve, args=(sock, args.event_gap_ms / 1000), daemon=True
    )
    server.start()
    sock.close()
    base = f"http://127.0.0.1:{port}/client/v4/accounts/acct/ai/run/@cf/meta/llama"
    loop = "asyncio"
    try:
        if not args.no_uvloop:
            try:
                import uvloop

                uvloop.run(_measure(args, base))
                loop = "uvloop"
            except ImportError:
                asyncio.run(_measure(args, base))
        else:
            asyncio.run(_measure(args, base))
    finally:
        server.terminate()
        server.join()
    print(f"\n(event loop: {loop}; concurrency {args.concurrency})")
    _decoders(repeat=2000)


if __name__ == "__main__":
    main()
