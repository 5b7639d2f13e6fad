"""The bridge's HTTP server span: one per request, the root of the request's trace.

`install(app)` adds `TracingMiddleware` outside every other middleware when tracing is on
(`rpc_common.tracing.setup` ran first) and does nothing when it is off, so an untraced bridge
runs exactly the middleware it always did. While the span is current, the gRPC calls a route
makes carry it as `traceparent` (`rest_bridge.auth.call_metadata`), so the gateway's and the
vault's spans are its children.

The span (kind SERVER) is named `<METHOD> <route template>` (`POST /v1/chat/completions`) with
`http.request.method`, `http.route`, `url.scheme`, `network.protocol.version`,
`http.response.status_code` and `native1api.request_id` (the id in the response's
`x-request-id` and the log lines). It ends when the last byte of the response was sent, so a
stream's span covers the whole stream. Never a header value, a query string or a body: the
Authorization and App Check headers hold credentials, and the body holds the prompt or a key.

A caller's own `traceparent` header is continued, as OpenTelemetry's HTTP instrumentations do,
so an app that traces its calls sees the gateway inside its trace; a sampler that should not
follow callers' decisions is `OTEL_TRACES_SAMPLER=traceidratio` (not `parentbased_...`).
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import FastAPI
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rest_bridge.middleware import REQUEST_ID_KEY
from rpc_common import tracing

_HEADERS: Final = (b"traceparent", b"tracestate")


def install(app: FastAPI) -> bool:
    """Add `TracingMiddleware` as the outermost middleware when tracing is on (call before the
    app starts; a second call adds nothing); return whether the app is traced."""
    if not tracing.enabled:
        return False
    if any(getattr(entry, "cls", None) is TracingMiddleware for entry in app.user_middleware):
        return True
    app.add_middleware(TracingMiddleware)  # inserted first: outside the edge middleware
    return True


class TracingMiddleware:
    """A plain ASGI middleware (no per-request task, no buffering of streamed bodies)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        carrier = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in scope["headers"]
            if name in _HEADERS
        ]
        status = 0

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracing.tracer().start_as_current_span(
            method,
            context=tracing.incoming_context(carrier),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.scheme": scope.get("scheme", "http"),
                "network.protocol.version": scope.get("http_version", "1.1"),
            },
            record_exception=False,  # never an exception's message (it could quote the body)
            set_status_on_exception=False,
        ) as span:
            try:
                await self.app(scope, receive, send_traced)
            except BaseException as exc:
                tracing.mark_failed(span, exc)
                raise
            finally:
                # The router stores the matched route in the shared scope; unmatched (404)
                # requests keep the bare method, as the HTTP conventions say.
                route: Any = scope.get("route")
                template = getattr(route, "path", None)
                if isinstance(template, str):
                    span.update_name(f"{method} {template}")
                    span.set_attribute("http.route", template)
                request_id = scope.get(REQUEST_ID_KEY)
                if isinstance(request_id, str) and request_id:
                    span.set_attribute(tracing.REQUEST_ID, request_id)
                if status:
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_attribute("error.type", str(status))
                        span.set_status(Status(StatusCode.ERROR))
