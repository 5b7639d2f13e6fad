"""OpenTelemetry traces across the three processes: off unless an OTLP endpoint is configured.

`setup(service)` runs once at start-up, before any server or app is built. It turns tracing on
only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and
`OTEL_SDK_DISABLED` is not `true`; then spans go through a `BatchSpanProcessor` to the SDK's OTLP
gRPC exporter, which reads its own variables (`OTEL_EXPORTER_OTLP_HEADERS`, `..._INSECURE`,
`..._CERTIFICATE`, `..._TIMEOUT`, ...), as do the sampler (`OTEL_TRACES_SAMPLER`, `..._ARG`),
the batch processor (`OTEL_BSP_*`) and the resource (`OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`; `service.name` defaults to the process's name).

Off costs nothing per request: no interceptor or middleware is installed (`server_interceptors`
returns none), and the helpers the request path calls (`span`, `instant`, `enabled` checks)
return a shared do-nothing context manager after one module-level flag check.

Context crosses processes as W3C Trace Context (`traceparent`, `tracestate`) in gRPC metadata:
callers add `outgoing_metadata()` to the metadata they send, and the server interceptor
continues the trace from what arrives. Only the Trace Context propagator is used, never
`baggage`, so nothing else a REST client sends is forwarded between the services.

What may go into span data is decided here and in the callers: method names, status codes,
model and provider names, token counts, durations, a hash of the user id. Never request or
response bodies, never metadata values (ID tokens, App Check tokens, service tokens), never
exception messages (an upstream's error text could quote the prompt).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Final, TypeAlias, cast
from urllib.parse import urlsplit

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from rpc_common.config import ConfigError
from rpc_common.request_id import SANE
from rpc_common.status import RpcError

if TYPE_CHECKING:  # the SDK is imported only once tracing is on (see `setup`)
    from opentelemetry.sdk.trace import TracerProvider

_LOGGER: Final = logging.getLogger(__name__)

ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
SDK_DISABLED: Final = "OTEL_SDK_DISABLED"
TRACES_EXPORTER: Final = "OTEL_TRACES_EXPORTER"
PROTOCOLS: Final = ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
VARIABLES: Final = (
    ENDPOINT,
    TRACES_ENDPOINT,
    SDK_DISABLED,
    TRACES_EXPORTER,
    *PROTOCOLS,
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
)
"""What every process reads for tracing at start-up, besides the exporter's and the batch
processor's own tuning variables (`OTEL_EXPORTER_OTLP_*`, `OTEL_BSP_*`), which the SDK reads."""
SHUTDOWN_SECONDS: Final = 5.0
"""How long shutdown waits for the last spans to reach the collector before dropping them."""

REQUEST_ID: Final = "native1api.request_id"
"""The span attribute holding the request id of the logs and the `x-request-id` header."""

enabled: bool = False
"""Whether tracing is on. Read on the request path (one attribute load); written only at
start-up (`setup`, `start`) and by tests (`stop`)."""

_tracer: Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None
_PROPAGATOR: Final = TraceContextTextMapPropagator()
_NULL: Final[AbstractContextManager[None]] = contextlib.nullcontext()


def setup(service: str) -> bool:
    """Turn tracing on from the environment when an OTLP endpoint is set; return whether it is.

    `service` is the default `service.name` (the process's name, e.g. `gateway_service`) when
    neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one. Raises ConfigError for
    settings this build cannot honour (an exporter other than OTLP, OTLP over HTTP).
    """
    if enabled:
        return True
    environ = os.environ
    if environ.get(SDK_DISABLED, "").strip().lower() == "true":
        return False
    exporter_name = environ.get(TRACES_EXPORTER, "").strip().lower() or "otlp"
    if exporter_name == "none":
        return False
    if exporter_name != "otlp":
        raise ConfigError(f"{TRACES_EXPORTER} must be otlp or none, got {exporter_name!r}")
    endpoint = (environ.get(TRACES_ENDPOINT) or environ.get(ENDPOINT) or "").strip()
    if not endpoint:
        return False
    for name in PROTOCOLS:
        protocol = environ.get(name, "").strip().lower()
        if protocol and protocol != "grpc":
            raise ConfigError(f"{name} must be grpc (the only OTLP exporter installed)")

    # Imported only when on: a process with tracing off never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    # The sampler comes from OTEL_TRACES_SAMPLER(_ARG); shutdown is ours (bounded, see below),
    # not an atexit hook that could hold the exit for the exporter's 30 s default.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    start(provider)
    where = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    _LOGGER.info(
        "tracing on: OTLP/gRPC to %s as service.name=%s",
        where.hostname and f"{where.hostname}:{where.port or 4317}",
        resource.attributes.get(SERVICE_NAME),
    )
    return True


def start(provider: TracerProvider) -> None:
    """Trace with `provider` from now on (`setup` passes the OTLP one; in-process tests pass one
    with an in-memory exporter). Servers and apps built before this call stay untraced.

    Deliberately not made the global provider: libraries that trace themselves once one is set
    (FastAPI's built-in telemetry exports URL paths and query strings) stay silent, so every
    exported span and attribute is one this code base chose.
    """
    global enabled, _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("native1api")
    enabled = True


def stop() -> None:
    """Back to off (for tests; does not shut the provider down)."""
    global enabled, _tracer, _provider
    enabled = False
    _tracer = trace.NoOpTracer()
    _provider = None


def shutdown(timeout_seconds: float = SHUTDOWN_SECONDS) -> None:
    """Export the spans still queued, waiting at most `timeout_seconds` (a collector that is down
    must not hold the process's exit). A no-op when tracing is off."""
    provider = _provider
    if provider is None:
        return
    worker = threading.Thread(target=provider.shutdown, name="otel-shutdown", daemon=True)
    worker.start()
    worker.join(timeout_seconds)
    if worker.is_alive():
        _LOGGER.warning(
            "tracing: the OTLP collector did not take the last spans within %.0f s; dropped",
            timeout_seconds,
        )


def tracer() -> Tracer:
    """The process's tracer (a no-op tracer while tracing is off)."""
    return _tracer


# -- spans on the request path ----------------------------------------------------------------


def span(
    name: str, attributes: Mapping[str, Any] | None = None
) -> AbstractContextManager[Span | None]:
    """An INTERNAL span around a block, current inside it; yields None when tracing is off.

    An exception leaving the block marks the span failed with its type or `RpcError` reason,
    never its message.
    """
    if not enabled:
        return _NULL
    return _InternalSpan(name, attributes)


def instant(name: str, attributes: Mapping[str, Any] | None = None) -> None:
    """A zero-length child span of the current one (an outcome worth seeing in the trace, such
    as a cache hit, that takes no measurable time). Nothing when tracing is off."""
    if enabled:
        _tracer.start_span(name, attributes=attributes).end()


class _InternalSpan:
    __slots__ = ("_manager", "_span")

    def __init__(self, name: str, attributes: Mapping[str, Any] | None) -> None:
        self._manager = _tracer.start_as_current_span(
            name,
            attributes=attributes,
            record_exception=False,  # an exception's message is never span data
            set_status_on_exception=False,
        )

    def __enter__(self) -> Span:
        self._span = self._manager.__enter__()
        return self._span

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            mark_failed(self._span, exc)
        self._manager.__exit__(kind, exc, tb)


def mark_failed(target: Span, exc: BaseException) -> None:
    """Record how `exc` ended `target`: `error.type` (an RpcError's reason, else the exception's
    class) and an ERROR status; a cancellation (the client left) is recorded, not an error."""
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        target.set_attribute("error.type", "cancelled")
        return
    kind = exc.reason if isinstance(exc, RpcError) else type(exc).__qualname__
    target.set_attribute("error.type", kind)
    target.set_status(Status(StatusCode.ERROR, kind))


# -- W3C Trace Context in gRPC metadata -------------------------------------------------------

Metadata = Sequence[tuple[str, Any]]


class _MetadataGetter(Getter[Metadata]):
    def get(self, carrier: Metadata, key: str) -> list[str] | None:
        values = [value for name, value in carrier if name == key and isinstance(value, str)]
        return values or None

    def keys(self, carrier: Metadata) -> list[str]:
        return [name for name, _ in carrier]


_GETTER: Final = _MetadataGetter()


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """`traceparent` (and `tracestate`) for the current span, to append to a call's metadata;
    empty when tracing is off or no span is current."""
    if not enabled:
        return ()
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return tuple(carrier.items())


def incoming_context(metadata: Metadata | None) -> Context:
    """The trace context a caller sent in `metadata` (a new root when it sent none)."""
    return _PROPAGATOR.extract(metadata or (), getter=_GETTER)


# -- the gRPC server side ---------------------------------------------------------------------

TRACED_PREFIX: Final = "/native1api."
"""Only our own services' RPCs: health checks and reflection would be noise (load balancers
and probes call them every few seconds)."""

# The status codes that make a server span an error (OpenTelemetry's gRPC conventions): the
# others (NOT_FOUND, RESOURCE_EXHAUSTED, UNAUTHENTICATED...) are the caller's problem.
_SERVER_ERRORS: Final = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

# Generic only in the type stubs: the aliases are strings, never evaluated at run time.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"
ServicerContext: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def server_interceptors() -> tuple[grpc.aio.ServerInterceptor, ...]:
    """What `grpc.aio.server(interceptors=...)` gets: none at all while tracing is off."""
    return (ServerTracing(),) if enabled else ()


class ServerTracing(grpc.aio.ServerInterceptor):
    """A SERVER span per unary and server-streaming RPC of our services, continuing the trace
    the caller sent in its `traceparent` metadata.

    Named `package.Service/Method` with `rpc.system.name`, `rpc.method`, the status as
    `rpc.response.status_code` (name) and `rpc.grpc.status_code` (number). The span is current
    while the servicer runs, so its own spans and the `traceparent` it sends onwards are its
    children. Bidirectional streams (the vault's change feed, open for hours) are not traced.
    """

    def __init__(self) -> None:
        # Per method: the handler gRPC resolved and our wrapper of it, built once.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = (handler, _wrap(method, handler))
            self._wrapped[method] = cached
        return cached[1]


def _wrap(method: str, handler: Handler) -> Handler:
    if not method.startswith(TRACED_PREFIX) or handler.request_streaming:
        return handler
    name = method[1:]
    attributes = {"rpc.system.name": "grpc", "rpc.method": name}

    def start(context: ServicerContext) -> Span:
        metadata = cast(Metadata, context.invocation_metadata() or ())
        request_id = next((v for k, v in metadata if k == "x-request-id"), None)
        return _tracer.start_span(
            name,
            context=incoming_context(metadata),
            kind=SpanKind.SERVER,
            # The caller's request id, as the logs write it, when the services keep it as is.
            attributes=(
                {**attributes, REQUEST_ID: request_id}
                if isinstance(request_id, str) and SANE.fullmatch(request_id)
                else attributes
            ),
        )

    # grpc's stubs type the behaviours as synchronous; ours (grpc.aio) are coroutines.
    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary

        async def unary_behavior(request: Any, context: ServicerContext) -> Any:
            current = start(context)
            token = otel_context.attach(trace.set_span_in_context(current))
            try:
                response = await unary(request, context)
            except BaseException as exc:
                _end_rpc(current, context, exc)
                raise
            else:
                _end_rpc(current, context, None)
            finally:
                _detach(token)
                current.end()
            return response

        return grpc.unary_unary_rpc_method_handler(
            unary_behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        streaming: Any = handler.unary_stream

        async def stream_behavior(request: Any, context: ServicerContext) -> AsyncIterator[Any]:
            current = start(context)
            token = otel_context.attach(trace.set_span_in_context(current))
            try:
                result = streaming(request, context)
                if hasattr(result, "__aiter__"):
                    # Closed with this wrapper: the servicer's own `finally` (the upstream
                    # connection, the limits lease) runs when the call ends, as without tracing.
                    async with contextlib.aclosing(result):
                        async for item in result:
                            yield item
                else:  # a coroutine that writes with context.write
                    await result
            except BaseException as exc:
                _end_rpc(current, context, exc)
                raise
            else:
                _end_rpc(current, context, None)
            finally:
                _detach(token)
                current.end()

        return grpc.unary_stream_rpc_method_handler(
            stream_behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


def _detach(token: object) -> None:
    """Undo `attach`. A stream the client abandoned while gRPC was sending is closed later by
    the event loop, in a copy of the call's context: there is nothing to restore then, and
    OpenTelemetry's own `detach` would log that as an error."""
    if isinstance(token, contextvars.Token):
        with contextlib.suppress(ValueError):  # created in another Context: see above
            token.var.reset(token)
    else:  # a non-default OpenTelemetry runtime context
        otel_context.detach(token)  # type: ignore[arg-type]


def _end_rpc(current: Span, context: ServicerContext, exc: BaseException | None) -> None:
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        code = grpc.StatusCode.CANCELLED
    else:
        code = _status_code(context) or (
            grpc.StatusCode.UNKNOWN if exc is not None else grpc.StatusCode.OK
        )
    current.set_attribute("rpc.response.status_code", code.name)
    current.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_ERRORS:
        current.set_attribute("error.type", code.name)
        current.set_status(Status(StatusCode.ERROR, code.name))


def _status_code(context: ServicerContext) -> grpc.StatusCode | None:
    """The code the servicer set (an abort sets it); None when it set none."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # some grpcio versions report the raw number
        for candidate in grpc.StatusCode:
            if candidate.value[0] == code:
                return candidate
    return None
