"""The pooled HTTP clients for the upstreams, and sending with retries before the first byte.

One `UpstreamClient` (one aiohttp session, one connection pool) per provider, so a flood of slow
requests to one provider can never take the connections another provider's users need. A pool
that stays full for `pool_timeout_seconds` answers 503 `upstream_overloaded` with `Retry-After`:
it is our capacity that ran out, not the provider that was slow, so it is never reported as an
upstream timeout.

aiohttp has no "wait at most this long for a free connection" of its own (its connector queues
requests until the request's connect timeout, which would read as the provider being slow), so
each client holds a semaphore with one slot per connection: a request takes a slot before it
asks the connector for a connection, waiting at most `pool_timeout_seconds`, and gives it back
when its response is closed. The connector's own limit is the same number, so it never queues.

Retries: connect errors and HTTP 429/502/503, at most twice, honouring `Retry-After` (or
`retry-after-ms`) up to a cap, and only before any byte of the answer was used. Once a 2xx
response is returned to the adapter, nothing is retried.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import random
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import aiohttp
import certifi
from multidict import CIMultiDictProxy
from yarl import URL

from gateway_service import errors, tracing
from gateway_service.sse_decoder import EventStreamError, ServerSentEvent, SSEDecoder
from rpc_common.status import RpcError

__all__ = [
    "MAX_ERROR_BODY",
    "RETRYABLE_STATUS",
    "ErrorParser",
    "HttpSettings",
    "UpstreamClient",
    "UpstreamResponse",
    "drain_after_done",
    "ensure_rpc_error",
    "make_client",
    "open_stream",
    "retry_after_seconds",
]

_LOGGER = logging.getLogger(__name__)

RETRYABLE_STATUS: Final = frozenset({429, 502, 503})
MAX_ERROR_BODY: Final = 64 * 1024
KEEPALIVE_EXPIRY: Final = 60.0
# After `[DONE]`, how long and how many stray events we read while waiting for the body's end.
DRAIN_SECONDS: Final = 0.25
DRAIN_MAX_EVENTS: Final = 8

Headers = Mapping[str, str]
"""Response headers as the error parsers see them (case-insensitive in practice)."""


@dataclass(frozen=True)
class HttpSettings:
    """Timeouts and retry policy for upstream calls."""

    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 120.0
    """The longest silence between two reads of an answer (also before its first byte)."""
    total_timeout_seconds: float = 600.0
    max_retries: int = 2
    retry_after_cap_seconds: float = 5.0
    max_connections: int = 512
    """Connections per provider pool (a stream holds one until it ends)."""
    pool_timeout_seconds: float = 1.0
    """How long a request waits for a free connection before 503 `upstream_overloaded`."""


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every pool: certifi's CA bundle (the one httpx used before, so the
    set of trusted CAs did not change with the client), built once per process."""
    return ssl.create_default_context(cafile=certifi.where())


class PoolFull(Exception):
    """Every connection of the pool stayed busy for `pool_timeout_seconds`."""


class UpstreamClient:
    """One provider's connection pool: an aiohttp session plus the slots that bound it.

    The session is created on first use (aiohttp sessions belong to the running event loop).
    Settings that never change per request live here, built once: timeouts, TLS, no cookies,
    no proxies from the environment. `aclose` closes every connection.
    """

    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        # One slot per connection; taking a slot is how a request waits for a connection.
        self._slots = asyncio.BoundedSemaphore(settings.max_connections)
        self._timeout = aiohttp.ClientTimeout(
            total=settings.total_timeout_seconds,
            # `connect` covers DNS, the TCP connect and the TLS handshake (and waiting for the
            # connector, which our slots make instant).
            connect=settings.connect_timeout_seconds,
            sock_connect=settings.connect_timeout_seconds,
            sock_read=settings.read_timeout_seconds,
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session (created on first use)."""
        session = self._session
        if session is None:
            if self._closed:
                raise RuntimeError("the upstream client is closed")
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.settings.max_connections,
                    limit_per_host=0,
                    keepalive_timeout=KEEPALIVE_EXPIRY,
                    ssl=_tls(),
                ),
                timeout=self._timeout,
                # One session serves every user's requests: it must never store a cookie an
                # upstream set (Cloudflare sets `__cf_bm`) and send it on someone else's.
                cookie_jar=aiohttp.DummyCookieJar(),
                # Proxies come from the configuration we own, never from the environment.
                trust_env=False,
                # Upstreams may compress error pages or bodies; we read what they mean.
                auto_decompress=True,
                raise_for_status=False,
            )
        return session

    @property
    def slots_free(self) -> int:
        """Connections not in use (for tests and diagnostics)."""
        return self._slots._value  # asyncio keeps no public counter

    async def request(
        self,
        method: str,
        url: str | URL,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
    ) -> UpstreamResponse:
        """One attempt: wait for a slot (`PoolFull` after `pool_timeout_seconds`), send, and
        return the response once its headers arrived. aiohttp errors propagate."""
        slots = self._slots
        if slots.locked():
            try:
                async with asyncio.timeout(self.settings.pool_timeout_seconds):
                    await slots.acquire()
            except TimeoutError:
                raise PoolFull from None
        else:
            await slots.acquire()  # returns at once
        try:
            response = await self.session.request(
                method,
                url,
                data=body,
                headers=headers,
                # A redirect would carry the Authorization header somewhere we did not choose.
                allow_redirects=False,
            )
        except BaseException:
            slots.release()
            raise
        return UpstreamResponse(response, slots.release)

    async def aclose(self) -> None:
        """Close the pool's connections; later requests fail."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def make_client(settings: HttpSettings) -> UpstreamClient:
    """One provider's pooled client (see `UpstreamClient`)."""
    return UpstreamClient(settings)


class UpstreamResponse:
    """An upstream answer whose headers arrived; the body is read through it.

    `aclose` must be called (adapters do it in `finally`): a body read to its end gives the
    connection back to the pool for the next request; otherwise (an error, a cancelled stream,
    a closed generator) the connection is closed at once, so the upstream stops generating.
    """

    __slots__ = ("_release_slot", "_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse, release_slot: Callable[[], None]) -> None:
        self._response = response
        self._release_slot: Callable[[], None] | None = release_slot
        self.status: int = response.status
        self.headers: CIMultiDictProxy[str] = response.headers

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    @property
    def content_type(self) -> str:
        """The Content-Type header as sent ("" when absent)."""
        return self.headers.get("Content-Type", "")

    async def read(self) -> bytes:
        """The whole body."""
        try:
            return await self._response.read()
        except RuntimeError:
            raise _closed_under_us() from None

    async def read_bounded(self, limit: int = MAX_ERROR_BODY) -> bytes:
        """At most `limit` bytes of the body; a body broken half way gives what arrived."""
        content = self._response.content
        chunks: list[bytes] = []
        size = 0
        try:
            while size < limit:
                chunk = await content.readany()
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except (aiohttp.ClientError, TimeoutError, RuntimeError):
            pass  # a broken error body still tells us the status
        return b"".join(chunks)[:limit]

    async def events(self) -> AsyncGenerator[ServerSentEvent, None]:
        """The body's server-sent events, as they arrive (see `sse_decoder`)."""
        decoder = SSEDecoder()
        feed = decoder.feed
        readany = self._response.content.readany
        while True:
            try:
                chunk = await readany()
            except RuntimeError:
                raise _closed_under_us() from None
            if not chunk:
                return
            for event in feed(chunk):
                yield event

    async def aclose(self) -> None:
        """Give the connection back (body read to its end) or close it; free the slot."""
        response = self._response
        if response.content.is_eof():
            response.release()
        else:
            response.close()
        release_slot, self._release_slot = self._release_slot, None
        if release_slot is not None:
            release_slot()


def _closed_under_us() -> aiohttp.ClientConnectionError:
    # aiohttp raises a bare RuntimeError when the pool was closed (shutdown) under a response
    # that was still being read; to the adapters that is a connection that went away.
    return aiohttp.ClientConnectionError("the connection was closed")


def retry_after_seconds(headers: Headers) -> float | None:
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


ErrorParser = Callable[[int, bytes, Headers], errors.UpstreamHTTPError]


async def open_stream(
    client: UpstreamClient,
    method: str,
    url: str | URL,
    *,
    headers: Mapping[str, str],
    body: bytes | None = None,
    provider: str,
    byok: bool,
    parse_error: ErrorParser,
    settings: HttpSettings,
) -> UpstreamResponse:
    """Send the request and return the open 2xx response (the caller must `aclose()` it).

    Non-2xx answers are read (bounded), parsed by the provider's `parse_error` and raised as
    the mapped `RpcError`. `settings` gives the retry policy (timeouts are the client's).
    """
    attempt = 0
    while True:
        try:
            response = await client.request(method, url, headers=headers, body=body)
        except PoolFull:
            # Every connection of this provider's pool is busy (our capacity, not its speed).
            raise errors.upstream_overloaded(provider) from None
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            if attempt < settings.max_retries:
                attempt += 1
                _LOGGER.info("%s: cannot connect (%s), retry %d", provider, _kind(exc), attempt)
                await asyncio.sleep(_backoff(attempt))
                continue
            raise errors.unreachable(provider) from None
        except TimeoutError:
            raise errors.timed_out(provider) from None
        except aiohttp.ClientError as exc:
            _LOGGER.warning("%s: transport error %s", provider, _kind(exc))
            raise errors.unreachable(provider) from None
        tracing.first_byte()  # the response head arrived (a flag check while tracing is off)
        if response.is_success:
            return response
        try:
            body_read = await response.read_bounded()
        finally:
            await response.aclose()
        status = response.status
        retry_after = retry_after_seconds(response.headers)
        if status in RETRYABLE_STATUS and attempt < settings.max_retries:
            delay = retry_after if retry_after is not None else _backoff(attempt + 1)
            if delay <= settings.retry_after_cap_seconds:
                attempt += 1
                _LOGGER.info("%s: HTTP %d, retry %d in %.2f s", provider, status, attempt, delay)
                await asyncio.sleep(delay)
                continue
        failure = parse_error(status, body_read, response.headers)
        if failure.retry_after is None:
            failure.retry_after = retry_after
        raise errors.from_upstream_status(provider, failure, byok=byok)


def _kind(exc: BaseException) -> str:
    """What went wrong, for our logs: the exception's class, never its message (which may
    carry a URL with an account id)."""
    return type(exc).__name__


async def drain_after_done(
    events: AsyncIterator[object],
    *,
    seconds: float = DRAIN_SECONDS,
    max_events: int = DRAIN_MAX_EVENTS,
) -> None:
    """Read what is left of a stream after its `[DONE]`, so the connection goes back to the pool.

    After `[DONE]` only the end of the chunked body normally follows, often in the same packet.
    A response closed before its body's end must close its connection (the rest of the body
    would otherwise be read as the next answer), and the next stream would pay for a new TCP
    (and TLS) connection. An upstream that keeps the body open or keeps sending is not waited
    for: the caller's `aclose()` then closes the connection.
    """
    try:
        async with asyncio.timeout(seconds):
            seen = 0
            async for _ in events:
                seen += 1
                if seen >= max_events:
                    return
    except (TimeoutError, aiohttp.ClientError, EventStreamError):
        pass


def _backoff(attempt: int) -> float:
    # 0.1 s, 0.2 s, ... with jitter so that many clients do not retry in lockstep.
    base: float = min(2.0, 0.1 * 2.0 ** (attempt - 1))
    return base * (0.5 + random.random() / 2)  # noqa: S311


# What reading a 2xx body can raise besides `RpcError` (`except READ_ERRORS` in the adapters).
READ_ERRORS: Final = (aiohttp.ClientError, TimeoutError, EventStreamError)


def ensure_rpc_error(exc: BaseException, provider: str) -> RpcError:
    """Translate a failure that happened while reading a 2xx body."""
    if isinstance(exc, RpcError):
        return exc
    if isinstance(exc, TimeoutError):
        return errors.timed_out(provider)
    if isinstance(exc, EventStreamError):
        return errors.protocol_error(provider, str(exc))
    # The exception class is for our logs, not for the caller.
    _LOGGER.info("%s: stream broken by %s", provider, _kind(exc))
    return errors.stream_interrupted(provider, "the connection was closed")
