"""The bridge's HTTP/1.1 protocol: uvicorn's httptools one, with errors in the OpenAI envelope.

httptools (the C parser, llhttp) costs the bridge much less CPU per request than h11
(bench/README.md). It is stricter about what it can parse: an unknown method such as `FOO`, or a
malformed request line or header, is refused by the parser before any app code runs. uvicorn
answers those with a plain-text 400; this subclass answers with the same JSON error envelope as
every other error of the bridge (SPEC §2), so clients always get one shape.

It also bounds what one connection can cost (SPEC §11), where the bytes arrive, before any app
code runs and before the parser buffers them:

- **Head size**: the request line and headers of each request (a kept-alive connection's
  requests each get their own budget) are counted in `data_received` and fed to the parser no
  further than `max_header_bytes`; one byte more is refused with 431. httptools grows a header
  value by copying, so an uncapped 200 MiB header cost hundreds of MB and seconds of CPU for
  every client. Chunked trailers are header fields too: inside a body, a run of bytes that
  carries no body data (chunk framing, trailers) has the same cap. (A body is fed in slices of
  the cap, so a pipelined head that starts inside a body's last slice, or a trailer, can reach
  at most twice the cap before it is refused.)
- **Head time**: a head must be complete `header_timeout_seconds` after the connection was
  accepted, or, on a kept-alive connection, after the next request's first byte (the idle wait
  before it is uvicorn's `timeout_keep_alive`). Otherwise 408, or a silent close when not one
  byte has arrived (there is nothing to answer; a client reusing the connection just reconnects).
- **Body time**: a body must be complete `body_timeout_seconds` after its head. Otherwise 408 if
  no response has started (the app sees a disconnect), else a plain close. Time the bridge itself
  holds the client back (reading paused for a pipelined request or an unread body, `Expect:
  100-continue` not answered yet) does not count: the deadline is pushed back.
- **Connections**: past `max_connections` open connections a new one is answered 503 (with
  `retry-after: 1`) at once, without reading it, and is never counted, so the bridge serves again
  as soon as others close.

Every refusal is a lingering close: the answer, then FIN (`write_eof`), then up to 1 MiB of what
the client still sends is read and dropped for at most 1 s before the socket closes. Closing with
unread input sends an RST, which can destroy the answer before the client reads it; past that
budget reading pauses, so the rest costs the bridge nothing but kernel buffers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from rest_bridge import errors
from rest_bridge.config import DEFAULT_MAX_HEADER_BYTES, BridgeSettings
from rest_bridge.metrics import BridgeMetrics

_LOGGER: Final = logging.getLogger(__name__)

LINGER_SECONDS: Final = 1.0
LINGER_DISCARD_BYTES: Final = 1024 * 1024
_OVERLOAD_LOG_INTERVAL: Final = 10.0

_INVALID_HTTP: Final = errors.ApiError(
    400, "Invalid HTTP request: the request line or headers cannot be parsed.", code="invalid_http"
)
_OVERLOADED: Final = errors.ApiError(
    503,
    "The server has too many open connections; retry shortly.",
    errors.UNAVAILABLE_ERROR,
    code="server_overloaded",
    headers={"retry-after": "1"},
)

# Refusal reasons, the `reason` label of native1api_bridge_http_connections_refused_total.
HEADER_TOO_LARGE: Final = "header_too_large"
HEADER_TIMEOUT: Final = "header_timeout"
BODY_TIMEOUT: Final = "body_timeout"
TOO_MANY_CONNECTIONS: Final = "too_many_connections"
INVALID_HTTP: Final = "invalid_http"


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """What one connection may cost; see the module docstring."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    max_connections: int = 1024

    @classmethod
    def from_settings(cls, settings: BridgeSettings) -> EdgeLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_timeout_seconds=settings.header_timeout_seconds,
            body_timeout_seconds=settings.body_timeout_seconds,
            max_connections=settings.max_connections,
        )


def protocol_class(
    limits: EdgeLimits, metrics: BridgeMetrics | None = None
) -> type[BridgeHttpProtocol]:
    """The protocol class for uvicorn's `http=`: uvicorn builds one per connection."""

    class BoundBridgeHttpProtocol(BridgeHttpProtocol):
        pass

    BoundBridgeHttpProtocol.edge_limits = limits
    BoundBridgeHttpProtocol.edge_metrics = metrics
    return BoundBridgeHttpProtocol


class BridgeHttpProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` with the edge limits, answering in the OpenAI error envelope."""

    edge_limits: ClassVar[EdgeLimits] = EdgeLimits()
    edge_metrics: ClassVar[BridgeMetrics | None] = None
    _overload_logged_at: ClassVar[float] = float("-inf")

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._counted = False  # in server_state.connections (not refused when accepted)
        self._refused = False  # an answer or a close is under way: input is dropped
        self._reading_head = True  # the current request's head is not complete yet
        self._head_bytes = 0  # bytes of that head received so far
        self._framing_run = 0  # body-phase bytes in a row that carried no body data
        self._body_bytes = 0  # body bytes the parser delivered (a running total)
        self._messages = 0  # requests whose message is complete
        self._discard_left = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None

    # Connection ------------------------------------------------------------------------------

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        limit = self.edge_limits.max_connections
        if len(self.connections) >= limit:
            self.transport = transport
            self._log_overload(limit)
            self._refuse(TOO_MANY_CONNECTIONS, self._answer(_OVERLOADED))
            return
        super().connection_made(transport)
        self._counted = True
        if self.edge_metrics is not None:
            self.edge_metrics.connections_open.inc()
        self._arm_head_timer()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if self._counted:
            self._counted = False
            if self.edge_metrics is not None:
                self.edge_metrics.connections_open.dec()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._drop(len(data))
            return
        self._unset_keepalive_if_required()
        cap = self.edge_limits.max_header_bytes
        view = memoryview(data)
        while view:
            if self._reading_head:
                if self._head_timer is None and self._response_idle():
                    self._arm_head_timer()
                room = cap - self._head_bytes
                if room <= 0:
                    self._refuse_large_head()
                    return
                # Never more than the budget: the parser buffers at most `cap` bytes of a head.
                piece = view[:room]
                view = view[len(piece) :]
                self._head_bytes += len(piece)
                if not self._feed(piece):
                    return
            else:
                # Slices of `cap` bound what a head starting inside a body's last slice (a
                # pipelined request) or a trailer can add before it is counted.
                piece = view[:cap]
                view = view[len(piece) :]
                messages, body = self._messages, self._body_bytes
                if not self._feed(piece):
                    return
                if self._messages == messages:  # still inside this request's body
                    if self._body_bytes > body:
                        self._framing_run = 0
                    else:
                        self._framing_run += len(piece)
                        if self._framing_run > cap:
                            self._refuse_large_head()
                            return

    def _feed(self, piece: memoryview) -> bool:
        """Feed the parser as uvicorn does; False once the connection is done with."""
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return not self._refused and not self.transport.is_closing()

    def send_400_response(self, msg: str) -> None:
        self._refuse(INVALID_HTTP, self._answer(_INVALID_HTTP) if self._can_answer() else None)

    def _unsupported_upgrade_warning(self) -> None:
        # The bridge serves no WebSocket; an `Upgrade` header is just ignored (uvicorn would log
        # two warnings per request, which any client could use to flood the log).
        self.logger.debug("Ignoring an Upgrade request header.")

    # Parser callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None and self._response_idle():
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        # First, so that a head uvicorn cannot use (a URL httptools cannot parse) is still
        # answered as one: its 400 goes out as the answer to this request.
        super().on_headers_complete()
        self._reading_head = False
        self._head_bytes = 0
        self._framing_run = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._body_timer is None:
            self._body_timer = self.loop.call_later(
                self.edge_limits.body_timeout_seconds, self._body_timed_out
            )

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._messages += 1
        self._reading_head = True
        self._head_bytes = 0
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined head that began while this response was being written starts its clock now.
        if (
            self._reading_head
            and self._head_bytes
            and self._head_timer is None
            and not self._refused
            and not self.transport.is_closing()
            and self._response_idle()
        ):
            self._arm_head_timer()

    # Timers ----------------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(
            self.edge_limits.header_timeout_seconds, self._head_timed_out
        )

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing() or not self._reading_head:
            return
        if self._bridge_is_waiting():
            self._arm_head_timer()
            return
        if self._head_bytes == 0:
            self._refuse(HEADER_TIMEOUT, None)  # not one byte: nothing to answer
            return
        error = errors.ApiError(
            408,
            "Request timeout: the request line and headers did not arrive within "
            f"{self.edge_limits.header_timeout_seconds:g} s.",
            code="request_timeout",
        )
        self._refuse(HEADER_TIMEOUT, self._answer(error) if self._can_answer() else None)

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self._refused or self.transport.is_closing() or self._reading_head:
            return
        if self._bridge_is_waiting():
            self._body_timer = self.loop.call_later(
                self.edge_limits.body_timeout_seconds, self._body_timed_out
            )
            return
        error = errors.ApiError(
            408,
            "Request timeout: the request body did not arrive within "
            f"{self.edge_limits.body_timeout_seconds:g} s of its headers.",
            code="request_timeout",
        )
        self._refuse(BODY_TIMEOUT, self._answer(error) if self._can_answer() else None)

    def _bridge_is_waiting(self) -> bool:
        """True while the bridge, not the client, holds the request back."""
        if self.flow is not None and self.flow.read_paused:
            return True  # a pipelined request waits for its turn, or the app has not read
        cycle = self.cycle
        return cycle is not None and cycle.waiting_for_100_continue and not self._reading_head

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    # Refusing --------------------------------------------------------------------------------

    def _response_idle(self) -> bool:
        """No response is being written on this connection."""
        return self.cycle is None or self.cycle.response_complete

    def _can_answer(self) -> bool:
        """Whether an error response would be read as the answer to the current request."""
        cycle = self.cycle
        if self._reading_head:
            return cycle is None or cycle.response_complete
        return cycle is not None and not cycle.response_started

    def _refuse_large_head(self) -> None:
        error = errors.ApiError(
            431,
            "Request header fields too large: the request line and headers may be at most "
            f"{self.edge_limits.max_header_bytes} bytes.",
            code="request_header_fields_too_large",
        )
        self._refuse(HEADER_TOO_LARGE, self._answer(error) if self._can_answer() else None)

    def _refuse(self, reason: str, answer: bytes | None) -> None:
        """Stop serving this connection: send `answer` (if any) and close, lingering."""
        self._refused = True
        self._cancel_timers()
        self._unset_keepalive_if_required()
        # The parser is not fed again: drop it now with what it buffered (up to a head's cap),
        # rather than when the lingering close ends.
        self.parser = None  # type: ignore[assignment]
        if self.edge_metrics is not None:
            self.edge_metrics.connection_refused(reason)
        if reason != TOO_MANY_CONNECTIONS:
            _LOGGER.debug("HTTP edge: closing a connection (%s)", reason)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The app's receive() sees a disconnect and its later sends are dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        transport = self.transport
        if transport.is_closing():
            return
        if answer is None:
            transport.close()
            return
        transport.write(answer)
        if transport.can_write_eof():
            transport.write_eof()
        self._discard_left = LINGER_DISCARD_BYTES
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self._linger_over)

    def _drop(self, size: int) -> None:
        """Input after a refusal: read and dropped up to a budget, then no longer read."""
        self._discard_left -= size
        if self._discard_left <= 0 and not self.transport.is_closing():
            if self.flow is not None:
                self.flow.pause_reading()
            else:
                self.transport.pause_reading()

    def _linger_over(self) -> None:
        self._linger_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _answer(self, error: errors.ApiError) -> bytes:
        """The raw response for `error`: the envelope, never cached, closing the connection."""
        body = error.body()
        content = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        for key, text in error.headers.items():
            content.extend([key.encode("latin-1"), b": ", text.encode("latin-1"), b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"cache-control: no-store\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        return b"".join(content)

    def _log_overload(self, limit: int) -> None:
        now = time.monotonic()
        if now - BridgeHttpProtocol._overload_logged_at >= _OVERLOAD_LOG_INTERVAL:
            BridgeHttpProtocol._overload_logged_at = now
            _LOGGER.warning(
                "HTTP edge: %d connections open (BRIDGE_MAX_CONNECTIONS); answering new ones 503 "
                "(logged at most every %g s)",
                limit,
                _OVERLOAD_LOG_INTERVAL,
            )
