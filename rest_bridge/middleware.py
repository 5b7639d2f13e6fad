"""The bridge's edge: request ids, body-size limit, access log, metrics, last-resort 500.

A plain ASGI middleware rather than Starlette's BaseHTTPMiddleware, which would buffer streamed
responses and add a task per request. It sits outside everything else, so every response,
including CORS preflights and errors, gets an `x-request-id` and one access-log line.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rest_bridge import errors
from rest_bridge.metrics import UNMATCHED_ROUTE, BridgeMetrics
from rpc_common.request_id import SANE_BYTES, new_request_id

_ACCESS: Final = logging.getLogger("rest_bridge.access")
_LOGGER: Final = logging.getLogger(__name__)

REQUEST_ID_KEY: Final = "native1api.request_id"
STARTED_KEY: Final = "native1api.started"
CLIENT_CLOSED: Final = 499


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the body outgrows the limit.

    An HTTPException so that FastAPI's own body reading re-raises it instead of turning it into a
    generic 400; the app's HTTPException handler renders it as the 413 envelope.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413)
        self.limit = limit


def request_id_of(scope: Scope) -> str:
    return str(scope.get(REQUEST_ID_KEY, ""))


def started_at(scope: Scope) -> float:
    value = scope.get(STARTED_KEY)
    return value if isinstance(value, float) else time.perf_counter()


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: BridgeMetrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope[STARTED_KEY] = started
        request_id, content_length = _scan_headers(scope["headers"])
        scope[REQUEST_ID_KEY] = request_id
        id_header = (b"x-request-id", request_id.encode("ascii"))
        status = CLIENT_CLOSED  # what we log if the app returns without answering
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        limit = self.max_body_bytes
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            if content_length is not None and content_length > limit:
                # Refuse up front: no point reading megabytes we will not use.
                await errors.body_too_large(limit).to_response()(scope, receive, send_with_id)
            else:
                await self.app(scope, receive_limited, send_with_id)
        except ClientDisconnect:
            # The client left while we read its body: nobody to answer; the access line says 499.
            status = CLIENT_CLOSED
        except Exception:
            if response_started:
                _LOGGER.exception("error after the response started (request %s)", request_id)
                raise
            _LOGGER.exception("unhandled error (request %s)", request_id)
            await errors.internal_error().to_response()(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            method = scope["method"]
            self.metrics.observe_request(route, method, status, elapsed)
            _ACCESS.info(
                "%s %s %d %.1fms rid=%s", method, route, status, elapsed * 1000, request_id
            )


def _scan_headers(headers: list[tuple[bytes, bytes]]) -> tuple[str, int | None]:
    """The request id to use and the declared Content-Length, in one pass over the headers."""
    request_id: str | None = None
    content_length: int | None = None
    for name, value in headers:
        if name == b"x-request-id":
            if SANE_BYTES.fullmatch(value):  # else a new one: it goes into logs and headers
                request_id = value.decode("ascii")
        elif name == b"content-length":
            try:
                content_length = int(value)
            except ValueError:
                content_length = None  # the server rejects a broken framing header itself
    return request_id or new_request_id(), content_length
