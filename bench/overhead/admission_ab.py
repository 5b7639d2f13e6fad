"""What admission costs: the same requests through gateways that differ only in their limits
settings (`limits.py`), interleaved, in one run; and the checks that limits really were on and
that nothing was refused.

Every configuration has its own gateway and bridge (one upstream and one vault serve them all).
On a shared, noisy machine, configurations measured one after the other differ by whatever the
machine did meanwhile (rounds of a few seconds each differed by up to 1.5 ms at p50 here). So
the A/B interleaves finely: one closed loop (concurrency 1) sends its requests to the
configurations in turn, `block` requests each (1 with the 20 ms upstream; a block of about
50 ms with the instant upstream, so each process stays as busy as in the matrix's instant case),
and every configuration's samples come from the same seconds. Several such runs (rounds), the
order of the configurations rotating. Figures:

- p50: the median over rounds of each round's p50; Δp50: the median over rounds of (this
  configuration's p50 - the baseline's p50 in the same round), with its range over the rounds;
- p99: over all rounds' samples pooled; Δp99 is the difference of the pooled p99s;
- CPU ms/req: the configuration's own bridge (REST only) and gateway over its requests, plus
  the shared processes' CPU in the window spread over the requests that used them: the vault
  over all requests, the Redis server over the requests of configurations that use Redis.
  Median over rounds; ΔCPU likewise per round.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import httpx
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from bench.overhead.client import GrpcClient, Sample
from bench.overhead.limits import DESCRIPTIONS, REQUESTS_PER_MINUTE, TOKENS_PER_DAY
from bench.overhead.load import (
    CaseResult,
    Close,
    Send,
    Target,
    client_cpu,
    failure_kind,
    request_factory,
)
from bench.overhead.report import median, pct
from bench.overhead.stack import Stack
from bench.overhead.workload import Requests
from gateway_service.limits.admission import user_key
from gateway_service.limits.redis_store import DEFAULT_PREFIX

SLICE_SETTLE: Final = 0.1
"""Seconds at the start of a time slice whose requests do not count (the previous
configuration's last requests are still finishing)."""
ISSUE_LIMIT_MS: Final = 0.3
"""The issue's bound on what admission with Redis may add at p50."""
STACK_CPU: Final[dict[str, tuple[str, ...]]] = {
    "grpc": ("gateway", "vault", "redis"),
    "rest": ("bridge", "gateway", "vault", "redis"),
}


class BenchFailure(Exception):
    """The run cannot be trusted (limits not on as configured, a request refused...)."""


@dataclass(frozen=True)
class AbCase:
    label: str
    requests: Requests
    duration: float
    """Measured seconds per configuration."""
    block: int = 1
    """Requests in a row to one configuration before the next one's turn (at c=1)."""
    concurrency: int = 1
    slice_seconds: float = 0.0
    """When set (needed at c > 1): all workers switch configuration together this often."""


@dataclass
class Cell:
    """One (case, target, configuration): a result per round."""

    case: str
    target: Target
    config: str
    rounds: list[CaseResult] = field(default_factory=list)


# -- the run ------------------------------------------------------------------------------


async def run_ab(
    stack: Stack,
    cases: Sequence[AbCase],
    tokens: list[str],
    *,
    configs: Sequence[str],
    rounds: int,
    warmup: float,
    chunks: int,
    log: Callable[[str], None] | None = None,
) -> tuple[list[Cell], list[CaseResult]]:
    """`rounds` rounds of every case x target, each one interleaved run over `configs`; and the
    warm-up runs' results (not measured, but their failures count)."""
    clients = {name: GrpcClient(stack.configs[name].gateway_address) for name in configs}
    cells: dict[tuple[str, str, str], Cell] = {}
    targets: tuple[Target, ...] = ("grpc", "rest")
    warm: list[CaseResult] = []
    try:
        for target in targets:  # warm every configuration (connections, caches)
            results = await _interleaved(
                stack, target, cases[0], tokens, configs, clients, 0.0, chunks, 1.0
            )
            warm += results.values()
        for index in range(rounds):
            shift = index % len(configs)
            order = [*configs[shift:], *configs[:shift]]
            for case in cases:
                for target in targets if index % 2 == 0 else targets[::-1]:
                    results = await _interleaved(
                        stack, target, case, tokens, order, clients, warmup, chunks, case.duration
                    )
                    stack.check_alive()
                    for name in configs:
                        result = results[name]
                        key = (case.label, target, name)
                        cells.setdefault(key, Cell(case.label, target, name)).rounds.append(result)
                    if log is not None:
                        log(
                            f"admission A/B c={case.label} round {index + 1} {target}: "
                            + ", ".join(
                                f"{name} p50 {_p(results[name], 50):.2f} ms "
                                f"({len(results[name].samples)} req, "
                                f"{sum(results[name].failures.values())} failed)"
                                for name in configs
                            )
                        )
    finally:
        for client in clients.values():
            await client.close()
    return list(cells.values()), warm


async def _interleaved(
    stack: Stack,
    target: Target,
    case: AbCase,
    tokens: list[str],
    order: Sequence[str],
    clients: dict[str, GrpcClient],
    warmup: float,
    chunks: int,
    duration: float,
) -> dict[str, CaseResult]:
    """One closed loop of `case.concurrency` workers over the configurations in turn, about
    `duration` measured seconds per configuration. At c=1, `case.block` requests to each in
    turn; with `case.slice_seconds`, all workers move to the next configuration together every
    slice, and a request counts only if it started `SLICE_SETTLE` into its slice and ended in
    it (no request overlaps another configuration's load)."""
    concurrency = case.concurrency
    sliced = case.slice_seconds > 0
    sends: dict[str, list[Send]] = {name: [] for name in order}
    closes: list[Close] = []
    for name in order:
        make = await request_factory(
            stack.configs[name], target, case.requests, tokens, chunks, clients[name]
        )
        for index in range(concurrency):
            send, close = await make(index)
            sends[name].append(send)
            closes.append(close)
    views = [stack.configs[name] for name in order]
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + warmup
    usable = (case.slice_seconds - SLICE_SETTLE) / case.slice_seconds if sliced else 1.0
    stop_at = measure_from + duration * len(order) / usable
    samples: dict[str, list[Sample]] = {name: [] for name in order}
    failures: dict[str, Counter[str]] = {name: Counter() for name in order}
    first_error: dict[str, str] = dict.fromkeys(order, "")
    errors = dict.fromkeys(order, 0)
    before: list[dict[str, float]] = []
    client_before = 0.0
    count = 0

    def mark_start() -> None:
        nonlocal client_before
        before.extend(view.cpu_seconds() for view in views)
        client_before = client_cpu()

    loop.call_at(measure_from, mark_start)

    async def worker(index: int) -> None:
        nonlocal count
        while (now := loop.time()) < stop_at:
            slice_end = stop_at
            if sliced:
                number = int((now - start) // case.slice_seconds)
                name = order[number % len(order)]
                slice_start = start + number * case.slice_seconds
                slice_end = slice_start + case.slice_seconds
                counts = now >= measure_from and now - slice_start >= SLICE_SETTLE
            else:
                name = order[(count // case.block) % len(order)]
                count += 1
                counts = now >= measure_from
            try:
                sample = await sends[name][index]()
            except Exception as exc:
                failures[name][failure_kind(exc)] += 1
                if counts:
                    errors[name] += 1
                    first_error[name] = first_error[name] or f"{type(exc).__name__}: {exc}"[:300]
                await asyncio.sleep(0.01)
                continue
            if counts and loop.time() <= min(slice_end, stop_at):
                samples[name].append(sample)

    try:
        await asyncio.gather(*(worker(index) for index in range(concurrency)))
        after = [view.cpu_seconds() for view in views]
        if not before:
            mark_start()
        used_client_cpu = client_cpu() - client_before
    finally:
        for close in closes:
            await close()
    total = sum(len(v) for v in samples.values()) or 1
    on_redis = sum(len(samples[n]) for n in order if n.startswith("redis")) or 1
    out: dict[str, CaseResult] = {}
    for name, cpu_before, cpu_after in zip(order, before, after, strict=True):
        delta = {proc: cpu_after[proc] - cpu_before[proc] for proc in cpu_after}
        share = len(samples[name]) / total
        cpu = {
            "gateway": delta["gateway"],
            "vault": delta["vault"] * share,
        }
        if target == "rest":
            cpu["bridge"] = delta["bridge"]
        if "redis" in delta:
            redis_share = len(samples[name]) / on_redis if name.startswith("redis") else 0.0
            cpu["redis"] = delta["redis"] * redis_share
        out[name] = CaseResult(
            target=target,
            stream=case.requests.stream,
            concurrency=concurrency,
            samples=samples[name],
            seconds=duration,
            errors=errors[name],
            cpu=cpu,
            client_cpu=used_client_cpu * share,
            first_error=first_error[name],
            label=case.label,
            config=name,
            failures=failures[name],
        )
    return out


# -- statistics and the report section -------------------------------------------------------


def _p(result: CaseResult, q: float) -> float:
    return pct([s.latency for s in result.samples], q) * 1000


def _pooled(cell: Cell, q: float) -> float:
    return pct([s.latency for r in cell.rounds for s in r.samples], q) * 1000


def _cpu_ms(result: CaseResult, names: Sequence[str]) -> float:
    count = len(result.samples)
    if not count:
        return math.nan
    return sum(result.cpu.get(n, 0.0) for n in names) / count * 1000


@dataclass
class AbRow:
    case: str
    target: str
    config: str
    requests: int
    failures: int
    p50: float
    p99: float
    d50: float
    d50_low: float
    d50_high: float
    d99: float
    cpu: float
    cpu_split: dict[str, float]
    d_cpu: float


def summarise_ab(cells: list[Cell], baseline: str) -> list[AbRow]:
    by_key = {(c.case, c.target, c.config): c for c in cells}
    rows: list[AbRow] = []
    for cell in cells:
        base = by_key[(cell.case, cell.target, baseline)]
        pairs = list(zip(cell.rounds, base.rounds, strict=True))
        names = [n for n in STACK_CPU[cell.target] if n in cell.rounds[0].cpu]
        d50 = [_p(a, 50) - _p(b, 50) for a, b in pairs]
        rows.append(
            AbRow(
                case=cell.case,
                target=cell.target,
                config=cell.config,
                requests=sum(len(r.samples) for r in cell.rounds),
                failures=sum(sum(r.failures.values()) for r in cell.rounds),
                p50=median([_p(r, 50) for r in cell.rounds]),
                p99=_pooled(cell, 99),
                d50=median(d50),
                d50_low=min(d50),
                d50_high=max(d50),
                d99=_pooled(cell, 99) - _pooled(base, 99),
                cpu=median([_cpu_ms(r, names) for r in cell.rounds]),
                cpu_split={n: median([_cpu_ms(r, (n,)) for r in cell.rounds]) for n in names},
                d_cpu=median([_cpu_ms(a, names) - _cpu_ms(b, names) for a, b in pairs]),
            )
        )
    order = {name: i for i, name in enumerate(dict.fromkeys(c.config for c in cells))}
    rows.sort(key=lambda r: (r.case, r.target, order[r.config] if r.config != baseline else -1))
    return rows


def ab_section(
    rows: list[AbRow],
    *,
    baseline: str,
    rounds: int,
    warmup: float,
    cases: Sequence[AbCase],
    unary_delay_ms: float,
) -> list[str]:
    """The report's "Admission cost" section: the headline, the table, how it was measured."""
    lines = ["## Admission cost: limits on vs off (A/B, interleaved)", ""]
    measured = [r.config for r in rows if r.config != baseline]
    shown = "redis" if "redis" in measured else (measured[0] if measured else "")
    headline = [r for r in rows if r.config == shown and r.case == cases[0].label]
    if headline:
        parts = []
        for r in headline:
            verdict = "within" if r.d50 <= ISSUE_LIMIT_MS else "**over**"
            parts.append(
                f"{'REST' if r.target == 'rest' else 'gRPC'} **{r.d50:+.2f} ms p50** "
                f"[{r.d50_low:+.2f} … {r.d50_high:+.2f} over the rounds], {r.d99:+.2f} ms p99, "
                f"{r.d_cpu:+.2f} ms CPU/req ({verdict} the {ISSUE_LIMIT_MS:g} ms p50 bound)"
            )
        lines += [
            f"What admission adds per request with `{shown}` ({DESCRIPTIONS.get(shown, shown)}) "
            f"at c={cases[0].label}, against `{baseline}`: " + "; ".join(parts) + ".",
            "",
        ]
    lines += [
        "| case | target | configuration | requests | p50 | p99 | **Δp50** [range] | Δp99 | "
        "CPU ms/req | ΔCPU ms/req | failed |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        base = r.config == baseline
        split = " + ".join(f"{n[0]} {v:.2f}" for n, v in r.cpu_split.items())
        lines.append(
            f"| {r.case} | {'REST' if r.target == 'rest' else 'gRPC'} | "
            f"{r.config}: {DESCRIPTIONS.get(r.config, r.config)} | {r.requests} | {r.p50:.2f} | "
            f"{r.p99:.2f} | "
            + (
                "(baseline) | (baseline) | "
                if base
                else f"**{r.d50:+.2f}** [{r.d50_low:+.2f} … {r.d50_high:+.2f}] | {r.d99:+.2f} | "
            )
            + f"{r.cpu:.2f} ({split}) | "
            + ("(baseline)" if base else f"{r.d_cpu:+.2f}")
            + f" | {r.failures} |"
        )

    def how(case: AbCase) -> str:
        if case.slice_seconds:
            return (
                f"c={case.label}: {case.duration:g} s counted per configuration and round, all "
                f"{case.concurrency} workers switching configuration together every "
                f"{case.slice_seconds:g} s (a request counts if it starts {SLICE_SETTLE:g} s or "
                "more into its slice and ends within it)"
            )
        return (
            f"c={case.label}: {case.duration:g} s measured per configuration and round, "
            f"{case.block} request{'s' if case.block > 1 else ''} at a time to each"
        )

    described = "; ".join(how(c) for c in cases)
    lines += [
        "",
        "How: every configuration has its own gateway and bridge process, started together and "
        "served by the same upstream and vault; they differ only in the gateway's `LIMITS_*` "
        "settings. One closed loop (non-streaming) sends its requests to the configurations in "
        "turn, so every configuration's samples come from the same "
        "seconds and the noise of a shared machine falls on all of them alike (measured one "
        "after the other, a few seconds apart, rounds differed by up to 1.5 ms at p50). "
        f"{described}; {warmup:g} s warm-up per run, not recorded; {rounds} rounds, the order "
        "of the configurations rotating and gRPC/REST alternating first. The upstream answers "
        f'after {unary_delay_ms:g} ms ("instant": at once). Latency is end to end (load '
        "generator to load generator). p50 = median over rounds of each round's p50; Δp50 = "
        "median over rounds of (configuration p50 - baseline p50 in the same round), [min … "
        "max] over rounds; p99 and Δp99 over all rounds' samples pooled. CPU per request "
        "completed, median over rounds: b bridge and g gateway (each configuration's own "
        "processes); v the shared vault over all requests; r the Redis server (from /proc, or "
        "`INFO cpu` when remote) over the requests of the configurations that use it (a shared "
        "Redis's other clients count too).",
        "",
    ]
    return lines


# -- checks: limits really on, nothing refused --------------------------------------------------


async def verify_configs(
    stack: Stack, body: bytes, token: str, uid: str, redis_url: str
) -> list[str]:
    """One REST completion per configuration: a 200, `x-ratelimit-*` in the head exactly when
    the configuration has limits (with the benchmark's values), and with Redis the user's
    request bucket in Redis. Raises BenchFailure otherwise; returns a line per configuration."""
    lines: list[str] = []
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    async with httpx.AsyncClient(timeout=10) as client:
        for name, view in stack.configs.items():
            response = await client.post(
                f"{view.bridge_url}/v1/chat/completions", content=body, headers=headers
            )
            if response.status_code != 200:
                raise BenchFailure(
                    f"{name}: the check request got HTTP {response.status_code}: "
                    f"{response.text[:300]}"
                )
            limit_requests = response.headers.get("x-ratelimit-limit-requests")
            limit_tokens = response.headers.get("x-ratelimit-limit-tokens")
            if name in ("off", "redis-notiers"):
                if limit_requests is not None:
                    raise BenchFailure(f"{name}: x-ratelimit-* headers, but there are no tiers")
                note = f"- `{name}`: 200, no `x-ratelimit-*` headers (no tiers), as meant"
                if name == "redis-notiers":
                    day = time.strftime("%Y-%m-%d", time.gmtime())
                    key = f"{DEFAULT_PREFIX}{{{user_key(uid)}}}:day:{day}"
                    if not await _redis_has(redis_url, key):
                        raise BenchFailure(f"{name}: the user's day record is not in Redis")
                    note += "; the user's day record is in Redis"
                lines.append(note)
                continue
            if limit_requests != str(REQUESTS_PER_MINUTE) or limit_tokens != str(TOKENS_PER_DAY):
                raise BenchFailure(
                    f"{name}: x-ratelimit-limit-requests={limit_requests!r}, "
                    f"x-ratelimit-limit-tokens={limit_tokens!r}: the limits file is not in force"
                )
            note = (
                f"- `{name}`: 200 with `x-ratelimit-limit-requests: {limit_requests}`, "
                f"`x-ratelimit-remaining-requests: "
                f"{response.headers.get('x-ratelimit-remaining-requests')}`, "
                f"`x-ratelimit-limit-tokens: {limit_tokens}`"
            )
            if name == "redis":
                key = f"{DEFAULT_PREFIX}{{{user_key(uid)}}}:rpm"
                if not await _redis_has(redis_url, key):
                    raise BenchFailure(f"{name}: the user's request bucket is not in Redis")
                note += "; the user's request bucket is in Redis"
            lines.append(note)
    return lines


async def _redis_has(url: str, key: str) -> bool:
    client = aioredis.Redis.from_url(url, socket_timeout=2)
    try:
        return bool(await client.exists(key))
    finally:
        await client.aclose()


@dataclass
class GatewayCounts:
    admitted: int
    refused: Counter[str]
    store_errors: Counter[str]
    not_ok: Counter[str]


async def gateway_counts(stack: Stack) -> dict[str, GatewayCounts]:
    """Admission counters from each gateway's Prometheus endpoint."""
    out: dict[str, GatewayCounts] = {}
    async with httpx.AsyncClient(timeout=5) as client:
        for name, view in stack.configs.items():
            text = (await client.get(view.metrics_url)).text
            counts = GatewayCounts(0, Counter(), Counter(), Counter())
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if not sample.name.endswith("_total"):
                        continue
                    value = int(sample.value)
                    labels = sample.labels
                    if family.name == "native1api_gateway_admissions":
                        counts.admitted += value
                    elif family.name == "native1api_gateway_admission_refusals":
                        counts.refused[labels.get("limit", "?")] += value
                    elif family.name == "native1api_gateway_limiter_store_errors":
                        counts.store_errors[labels.get("operation", "?")] += value
                    elif family.name == "native1api_gateway_requests" and labels.get(
                        "status"
                    ) not in ("OK", None):
                        counts.not_ok[f"{labels.get('rpc')} {labels.get('status')}"] += value
            out[name] = counts
    return out


def counts_section(counts: dict[str, GatewayCounts]) -> tuple[list[str], list[str]]:
    """The report's table of admission counters, and the problems they show (none expected)."""
    lines = [
        "## Admission counters (each gateway's /metrics at the end of the run)",
        "",
        "| configuration | admitted | refused | limiter store errors | completions not OK |",
        "|---|--:|--:|--:|--:|",
    ]
    problems: list[str] = []

    def fmt(counter: Counter[str]) -> str:
        total = sum(counter.values())
        return str(total) if not total else f"**{total}** ({dict(counter)})"

    for name, c in counts.items():
        lines.append(
            f"| {name}: {DESCRIPTIONS.get(name, name)} | {c.admitted} | {fmt(c.refused)} | "
            f"{fmt(c.store_errors)} | {fmt(c.not_ok)} |"
        )
        for what, counter in (
            ("refused", c.refused),
            ("limiter store errors", c.store_errors),
            ("completions not OK", c.not_ok),
        ):
            if sum(counter.values()):
                problems.append(f"gateway `{name}`: {what}: {dict(counter)}")
    return [*lines, ""], problems


def failures_of(results: Sequence[CaseResult]) -> Counter[str]:
    total: Counter[str] = Counter()
    for result in results:
        total.update(result.failures)
    return total
