"""`--profile`: where the CPU goes, per process, for one streaming and one unary REST case.

py-spy (a dev dependency) samples the bridge, the gateway and the vault from outside while the
case runs, without pausing them (`--nonblocking`), so the case runs at its normal speed. Each
process gets a flame graph (SVG) and its raw collapsed stacks in `bench/results/`, and the
report lists the functions with the most samples: *self* (the function itself was running)
and *total* (it was on the stack). Idle samples (threads waiting in epoll and the like) are not
taken, so the percentages are of the time the process was busy.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from bench.overhead.stack import Proc

RATE = 250  # samples per second
TOP = 12
_LINE_NUMBER = re.compile(r":\d+\)$")
# Leaf frames of a thread that waits: py-spy's idle detection does not see through C frames,
# so native profiles would count the poller threads' and the event loop's sleep as busy.
_WAITING: Final = frozenset(
    {"epoll_wait", "epoll_pwait", "poll", "select", "pselect6", "futex_wait", "syscall"}
)


def py_spy() -> str | None:
    """The py-spy executable of this environment, if installed."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def profiled(
    procs: dict[str, Proc],
    seconds: float,
    out: Path,
    run: Callable[[], Awaitable[object]],
    *,
    native: bool = False,
) -> dict[str, Counter[str]]:
    """Run `run()` while py-spy records every process in `procs` for `seconds`; write
    `out`-<name>.svg and .txt per process; return the raw stacks (collapsed, counted).
    `native` also samples C frames (grpc's core, uvloop, protobuf), which otherwise count as
    the Python frame that called into them (`Runner.run` for the event loop itself)."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("--profile needs py-spy (make install puts it in .venv)")
    recorders: list[asyncio.subprocess.Process] = []
    paths: dict[str, Path] = {}
    for name, proc in procs.items():
        paths[name] = out.with_name(f"{out.name}-{name}.txt")
        for fmt, path in (
            ("raw", paths[name]),
            ("flamegraph", out.with_name(f"{out.name}-{name}.svg")),
        ):
            recorders.append(
                await asyncio.create_subprocess_exec(
                    exe,
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--duration",
                    str(max(1, round(seconds))),
                    "--rate",
                    str(RATE),
                    # Native unwinding needs the process paused while sampled.
                    *(["--native"] if native else ["--nonblocking"]),
                    "--format",
                    fmt,
                    "--output",
                    str(path),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
    await asyncio.sleep(0.3)  # py-spy attaches
    await run()
    for recorder in recorders:
        _, stderr = await recorder.communicate()
        if recorder.returncode:
            # e.g. no permission to attach (ptrace): say so instead of an empty table.
            raise RuntimeError(f"py-spy failed: {stderr.decode(errors='replace').strip()[-300:]}")
    return {name: _read_raw(path) for name, path in paths.items()}


def _read_raw(path: Path) -> Counter[str]:
    stacks: Counter[str] = Counter()
    if not path.exists():
        return stacks
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def _function(frame: str) -> str:
    """`name (path/to/module.py:123)` -> `name (module.py)`: one row per function."""
    frame = _LINE_NUMBER.sub(")", frame.strip())
    name, _, where = frame.partition(" (")
    if where:
        parts = where.rstrip(")").split("/")
        where = "/".join(parts[-2:]) if "site-packages" not in parts else parts[-1]
        return f"{name} ({where})"
    return name


def top_functions(stacks: Counter[str], top: int = TOP) -> list[tuple[str, float, float]]:
    """(function, self %, total %) for the `top` functions with the most self samples."""
    total = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = [_function(f) for f in stack.split(";") if f]
        if not frames or frames[-1].partition(" (")[0] in _WAITING:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return []
    return [
        (name, 100 * count / total, 100 * inclusive[name] / total)
        for name, count in own.most_common(top)
    ]


def profile_section(title: str, stacks: dict[str, Counter[str]], files: str) -> list[str]:
    """Markdown: per process, its busiest functions."""
    lines = [f"### {title}", "", f"Flame graphs and raw stacks: `{files}-<process>.svg/.txt`.", ""]
    for name, counted in stacks.items():
        samples = sum(counted.values())
        lines += [
            f"**{name}** ({samples} busy samples at {RATE}/s):",
            "",
            "| function | self % | total % |",
            "|---|--:|--:|",
            *(
                f"| `{fn}` | {own:.1f} | {inclusive:.1f} |"
                for fn, own, inclusive in top_functions(counted)
            ),
            "",
        ]
    return lines
