"""Native1API client for Python: one file, depends only on httpx. Copy it into your project.

Native1API is an OpenAI-compatible gateway whose callers authenticate with a Firebase ID token.
This module talks to its REST API (`/v1/chat/completions`, `/v1/models`, `/v1/vault`)::

    from native1api_client import Native1API

    with Native1API("http://127.0.0.1:8080", token_provider=get_id_token) as client:
        completion = client.chat.completions.create(
            model="@cf/meta/llama-3.2-3b-instruct",
            messages=[{"role": "user", "content": "Hello"}],
        )
        print(completion["choices"][0]["message"]["content"])

        for chunk in client.chat.completions.create(
            model="@cf/meta/llama-3.2-3b-instruct",
            messages=[{"role": "user", "content": "Hello"}],
            stream=True,
        ):
            for choice in chunk["choices"]:
                print(choice["delta"].get("content") or "", end="")

`AsyncNative1API` has the same surface with `await` / `async for`. Responses are the plain OpenAI
JSON objects (dicts). Errors are exceptions mirroring openai-python's (`BadRequestError`,
`AuthenticationError`, `RateLimitError`, ...), all subclasses of `Native1APIError`; an error that
arrives after a stream started raises `StreamError`. The token is never put in an exception or repr.

When the gateway enforces Firebase App Check, pass `app_check_token_provider` (a callable returning
the current App Check token): it is sent as `X-Firebase-AppCheck` on every request.
"""

# The async methods take a per-call `timeout` like httpx and openai-python do.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import builtins
import codecs
import contextlib
import email.utils
import inspect
import json
import random
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any, Final, Literal, Self, overload

import httpx

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "AsyncChatCompletionStream",
    "AsyncNative1API",
    "AuthenticationError",
    "BadRequestError",
    "ChatCompletionStream",
    "InternalServerError",
    "Native1API",
    "Native1APIError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "StreamError",
]

__version__: Final = "0.1.0"

DEFAULT_TIMEOUT: Final = httpx.Timeout(600.0, connect=10.0)
"""Like openai-python: 10 s to connect, 600 s for the rest (streams send a ping at least every 15 s)."""
DEFAULT_MAX_RETRY_DELAY: Final = 20.0
"""The longest wait between retries in seconds, whatever `Retry-After` asks for."""
RETRY_STATUSES: Final = frozenset({429, 502, 503})

JSON = dict[str, Any]
TokenProvider = Callable[[], str]
AsyncTokenProvider = Callable[[], str | Awaitable[str]]
APP_CHECK_HEADER: Final = "x-firebase-appcheck"
Timeout = float | httpx.Timeout

_USER_AGENT: Final = f"native1api-python/{__version__}"
_REDACTED: Final = "[redacted]"


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class Native1APIError(Exception):
    """Base of every error this client raises.

    Attributes mirror the OpenAI error envelope: `message`, `type`, `code`, `param`; plus the HTTP
    `status_code` (None when no response was received, or for an error inside a stream) and the
    response's `x-request-id` as `request_id` (quote it when reporting a problem).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.type = type
        self.code = code
        self.param = param
        self.request_id = request_id
        self.headers: dict[str, str] = dict(headers or {})
        self.body = body

    def __str__(self) -> str:
        details = [
            f"{name}={value}"
            for name, value in (
                ("status", self.status_code),
                ("type", self.type),
                ("code", self.code),
                ("param", self.param),
                ("request_id", self.request_id),
            )
            if value is not None
        ]
        return f"{self.message} ({', '.join(details)})" if details else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, status_code={self.status_code!r}, "
            f"type={self.type!r}, code={self.code!r}, param={self.param!r}, "
            f"request_id={self.request_id!r})"
        )


class BadRequestError(Native1APIError):
    """HTTP 400: the request is invalid (`param` names the offending field)."""


class AuthenticationError(Native1APIError):
    """HTTP 401: missing, expired or invalid ID token, or a stored provider key was rejected."""


class PermissionDeniedError(Native1APIError):
    """HTTP 403."""


class NotFoundError(Native1APIError):
    """HTTP 404: unknown model (`code == "model_not_found"`) or route."""


class RateLimitError(Native1APIError):
    """HTTP 429; `retry_after` holds the server's `Retry-After` in seconds when it sent one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class InternalServerError(Native1APIError):
    """HTTP 5xx: 502 upstream failed, 503 a backend is down, 504 upstream timeout."""


class APIConnectionError(Native1APIError):
    """No HTTP response: the server could not be reached or the connection failed."""


class APITimeoutError(APIConnectionError):
    """The request timed out before a response arrived."""


class StreamError(Native1APIError):
    """A stream failed after it started: an error frame, a lost connection or a truncated stream.

    `status_code` is None (the response status was already 200); `type`, `code` and `param` come
    from the `{"error": {...}}` frame when the server sent one.
    """


_STATUS_ERRORS: Final[dict[int, type[Native1APIError]]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _field(detail: Mapping[str, Any], name: str, secrets: Sequence[str]) -> str | None:
    """An error-envelope field as a string (OpenRouter sends int codes), secrets redacted."""
    value = _str_or_none(detail.get(name))
    return None if value is None else _scrub(value, secrets)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return text


def _parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        with contextlib.suppress(ValueError):
            value = float(raw_ms) / 1000.0
            if value >= 0:
                return value
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        value = when.timestamp() - time.time()
        return max(0.0, value)
    return value if value >= 0 else None


def _error_from_response(
    response: httpx.Response, body: bytes, secrets: Sequence[str]
) -> Native1APIError:
    """The exception for a non-2xx response whose body was read into `body`."""
    status = response.status_code
    text = body.decode("utf-8", errors="replace")
    payload: Any = None
    with contextlib.suppress(ValueError):
        payload = json.loads(text)
    detail = payload.get("error", payload) if isinstance(payload, dict) else payload
    message: str
    kind: str | None = None
    code: str | None = None
    param: str | None = None
    if isinstance(detail, dict):
        message = _str_or_none(detail.get("message")) or f"HTTP {status}"
        kind = _field(detail, "type", secrets)
        code = _field(detail, "code", secrets)
        param = _field(detail, "param", secrets)
    elif isinstance(detail, str) and detail:
        message = detail
    else:
        message = text.strip()[:500] or f"HTTP {status} {response.reason_phrase}".strip()
    kwargs: dict[str, Any] = {
        "status_code": status,
        "type": kind,
        "code": code,
        "param": param,
        "request_id": response.headers.get("x-request-id"),
        "headers": dict(response.headers),
        "body": _scrub_value(detail, secrets),
    }
    message = _scrub(message, secrets)
    if status == 429:
        return RateLimitError(message, retry_after=_parse_retry_after(response.headers), **kwargs)
    if status >= 500:
        return InternalServerError(message, **kwargs)
    return _STATUS_ERRORS.get(status, Native1APIError)(message, **kwargs)


def _scrub_value(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        return _scrub(value, secrets)
    if isinstance(value, dict):
        return {key: _scrub_value(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub_value(item, secrets) for item in value]
    return value


def _connection_error(exc: httpx.TransportError, secrets: Sequence[str]) -> APIConnectionError:
    detail = _scrub(str(exc) or type(exc).__name__, secrets)
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"Request timed out: {detail}")
    return APIConnectionError(f"Connection error: {detail}")


# --------------------------------------------------------------------------------------------
# Server-sent events
# --------------------------------------------------------------------------------------------


class _SSEDecoder:
    """An incremental decoder for `text/event-stream` (WHATWG HTML §9.2.6), data only.

    Feed it bytes as they arrive; it yields the `data` of each complete event. Lines end with
    CRLF, LF or CR (even split across reads); `:` lines are comments; several `data:` lines are
    joined with `\\n`; one space after the colon is dropped; other fields are ignored; an event
    with no data line is not dispatched; an unterminated event at the end of input is discarded.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._data: list[str] = []
        self._has_data = False
        self._started = False

    def feed(self, chunk: bytes) -> list[str]:
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        return self._lines(self._pending + text)

    def close(self) -> list[str]:
        """Flush at end of input: a final CR still ends a line; an unterminated event is dropped."""
        text = self._pending + self._decoder.decode(b"", final=True)
        events = self._lines(text + "\n") if text.endswith("\r") else []
        self._pending = ""
        return events

    def _lines(self, text: str) -> list[str]:
        events: list[str] = []
        start = 0
        length = len(text)
        cr = text.find("\r")
        lf = text.find("\n")
        while True:
            # Each search runs again only once passed, so a read is scanned in linear time.
            if 0 <= cr < start:
                cr = text.find("\r", start)
            if 0 <= lf < start:
                lf = text.find("\n", start)
            if cr < 0 and lf < 0:
                break
            if cr >= 0 and (lf < 0 or cr < lf):
                if cr + 1 == length:  # a CR at the end: wait to see whether an LF follows
                    break
                end, after = cr, cr + 2 if text[cr + 1] == "\n" else cr + 1
            else:
                end, after = lf, lf + 1
            event = self._line(text[start:end])
            if event is not None:
                events.append(event)
            start = after
        self._pending = text[start:]
        return events

    def _line(self, line: str) -> str | None:
        if not line:
            if not self._has_data:
                return None
            data = "\n".join(self._data)
            self._data.clear()
            self._has_data = False
            return data
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        return None


def _chunk_from_event(data: str, request_id: str | None, secrets: Sequence[str]) -> JSON | None:
    """A chunk dict, None for `[DONE]`; raises StreamError for an error frame or bad JSON."""
    if data.startswith("[DONE]"):
        return None
    try:
        payload = json.loads(data)
    except ValueError:
        raise StreamError(
            "The server sent a stream frame that is not JSON.",
            code="invalid_stream_frame",
            request_id=request_id,
        ) from None
    if isinstance(payload, dict) and payload.get("error"):
        detail = payload["error"]
        if isinstance(detail, dict):
            raise StreamError(
                _scrub(
                    _str_or_none(detail.get("message")) or "An error occurred during streaming",
                    secrets,
                ),
                type=_field(detail, "type", secrets),
                code=_field(detail, "code", secrets),
                param=_field(detail, "param", secrets),
                request_id=request_id,
                body=_scrub_value(detail, secrets),
            )
        raise StreamError(
            _scrub(str(detail), secrets), request_id=request_id, body=_scrub_value(detail, secrets)
        )
    if not isinstance(payload, dict):
        raise StreamError(
            "The server sent a stream frame that is not a JSON object.",
            code="invalid_stream_frame",
            request_id=request_id,
        )
    return payload


def _truncated(request_id: str | None) -> StreamError:
    return StreamError(
        "The stream ended before it was complete (no [DONE]).",
        code="stream_truncated",
        request_id=request_id,
    )


def _lost(exc: httpx.TransportError, request_id: str | None, secrets: Sequence[str]) -> StreamError:
    detail = _scrub(str(exc) or type(exc).__name__, secrets)
    code = "stream_timeout" if isinstance(exc, httpx.TimeoutException) else "stream_interrupted"
    return StreamError(
        f"The connection failed during the stream: {detail}", code=code, request_id=request_id
    )


def _not_a_stream(response: httpx.Response, request_id: str | None) -> Native1APIError:
    kind = response.headers.get("content-type", "")
    return Native1APIError(
        f"Expected an event stream but the server answered with {kind or 'no content type'}.",
        status_code=response.status_code,
        request_id=request_id,
        headers=dict(response.headers),
    )


class ChatCompletionStream:
    """An iterator over the `chat.completion.chunk` dicts of one streamed completion.

    Iterating reads the response as it arrives; it ends at `[DONE]` and raises `StreamError` if
    the server reports an error or the stream breaks off. Close it (or use `with`) to stop early.
    """

    def __init__(self, response: httpx.Response, secrets: Sequence[str]) -> None:
        self.response_headers: dict[str, str] = dict(response.headers)
        self.request_id: str | None = response.headers.get("x-request-id")
        self.provider: str | None = response.headers.get("x-native1api-provider")
        self._response = response
        self._secrets = tuple(secrets)
        self._iterator = self._iterate()

    def __repr__(self) -> str:
        return f"<ChatCompletionStream request_id={self.request_id!r}>"

    def __iter__(self) -> Iterator[JSON]:
        return self

    def __next__(self) -> JSON:
        return next(self._iterator)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading and release the connection."""
        self._iterator.close()
        self._response.close()

    def _iterate(self) -> Generator[JSON, None, None]:
        decoder = _SSEDecoder()
        try:
            try:
                for raw in self._response.iter_bytes():
                    for data in decoder.feed(raw):
                        chunk = _chunk_from_event(data, self.request_id, self._secrets)
                        if chunk is None:
                            return
                        yield chunk
            except httpx.TransportError as exc:
                raise _lost(exc, self.request_id, self._secrets) from exc
            for data in decoder.close():
                chunk = _chunk_from_event(data, self.request_id, self._secrets)
                if chunk is None:
                    return
                yield chunk
            raise _truncated(self.request_id)
        finally:
            self._response.close()


class AsyncChatCompletionStream:
    """An async iterator over the `chat.completion.chunk` dicts of one streamed completion.

    Ends at `[DONE]`; raises `StreamError` if the server reports an error or the stream breaks
    off. Call `aclose()` (or use `async with`) to stop early.
    """

    def __init__(self, response: httpx.Response, secrets: Sequence[str]) -> None:
        self.response_headers: dict[str, str] = dict(response.headers)
        self.request_id: str | None = response.headers.get("x-request-id")
        self.provider: str | None = response.headers.get("x-native1api-provider")
        self._response = response
        self._secrets = tuple(secrets)
        self._iterator = self._iterate()

    def __repr__(self) -> str:
        return f"<AsyncChatCompletionStream request_id={self.request_id!r}>"

    def __aiter__(self) -> AsyncIterator[JSON]:
        return self

    async def __anext__(self) -> JSON:
        return await self._iterator.__anext__()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading and release the connection."""
        await self._iterator.aclose()
        await self._response.aclose()

    async def _iterate(self) -> AsyncGenerator[JSON, None]:
        decoder = _SSEDecoder()
        try:
            try:
                async for raw in self._response.aiter_bytes():
                    for data in decoder.feed(raw):
                        chunk = _chunk_from_event(data, self.request_id, self._secrets)
                        if chunk is None:
                            return
                        yield chunk
            except httpx.TransportError as exc:
                raise _lost(exc, self.request_id, self._secrets) from exc
            for data in decoder.close():
                chunk = _chunk_from_event(data, self.request_id, self._secrets)
                if chunk is None:
                    return
                yield chunk
            raise _truncated(self.request_id)
        finally:
            await self._response.aclose()


# --------------------------------------------------------------------------------------------
# Shared request plumbing
# --------------------------------------------------------------------------------------------


def _normalise_base_url(base_url: str) -> str:
    url = str(base_url).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError("base_url must start with http:// or https://")
    # Accept an OpenAI-style base URL ending in /v1 too.
    return url.removesuffix("/v1")


def _check_static_token(token: str) -> None:
    if not isinstance(token, str) or not token.strip():
        raise ValueError("token must be a non-empty string")


def _check_token(token: Any) -> str:
    if not isinstance(token, str) or not token.strip():
        raise AuthenticationError(
            "No Firebase ID token: the token provider returned an empty value.",
            code="missing_token",
        )
    return token.strip()


def _check_app_check_token(token: Any) -> str:
    if not isinstance(token, str) or not token.strip():
        raise AuthenticationError(
            "No Firebase App Check token: the App Check token provider returned an empty value.",
            code="missing_app_check_token",
        )
    return token.strip()


def _check_provider(name: str, provider: object) -> None:
    if provider is not None and not callable(provider):
        raise TypeError(f"{name} must be a callable returning the current token")


def _retry_delay(error: Native1APIError | None, attempt: int, cap: float) -> float:
    """Seconds before retry number `attempt` (1-based): Retry-After if sent, else backoff."""
    if error is not None and error.headers:
        retry_after = _parse_retry_after(httpx.Headers(error.headers))
        if retry_after is not None:
            return min(retry_after, cap)
    backoff = min(0.5 * 2.0 ** (attempt - 1), 8.0)
    return min(backoff * (1 - 0.25 * random.random()), cap)  # noqa: S311 - jitter, not crypto


def _retryable(error: Native1APIError) -> bool:
    if isinstance(error, APIConnectionError):
        # Only when the connection was never made: otherwise the server may have acted on it.
        return isinstance(error.__cause__, httpx.ConnectError | httpx.ConnectTimeout)
    return error.status_code in RETRY_STATUSES


def _chat_body(
    model: str, messages: Sequence[Mapping[str, Any]], stream: bool, fields: Mapping[str, Any]
) -> JSON:
    body: JSON = {"model": model, "messages": list(messages), **fields}
    if stream:
        body["stream"] = True
    elif "stream" in body:
        body["stream"] = False
    return body


def _vault_body(api_key: str, provider: str | None, validate: bool) -> JSON:
    body: JSON = {"apiKey": api_key}
    if provider is not None:
        body["provider"] = provider
    if validate:
        body["validate"] = True
    return body


def _headers(
    token: str, accept: str, extra: Mapping[str, str] | None, app_check: str | None = None
) -> dict[str, str]:
    headers = {"accept": accept, "user-agent": _USER_AGENT}
    if extra:
        # The credential is always the ID token: an extra Authorization header would be sent too.
        # Likewise the App Check token comes from its provider when there is one.
        replaced = {"authorization", APP_CHECK_HEADER} if app_check else {"authorization"}
        headers.update((k, v) for k, v in extra.items() if k.lower() not in replaced)
    headers["authorization"] = f"Bearer {token}"
    if app_check:
        headers[APP_CHECK_HEADER] = app_check
    return headers


def _json_body(response: httpx.Response, body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise Native1APIError(
            "The server answered with a body that is not JSON.",
            status_code=response.status_code,
            request_id=response.headers.get("x-request-id"),
            headers=dict(response.headers),
        ) from None


def _models_from(payload: Any) -> list[JSON]:
    data = payload.get("data") if isinstance(payload, dict) else payload
    return [model for model in data if isinstance(model, dict)] if isinstance(data, list) else []


# --------------------------------------------------------------------------------------------
# Sync client
# --------------------------------------------------------------------------------------------


class _Completions:
    def __init__(self, client: Native1API) -> None:
        self._client = client

    @overload
    def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        stream: Literal[False] = False,
        extra_headers: Mapping[str, str] | None = None,
        timeout: Timeout | None = None,
        **fields: Any,
    ) -> JSON: ...

    @overload
    def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        stream: Literal[True],
        extra_headers: Mapping[str, str] | None = None,
        timeout: Timeout | None = None,
        **fields: Any,
    ) -> ChatCompletionStream: ...

    @overload
    def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        stream: bool,
        extra_headers: Mapping[str, str] | None = None,
        timeout: Timeout | None = None,
        **fields: Any,
    ) -> JSON | ChatCompletionStream: ...

    def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        stream: bool = False,
        extra_headers: Mapping[str, str] | None = None,
        timeout: Timeout | None = None,
        **fields: Any,
    ) -> JSON | ChatCompletionStream:
        """Create a chat completion: the `chat.completion` dict, or a stream of chunk dicts.

        Every other OpenAI request field (`temperature`, `max_tokens`, `tools`, `stream_options`,
        ...) is passed as a keyword argument and sent as is.
        """
        body = _chat_body(model, messages, stream, fields)
        if stream:
            return self._client._stream(
                "/v1/chat/completions", body, extra_headers=extra_headers, timeout=timeout
            )
        result: JSON = self._client._request(
            "POST", "/v1/chat/completions", body, extra_headers=extra_headers, timeout=timeout
        )
        return result


class _Chat:
    def __init__(self, client: Native1API) -> None:
        self.completions = _Completions(client)


class _Models:
    def __init__(self, client: Native1API) -> None:
        self._client = client

    def list(self, *, timeout: Timeout | None = None) -> builtins.list[JSON]:
        """The models the caller can use (`data` of the OpenAI list object)."""
        return _models_from(self._client._request("GET", "/v1/models", timeout=timeout))


class _Vault:
    def __init__(self, client: Native1API) -> None:
        self._client = client

    def put(
        self,
        api_key: str,
        provider: Literal["openrouter", "together"] | None = None,
        validate: bool = False,
        *,
        timeout: Timeout | None = None,
    ) -> JSON:
        """Save or replace the caller's provider key; returns `{"exists": True, "provider": ...}`.

        `provider` may be omitted for keys whose prefix names it (`sk-or-`, `tgp_`); with
        `validate=True` the server checks the key with the provider first.
        """
        result: JSON = self._client._request(
            "POST",
            "/v1/vault",
            _vault_body(api_key, provider, validate),
            timeout=timeout,
            secrets=(api_key,),
        )
        return result

    def exists(self, *, timeout: Timeout | None = None) -> JSON:
        """`{"exists": bool}` plus `"provider"` when a key is stored. Never the key."""
        result: JSON = self._client._request("GET", "/v1/vault", timeout=timeout)
        return result

    def delete(self, *, timeout: Timeout | None = None) -> JSON:
        """Delete the caller's key (idempotent); returns `{"exists": False}`."""
        result: JSON = self._client._request("DELETE", "/v1/vault", timeout=timeout)
        return result


class Native1API:
    """Synchronous Native1API client.

    Give either `token` (a Firebase ID token) or `token_provider` (a callable returning the
    current ID token; it is called for every request, so refreshed tokens are picked up).
    `app_check_token_provider`, when given, is called the same way for the current Firebase App
    Check token, sent as `X-Firebase-AppCheck`.
    `max_retries` (default 0) retries 429, 502, 503 and refused connections, honouring
    `Retry-After` up to `max_retry_delay` seconds; a stream is never retried once it started.
    Pass `http_client` to reuse your own `httpx.Client` (it is then not closed by `close()`).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        app_check_token_provider: TokenProvider | None = None,
        timeout: Timeout | None = None,
        max_retries: int = 0,
        max_retry_delay: float = DEFAULT_MAX_RETRY_DELAY,
        http_client: httpx.Client | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        if (token is None) == (token_provider is None):
            raise ValueError("pass exactly one of token= or token_provider=")
        if token is not None:
            _check_static_token(token)
        _check_provider("app_check_token_provider", app_check_token_provider)
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = _normalise_base_url(base_url)
        self.timeout: Timeout = (
            timeout
            if timeout is not None
            else http_client.timeout
            if http_client is not None
            else DEFAULT_TIMEOUT
        )
        self.max_retries = max_retries
        self.max_retry_delay = max_retry_delay
        self._token = token
        self._token_provider = token_provider
        self._app_check_token_provider = app_check_token_provider
        self._default_headers = dict(default_headers or {})
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client(timeout=self.timeout)
        self.chat = _Chat(self)
        self.models = _Models(self)
        self.vault = _Vault(self)

    def __repr__(self) -> str:
        return f"Native1API(base_url={self.base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying HTTP client (unless it was passed in)."""
        if self._owns_http:
            self._http.close()

    def _current_token(self) -> str:
        if self._token_provider is not None:
            return _check_token(self._token_provider())
        return _check_token(self._token)

    def _current_app_check_token(self) -> str | None:
        if self._app_check_token_provider is None:
            return None
        return _check_app_check_token(self._app_check_token_provider())

    def _send(
        self,
        method: str,
        path: str,
        body: JSON | None,
        *,
        accept: str,
        stream: bool,
        extra_headers: Mapping[str, str] | None,
        timeout: Timeout | None,
        secrets: Sequence[str],
    ) -> tuple[httpx.Response, tuple[str, ...]]:
        """Send with retries; returns a 2xx response (streamed when `stream`) and the secrets."""
        attempt = 0
        while True:
            token = self._current_token()
            app_check = self._current_app_check_token()
            all_secrets = (token, *secrets) if app_check is None else (token, app_check, *secrets)
            headers = _headers(
                token, accept, {**self._default_headers, **(extra_headers or {})}, app_check
            )
            request = self._http.build_request(
                method,
                self.base_url + path,
                json=body,
                headers=headers,
                timeout=timeout if timeout is not None else self.timeout,
            )
            error: Native1APIError
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                error = _connection_error(exc, all_secrets)
                error.__cause__ = exc
            else:
                if response.is_success:
                    return response, all_secrets
                try:
                    raw = response.read()
                finally:
                    response.close()
                error = _error_from_response(response, raw, all_secrets)
            if attempt >= self.max_retries or not _retryable(error):
                raise error
            attempt += 1
            time.sleep(_retry_delay(error, attempt, self.max_retry_delay))

    def _request(
        self,
        method: str,
        path: str,
        body: JSON | None = None,
        *,
        extra_headers: Mapping[str, str] | None = None,
        timeout: Timeout | None = None,
        secrets: Sequence[str] = (),
    ) -> Any:
        response, _ = self._send(
            method,
            path,
            body,
            accept="application/json",
            stream=False,
            extra_headers=extra_headers,
            timeout=timeout,
            secrets=secrets,
        )
        return _json_body(response, response.content)

    def _stream(
        self,
        path: str,
        body: JSON,
        *,
        extra_headers: Mapping[str, str] | None,
        timeout: Timeout | None,
    ) -> ChatCompletionStream:
        response, all_secrets = self._send(
            "POST",
            path,
            body,
            accept="text/event-stream",
            stream=True,
            extra_headers=extra_headers,
            timeout=timeout,
            secrets=(),
        )
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            response.close()
            raise _not_a_stream(response, response.headers.get("x-request-id"))
        return ChatCompletionStream(response, all_secrets)


# --------------------------------------------------------------------------------------------
# Async client
# --------------------------------------------------------------------------------------------


class _AsyncCompletions:
    def __init__(self, client: AsyncNative1API) -> None:
        self._client = client

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        stream: Literal[False] = False,
        extra_headers: Mapping[str, str] | None = None,
        timeout: Timeout | None = None,
        **fields: Any,
    ) -> JSON: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        stream: Literal[True],
        extra_headers: Mapping[str, str] | None = None,
        timeout: Timeout | None = None,
        **fields: Any,
    ) -> AsyncChatCompletionStream: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        stream: bool,
        extra_headers: Mapping[str, str] | None = None,
        timeout: Timeout | None = None,
        **fields: Any,
    ) -> JSON | AsyncChatCompletionStream: ...

    async def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        stream: bool = False,
        extra_headers: Mapping[str, str] | None = None,
        timeout: Timeout | None = None,
        **fields: Any,
    ) -> JSON | AsyncChatCompletionStream:
        """Create a chat completion: the `chat.completion` dict, or (`stream=True`) an async
        iterator of chunk dicts. Other OpenAI request fields are keyword arguments."""
        body = _chat_body(model, messages, stream, fields)
        if stream:
            return await self._client._stream(
                "/v1/chat/completions", body, extra_headers=extra_headers, timeout=timeout
            )
        result: JSON = await self._client._request(
            "POST", "/v1/chat/completions", body, extra_headers=extra_headers, timeout=timeout
        )
        return result


class _AsyncChat:
    def __init__(self, client: AsyncNative1API) -> None:
        self.completions = _AsyncCompletions(client)


class _AsyncModels:
    def __init__(self, client: AsyncNative1API) -> None:
        self._client = client

    async def list(self, *, timeout: Timeout | None = None) -> builtins.list[JSON]:
        """The models the caller can use (`data` of the OpenAI list object)."""
        return _models_from(await self._client._request("GET", "/v1/models", timeout=timeout))


class _AsyncVault:
    def __init__(self, client: AsyncNative1API) -> None:
        self._client = client

    async def put(
        self,
        api_key: str,
        provider: Literal["openrouter", "together"] | None = None,
        validate: bool = False,
        *,
        timeout: Timeout | None = None,
    ) -> JSON:
        """Save or replace the caller's provider key; returns `{"exists": True, "provider": ...}`."""
        result: JSON = await self._client._request(
            "POST",
            "/v1/vault",
            _vault_body(api_key, provider, validate),
            timeout=timeout,
            secrets=(api_key,),
        )
        return result

    async def exists(self, *, timeout: Timeout | None = None) -> JSON:
        """`{"exists": bool}` plus `"provider"` when a key is stored. Never the key."""
        result: JSON = await self._client._request("GET", "/v1/vault", timeout=timeout)
        return result

    async def delete(self, *, timeout: Timeout | None = None) -> JSON:
        """Delete the caller's key (idempotent); returns `{"exists": False}`."""
        result: JSON = await self._client._request("DELETE", "/v1/vault", timeout=timeout)
        return result


class AsyncNative1API:
    """Asynchronous Native1API client; the same surface as `Native1API`, awaited.

    `token_provider` may be a plain or an async callable (e.g. one that refreshes a Firebase ID
    token); it is called for every request. So may `app_check_token_provider`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        token_provider: AsyncTokenProvider | None = None,
        app_check_token_provider: AsyncTokenProvider | None = None,
        timeout: Timeout | None = None,
        max_retries: int = 0,
        max_retry_delay: float = DEFAULT_MAX_RETRY_DELAY,
        http_client: httpx.AsyncClient | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        if (token is None) == (token_provider is None):
            raise ValueError("pass exactly one of token= or token_provider=")
        if token is not None:
            _check_static_token(token)
        _check_provider("app_check_token_provider", app_check_token_provider)
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = _normalise_base_url(base_url)
        self.timeout: Timeout = (
            timeout
            if timeout is not None
            else http_client.timeout
            if http_client is not None
            else DEFAULT_TIMEOUT
        )
        self.max_retries = max_retries
        self.max_retry_delay = max_retry_delay
        self._token = token
        self._token_provider = token_provider
        self._app_check_token_provider = app_check_token_provider
        self._default_headers = dict(default_headers or {})
        self._owns_http = http_client is None
        self._http = (
            http_client if http_client is not None else httpx.AsyncClient(timeout=self.timeout)
        )
        self.chat = _AsyncChat(self)
        self.models = _AsyncModels(self)
        self.vault = _AsyncVault(self)

    def __repr__(self) -> str:
        return f"AsyncNative1API(base_url={self.base_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the underlying HTTP client (unless it was passed in)."""
        if self._owns_http:
            await self._http.aclose()

    async def _current_token(self) -> str:
        if self._token_provider is None:
            return _check_token(self._token)
        value = self._token_provider()
        if inspect.isawaitable(value):
            value = await value
        return _check_token(value)

    async def _current_app_check_token(self) -> str | None:
        if self._app_check_token_provider is None:
            return None
        value = self._app_check_token_provider()
        if inspect.isawaitable(value):
            value = await value
        return _check_app_check_token(value)

    async def _send(
        self,
        method: str,
        path: str,
        body: JSON | None,
        *,
        accept: str,
        stream: bool,
        extra_headers: Mapping[str, str] | None,
        timeout: Timeout | None,
        secrets: Sequence[str],
    ) -> tuple[httpx.Response, tuple[str, ...]]:
        attempt = 0
        while True:
            token = await self._current_token()
            app_check = await self._current_app_check_token()
            all_secrets = (token, *secrets) if app_check is None else (token, app_check, *secrets)
            headers = _headers(
                token, accept, {**self._default_headers, **(extra_headers or {})}, app_check
            )
            request = self._http.build_request(
                method,
                self.base_url + path,
                json=body,
                headers=headers,
                timeout=timeout if timeout is not None else self.timeout,
            )
            error: Native1APIError
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                error = _connection_error(exc, all_secrets)
                error.__cause__ = exc
            else:
                if response.is_success:
                    return response, all_secrets
                try:
                    raw = await response.aread()
                finally:
                    await response.aclose()
                error = _error_from_response(response, raw, all_secrets)
            if attempt >= self.max_retries or not _retryable(error):
                raise error
            attempt += 1
            await asyncio.sleep(_retry_delay(error, attempt, self.max_retry_delay))

    async def _request(
        self,
        method: str,
        path: str,
        body: JSON | None = None,
        *,
        extra_headers: Mapping[str, str] | None = None,
        timeout: Timeout | None = None,
        secrets: Sequence[str] = (),
    ) -> Any:
        response, _ = await self._send(
            method,
            path,
            body,
            accept="application/json",
            stream=False,
            extra_headers=extra_headers,
            timeout=timeout,
            secrets=secrets,
        )
        return _json_body(response, response.content)

    async def _stream(
        self,
        path: str,
        body: JSON,
        *,
        extra_headers: Mapping[str, str] | None,
        timeout: Timeout | None,
    ) -> AsyncChatCompletionStream:
        response, all_secrets = await self._send(
            "POST",
            path,
            body,
            accept="text/event-stream",
            stream=True,
            extra_headers=extra_headers,
            timeout=timeout,
            secrets=(),
        )
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            await response.aclose()
            raise _not_a_stream(response, response.headers.get("x-request-id"))
        return AsyncChatCompletionStream(response, all_secrets)
