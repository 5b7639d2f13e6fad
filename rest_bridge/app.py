"""`create_app(settings)`: the bridge's FastAPI app, its error handlers and middleware.

The app owns one metrics registry and, while its lifespan runs, one gRPC channel per backend.
Every error, whoever raises it (a route, FastAPI's validation, Starlette's router, the CORS
middleware, an unexpected exception), leaves as the OpenAI error envelope.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response

from rest_bridge import errors, ratelimit
from rest_bridge.config import BridgeSettings
from rest_bridge.fast_path import FastPath
from rest_bridge.grpc_clients import Backends
from rest_bridge.metrics import BridgeMetrics
from rest_bridge.middleware import BodyTooLarge, EdgeMiddleware
from rest_bridge.routes import chat, health, models, usage, vault
from rest_bridge.state import BridgeState

# Headers the official OpenAI JS SDK sends from a browser, besides the credential and body type.
_CORS_HEADERS: Final = (
    "authorization",
    "content-type",
    "x-firebase-appcheck",
    "x-request-id",
    "openai-organization",
    "openai-project",
    "x-stainless-arch",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
    "x-stainless-helper-method",
)
_CORS_EXPOSED: Final = (
    "x-request-id",
    "x-native1api-provider",
    "x-native1api-overhead-ms",
    "retry-after",
    "retry-after-ms",
    # A browser client tells a refused ID token (`error="invalid_token"`: refresh it and retry)
    # from a refused stored provider key (plain `Bearer`) by this challenge.
    "www-authenticate",
    *ratelimit.EXPOSED,
)


def create_app(settings: BridgeSettings) -> FastAPI:
    """A new app; gRPC channels open when its lifespan starts and close when it ends."""
    state = BridgeState(settings=settings, metrics=BridgeMetrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.backends = Backends.open(settings.gateway_addr, settings.vault_addr, settings.tls)
        try:
            yield
        finally:
            backends, state.backends = state.backends, None
            await backends.aclose()

    middleware = [
        Middleware(EdgeMiddleware, max_body_bytes=settings.max_body_bytes, metrics=state.metrics)
    ]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                _EnvelopeCORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=list(_CORS_HEADERS),
                expose_headers=list(_CORS_EXPOSED),
                max_age=600,
            )
        )
    # Innermost of ours: the hot endpoint skips FastAPI's router (fast_path.py).
    middleware.append(
        Middleware(FastPath, route=chat.ROUTE, method="POST", handler=chat.create_chat_completion)
    )
    app = FastAPI(
        title="Native1API",
        summary="OpenAI-compatible gateway for Firebase apps",
        version="0.1.0",
        docs_url=None,  # Swagger UI would load scripts from a CDN; the schema is enough
        redoc_url=None,
        lifespan=lifespan,
        middleware=middleware,
    )
    app.state.bridge = state
    routers = [module.router for module in (chat, models, usage, vault, health)]
    for router in routers:
        app.include_router(router)
    # Starlette's 405 names only the first route matching the path; /v1/vault has three.
    method_index = [
        (route.path_regex, route.methods or set())
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
    ]

    async def http_exception(request: Request, exc: Exception) -> Response:
        path = request.url.path
        allowed = {m for regex, methods in method_index if regex.match(path) for m in methods}
        return _http_exception(request, exc, ", ".join(sorted(allowed)))

    app.add_exception_handler(errors.ApiError, _api_error)
    app.add_exception_handler(HTTPException, http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.ApiError)
    return exc.to_response()


def _http_exception(request: Request, exc: Exception, allowed: str) -> Response:
    """Starlette's router errors (404, 405) and the body limit (413), as envelopes."""
    assert isinstance(exc, HTTPException)
    if isinstance(exc, BodyTooLarge):
        return errors.body_too_large(exc.limit).to_response()
    target = f"{request.method} {request.url.path[:200]}"
    if exc.status_code == 404:
        error = errors.ApiError(404, f"Invalid URL ({target}).", code="unknown_url")
    elif exc.status_code == 405:
        allowed = allowed or (exc.headers or {}).get("Allow", "")
        error = errors.ApiError(
            405,
            f"Method not allowed ({target}); allowed: {allowed}.",
            code="method_not_allowed",
            headers={"allow": allowed} if allowed else {},
        )
    else:
        kind = errors.SERVER_ERROR if exc.status_code >= 500 else errors.INVALID_REQUEST
        error = errors.ApiError(exc.status_code, str(exc.detail), kind)
    return error.to_response()


async def _validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's body/parameter validation: 400 (OpenAI's status), never 422.

    The message is built from the error's location and type only, never its input, which for the
    vault is the key itself.
    """
    assert isinstance(exc, RequestValidationError)
    return validation_error(exc.errors()).to_response()


def validation_error(problems: Any) -> errors.ApiError:
    first = problems[0] if problems else {}
    kind = str(first.get("type", ""))
    if kind == "json_invalid":
        return errors.invalid_json()
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    if param is None:
        message = "Invalid request body: expected a JSON object."
    elif kind == "missing":
        message = f"Missing required parameter: '{param}'."
    elif kind == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    else:
        message = f"Invalid '{param}': {first.get('msg', 'invalid value')}."
    return errors.ApiError(400, message, param=param, code=kind or None)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema minus the 422 responses it adds by default: this API answers 400."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            routes=app.routes,
        )
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        components = schema.get("components", {}).get("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
    return app.openapi_schema


class _EnvelopeCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, with its refused preflight as the error envelope."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        error = errors.ApiError(400, "CORS preflight refused for this origin, method or headers.")
        keep = {
            key: value
            for key, value in response.headers.items()
            if key not in ("content-type", "content-length")
        }
        return Response(
            error.body(), 400, {**keep, "cache-control": "no-store"}, "application/json"
        )
