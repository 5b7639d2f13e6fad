"""The pooled HTTP clients for the upstreams, and sending with retries before the first byte.

One client (one connection pool) per provider, so a flood of slow requests to one provider can
never take the connections another provider's users need. A pool that stays full for
`pool_timeout_seconds` answers 503 `upstream_overloaded` with `Retry-After`: it is our capacity
that ran out, not the provider that was slow, so it is never reported as an upstream timeout.

Retries (SPEC §6): connect errors and HTTP 429/502/503, at most twice, honouring `Retry-After` up
to a cap, and only before any byte of the answer was used. Once a 2xx response is returned to the
adapter, nothing is retried.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from http.cookiejar import Cookie, CookieJar, DefaultCookiePolicy

import httpx

from gateway_service import errors
from rpc_common.status import RpcError

_LOGGER = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 502, 503})
MAX_ERROR_BODY = 64 * 1024
# After `[DONE]`, how long and how many stray events we read while waiting for the body's end.
KEEPALIVE_EXPIRY = 60.0
DRAIN_SECONDS = 0.25
DRAIN_MAX_EVENTS = 8


@dataclass(frozen=True)
class HttpSettings:
    """Timeouts and retry policy for upstream calls."""

    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 120.0
    total_timeout_seconds: float = 600.0
    max_retries: int = 2
    retry_after_cap_seconds: float = 5.0
    max_connections: int = 512
    """Connections per provider pool (a stream holds one until it ends)."""
    pool_timeout_seconds: float = 1.0
    """How long a request waits for a free connection before 503 `upstream_overloaded`."""


class _NoCookies(DefaultCookiePolicy):
    """Refuses every cookie."""

    def set_ok(self, cookie: Cookie, request: urllib.request.Request) -> bool:
        return False


def make_client(
    settings: HttpSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """One provider's client: httpx's own pooled transport, explicit timeouts, no redirects (a
    redirect would carry the Authorization header somewhere we did not choose). `transport` is
    for tests."""
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
            keepalive_expiry=KEEPALIVE_EXPIRY,
        ),
        follow_redirects=False,
        trust_env=False,
        # One client serves every user's requests: it must never store a cookie an upstream set
        # (Cloudflare sets `__cf_bm`) and replay it on someone else's request.
        cookies=CookieJar(policy=_NoCookies()),
    )


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """`Retry-After` (seconds or HTTP date) or `retry-after-ms`, if present and sane."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


ErrorParser = Callable[[int, bytes, httpx.Headers], errors.UpstreamHTTPError]


async def open_stream(
    client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    provider: str,
    byok: bool,
    parse_error: ErrorParser,
    settings: HttpSettings,
) -> httpx.Response:
    """Send `request` and return the open 2xx response (the caller must `aclose()` it).

    Non-2xx answers are read (bounded), parsed by the provider's `parse_error` and raised as
    the mapped `RpcError`.
    """
    attempt = 0
    while True:
        try:
            response = await client.send(request, stream=True)
        except httpx.PoolTimeout:
            # Every connection of this provider's pool is busy (our capacity, not its speed).
            raise errors.upstream_overloaded(provider) from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if attempt < settings.max_retries:
                attempt += 1
                _LOGGER.info("%s: %s, retry %d", provider, type(exc).__name__, attempt)
                await asyncio.sleep(_backoff(attempt))
                continue
            raise errors.unreachable(provider) from None
        except httpx.TimeoutException:
            raise errors.timed_out(provider) from None
        except httpx.HTTPError as exc:
            _LOGGER.warning("%s: transport error %s", provider, type(exc).__name__)
            raise errors.unreachable(provider) from None
        if response.is_success:
            return response
        body = await _read_bounded(response)
        await response.aclose()
        retry_after = retry_after_seconds(response.headers)
        if response.status_code in RETRYABLE_STATUS and attempt < settings.max_retries:
            delay = retry_after if retry_after is not None else _backoff(attempt + 1)
            if delay <= settings.retry_after_cap_seconds:
                attempt += 1
                _LOGGER.info(
                    "%s: HTTP %d, retry %d in %.2f s",
                    provider,
                    response.status_code,
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
        failure = parse_error(response.status_code, body, response.headers)
        if failure.retry_after is None:
            failure.retry_after = retry_after
        raise errors.from_upstream_status(provider, failure, byok=byok)


async def _read_bounded(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= MAX_ERROR_BODY:
                break
    except httpx.HTTPError:
        pass  # a broken error body still tells us the status
    return b"".join(chunks)[:MAX_ERROR_BODY]


async def drain_after_done(
    events: AsyncIterator[object],
    *,
    seconds: float = DRAIN_SECONDS,
    max_events: int = DRAIN_MAX_EVENTS,
) -> None:
    """Read what is left of a stream after its `[DONE]`, so the connection goes back to the pool.

    After `[DONE]` only the end of the chunked body normally follows, often in the same packet.
    Closing the response before reading it would make httpcore drop the connection, and the next
    stream would pay for a new TCP connection. An upstream that keeps the body open or keeps
    sending is not waited for: the caller's `response.aclose()` then closes the connection.
    """
    try:
        async with asyncio.timeout(seconds):
            seen = 0
            async for _ in events:
                seen += 1
                if seen >= max_events:
                    return
    except (TimeoutError, httpx.HTTPError):
        pass


def _backoff(attempt: int) -> float:
    # 0.1 s, 0.2 s, ... with jitter so that many clients do not retry in lockstep.
    base: float = min(2.0, 0.1 * 2.0 ** (attempt - 1))
    return base * (0.5 + random.random() / 2)  # noqa: S311


def ensure_rpc_error(exc: BaseException, provider: str) -> RpcError:
    """Translate an httpx failure that happened while reading a 2xx body."""
    if isinstance(exc, RpcError):
        return exc
    if isinstance(exc, httpx.PoolTimeout):
        return errors.upstream_overloaded(provider)
    if isinstance(exc, httpx.TimeoutException):
        return errors.timed_out(provider)
    # The exception class is for our logs, not for the caller.
    _LOGGER.info("%s: stream broken by %s", provider, type(exc).__name__)
    return errors.stream_interrupted(provider, "the connection was closed")
