"""The gateway's own spans inside a completion RPC: admission, and the upstream call.

The upstream span follows OpenTelemetry's GenAI semantic conventions: named
`chat <model sent upstream>`, kind CLIENT, with

- `gen_ai.operation.name` = `chat`;
- `gen_ai.provider.name` (`workers-ai`, `openrouter`, `together`), and the same value under
  `gen_ai.system`, the name it replaced, which many trace backends still key on;
- `gen_ai.request.model`: the model the provider was asked for (after alias translation);
  `native1api.requested_model` is the id the client sent;
- `gen_ai.response.model` (the model the answer names: our provider adapters report the id the
  client asked for), `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`,
  `gen_ai.response.finish_reasons` (OpenAI's names) once the provider answered;
- for streams, a `first_token` event and `gen_ai.response.time_to_first_chunk` (seconds) when
  the first chunk goes to the client; `first_byte()` adds the same for the upstream's response
  head, for an HTTP client that reports it.

Never a prompt, a completion, a key or a token. The caller appears only as `user.hash`, the
hash the request log writes (`request_log.hash_uid`), on the RPC's server span.

Everything here is a no-op behind one flag check while tracing is off: `upstream` returns a
shared object whose methods do nothing, `admission` a shared null context manager.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from gateway_service.request_log import hash_uid
from gateway_service.routing import Route
from native1api.gateway.v1 import chat_pb2
from rpc_common import tracing
from rpc_common.openai import FINISH_REASON_NAMES
from rpc_common.openai.names import FinishReasonValue

ADMISSION: Final = "gateway.admission"
FIRST_TOKEN: Final = "first_token"  # noqa: S105 (an event name)
FIRST_BYTE: Final = "first_byte"

_NULL: Final[AbstractContextManager[None]] = contextlib.nullcontext()
_ACTIVE: ContextVar[Upstream | None] = ContextVar("native1api_upstream", default=None)
"""The upstream call running in this RPC's task, for `first_byte` (each RPC has its own task,
so this never leaks into another request)."""


def admission(uid: str) -> AbstractContextManager[Span | None]:
    """The admission span; also puts the caller's `user.hash` on the RPC's server span."""
    if not tracing.enabled:
        return _NULL
    trace.get_current_span().set_attribute("user.hash", hash_uid(uid))
    return tracing.span(ADMISSION)


class _Untraced:
    """What `upstream` returns while tracing is off: every method does nothing."""

    __slots__ = ()

    def __enter__(self) -> _Untraced:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def completed(self, completion: chat_pb2.ChatCompletion) -> None:
        return None

    def first_token(self) -> None:
        return None

    def end(
        self, usage: chat_pb2.Usage | None, finish_reasons: Sequence[FinishReasonValue]
    ) -> None:
        return None


_UNTRACED: Final = _Untraced()


def upstream(route: Route, requested_model: str) -> Upstream | _Untraced:
    """Start the upstream call's span (a child of the current span).

    Unary: `with upstream(...) as call: completion = await ...; call.completed(completion)`;
    the span is current inside, and ends with the block.
    Streams: `call = upstream(...)`, `call.first_token()` when the first chunk goes out, and
    `call.end(usage, finish_reasons)` in the stream's `finally` (the exception in flight, if
    any, marks the span failed).
    """
    if not tracing.enabled:
        return _UNTRACED
    return Upstream(route, requested_model)


def first_byte() -> None:
    """The upstream's response head arrived (for the HTTP client to call once per attempt):
    a `first_byte` event and `native1api.upstream.time_to_first_byte` on the running upstream
    span. Nothing while tracing is off or outside an upstream call."""
    if tracing.enabled:
        call = _ACTIVE.get()
        if call is not None:
            call.mark(FIRST_BYTE, "native1api.upstream.time_to_first_byte")


class Upstream:
    """The span of one call to a provider (see the module for its attributes)."""

    __slots__ = ("_requested", "_span", "_started", "_token")

    def __init__(self, route: Route, requested_model: str) -> None:
        provider = route.provider.name
        self._started = time.perf_counter()
        self._requested = requested_model
        self._span = tracing.tracer().start_span(
            f"chat {route.model}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider,
                "gen_ai.system": provider,
                "gen_ai.request.model": route.model,
                "native1api.requested_model": requested_model,
                "native1api.byok": route.byok,
            },
        )
        self._token: object | None = None
        _ACTIVE.set(self)

    def __enter__(self) -> Upstream:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None
        self._close(exc)

    def mark(self, event: str, attribute: str) -> None:
        """An event now, and the seconds since the call started as `attribute`."""
        elapsed = time.perf_counter() - self._started
        self._span.add_event(event, {attribute: elapsed})
        self._span.set_attribute(attribute, elapsed)

    def first_token(self) -> None:
        self.mark(FIRST_TOKEN, "gen_ai.response.time_to_first_chunk")

    def completed(self, completion: chat_pb2.ChatCompletion) -> None:
        """Record a unary answer: its model, usage and finish reasons."""
        if completion.model:
            self._span.set_attribute("gen_ai.response.model", completion.model)
        self._usage(completion.usage if completion.HasField("usage") else None)
        self._finish_reasons([choice.finish_reason for choice in completion.choices])

    def end(
        self, usage: chat_pb2.Usage | None, finish_reasons: Sequence[FinishReasonValue]
    ) -> None:
        """End a stream's span with what it delivered; call from the stream's `finally`."""
        # The chunks name the model the client asked for (as the unary answer does).
        self._span.set_attribute("gen_ai.response.model", self._requested)
        self._usage(usage)
        self._finish_reasons(finish_reasons)
        # Called from a `finally`: the exception propagating through it, if any, ended the call.
        self._close(sys.exc_info()[1])

    def _usage(self, usage: chat_pb2.Usage | None) -> None:
        if usage is not None:
            self._span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            self._span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)

    def _finish_reasons(self, reasons: Sequence[FinishReasonValue]) -> None:
        names = [FINISH_REASON_NAMES[reason] for reason in reasons if reason in FINISH_REASON_NAMES]
        if names:
            self._span.set_attribute("gen_ai.response.finish_reasons", names)

    def _close(self, exc: BaseException | None) -> None:
        if exc is not None:
            tracing.mark_failed(self._span, exc)
        self._span.end()  # a second end (after an exception) is ignored by the SDK
        if _ACTIVE.get() is self:
            _ACTIVE.set(None)
