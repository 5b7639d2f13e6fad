"""Closed-loop load: `concurrency` workers, each sending one request after another.

Each case runs for a fixed time after a short warm-up whose requests are not recorded. CPU time
of every server process is read from /proc before and after the measured window.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import grpc

from bench.overhead.client import (
    BRIDGE_CONTENT,
    UPSTREAM_CONTENT,
    BadReply,
    GrpcClient,
    HttpConnection,
    Sample,
    http_request,
)
from bench.overhead.stack import Stack
from bench.overhead.workload import Requests

Target = Literal["direct", "grpc", "rest"]
TARGETS: tuple[Target, ...] = ("direct", "grpc", "rest")


@dataclass
class CaseResult:
    target: Target
    stream: bool
    concurrency: int
    samples: list[Sample]
    seconds: float
    errors: int
    cpu: dict[str, float]  # CPU seconds per process during the measured window
    client_cpu: float
    first_error: str = ""
    label: str = ""  # the concurrency column of the report (e.g. "1, instant upstream")
    config: str = ""  # the gateway configuration (limits on/off...) the case ran against
    failures: Counter[str] = field(default_factory=Counter)
    """Every request not answered 200 / OK, warm-up included, by kind ("HTTP 429",
    "gRPC RESOURCE_EXHAUSTED", an exception type)."""

    @property
    def rps(self) -> float:
        return len(self.samples) / self.seconds if self.seconds else 0.0


def failure_kind(exc: BaseException) -> str:
    """What a failed request got: its HTTP status or gRPC code, else the exception's type."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"gRPC {exc.code().name}"
    if isinstance(exc, BadReply) and str(exc).startswith("HTTP "):
        return str(exc).split(",", 1)[0].split(":", 1)[0]
    return type(exc).__name__


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_case(
    stack: Stack,
    target: Target,
    requests: Requests,
    tokens: list[str],
    *,
    concurrency: int,
    chunks: int,
    warmup: float,
    duration: float,
    grpc_client: GrpcClient,
) -> CaseResult:
    """Run one case and return its samples (warm-up excluded)."""
    one = await request_factory(stack, target, requests, tokens, chunks, grpc_client)
    workers = [await one(index) for index in range(concurrency)]
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + warmup
    stop_at = measure_from + duration
    samples: list[Sample] = []
    errors = 0
    first_error = ""
    failures: Counter[str] = Counter()
    cpu_before: dict[str, float] = {}
    client_before = 0.0
    measuring = asyncio.Event()

    def mark_start() -> None:
        nonlocal client_before
        cpu_before.update(stack.cpu_seconds())
        client_before = client_cpu()
        measuring.set()

    loop.call_at(measure_from, mark_start)

    async def worker(send: Callable[[], Awaitable[Sample]]) -> None:
        nonlocal errors, first_error
        while True:
            now = loop.time()
            if now >= stop_at:
                return
            try:
                sample = await send()
            except (BadReply, OSError, asyncio.IncompleteReadError, Exception) as exc:
                failures[failure_kind(exc)] += 1
                if measuring.is_set():
                    errors += 1
                    first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]
                await asyncio.sleep(0.01)
                continue
            # A request counts when it started inside the measured window and ended before its end.
            if now >= measure_from and loop.time() <= stop_at:
                samples.append(sample)

    await asyncio.gather(*(worker(send) for send, _ in workers))
    cpu_after = stack.cpu_seconds()
    client_after = client_cpu()
    for _, close in workers:
        await close()
    return CaseResult(
        target=target,
        stream=requests.stream,
        concurrency=concurrency,
        samples=samples,
        seconds=duration,
        errors=errors,
        cpu={name: cpu_after[name] - cpu_before.get(name, cpu_after[name]) for name in cpu_after},
        client_cpu=client_after - client_before,
        first_error=first_error,
        config=stack.config,
        failures=failures,
    )


Send = Callable[[], Awaitable[Sample]]
Close = Callable[[], Awaitable[None]]


async def _noop() -> None:
    return None


async def request_factory(
    stack: Stack,
    target: Target,
    requests: Requests,
    tokens: list[str],
    chunks: int,
    grpc_client: GrpcClient,
) -> Callable[[int], Awaitable[tuple[Send, Close]]]:
    """A function making worker `index`'s (send, close) pair."""
    if target == "grpc":

        async def grpc_worker(index: int) -> tuple[Send, Close]:
            token = tokens[index % len(tokens)]
            if requests.stream:
                proto_s = requests.stream_proto

                def send() -> Awaitable[Sample]:
                    return grpc_client.stream(proto_s, token, chunks)
            else:
                proto_u = requests.unary_proto

                def send() -> Awaitable[Sample]:
                    return grpc_client.unary(proto_u, token)

            return send, _noop

        return grpc_worker

    if target == "direct":
        url = urlsplit(stack.run_url)
        marker = UPSTREAM_CONTENT
        body = requests.upstream_body

        def headers_for(index: int) -> dict[str, str]:
            return requests.upstream_headers

    else:
        url = urlsplit(stack.bridge_url + "/v1/chat/completions")
        marker = BRIDGE_CONTENT
        body = requests.rest_body

        def headers_for(index: int) -> dict[str, str]:
            return {
                "authorization": f"Bearer {tokens[index % len(tokens)]}",
                "content-type": "application/json",
                "accept": "text/event-stream" if requests.stream else "application/json",
            }

    host, port = url.hostname or "127.0.0.1", url.port or 80

    async def http_worker(index: int) -> tuple[Send, Close]:
        connection = await HttpConnection.open(host, port)
        prepared = http_request(url.path, f"{host}:{port}", body, headers_for(index))
        if requests.stream:

            def send() -> Awaitable[Sample]:
                return connection.stream(prepared, marker, chunks)
        else:

            def send() -> Awaitable[Sample]:
                return connection.unary(prepared)

        return send, connection.close

    return http_worker


async def sustained_rps(
    stack: Stack, requests: Requests, *, concurrency: int, duration: float
) -> tuple[float, float]:
    """The upstream's own throughput (direct, nothing else running) and its CPU s/request."""
    url = urlsplit(stack.run_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    prepared = http_request(
        url.path, f"{host}:{port}", requests.upstream_body, requests.upstream_headers
    )
    connections = [await HttpConnection.open(host, port) for _ in range(concurrency)]
    upstream = stack.procs["upstream"]
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + duration
    count = 0

    async def worker(connection: HttpConnection) -> None:
        nonlocal count
        while loop.time() < stop_at:
            await connection.unary(prepared)
            count += 1

    cpu_before = upstream.cpu_seconds()
    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.perf_counter() - started
    cpu = upstream.cpu_seconds() - cpu_before
    for connection in connections:
        await connection.close()
    return count / elapsed, cpu / max(count, 1)
