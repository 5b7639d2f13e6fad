"""`python -m bench`: the overhead matrix (default) or the memory soak (`--soak N`)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from bench.overhead.client import BRIDGE_CONTENT, GrpcClient, HttpConnection, http_request
from bench.overhead.load import TARGETS, CaseResult, run_case, sustained_rps
from bench.overhead.report import (
    Row,
    machine_facts,
    stream_table,
    summarise,
    unary_table,
    verdicts,
)
from bench.overhead.stack import PROJECT, Stack, running_stack
from bench.overhead.workload import Shape, build_requests
from devstack.token import mint_emulator_token

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated levels")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per case (median taken)")
    parser.add_argument(
        "--duration", type=float, default=2.5, help="measured seconds per case (x1.6 at c=1)"
    )
    parser.add_argument("--warmup", type=float, default=0.3, help="unrecorded seconds per case")
    parser.add_argument("--chunks", type=int, default=16, help="content chunks per reply")
    parser.add_argument("--chunk-delay", type=float, default=0.005, help="seconds between chunks")
    parser.add_argument(
        "--unary-delay", type=float, default=0.02, help="upstream seconds for a non-stream reply"
    )
    parser.add_argument("--users", type=int, default=16, help="distinct users (ID tokens)")
    parser.add_argument(
        "--no-instant",
        dest="instant",
        action="store_false",
        help="skip the extra c=1 case against an upstream that answers at once",
    )
    parser.add_argument("--modes", default="unary,stream", help="unary, stream or both")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the report")
    parser.add_argument("--label", default="", help="a note for the report's title")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--soak", type=int, default=0, help="soak mode: this many streamed REST requests"
    )
    parser.add_argument("--soak-concurrency", type=int, default=16)
    parser.add_argument("--soak-users", type=int, default=2000)
    return parser


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _matrix(args: argparse.Namespace, stack: Stack) -> str:
    shape = Shape(args.chunks, args.chunk_delay, args.unary_delay)
    tokens = [mint_emulator_token(f"bench-user-{i}", PROJECT) for i in range(args.users)]
    levels = [int(c) for c in args.concurrency.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    targets = [t for t in TARGETS if t in args.targets.split(",")]
    grpc_client = GrpcClient(stack.gateway_address)
    lines: list[str] = []
    rows: list[Row] = []
    try:
        # The upstream alone, flat out: it must be far faster than anything the stack reaches.
        capacity_requests = build_requests(Shape(args.chunks, 0.0, 0.0), stream=False)
        await sustained_rps(stack, capacity_requests, concurrency=32, duration=1.0)  # warm
        upstream_rps, upstream_cpu = await sustained_rps(
            stack, capacity_requests, concurrency=32, duration=3.0
        )
        _log(f"upstream alone: {upstream_rps:.0f} req/s, {upstream_cpu * 1000:.2f} ms CPU/req")
        started = time.perf_counter()
        busy_before = _machine_busy() - _own_cpu(stack)
        for mode in modes:
            requests = build_requests(shape, stream=mode == "stream")
            # Warm every target once (connections, caches, JIT-less but lazy imports).
            for target in targets:
                await run_case(
                    stack,
                    target,
                    requests,
                    tokens,
                    concurrency=4,
                    chunks=args.chunks,
                    warmup=0.0,
                    duration=1.0,
                    grpc_client=grpc_client,
                )
            cases = [(str(c), c, requests, args.duration * (1.6 if c == 1 else 1)) for c in levels]
            if args.instant and 1 in levels:
                # Busbar's latency set-up: an upstream that answers at once, so no process ever
                # sits idle between two requests (idle processes run colder, see README).
                instant = build_requests(Shape(args.chunks, 0.0, 0.0), stream=mode == "stream")
                cases.insert(1, ("1, instant upstream", 1, instant, args.duration))
            for label, concurrency, case_requests, duration in cases:
                rounds: list[dict[str, CaseResult]] = []
                for index in range(args.rounds):
                    results: dict[str, CaseResult] = {}
                    for target in targets:
                        result = await run_case(
                            stack,
                            target,
                            case_requests,
                            tokens,
                            concurrency=concurrency,
                            chunks=args.chunks,
                            warmup=args.warmup,
                            duration=duration,
                            grpc_client=grpc_client,
                        )
                        result.label = label
                        stack.check_alive()
                        results[target] = result
                        p50 = sorted(s.latency for s in result.samples)[len(result.samples) // 2]
                        _log(
                            f"{mode} c={label} round {index + 1} {target}: "
                            f"{len(result.samples)} req, p50 {p50 * 1000:.2f} ms, "
                            f"{result.errors} errors"
                        )
                    rounds.append(results)
                rows += summarise(rounds)
        elapsed = time.perf_counter() - started
        others = (_machine_busy() - _own_cpu(stack) - busy_before) / elapsed
    finally:
        await grpc_client.close()
    memory = {name: proc.memory_kib() for name, proc in stack.procs.items()}

    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"# Overhead benchmark, {stamp}" + (f" ({args.label})" if args.label else "")
    lines += [title, "", "## Machine", "", *machine_facts(), ""]
    lines += [
        "## Set-up",
        "",
        f"- Upstream: the Workers AI fake (`python -m fakes workers-ai`), native `/ai/run` "
        f"endpoint; {args.chunks} content chunks per reply; streams pause "
        f"{args.chunk_delay * 1000:g} ms between chunks; a non-streaming reply comes after "
        f"{args.unary_delay * 1000:g} ms.",
        f"- Upstream alone, flat out (c=32, no delays, nothing else loaded): "
        f"**{upstream_rps:.0f} req/s**, {upstream_cpu * 1000:.2f} ms CPU/req.",
        "- Request: a 4-message chat (system, history, question; ~1.3 KB JSON), "
        "temperature/top_p/max_tokens/user set; the direct case sends the exact body the gateway "
        "sends upstream for it.",
        f"- Closed loop: c workers, each one request after another; {args.users} users (ID "
        f"tokens) spread over the workers. Per case {args.warmup:g} s warm-up (not recorded) and "
        f"{args.duration:g} s measured ({args.duration * 1.6:g} s at c=1, for enough samples); {args.rounds} rounds, targets interleaved "
        "(direct, gRPC, REST) within each round; every figure is the median over rounds.",
        "- Added latency = percentile of the stack case minus the same percentile of the direct "
        "case in the same round. TTFT = time to the first content delta. Gap = time between "
        "consecutive content deltas; its overhead = stack gap percentile minus direct gap "
        "percentile.",
        "- CPU ms/req: CPU time of the stack's processes during the measured window divided by "
        "the requests completed (b = bridge, g = gateway, v = vault); for `direct` it is the "
        "upstream's. The load generator is one asyncio process on the same two cores; its own "
        "CPU per request is shown beside (not part of the stack's).",
        f"- Matrix time: {elapsed:.0f} s. Other processes on the machine used "
        f"{max(others, 0.0) * 100:.0f}% of one core on average meanwhile (should be near 0).",
        "",
    ]
    unary = [r for r in rows if not r.stream]
    stream = [r for r in rows if r.stream]
    if unary:
        lines += ["## Non-streaming (ms)", "", *unary_table(unary), ""]
    if stream:
        lines += ["## Streaming (ms)", "", *stream_table(stream), ""]
    lines += [
        "## Peak memory (RSS)",
        "",
        "| process | peak RSS MiB | RSS at end MiB |",
        "|---|--:|--:|",
    ]
    for name, (rss, hwm) in memory.items():
        lines.append(f"| {name} | {hwm / 1024:.1f} | {rss / 1024:.1f} |")
    lines += [
        "",
        "## SPEC §9 targets (concurrency 1 to 16)",
        "",
        "| target | measured | limit | |",
        "|---|--:|--:|---|",
    ]
    for v in verdicts(rows):
        lines.append(f"| {v.name} | {v.value} | {v.limit} | {'ok' if v.ok else '**MISSED**'} |")
    errors = [r for r in rows if r.errors]
    if errors:
        lines += ["", "## Errors", ""]
        for r in errors:
            lines.append(
                f"- {r.target} c={r.concurrency} stream={r.stream}: {r.errors}, first: "
                f"`{r.first_error}`"
            )
    return "\n".join(lines) + "\n"


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu(stack: Stack) -> float:
    """CPU seconds of the benchmark's own processes: the stack and this load generator."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return sum(p.cpu_seconds() for p in stack.procs.values()) + usage.ru_utime + usage.ru_stime


async def _soak(args: argparse.Namespace, stack: Stack) -> tuple[str, bool]:
    """`args.soak` streamed REST requests; RSS of every process sampled as it goes."""
    shape = Shape(args.chunks, 0.0, 0.0)
    requests = build_requests(shape, stream=True)
    tokens = [mint_emulator_token(f"soak-user-{i}", PROJECT) for i in range(args.soak_users)]
    host, port = "127.0.0.1", int(stack.bridge_url.rsplit(":", 1)[1])
    prepared = [
        http_request(
            "/v1/chat/completions",
            f"{host}:{port}",
            requests.rest_body,
            {"authorization": f"Bearer {token}", "content-type": "application/json"},
        )
        for token in tokens
    ]
    total = args.soak
    done = 0
    errors = 0
    samples: list[tuple[int, dict[str, int]]] = []
    every = max(total // 20, 1)
    next_sample = 0

    def sample() -> None:
        samples.append((done, {n: p.memory_kib()[0] for n, p in stack.procs.items()}))

    async def worker() -> None:
        nonlocal done, errors, next_sample
        connection = await HttpConnection.open(host, port)
        try:
            while done < total:
                request = prepared[done % len(prepared)]
                done += 1
                try:
                    await connection.stream(request, BRIDGE_CONTENT, args.chunks)
                except Exception:
                    errors += 1
                if done >= next_sample:
                    next_sample += every
                    sample()
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.soak_concurrency)))
    elapsed = time.perf_counter() - started
    sample()
    half = next(s for s in samples if s[0] >= total // 2)
    end = samples[-1]
    tolerance_kib = 1024  # allocator noise: one MiB
    lines = [
        f"# Soak, {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        *machine_facts(),
        "",
        f"{total} streamed REST requests ({args.chunks} chunks each, no delays), concurrency "
        f"{args.soak_concurrency}, {args.soak_users} distinct users, {elapsed:.0f} s, "
        f"{errors} errors. RSS in MiB after N requests:",
        "",
        "| after | " + " | ".join(end[1]) + " |",
        "|--:|" + "--:|" * len(end[1]),
    ]
    for count, rss in samples:
        lines.append(f"| {count} | " + " | ".join(f"{v / 1024:.1f}" for v in rss.values()) + " |")
    ok = errors == 0
    lines += ["", "Second half (start -> end), limit: growth <= 1 MiB:", ""]
    for name in ("bridge", "gateway", "vault"):
        grown = end[1][name] - half[1][name]
        verdict = "ok" if grown <= tolerance_kib else "**GREW**"
        ok = ok and grown <= tolerance_kib
        lines.append(
            f"- {name}: {half[1][name] / 1024:.1f} -> {end[1][name] / 1024:.1f} MiB "
            f"({grown / 1024:+.1f}) {verdict}"
        )
    return "\n".join(lines) + "\n", ok


async def _amain(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="native1api-bench-") as tmp:
        _log("starting upstream, vault, gateway, bridge")
        with running_stack(Path(tmp)) as stack:
            if args.soak:
                report, ok = await _soak(args, stack)
                name = "soak"
            else:
                report, ok = await _matrix(args, stack), True
                name = "overhead"
    print(report)
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}-{name}.md"
        path.write_text(report)
        _log(f"wrote {path}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_amain(args))
    return uvloop.run(_amain(args))
