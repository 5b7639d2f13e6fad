"""Running a service's main coroutine on the fastest event loop available.

uvloop (a runtime dependency) is a drop-in asyncio loop written on libuv: grpc.aio, httpx and
uvicorn all run on it unchanged, and it spends noticeably less CPU per request and per stream
chunk than the default selector loop (bench/README.md has the numbers). Should it be missing
(an unusual platform), the default loop is used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """`asyncio.run(main)` on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        return asyncio.run(main)
    return uvloop.run(main)
