"""`POST /v1/chat/completions` served ahead of FastAPI's router.

Nearly every request the bridge serves is a chat completion, and FastAPI's router and request
handler (route matching over every route, dependency solving, response checks) cost about
0.08 ms of CPU per request that this endpoint does not use: its handler takes the raw
`Request` and returns a ready `Response`. This middleware, the innermost of the app's own, hands
that one method + path straight to the handler. Everything outside it still applies (the edge
middleware's request id, body limit, access log and metrics; CORS), and the route stays
registered with FastAPI, so the OpenAPI document is unchanged and other methods on the path still
get the router's 405.

The handler's errors are rendered here exactly as the app's exception handlers render them
(`ApiError` → its envelope, the body limit → 413), since those handlers sit inside the router's
exception middleware, which this path skips.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from rest_bridge import errors
from rest_bridge.middleware import BodyTooLarge

Handler = Callable[[Request], Awaitable[Response]]


class FastPath:
    """Serves one (method, path) with `handler`; passes everything else on to `app`."""

    __slots__ = ("_app", "_handler", "_method", "_path", "_route")

    def __init__(self, app: ASGIApp, *, route: BaseRoute, method: str, handler: Handler) -> None:
        self._app = app
        self._route: Final = route
        self._path: Final = getattr(route, "path", "")
        self._method: Final = method
        self._handler: Final = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != self._path
            or scope["method"] != self._method
            or scope.get("root_path")  # mounted under a prefix: let the router resolve it
        ):
            await self._app(scope, receive, send)
            return
        scope["route"] = self._route  # what the edge middleware labels its metrics with
        try:
            response = await self._handler(Request(scope, receive, send))
        except errors.ApiError as exc:
            response = exc.to_response()
        except BodyTooLarge as exc:
            response = errors.body_too_large(exc.limit).to_response()
        await response(scope, receive, send)
