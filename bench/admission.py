"""Admission alone, in process: `Admission.admit` + `Lease.settle` against Redis and in memory.

Run: `.venv/bin/python -m bench.admission [--pairs N] [--redis-url URL] [--profile]`. One
caller, one completion at a time (concurrency 1), the gateway's own classes with the
benchmark's generous tier (`bench.overhead.limits`), on uvloop as the gateway runs. Prints, per
store, the wall time and this process's CPU per admit+settle pair, and beside them two bare
Redis round trips (`PING`), so the Redis figures split into round trips and the rest: once back
to back (everything hot), once with the process idle 20 ms before each pair (as the gateway is
at c=1 with the benchmark's 20 ms upstream; the pair alone is timed). `--profile` adds a cProfile listing of the Redis loop (cumulative).

`python -m bench` measures the same thing end to end through the real processes (the admission
A/B section of its report); this isolates the gateway-side part of it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis

from bench.overhead.limits import DEFAULT_REDIS_URL, redis_problem, redis_server_cpu, tier_table
from bench.overhead.workload import Shape, build_requests
from gateway_service.limits import Admission, MemoryStore, RedisStore
from gateway_service.metrics import GatewayMetrics
from native1api.gateway.v1 import chat_pb2
from rpc_common.auth.caller import Caller


def _max_tokens(request: chat_pb2.ChatCompletionRequest) -> int:
    return request.max_tokens or 512


async def _time(
    label: str,
    pairs: int,
    one: Callable[[], Awaitable[None]],
    server_cpu: Callable[[], float],
    idle: float,
) -> str:
    for _ in range(min(max(pairs // 10, 50), pairs)):  # warm: connection, script loaded
        await one()
    walls: list[float] = []
    cpu = server = 0.0
    if not idle:  # back to back: CPU over the whole loop, nothing else between two pairs
        server_before = server_cpu()
        cpu_before = time.process_time()
        for _ in range(pairs):
            start = time.perf_counter()
            await one()
            walls.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu_before
        server = server_cpu() - server_before
    for _ in range(pairs if idle else 0):
        await asyncio.sleep(idle)  # as at c=1 with a 20 ms upstream: idle between requests
        server_before = server_cpu()
        cpu_before = time.process_time()
        start = time.perf_counter()
        await one()
        walls.append(time.perf_counter() - start)
        cpu += time.process_time() - cpu_before
        server += server_cpu() - server_before
    q = statistics.quantiles(walls, n=100)
    return (
        f"{label:<34} wall p50 {q[49] * 1e6:6.0f} us  p99 {q[98] * 1e6:6.0f} us   "
        f"CPU here {cpu / pairs * 1e6:5.0f} us   Redis server CPU {server / pairs * 1e6:4.0f} us"
    )


async def _run(args: argparse.Namespace) -> None:
    problem = await redis_problem(args.redis_url)
    if problem:
        raise SystemExit(problem)
    request = build_requests(Shape(16, 0.0, 0.02), stream=False).unary_proto.request
    caller = Caller(f"bench-admission-{os.getpid()}", {}, "")
    tiers = tier_table(Path(args.tmp) / "limits.toml")
    server_cpu = redis_server_cpu(args.redis_url)

    def admission_pair(admission: Admission) -> Callable[[], Awaitable[None]]:
        async def one() -> None:
            lease = await admission.admit(caller, request, provider="workers-ai", byok=False)
            lease.settle(None)
            await admission.settled()  # time the settlement too (it runs off the request path)

        return one

    memory = Admission(tiers, MemoryStore(), metrics=GatewayMetrics(), max_tokens_for=_max_tokens)
    redis_store = RedisStore.from_url(args.redis_url)
    on_redis = Admission(tiers, redis_store, metrics=GatewayMetrics(), max_tokens_for=_max_tokens)
    ping_client = aioredis.Redis.from_url(args.redis_url, socket_timeout=0.5)

    async def two_pings() -> None:
        await ping_client.ping()
        await ping_client.ping()

    lines = []
    cases = (
        ("in-process store: admit + settle", admission_pair(memory)),
        ("Redis store: admit + settle", admission_pair(on_redis)),
        ("Redis: two bare PINGs", two_pings),
    )
    try:
        lines.append(f"Back to back ({args.pairs} each):")
        for label, one in cases:
            lines.append("  " + await _time(label, args.pairs, one, server_cpu, 0.0))
        idle_pairs = max(args.pairs // 6, 50)
        lines.append(
            f"Idle {args.idle_ms:g} ms before each ({idle_pairs} each; only the pair is timed):"
        )
        for label, one in cases:
            lines.append(
                "  " + await _time(label, idle_pairs, one, server_cpu, args.idle_ms / 1000)
            )
        if args.profile:
            profile = cProfile.Profile()
            one = admission_pair(on_redis)
            profile.enable()
            for _ in range(args.pairs):
                await one()
            profile.disable()
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(30)
            lines += ["", "cProfile of the Redis admit + settle loop (cumulative):", out.getvalue()]
    finally:
        await memory.aclose()
        await on_redis.aclose()
        await ping_client.aclose()
    print("\n".join(lines))


def main() -> None:
    import tempfile

    from rpc_common.aio import run

    parser = argparse.ArgumentParser(prog="python -m bench.admission", description=__doc__)
    parser.add_argument("--pairs", type=int, default=3000, help="admit+settle pairs per store")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument(
        "--idle-ms", type=float, default=20.0, help="idle time before each pair, second part"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the Redis loop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="native1api-bench-") as tmp:
        args.tmp = tmp
        run(_run(args))


if __name__ == "__main__":
    main()
