"""`python -m bench`: the overhead matrix (default) or the memory soak (`--soak N`).

The stack runs with limits on (a generous tier, in Redis: see limits.py); the report adds what
admission costs, measured A/B against gateways with limits off (admission_ab.py)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.overhead.admission_ab import (
    AbCase,
    BenchFailure,
    ab_section,
    counts_section,
    failures_of,
    gateway_counts,
    run_ab,
    summarise_ab,
    verify_configs,
)
from bench.overhead.baseline import BASELINE, BaselineError, unpack
from bench.overhead.client import BRIDGE_CONTENT, GrpcClient, HttpConnection, http_request
from bench.overhead.limits import (
    CONFIGS,
    DEFAULT_REDIS_URL,
    DESCRIPTIONS,
    LIMITS_TOML,
    REDIS_URL_ENV,
    gateway_env,
    redacted,
    redis_problem,
    redis_server_cpu,
    redis_version,
    write_limits_file,
)
from bench.overhead.load import TARGETS, CaseResult, Target, run_case, sustained_rps
from bench.overhead.profile import profile_section, profiled
from bench.overhead.report import (
    Row,
    baseline_by_case,
    comparison_section,
    machine_facts,
    stream_table,
    summarise,
    unary_table,
    verdicts,
)
from bench.overhead.stack import PROJECT, Stack, running_stack
from bench.overhead.workload import Requests, Shape, build_requests
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
    parser.add_argument(
        "--chunks", type=int, default=32, help="content chunks per reply (32: a typical answer)"
    )
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
        "--baseline",
        metavar="REF",
        default=os.environ.get("BENCH_BASELINE", ""),
        help="also run the gateway and bridge of git revision REF, interleaved with this "
        "checkout's in every round, and compare (default $BENCH_BASELINE; none)",
    )
    parser.add_argument(
        "--no-profile",
        dest="profile",
        action="store_false",
        help="skip the py-spy profiles of one streaming and one unary REST case",
    )
    parser.add_argument(
        "--profile-seconds", type=float, default=4.0, help="seconds per profiled case"
    )
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="profile C frames too (grpc core, uvloop, protobuf): slower sampling",
    )
    parser.add_argument(
        "--soak", type=int, default=0, help="soak mode: this many streamed REST requests"
    )
    parser.add_argument("--soak-concurrency", type=int, default=16)
    parser.add_argument("--soak-users", type=int, default=2000)
    limits = parser.add_argument_group("admission control")
    limits.add_argument(
        "--limits",
        choices=CONFIGS,
        default="redis",
        help="the gateway configuration of the main matrix and the soak: limits on with "
        "Redis (default), on with the in-process store, or off",
    )
    limits.add_argument(
        "--redis-url",
        default=os.environ.get(REDIS_URL_ENV, DEFAULT_REDIS_URL),
        help=f"Redis for the limits (default ${REDIS_URL_ENV} or {DEFAULT_REDIS_URL})",
    )
    limits.add_argument(
        "--admission-rounds",
        type=int,
        default=5,
        help="rounds of the admission A/B (limits on vs off, interleaved); 0 skips it",
    )
    limits.add_argument(
        "--admission-configs",
        default="off,redis,memory",
        help="configurations of the A/B, the first the baseline: off, redis, memory, and "
        "redis-notiers (Redis without a limits file: the round trips without x-ratelimit-*)",
    )
    limits.add_argument(
        "--admission-duration",
        type=float,
        default=2.5,
        help="measured seconds per configuration in each A/B round (20 ms upstream)",
    )
    limits.add_argument(
        "--admission-instant",
        type=float,
        default=1.2,
        help="measured seconds per configuration in each A/B round with an instant upstream; "
        "0 skips that case",
    )
    limits.add_argument(
        "--admission-concurrency",
        default="1",
        help="concurrency levels of the A/B with the 20 ms upstream, e.g. 1,16; above 1 the "
        "configurations alternate in 0.5 s time slices",
    )
    limits.add_argument(
        "--admission-only", action="store_true", help="skip the main matrix: only the A/B"
    )
    return parser


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _matrix(
    args: argparse.Namespace, stack: Stack, ab_configs: list[str]
) -> tuple[str, bool]:
    """The overhead matrix and the admission A/B; (report, True when nothing failed)."""
    shape = Shape(args.chunks, args.chunk_delay, args.unary_delay)
    tokens = [mint_emulator_token(f"bench-user-{i}", PROJECT) for i in range(args.users)]
    levels = [int(c) for c in args.concurrency.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    targets = [t for t in TARGETS if t in args.targets.split(",")]
    lines: list[str] = []
    rows: list[Row] = []
    results: list[CaseResult] = []  # every case run, warm-ups included: failures are counted
    ab_lines: list[str] = []
    instant_unary = build_requests(Shape(args.chunks, 0.0, 0.0), stream=False)
    # Limits really are as configured: x-ratelimit-* in the head, the bucket in Redis.
    verified = await verify_configs(
        stack, instant_unary.rest_body, tokens[0], "bench-user-0", args.redis_url
    )
    for line in verified:
        _log("check " + line.removeprefix("- "))
    grpc_client = GrpcClient(stack.gateway_address)
    # (build, its view of the stack, target, gRPC client): "" is this checkout.
    runs: list[tuple[str, Stack, Target, GrpcClient]] = [
        ("", stack, target, grpc_client) for target in targets
    ]
    base_rows: list[Row] = []
    if BASELINE in stack.configs:
        base_view = stack.configs[BASELINE]
        base_client = GrpcClient(base_view.gateway_address)
        runs += [(BASELINE, base_view, t, base_client) for t in targets if t != "direct"]
    profile_lines: list[str] = []
    try:
        # The upstream alone, flat out: it must be far faster than anything the stack reaches.
        await sustained_rps(stack, instant_unary, concurrency=32, duration=1.0)  # warm
        upstream_rps, upstream_cpu = await sustained_rps(
            stack, instant_unary, concurrency=32, duration=3.0
        )
        _log(f"upstream alone: {upstream_rps:.0f} req/s, {upstream_cpu * 1000:.2f} ms CPU/req")
        started = time.perf_counter()
        busy_before = _machine_busy() - _own_cpu(stack)
        for mode in [] if args.admission_only else modes:
            requests = build_requests(shape, stream=mode == "stream")
            # Warm every target once (connections, caches, JIT-less but lazy imports).
            for _build, view, target, client in runs:
                results.append(
                    await run_case(
                        view,
                        target,
                        requests,
                        tokens,
                        concurrency=4,
                        chunks=args.chunks,
                        warmup=0.0,
                        duration=1.0,
                        grpc_client=client,
                    )
                )
            cases = [(str(c), c, requests, args.duration * (1.6 if c == 1 else 1)) for c in levels]
            if args.instant and 1 in levels:
                # Busbar's latency set-up: an upstream that answers at once, so no process ever
                # sits idle between two requests (idle processes run colder, see README).
                instant = build_requests(Shape(args.chunks, 0.0, 0.0), stream=mode == "stream")
                cases.insert(1, ("1, instant upstream", 1, instant, args.duration))
            for label, concurrency, case_requests, duration in cases:
                rounds: dict[str, list[dict[str, CaseResult]]] = {b: [] for b, *_ in runs}
                for index in range(args.rounds):
                    round_results: dict[str, dict[str, CaseResult]] = {b: {} for b, *_ in runs}
                    for build, view, target, client in _in_turn(runs, index):
                        result = await run_case(
                            view,
                            target,
                            case_requests,
                            tokens,
                            concurrency=concurrency,
                            chunks=args.chunks,
                            warmup=args.warmup,
                            duration=duration,
                            grpc_client=client,
                        )
                        result.label = label
                        stack.check_alive()
                        round_results[build][target] = result
                        results.append(result)
                        p50 = sorted(s.latency for s in result.samples)[len(result.samples) // 2]
                        _log(
                            f"{mode} c={label} round {index + 1} {target}{build and '@' + build}: "
                            f"{len(result.samples)} req, p50 {p50 * 1000:.2f} ms, "
                            f"{result.errors} errors"
                        )
                    for build, by_target in round_results.items():
                        # Every build's added latency is against the same round's direct case.
                        by_target.setdefault("direct", round_results[""]["direct"])
                        rounds[build].append(by_target)
                rows += summarise(rounds[""])
                if BASELINE in rounds:
                    base_rows += [
                        replace(row, target=f"{row.target}@{BASELINE}")
                        for row in summarise(rounds[BASELINE])
                        if row.target != "direct"
                    ]
        if args.profile and not args.admission_only:
            profile_lines = await _profiles(args, stack, shape, tokens, grpc_client, results)
        if len(ab_configs) > 1 and args.admission_rounds > 0:
            ab_unary = build_requests(shape, stream=False)
            ab_levels = [int(c) for c in args.admission_concurrency.split(",")]
            ab_cases = [
                AbCase(
                    str(c),
                    ab_unary,
                    args.admission_duration,
                    concurrency=c,
                    slice_seconds=0.0 if c == 1 else 0.5,
                )
                for c in ab_levels
            ]
            if args.admission_instant > 0 and 1 in ab_levels:
                # Blocks of 20 requests (~50 ms): each process stays as busy as in the matrix's
                # instant case instead of idling while the others take their turns.
                ab_cases.insert(
                    ab_levels.index(1) + 1,
                    AbCase("1, instant upstream", instant_unary, args.admission_instant, block=20),
                )
            cells, ab_warm = await run_ab(
                stack,
                ab_cases,
                tokens,
                configs=ab_configs,
                rounds=args.admission_rounds,
                warmup=args.warmup,
                chunks=args.chunks,
                log=_log,
            )
            results += [r for cell in cells for r in cell.rounds] + ab_warm
            ab_rows = summarise_ab(cells, ab_configs[0])
            ab_lines = ab_section(
                ab_rows,
                baseline=ab_configs[0],
                rounds=args.admission_rounds,
                warmup=args.warmup,
                cases=ab_cases,
                unary_delay_ms=args.unary_delay * 1000,
            )
            for line in ab_lines:
                if line.startswith("What admission"):
                    _log(line)
        elapsed = time.perf_counter() - started
        others = (_machine_busy() - _own_cpu(stack) - busy_before) / elapsed
    finally:
        for client in {id(c): c for *_, c in runs}.values():
            await client.close()
    memory = {name: proc.memory_kib() for name, proc in stack.procs.items()}
    counts_lines, problems = counts_section(await gateway_counts(stack))
    failures = failures_of(results)
    if failures:
        problems.insert(
            0,
            f"the load generator got {sum(failures.values())} requests not answered 200 / OK "
            f"(warm-ups included): {dict(failures)}",
        )

    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"# Overhead benchmark, {stamp}" + (f" ({args.label})" if args.label else "")
    lines += [title, ""]
    if problems:
        lines += [
            "## FAILED: requests were refused or failed; the figures below are not valid",
            "",
            *(f"- {p}" for p in problems),
            "",
        ]
    lines += ["## Machine", "", *machine_facts(), ""]
    limits_file = " ".join(
        line.replace(" = ", "=") for line in LIMITS_TOML.splitlines()[1:] if "=" in line
    )
    uses_redis = any(config.startswith("redis") for config in stack.configs)
    redis_note = (
        f"`LIMITS_REDIS_URL={redacted(args.redis_url)}` ({await redis_version(args.redis_url)})"
        if uses_redis
        else ""
    )
    store = {
        "redis": f"{redis_note}: one `EVALSHA` admits each completion before the upstream call, "
        "one settles it after",
        "memory": "no `LIMITS_REDIS_URL`: the in-process store",
        "off": "no `LIMITS_FILE`, no `LIMITS_REDIS_URL`: no tiers (admission still runs on the "
        "in-process store)",
        "redis-notiers": f"no `LIMITS_FILE`, {redis_note}: no tiers, but each completion is "
        "admitted and settled in Redis",
    }[stack.config]
    lines += [
        "## Set-up",
        "",
        f"- Gateway configuration of the main matrix: **{stack.config}: "
        f"{DESCRIPTIONS[stack.config]}**. Limits file (written by the benchmark): "
        f"`[tiers.default]` {limits_file}: every limit is checked on every request and none can "
        f"be reached; {store}. `LIMITS_ON_STORE_ERROR=deny`, so a Redis failure would be a 503 "
        "the load generator counts. The run fails if any request is not answered 200 / OK or "
        "any gateway counts a refusal.",
        "- Checked before the run, one REST request per gateway configuration:",
        *(f"  {line}" for line in verified),
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
        "the requests completed (b = bridge, g = gateway, v = vault, r = the Redis server); for "
        "`direct` it is the upstream's. The load generator is one asyncio process on the same "
        "two cores; its own CPU per request is shown beside (not part of the stack's).",
        f"- Matrix time: {elapsed:.0f} s. Other processes on the machine used "
        f"{max(others, 0.0) * 100:.0f}% of one core on average meanwhile (should be near 0).",
        "",
    ]
    lines += ab_lines
    unary = [r for r in rows if not r.stream]
    stream = [r for r in rows if r.stream]
    if base_rows:
        lines += comparison_section(rows, base_rows, args.baseline_commit)
    unary = [r for r in _with_baseline(rows, base_rows) if not r.stream]
    stream = [r for r in _with_baseline(rows, base_rows) if r.stream]
    if unary:
        lines += ["## Non-streaming (ms)", "", *unary_table(unary), ""]
    if stream:
        lines += ["## Streaming (ms)", "", *stream_table(stream), ""]
    lines += profile_lines
    lines += counts_lines
    lines += [
        "## Peak memory (RSS)",
        "",
        "| process | peak RSS MiB | RSS at end MiB |",
        "|---|--:|--:|",
    ]
    for name, (rss, hwm) in memory.items():
        lines.append(f"| {name} | {hwm / 1024:.1f} | {rss / 1024:.1f} |")
    if rows:
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
    if problems:
        for problem in problems:
            _log(f"FAILED: {problem}")
    return "\n".join(lines) + "\n", not problems


def _in_turn(
    runs: list[tuple[str, Stack, Target, GrpcClient]], index: int
) -> list[tuple[str, Stack, Target, GrpcClient]]:
    """A round's order: direct first, then the builds, the baseline first in every other round
    so that neither build always runs right after the upstream-only case."""
    direct = [run for run in runs if run[2] == "direct"]
    mine = [run for run in runs if run[2] != "direct" and not run[0]]
    base = [run for run in runs if run[0]]
    return direct + (base + mine if index % 2 else mine + base)


def _with_baseline(rows: list[Row], base_rows: list[Row]) -> list[Row]:
    """The change's rows, each followed by its baseline's."""
    base = baseline_by_case(base_rows)
    out: list[Row] = []
    for row in rows:
        out.append(row)
        if (row.target, row.stream, row.label) in base:
            out.append(base[row.target, row.stream, row.label])
    return out


async def _profiles(
    args: argparse.Namespace,
    stack: Stack,
    shape: Shape,
    tokens: list[str],
    grpc_client: GrpcClient,
    results: list[CaseResult],
) -> list[str]:
    """py-spy profiles of REST at c=16, one streaming and one unary case (profile.py)."""
    out_dir = args.out if not args.no_write else Path(tempfile.mkdtemp(prefix="bench-profile-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "## Where the CPU goes (py-spy, REST, c=16)",
        "",
        f"Each case run alone for {args.profile_seconds:g} s while py-spy samples the bridge, "
        "the gateway and the vault (not part of the figures above).",
        "",
    ]
    procs = {n: stack.procs[n] for n in ("bridge", "gateway", "vault")}
    for mode in ("stream", "unary"):
        requests = build_requests(shape, stream=mode == "stream")
        base = out_dir / f"{args.stamp}-profile-{mode}-rest-c16"

        async def run(requests: Requests = requests) -> None:
            result = await run_case(
                stack,
                "rest",
                requests,
                tokens,
                concurrency=16,
                chunks=args.chunks,
                warmup=0.0,
                duration=args.profile_seconds,
                grpc_client=grpc_client,
            )
            results.append(result)

        _log(f"profiling {mode} REST c=16 for {args.profile_seconds:g} s (py-spy)")
        stacks = await profiled(procs, args.profile_seconds, base, run, native=args.profile_native)
        title = f"{'Streaming' if mode == 'stream' else 'Non-streaming'}, REST, c=16"
        lines += profile_section(title, stacks, str(base.relative_to(out_dir.parent)))
    return lines


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu(stack: Stack) -> float:
    """CPU seconds of the benchmark's own processes: the stack and this load generator."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    own = sum(p.cpu_seconds() for p in stack.all_procs().values())
    return own + usage.ru_utime + usage.ru_stime


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
        f"Gateway configuration: {stack.config} ({DESCRIPTIONS[stack.config]}).",
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
    ab_configs = [c.strip() for c in args.admission_configs.split(",") if c.strip()]
    unknown = sorted(set(ab_configs) - set(CONFIGS))
    if unknown:
        _log(f"--admission-configs: unknown {', '.join(unknown)} (known: {', '.join(CONFIGS)})")
        return 2
    if args.soak or args.admission_rounds <= 0:
        ab_configs = []
    configs: list[str] = list(dict.fromkeys([args.limits, *ab_configs]))
    if any(config.startswith("redis") for config in configs):
        problem = await redis_problem(args.redis_url)
        if problem is not None:
            _log(f"ERROR: {problem}")
            return 2
    args.stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    with tempfile.TemporaryDirectory(prefix="native1api-bench-") as tmp:
        limits_file = write_limits_file(Path(tmp) / "limits.toml")
        envs = {c: gateway_env(c, limits_file, args.redis_url) for c in configs}
        code_dirs: dict[str, Path] = {}
        args.baseline_commit = ""
        if args.baseline and not args.soak:
            try:
                code_dirs[BASELINE], args.baseline_commit = unpack(args.baseline, Path(tmp))
            except BaselineError as exc:
                _log(f"ERROR: --baseline: {exc}")
                return 2
            # The baseline runs exactly as the main matrix's configuration does.
            envs[BASELINE] = envs[args.limits]
            _log(f"baseline: git {args.baseline_commit}, unpacked to {code_dirs[BASELINE]}")
        external = (
            {"redis": redis_server_cpu(args.redis_url)}
            if any(config.startswith("redis") for config in configs)
            else {}
        )
        _log(
            "starting upstream, vault, and a gateway + bridge per configuration: "
            + ", ".join(f"{c} ({DESCRIPTIONS[c]})" for c in configs)
        )
        with running_stack(
            Path(tmp), gateway_envs=envs, external_cpu=external, code_dirs=code_dirs
        ) as stack:
            try:
                if args.soak:
                    report, ok = await _soak(args, stack)
                    name = "soak"
                else:
                    report, ok = await _matrix(args, stack, ab_configs)
                    name = "overhead"
            except BenchFailure as exc:
                _log(f"FAILED: {exc}")
                return 1
    print(report)
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"{args.stamp}-{name}.md"
        path.write_text(report)
        _log(f"wrote {path}")
    if not ok:
        _log("FAILED: see the report's first section (exit status 1)")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_amain(args))
    return uvloop.run(_amain(args))
