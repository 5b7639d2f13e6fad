"""The shared core of the OpenAI-shaped BYOK adapters (OpenRouter, Together).

Both providers speak Chat Completions with quirks (reference/wire-formats.md §3, §4, §5.3). What
they share lives here, in `OpenAICompatProvider`:

- the upstream body: the client's request (`request_to_json`) under the provider's model id,
  `max_completion_tokens` folded into `max_tokens`, usage always requested, and every extra
  field the provider does not document refused by name (SPEC §2: nothing is silently dropped);
- sending through `upstream_http.open_stream` (pooled client, retries before the first byte,
  non-2xx answers parsed by the provider's `parse_error` and mapped by `errors`);
- the non-stream body (leading whitespace allowed), and the SSE stream (`sse_decoder`);
- errors reported inside a 200 body or stream (OpenRouter's padded bodies and mid-stream error
  chunks, Together's error frame) mapped to the same table;
- the model listing, cached per key (by the key's SHA-256, never the key) for a few minutes.

Per chunk the stream does only what the servicer's normaliser cannot: it parses with orjson,
drops choices repeated after their own finish (OpenRouter's usage chunk) and stamps the model.
Role chunks, empty deltas, ids and the usage chunk are the normaliser's job (see `base.Provider`).

Subclasses set the provider's name, forwarded extras and content-part types, and override the
`_adapt_body`, `_upstream_error` and `_models_from_json` hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Mapping
from typing import Any, ClassVar, Final

import orjson
from yarl import URL

from gateway_service import errors
from gateway_service.providers.base import ProviderName, UpstreamCall
from gateway_service.upstream_http import (
    MAX_ERROR_BODY,
    READ_ERRORS,
    Headers,
    HttpSettings,
    UpstreamClient,
    UpstreamResponse,
    drain_after_done,
    ensure_rpc_error,
    open_stream,
)
from native1api.gateway.v1 import chat_pb2, gateway_service_pb2
from rpc_common.openai import (
    UpstreamFormatError,
    UpstreamReportedError,
    chunk_from_json,
    completion_from_json,
    request_to_json,
)
from rpc_common.status import RpcError

__all__ = [
    "MODELS_CACHE_MAX_KEYS",
    "MODELS_CACHE_TTL_SECONDS",
    "Models",
    "OpenAICompatProvider",
    "error_code_of",
    "http_status_of",
]

MODELS_CACHE_TTL_SECONDS: Final = 300.0
MODELS_CACHE_MAX_KEYS: Final = 1024

_DONE: Final = "[DONE]"
_SSE: Final = "text/event-stream"
_JSON: Final = "application/json"
_MAX_MESSAGE: Final = 300

Models = list[gateway_service_pb2.Model]


def http_status_of(code: object) -> int | None:
    """An error `code` that is an HTTP status (OpenRouter puts the status there), else None."""
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    return None


def error_code_of(error: Mapping[str, Any]) -> int | str | None:
    """The provider's own code of an error object: `code`, else `type` (Together's 402 has only
    `type: "credit_limit"`)."""
    for key in ("code", "type"):
        value = error.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _scrub(text: str, secret: str) -> str:
    # Providers do not echo keys today; if one ever did, its message must not carry it to the
    # client or a log. Cheap: only error paths get here.
    if secret and secret in text:
        text = text.replace(secret, "[REDACTED]")
    return text


def _envelope(body: bytes) -> tuple[dict[str, Any], str | None]:
    """The error object of an error body and, for non-JSON bodies, a short text to show."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        # An HTML error page (a CDN in front of the provider) says nothing a client can use.
        if not text or text.startswith("<"):
            return {}, None
        return {}, text[:_MAX_MESSAGE]
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            return error, None
        if isinstance(error, str) and error:
            return {"message": error}, None
        if isinstance(data.get("message"), str):
            return data, None
    return {}, None


class OpenAICompatProvider:
    """An OpenAI-shaped upstream reached with the user's own key (a `base.Provider`)."""

    name: ProviderName
    #: Top-level request fields without a typed proto home that the provider documents; any
    #: other extra field is refused with `unsupported_parameter` before anything is sent.
    forwarded_extras: ClassVar[frozenset[str]] = frozenset()
    #: Content-part types the provider accepts (typed parts and `ContentPart.other` alike).
    part_types: ClassVar[frozenset[str]] = frozenset({"text", "image_url"})

    def __init__(
        self,
        http: UpstreamClient,
        settings: HttpSettings,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._http = http
        self._settings = settings
        base = base_url.rstrip("/")
        # Built once: the endpoints' parsed URLs and the headers every request carries.
        self._chat_url = URL(base + "/chat/completions")
        self._models_url = URL(base + "/models")
        static = {"content-type": _JSON, **(headers or {})}
        self._accept_headers = {
            _SSE: {**static, "accept": _SSE},
            _JSON: {**static, "accept": _JSON},
        }
        self._models_cache: OrderedDict[bytes, tuple[float, Models]] = OrderedDict()

    # ---- hooks -----------------------------------------------------------------------------

    def _adapt_body(self, body: dict[str, Any], *, stream: bool) -> None:
        """Provider-specific changes to the upstream body (in place); may raise RpcError."""

    def _upstream_error(
        self,
        status: int,
        message: str,
        error: Mapping[str, Any],
        headers: Headers | None,
    ) -> errors.UpstreamHTTPError:
        """Turn a provider error (HTTP status or the code of an error reported in a 200, its
        message and error object) into what `errors.from_upstream_status` maps."""
        return errors.UpstreamHTTPError(status, message, provider_code=error_code_of(error))

    def _models_from_json(self, data: Any) -> Models:
        """Read the provider's model list; raise `UpstreamFormatError` when it is unreadable."""
        raise NotImplementedError

    # ---- errors ----------------------------------------------------------------------------

    def parse_error(self, status: int, body: bytes, headers: Headers) -> errors.UpstreamHTTPError:
        """Parse a non-2xx answer (`upstream_http.ErrorParser`)."""
        error, text = _envelope(body)
        message = error.get("message")
        if not isinstance(message, str) or not message.strip():
            message = text or f"HTTP {status}"
        return self._upstream_error(status, message.strip()[:_MAX_MESSAGE], error, headers)

    def _reported_error(
        self, exc: UpstreamReportedError, call: UpstreamCall, *, midstream: bool
    ) -> RpcError:
        """An error the provider reported inside a 200 body or stream.

        Mid-stream, after part of the answer was delivered, it is `stream_interrupted`: the
        answer is incomplete, and a status such as "rate limited" would misdescribe a half-sent
        reply. Before anything was delivered (a padded OpenRouter body, a first stream frame)
        it is what the same error would have been as an HTTP answer: OpenRouter only sends it
        with a 200 because it committed the status early, and its `code` is the real status.
        """
        message = _scrub(exc.message, call.api_key)[:_MAX_MESSAGE]
        if midstream:
            return errors.stream_interrupted(self.name, message)
        status = http_status_of(exc.body.get("code")) or 502
        failure = self._upstream_error(status, message, exc.body, None)
        return errors.from_upstream_status(self.name, failure, byok=call.byok)

    # ---- requests --------------------------------------------------------------------------

    def _request_headers(self, api_key: str, accept: str) -> dict[str, str]:
        # A key that cannot be a header value would make the HTTP client raise with the value
        # in its message (or, worse, split the header); report it as the rejected key it is.
        if not api_key.isascii() or not api_key.isprintable() or " " in api_key:
            raise errors.from_upstream_status(
                self.name, errors.UpstreamHTTPError(401, "malformed API key"), byok=True
            )
        return {**self._accept_headers[accept], "authorization": f"Bearer {api_key}"}

    def _check_request(self, req: chat_pb2.ChatCompletionRequest) -> None:
        """Refuse what the provider would silently ignore: unknown extras, unknown part types."""
        for key in req.extra_fields.fields:
            if key not in self.forwarded_extras:
                raise errors.unsupported_parameter(self.name, key)
        part_types = self.part_types
        for m, message in enumerate(req.messages):
            if message.WhichOneof("content") != "parts":
                continue
            for p, part in enumerate(message.parts.parts):
                kind: str | None = part.WhichOneof("part")
                if kind == "other":
                    value = part.other.fields.get("type")
                    kind = value.string_value if value is not None else ""
                if kind not in part_types:
                    raise errors.unsupported_parameter(
                        self.name,
                        f"messages[{m}].content[{p}].type",
                        f"Content parts of type '{kind}' cannot be sent to {self.name}.",
                    )

    def build_body(self, call: UpstreamCall, *, stream: bool) -> dict[str, Any]:
        """The upstream JSON body for `call` (public for tests and benchmarks)."""
        req = call.request
        self._check_request(req)
        body = request_to_json(req)
        body["model"] = call.model
        # Both providers document only `max_tokens` (wire-formats §1.1, §3.2, §4.1). When a
        # client sent both names, the smaller limit is the one that honours both.
        limit = body.pop("max_completion_tokens", None)
        if limit is not None:
            current = body.get("max_tokens")
            body["max_tokens"] = limit if current is None else min(current, limit)
        body["stream"] = stream
        if stream:
            # Usage is always requested: the gateway meters every call (SPEC §6).
            body["stream_options"] = {"include_usage": True}
        self._adapt_body(body, stream=stream)
        return body

    async def _send_chat(self, call: UpstreamCall, *, stream: bool) -> UpstreamResponse:
        body = orjson.dumps(self.build_body(call, stream=stream))
        headers = self._request_headers(call.api_key, _SSE if stream else _JSON)
        return await self._send("POST", self._chat_url, headers, body, call.api_key, call.byok)

    async def _send(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes | None,
        api_key: str,
        byok: bool,
    ) -> UpstreamResponse:
        def parse_error(status: int, body: bytes, headers: Headers) -> errors.UpstreamHTTPError:
            failure = self.parse_error(status, body, headers)
            failure.message = _scrub(failure.message, api_key)
            return failure

        return await open_stream(
            self._http,
            method,
            url,
            headers=headers,
            body=body,
            provider=self.name,
            byok=byok,
            parse_error=parse_error,
            settings=self._settings,
        )

    async def _read(self, response: UpstreamResponse) -> bytes:
        try:
            return await response.read()
        except READ_ERRORS as exc:
            raise ensure_rpc_error(exc, self.name) from None
        finally:
            await response.aclose()

    # ---- Provider --------------------------------------------------------------------------

    async def complete(self, call: UpstreamCall) -> chat_pb2.ChatCompletion:
        """One whole completion; `model` is the id the client asked for."""
        try:
            async with asyncio.timeout(self._settings.total_timeout_seconds):
                raw = await self._read(await self._send_chat(call, stream=False))
        except TimeoutError:
            raise errors.timed_out(self.name) from None
        try:
            # orjson skips the leading whitespace OpenRouter pads its bodies with (§3.3).
            completion = completion_from_json(orjson.loads(raw))
        except UpstreamReportedError as exc:
            raise self._reported_error(exc, call, midstream=False) from None
        except (orjson.JSONDecodeError, UpstreamFormatError):
            raise errors.protocol_error(self.name, "an unreadable completion body") from None
        if not completion.choices:
            raise errors.protocol_error(self.name, "a completion without choices")
        completion.model = call.request.model
        return completion

    async def stream(
        self, call: UpstreamCall
    ) -> AsyncGenerator[chat_pb2.ChatCompletionChunk, None]:
        """The completion as OpenAI chunks; raises RpcError for every failure.

        Closing this generator (the gRPC call was cancelled) closes the upstream response at
        once, through the `finally` below.
        """
        response = await self._send_chat(call, stream=True)
        try:
            if _SSE not in response.content_type:
                raise await self._not_sse(response, call)
            model = call.request.model
            deadline = time.monotonic() + self._settings.total_timeout_seconds
            finished: set[int] = set()
            started = False
            done = False
            try:
                async with contextlib.aclosing(response.events()) as events:
                    async for event in events:
                        data = event.data
                        if data == _DONE:
                            done = True
                            break
                        if not data:
                            continue  # an event without data (comments never get here)
                        try:
                            chunk = chunk_from_json(orjson.loads(data))
                        except UpstreamReportedError as exc:
                            raise self._reported_error(exc, call, midstream=started) from None
                        except (orjson.JSONDecodeError, UpstreamFormatError):
                            raise errors.protocol_error(
                                self.name, "an unreadable stream chunk"
                            ) from None
                        if finished and not _drop_finished(chunk, finished):
                            continue
                        for choice in chunk.choices:
                            if choice.finish_reason:
                                finished.add(choice.index)
                        if time.monotonic() > deadline:
                            raise errors.timed_out(self.name)
                        chunk.model = model
                        if not started:
                            started = _delivers(chunk)
                        yield chunk
                    if done:
                        await drain_after_done(events)
            except READ_ERRORS as exc:
                raise ensure_rpc_error(exc, self.name) from None
            if not done:
                raise errors.stream_interrupted(self.name, "the connection closed before [DONE]")
        finally:
            await response.aclose()

    async def _not_sse(self, response: UpstreamResponse, call: UpstreamCall) -> RpcError:
        """A 2xx answer to a streaming request that is not SSE: an error object, or garbage."""
        body = await response.read_bounded(MAX_ERROR_BODY)  # a broken body reads as garbage
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict) and data.get("error"):
            try:
                chunk_from_json(data)
            except UpstreamReportedError as exc:
                return self._reported_error(exc, call, midstream=False)
            except UpstreamFormatError:
                pass
        return errors.protocol_error(self.name, "a non-SSE reply to a streaming request")

    async def list_models(self, api_key: str, *, byok: bool) -> Models:
        """The provider's chat models, cached per key for `MODELS_CACHE_TTL_SECONDS`.

        The returned messages are shared with the cache: copy before changing one.
        """
        digest = hashlib.sha256(api_key.encode()).digest()
        now = time.monotonic()
        cached = self._models_cache.get(digest)
        if cached is not None and cached[0] > now:
            return list(cached[1])
        headers = self._request_headers(api_key, _JSON)
        raw = await self._read(
            await self._send("GET", self._models_url, headers, None, api_key, byok)
        )
        try:
            models = self._models_from_json(orjson.loads(raw))
        except (orjson.JSONDecodeError, UpstreamFormatError):
            raise errors.protocol_error(self.name, "an unreadable model list") from None
        cache = self._models_cache
        cache[digest] = (time.monotonic() + MODELS_CACHE_TTL_SECONDS, models)
        cache.move_to_end(digest)
        while len(cache) > MODELS_CACHE_MAX_KEYS:
            cache.popitem(last=False)
        return list(models)


def _delivers(chunk: chat_pb2.ChatCompletionChunk) -> bool:
    """Whether `chunk` carries part of the answer (not just a role or an empty delta)."""
    for choice in chunk.choices:
        delta = choice.delta
        if choice.finish_reason or delta.content or delta.reasoning or delta.tool_calls:
            return True
    return False


def _drop_finished(chunk: chat_pb2.ChatCompletionChunk, finished: set[int]) -> bool:
    """Remove the choices of `chunk` that already finished; False when nothing is left.

    OpenRouter's usage chunk repeats the finish chunk's choice (wire-formats §3.4); its usage is
    kept, its choice must not add anything to an answer that is complete.
    """
    choices = chunk.choices
    stale = [position for position, choice in enumerate(choices) if choice.index in finished]
    for position in reversed(stale):
        del choices[position]
    return bool(choices) or chunk.HasField("usage")
