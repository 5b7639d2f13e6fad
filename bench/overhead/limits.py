"""Admission control in the benchmark: the generous limits file, the gateway's limit settings per
configuration, and the Redis it needs.

The benchmark measures the stack as it runs in production, with limits on: every completion is
admitted (one Redis `EVALSHA`) before the upstream call and settled (another) after it. The tier
sets all three limits, so the admission script takes every branch, but so high that nothing is
ever refused (`main` fails the run if anything is).

Three gateway configurations, each with its own gateway and bridge process (`stack.py`):

- `redis`: `LIMITS_FILE` + `LIMITS_REDIS_URL`: what compose deploys, and what the main matrix
  measures;
- `memory`: `LIMITS_FILE` without Redis: the in-process store (one replica);
- `off`: neither: no tiers (no `x-ratelimit-*` metadata); admission still runs against the
  in-process store, which keeps usage totals.

And one for taking the cost apart, not run by default: `redis-notiers`, `LIMITS_REDIS_URL`
without a limits file: the same two Redis round trips per completion, but no tier, so no
`x-ratelimit-*` initial metadata for gRPC to send and the bridge to copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis

from bench.overhead.stack import process_cpu_seconds
from gateway_service.limits.tiers import TierTable, load_tiers

Config = Literal["redis", "memory", "off", "redis-notiers"]
CONFIGS: Final[tuple[Config, ...]] = ("redis", "memory", "off", "redis-notiers")
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
REDIS_URL_ENV: Final = "BENCH_REDIS_URL"

# All three limits set, far above anything a run reaches (~200,000 requests, ~600 tokens of
# reserve each, at most 64 at once); `tiers.MAX_LIMIT` is 10**12.
REQUESTS_PER_MINUTE: Final = 1_000_000_000
TOKENS_PER_DAY: Final = 1_000_000_000_000
MAX_CONCURRENT_REQUESTS: Final = 100_000
LIMITS_TOML: Final = f"""\
# Written by the benchmark (bench/overhead/limits.py): every limit set, none ever reached.
[tiers.default]
requests_per_minute = {REQUESTS_PER_MINUTE}
tokens_per_day = {TOKENS_PER_DAY}
max_concurrent_requests = {MAX_CONCURRENT_REQUESTS}
"""

DESCRIPTIONS: Final[dict[str, str]] = {
    "redis": "limits on, Redis store",
    "memory": "limits on, in-process store",
    "off": "limits off",
    "redis-notiers": "Redis store, no limits file (the round trips without x-ratelimit-*)",
}


def write_limits_file(path: Path) -> Path:
    path.write_text(LIMITS_TOML, encoding="utf-8")
    return path


def tier_table(path: Path) -> TierTable:
    """The benchmark's tiers, written to `path` and read back the way the gateway reads them."""
    return load_tiers(write_limits_file(path))


def gateway_env(config: str, limits_file: Path, redis_url: str) -> dict[str, str]:
    """The gateway's limit settings for one configuration. Every variable is set (empty means
    unset to the gateway), so nothing leaks in from the benchmark's own environment."""
    return {
        "LIMITS_FILE": str(limits_file) if config in ("redis", "memory") else "",
        "LIMITS_REDIS_URL": redis_url if config.startswith("redis") else "",
        "LIMITS_ON_STORE_ERROR": "deny",  # a Redis failure is a 503 the load generator counts
        "LIMITS_TIER_CLAIM": "tier",
    }


def redacted(url: str) -> str:
    """The URL without a password, for messages and reports."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


async def redis_problem(url: str) -> str | None:
    """None when Redis answers at `url`; else what is wrong and what to do about it."""
    client = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        await asyncio.wait_for(client.ping(), 5)
    except (redis.RedisError, OSError, TimeoutError, ValueError) as exc:
        return (
            f"Redis is not reachable at {redacted(url)} ({type(exc).__name__}: {exc}).\n"
            "The benchmark runs the gateway with limits on, in Redis as deployed. Either start "
            "one (`redis-server --save '' --appendonly no`, or `docker compose up -d redis` with "
            "its port published), or point the benchmark at yours with --redis-url URL or "
            f"{REDIS_URL_ENV}=URL, or leave Redis out: --limits memory --admission-configs "
            "off,memory (the in-process store only)."
        )
    finally:
        await client.aclose()
    return None


def redis_server_cpu(url: str) -> Callable[[], float]:
    """A function returning the Redis server's CPU seconds so far: from /proc when the server
    runs on this machine and is visible (no round trip, nothing sent to Redis), else from
    `INFO cpu` (one blocking round trip per reading, at the edges of a measured window)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    host = urlsplit(url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1") or url.startswith("unix://"):
        pid = int(client.info("server").get("process_id", 0))
        try:
            visible = pid > 0 and "redis" in Path(f"/proc/{pid}/comm").read_text()
        except OSError:
            visible = False
        if visible:
            client.close()
            return lambda: process_cpu_seconds(pid)

    def from_info() -> float:
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    return from_info


async def redis_version(url: str) -> str:
    """The server's version ("Redis 7.0.15"), for the report."""
    client = aioredis.Redis.from_url(url, socket_timeout=2)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    return f"Redis {info.get('redis_version', '?')}"
