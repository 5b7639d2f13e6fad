"""Statistics over the cases and the markdown report."""

from __future__ import annotations

import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata

from bench.overhead.load import CaseResult

STACK_PROCS = {
    "direct": ("upstream",),
    "grpc": ("gateway", "vault", "redis"),
    "rest": ("bridge", "gateway", "vault", "redis"),
}
"""Whose CPU counts for a target; `redis` only when the run measured it (limits in Redis)."""


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")


@dataclass
class Row:
    """One (target, mode, concurrency): medians over rounds, milliseconds unless named."""

    target: str
    stream: bool
    concurrency: int
    label: str
    requests: int
    errors: int
    first_error: str
    p50: float
    p90: float
    p99: float
    added50: float
    added90: float
    added99: float
    rps: float
    cpu_ms: float  # stack CPU per request (upstream for `direct`)
    cpu_by_proc: dict[str, float]
    client_cpu_ms: float
    ttft50: float = float("nan")
    ttft_over50: float = float("nan")
    ttft_over99: float = float("nan")
    gap50: float = float("nan")
    gap_over50: float = float("nan")
    gap_over99: float = float("nan")
    gap_over_mean: float = float("nan")


def summarise(rounds: list[dict[str, CaseResult]]) -> list[Row]:
    """Rows for one (mode, concurrency) from its rounds (each a target -> result dict)."""
    rows: list[Row] = []
    for target in ("direct", "grpc", "rest"):
        per_round = [r[target] for r in rounds if target in r]
        if not per_round:
            continue
        first = per_round[0]

        def med(
            fn: Callable[[CaseResult, CaseResult], float], per_round: list[CaseResult] = per_round
        ) -> float:
            return median([fn(res, r["direct"]) for res, r in zip(per_round, rounds, strict=True)])

        def lat(res: CaseResult, q: float) -> float:
            return pct([s.latency for s in res.samples], q) * 1000

        def ttft(res: CaseResult, q: float) -> float:
            return pct([s.ttft for s in res.samples], q) * 1000

        def gaps(res: CaseResult) -> list[float]:
            return [g for s in res.samples for g in s.gaps]

        def gap(res: CaseResult, q: float) -> float:
            return pct(gaps(res), q) * 1000

        def gap_mean(res: CaseResult) -> float:
            values = gaps(res)
            return statistics.fmean(values) * 1000 if values else float("nan")

        def cpu_ms(res: CaseResult, names: Sequence[str]) -> float:
            count = len(res.samples)
            return sum(res.cpu.get(n, 0.0) for n in names) / count * 1000 if count else 0.0

        def per_request(names: Sequence[str]) -> Callable[[CaseResult, CaseResult], float]:
            return lambda a, d: cpu_ms(a, names)

        procs = [n for n in STACK_PROCS[target] if n in first.cpu]
        row = Row(
            target=target,
            stream=first.stream,
            concurrency=first.concurrency,
            label=first.label or str(first.concurrency),
            requests=sum(len(r.samples) for r in per_round),
            errors=sum(r.errors for r in per_round),
            first_error=next((r.first_error for r in per_round if r.first_error), ""),
            p50=med(lambda a, d: lat(a, 50)),
            p90=med(lambda a, d: lat(a, 90)),
            p99=med(lambda a, d: lat(a, 99)),
            added50=med(lambda a, d: lat(a, 50) - lat(d, 50)),
            added90=med(lambda a, d: lat(a, 90) - lat(d, 90)),
            added99=med(lambda a, d: lat(a, 99) - lat(d, 99)),
            rps=med(lambda a, d: a.rps),
            cpu_ms=med(per_request(procs)),
            cpu_by_proc={n: med(per_request((n,))) for n in procs},
            client_cpu_ms=med(
                lambda a, d: a.client_cpu / len(a.samples) * 1000 if a.samples else 0.0
            ),
        )
        if first.stream:
            row.ttft50 = med(lambda a, d: ttft(a, 50))
            row.ttft_over50 = med(lambda a, d: ttft(a, 50) - ttft(d, 50))
            row.ttft_over99 = med(lambda a, d: ttft(a, 99) - ttft(d, 99))
            row.gap50 = med(lambda a, d: gap(a, 50))
            row.gap_over50 = med(lambda a, d: gap(a, 50) - gap(d, 50))
            row.gap_over99 = med(lambda a, d: gap(a, 99) - gap(d, 99))
            row.gap_over_mean = med(lambda a, d: gap_mean(a) - gap_mean(d))
        rows.append(row)
    return rows


def _f(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def _added(row: Row, value: float) -> str:
    return "(baseline)" if row.target == "direct" else _f(value)


def unary_table(rows: list[Row]) -> list[str]:
    out = [
        "| target | c | requests | p50 | p90 | p99 | **added p50** | **added p90** | "
        "**added p99** | req/s | CPU ms/req | load gen. ms/req | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        out.append(
            f"| {r.target} | {r.label} | {r.requests} | {_f(r.p50)} | {_f(r.p90)} | "
            f"{_f(r.p99)} | {_added(r, r.added50)} | {_added(r, r.added90)} | "
            f"{_added(r, r.added99)} | {r.rps:.0f} | {_cpu(r)} | {r.client_cpu_ms:.2f} | "
            f"{r.errors} |"
        )
    return out


def stream_table(rows: list[Row]) -> list[str]:
    out = [
        "| target | c | streams | total p50 | added p50 | added p99 | TTFT p50 | "
        "**TTFT over p50** | TTFT over p99 | gap p50 | **gap over p50** | gap over p99 | "
        "gap over mean | streams/s | CPU ms/stream | load gen. ms/stream | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        over = r.target != "direct"
        out.append(
            f"| {r.target} | {r.label} | {r.requests} | {_f(r.p50)} | "
            f"{_added(r, r.added50)} | {_added(r, r.added99)} | {_f(r.ttft50)} | "
            f"{_f(r.ttft_over50) if over else '(baseline)'} | "
            f"{_f(r.ttft_over99) if over else '(baseline)'} | {_f(r.gap50, 3)} | "
            f"{_f(r.gap_over50, 3) if over else '(baseline)'} | "
            f"{_f(r.gap_over99, 3) if over else '(baseline)'} | "
            f"{_f(r.gap_over_mean, 3) if over else '(baseline)'} | {r.rps:.0f} | {_cpu(r)} | "
            f"{r.client_cpu_ms:.2f} | {r.errors} |"
        )
    return out


def _cpu(row: Row) -> str:
    parts = " + ".join(f"{name[0]} {value:.2f}" for name, value in row.cpu_by_proc.items())
    if len(row.cpu_by_proc) == 1:
        return f"{row.cpu_ms:.2f}"
    return f"{row.cpu_ms:.2f} ({parts})"


@dataclass
class Verdict:
    name: str
    value: str
    limit: str
    ok: bool


def verdicts(rows: list[Row]) -> list[Verdict]:
    """SPEC §9 targets, at concurrency 1 to 16 (the spec's range)."""
    out: list[Verdict] = []
    by = {(r.target, r.stream, r.label): r for r in rows}
    labels = list(dict.fromkeys(r.label for r in rows if r.concurrency <= 16))
    for c in labels:
        rest = by.get(("rest", False, c))
        grpc = by.get(("grpc", False, c))
        if rest is not None:
            out.append(
                Verdict(
                    f"REST added p50, c={c}", f"{rest.added50:.2f} ms", "<= 2 ms", rest.added50 <= 2
                )
            )
            out.append(
                Verdict(
                    f"REST added p99, c={c}",
                    f"{rest.added99:.2f} ms",
                    "<= 10 ms",
                    rest.added99 <= 10,
                )
            )
        if rest is not None and grpc is not None:
            out.append(
                Verdict(
                    f"gRPC below REST, c={c}",
                    f"p50 {grpc.added50:.2f} / p99 {grpc.added99:.2f} ms",
                    "< REST",
                    grpc.added50 < rest.added50 and grpc.added99 < rest.added99,
                )
            )
        for target in ("rest", "grpc"):
            s = by.get((target, True, c))
            if s is None:
                continue
            out.append(
                Verdict(
                    f"{target} TTFT overhead p50, c={c}",
                    f"{s.ttft_over50:.2f} ms",
                    "<= 3 ms",
                    s.ttft_over50 <= 3,
                )
            )
            if c.endswith("instant upstream"):
                continue  # no pause between upstream chunks: gaps are not comparable
            out.append(
                Verdict(
                    f"{target} inter-chunk overhead p50, c={c}",
                    f"{s.gap_over50:.3f} ms",
                    "< 1 ms",
                    s.gap_over50 < 1,
                )
            )
    return out


def machine_facts() -> list[str]:
    import os

    import grpc

    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        loop = f"uvloop {metadata.version('uvloop')}"
    except metadata.PackageNotFoundError:
        loop = "asyncio (no uvloop)"
    try:
        parser = f"httptools {metadata.version('httptools')}"
    except metadata.PackageNotFoundError:
        parser = "h11 (no httptools)"
    return [
        f"- code: {code_version()}",
        f"- cores: {os.cpu_count()} ({cpu_model or 'unknown CPU'}), "
        f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()}",
        f"- grpcio {grpc.__version__}; event loop available: {loop}; HTTP parser: {parser}",
    ]


def code_version() -> str:
    """The commit measured and whether the services' code differed from it (read-only git:
    no index refresh, no lock, so it never gets in the way of someone committing)."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    git = ["git", "--no-optional-locks", "-C", str(repo)]
    try:
        head = subprocess.run(  # noqa: S603 (fixed arguments)
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603
            [*git, "status", "--porcelain", "--", *SERVICE_DIRS],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    changed = [line[3:] for line in dirty if line.strip()]
    if not changed:
        return f"git {head}"
    where = sorted({path.split("/", 1)[0] for path in changed})
    return f"git {head} plus uncommitted changes to {len(changed)} files in {', '.join(where)}"


SERVICE_DIRS = ("gateway_service", "rest_bridge", "vault_service", "rpc_common", "fakes")


_THREE = ("bridge", "gateway", "vault")


def _three(row: Row) -> float:
    """CPU per request of our three processes (Redis, when measured, is shown apart)."""
    return sum(row.cpu_by_proc.get(name, 0.0) for name in _THREE)


def _ratio(new: float, old: float) -> str:
    return "-" if not old or new != new or old != old else f"{new / old:.2f}x"


def baseline_by_case(base_rows: list[Row]) -> dict[tuple[str, bool, str], Row]:
    """The baseline's rows by (target without `@baseline`, stream, label): the change's keys."""
    return {(r.target.split("@")[0], r.stream, r.label): r for r in base_rows}


def comparison_section(rows: list[Row], base_rows: list[Row], commit: str) -> list[str]:
    """The change against the baseline build measured in the same rounds (baseline.py)."""
    base = baseline_by_case(base_rows)
    out = [
        f"## The change against the baseline (git {commit}), same run",
        "",
        "Both builds' gateway + bridge ran side by side on the same upstream, vault and Redis, "
        "their targets interleaved in every round. CPU ms per request (per stream) of bridge + "
        "gateway + vault; Redis apart. Ratio = change / baseline.",
        "",
        "| mode | target | c | CPU change | CPU baseline | ratio | added p50 change | "
        "baseline | TTFT over p50 change | baseline |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        old = base.get((row.target, row.stream, row.label))
        if old is None:
            continue
        ttft = (_f(row.ttft_over50), _f(old.ttft_over50)) if row.stream else ("-", "-")
        out.append(
            f"| {'stream' if row.stream else 'unary'} | {row.target} | {row.label} | "
            f"{_f(_three(row))} | {_f(_three(old))} | {_ratio(_three(row), _three(old))} | "
            f"{_f(row.added50)} | {_f(old.added50)} | {ttft[0]} | {ttft[1]} |"
        )
    targets = [
        ("CPU per REST stream, c=16 (b + g + v)", ("rest", True, "16"), _three, 5.0),
        ("CPU per non-streaming REST request, c=16", ("rest", False, "16"), _three, 1.5),
        (
            "REST added p50, c=1, instant upstream",
            ("rest", False, "1, instant upstream"),
            lambda r: r.added50,
            1.5,
        ),
        ("REST TTFT overhead p50, c=16", ("rest", True, "16"), lambda r: r.ttft_over50, 3.0),
    ]
    by = {(r.target, r.stream, r.label): r for r in rows}
    out += [
        "",
        "| target (ms) | change | baseline | limit | |",
        "|---|--:|--:|--:|---|",
    ]
    for name, key, value, limit in targets:
        new, old = by.get(key), base.get(key)
        if new is None:
            continue
        measured = value(new)
        verdict = "ok" if measured <= limit else "**MISSED**"
        out.append(
            f"| {name} | {_f(measured)} | {_f(value(old)) if old else '-'} | {limit:g} | "
            f"{verdict} |"
        )
    return [*out, ""]
