"""Cloudflare Workers AI: the default provider (SPEC §6, reference/wire-formats.md §2 and §5.2).

Requests go to the native ``POST {base}/accounts/{id}/ai/run/{model}`` endpoint, or to the
OpenAI-compatible ``POST {base}/accounts/{id}/ai/v1/chat/completions`` when the model needs it
(`V1_MODEL_PREFIXES`: gpt-oss does not chat or stream on ``/ai/run``) or the request uses an
OpenAI field the native schema cannot express (`stop`, a `tool_choice` other than ``auto``,
``parallel_tool_calls: false``). Replies are read by `workers_ai_stream`, the model list comes
from `workers_ai_catalog`.

Request mapping decisions (SPEC §2: nothing a client sends is silently dropped):

- `max_tokens` is always sent (Workers AI's own default of 256 truncates silently): the
  smaller of `max_tokens`/`max_completion_tokens` when given, else `default_max_tokens`.
- Refused on both endpoints (`errors.unsupported_parameter`, naming the field): ``n > 1``,
  ``logprobs: true``, ``top_logprobs > 0``, a non-empty `logit_bias`, and every extra field not
  in `NATIVE_EXTRA_FIELDS` / `V1_EXTRA_FIELDS` (e.g. OpenRouter's `provider`, OpenAI's `store`).
  ``n: 1``, ``logprobs: false`` and ``top_logprobs: 0`` ask for the default and are accepted.
- Native endpoint only: penalties must be 0..2 (the schema's range). A negative penalty is
  refused rather than clamped: clamping to 0 would turn "encourage repetition" into "neutral"
  without telling anyone. Seeds must be 1..9999999999 (the schema's range); others are refused.
- Native messages: text-part arrays are joined with newlines (vLLM's rule for text-only
  templates) except on vision models, `null` content becomes ``""``, `developer` becomes
  `system` (native chat templates know no developer role), the deprecated `function` role and
  media parts on text-only models are refused. ``json_schema`` formats are unwrapped to the raw
  schema (its `name`/`description`/`strict` have no native home: Cloudflare always enforces the
  schema). ``response_format: text`` and ``tool_choice: auto`` are the native defaults and are
  not sent. `user` (an opaque end-user id that never changes the answer) has no native field
  and is only forwarded on ``/ai/v1``.
- The model id goes into the URL path, so it must look like ``@cf/org/name`` (or ``@hf/``):
  anything else (``..``, ``?``, ``#``) is `model_not_found`, never a different URL.

The credential (`UpstreamCall.api_key`) is only ever put in the Authorization header; it is
never logged and is scrubbed from any upstream error text.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import orjson
from yarl import URL

from gateway_service import errors
from gateway_service.providers.base import ProviderName, UpstreamCall
from gateway_service.providers.workers_ai_catalog import WorkersAICatalog
from gateway_service.providers.workers_ai_stream import (
    PROVIDER,
    StreamReader,
    completion_from_body,
    completion_to_chunks,
    parse_error,
    reported_status,
)
from gateway_service.upstream_http import (
    READ_ERRORS,
    ErrorParser,
    Headers,
    HttpSettings,
    UpstreamClient,
    UpstreamResponse,
    drain_after_done,
    ensure_rpc_error,
    open_stream,
)
from native1api.gateway.v1 import chat_pb2, gateway_service_pb2
from rpc_common.openai import UpstreamFormatError, UpstreamReportedError, request_to_json
from rpc_common.status import RpcError

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "NATIVE_EXTRA_FIELDS",
    "V1_EXTRA_FIELDS",
    "V1_MODEL_PREFIXES",
    "UpstreamPlan",
    "WorkersAI",
    "parse_error",
    "plan_request",
]

DEFAULT_MAX_TOKENS: Final = 1024
#: Models served only through the OpenAI-compatible endpoint (gpt-oss takes Responses-style
#: input on /ai/run and answers JSON even when asked to stream). Data, easy to extend.
V1_MODEL_PREFIXES: Final[tuple[str, ...]] = ("@cf/openai/gpt-oss-",)
#: Extra (untyped) request fields Workers AI accepts on /ai/run: its sampling knobs, LoRA
#: adapters, raw prompting, `options` (e.g. rejectIfBusy) and reasoning effort.
NATIVE_EXTRA_FIELDS: Final = frozenset(
    {"top_k", "repetition_penalty", "lora", "raw", "options", "reasoning_effort"}
)
#: Extra fields forwarded on /ai/v1 (`lora` and `raw` belong to the native schema only).
V1_EXTRA_FIELDS: Final = frozenset({"top_k", "repetition_penalty", "options", "reasoning_effort"})
NATIVE_SEED_RANGE: Final = (1, 9_999_999_999)
_NATIVE_PENALTY_MIN: Final = 0.0

# Path-safe model ids only: each segment starts with a letter or digit, so no `.`/`..` segment,
# and `?`, `#`, `%` or `/` beyond the three segments cannot reach the URL.
_MODEL_ID: Final = re.compile(r"@(?:cf|hf)/[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_TEXT_PART_TYPES: Final = frozenset({"text", "refusal"})
_VISION_PART_TYPES: Final = frozenset({"text", "image_url"})
_DONE: Final = "[DONE]"
_SSE: Final = "text/event-stream"
# Parsed request URLs kept per endpoint (one per model id); past this many the map starts over.
_MAX_CACHED_URLS: Final = 1024


@dataclass(frozen=True, slots=True)
class UpstreamPlan:
    """Where and what to send for one request."""

    url: str
    body: dict[str, Any]
    max_tokens: int
    """The limit sent upstream (`length` is derived from it)."""
    v1: bool
    """True for the OpenAI-compatible endpoint."""
    tool_names: frozenset[str]
    """Offered tools whose calls a native stream may write as JSON text (see StreamReader)."""


def plan_request(
    call: UpstreamCall,
    *,
    stream: bool,
    run_url: str,
    v1_url: str,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    v1_model_prefixes: tuple[str, ...] = V1_MODEL_PREFIXES,
    is_vision: Callable[[str], bool] = lambda _model: False,
) -> UpstreamPlan:
    """Map one validated request onto a Workers AI endpoint and body, or refuse it.

    Raises `RpcError` (unsupported_parameter / model_not_found) before anything is sent.
    """
    req = call.request
    model = call.model
    if not _MODEL_ID.fullmatch(model):
        raise errors.model_not_found(req.model)
    _refuse_everywhere(req)
    max_tokens = _max_tokens(req, default_max_tokens)
    source = request_to_json(req)
    v1_reason = "model" if model.startswith(v1_model_prefixes) else _needs_v1(req)
    if v1_reason is not None:
        return UpstreamPlan(
            url=v1_url,
            body=_v1_body(source, model, stream, max_tokens, v1_reason),
            max_tokens=max_tokens,
            v1=True,
            tool_names=frozenset(),
        )
    body = _native_body(req, source, stream, max_tokens, is_vision(model))
    tool_names = (
        frozenset(tool.function.name for tool in req.tools) if stream and req.tools else frozenset()
    )
    return UpstreamPlan(
        url=run_url + model, body=body, max_tokens=max_tokens, v1=False, tool_names=tool_names
    )


def _unsupported(param: str, detail: str = "") -> RpcError:
    return errors.unsupported_parameter(PROVIDER, param, detail)


def _refuse_everywhere(req: chat_pb2.ChatCompletionRequest) -> None:
    """What neither Workers AI endpoint can honour."""
    if req.HasField("n") and req.n != 1:
        raise _unsupported("n", "Workers AI returns one choice per request; omit n or send 1.")
    if req.logprobs:
        raise _unsupported("logprobs", "Workers AI does not return log probabilities.")
    if req.HasField("top_logprobs") and req.top_logprobs > 0:
        raise _unsupported("top_logprobs", "Workers AI does not return log probabilities.")
    if req.logit_bias:
        raise _unsupported("logit_bias", "Workers AI cannot bias token logits.")


def _max_tokens(req: chat_pb2.ChatCompletionRequest, default: int) -> int:
    limits = []
    if req.HasField("max_tokens"):
        limits.append(req.max_tokens)
    if req.HasField("max_completion_tokens"):
        limits.append(req.max_completion_tokens)
    # Both given: the tighter one is what the client can rely on.
    return min(limits) if limits else default


def _needs_v1(req: chat_pb2.ChatCompletionRequest) -> str | None:
    """The first OpenAI field the native schema cannot express (the request then goes to
    /ai/v1, where it is forwarded as sent), or None."""
    if req.stop:
        return "stop"
    if req.HasField("tool_choice"):
        choice = req.tool_choice
        if choice.WhichOneof("choice") == "function_name" or choice.mode in ("none", "required"):
            return "tool_choice"
    if req.HasField("parallel_tool_calls") and not req.parallel_tool_calls:
        return "parallel_tool_calls"
    return None


def _check_extras(source: dict[str, Any], allowed: frozenset[str], v1_reason: str | None) -> None:
    for key in source.keys() - _TYPED_KEYS:
        if key in allowed:
            continue
        detail = ""
        if v1_reason is not None and key in NATIVE_EXTRA_FIELDS:
            why = "the model" if v1_reason == "model" else f"'{v1_reason}'"
            detail = (
                "It is only accepted by the native /ai/run endpoint, and this request needs "
                f"the OpenAI-compatible endpoint because of {why}."
            )
        raise _unsupported(key, detail)


# The top-level keys `request_to_json` emits for typed proto fields; every other key is an extra.
_TYPED_KEYS: Final = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "user",
    }
)


def _v1_body(
    source: dict[str, Any], model: str, stream: bool, max_tokens: int, v1_reason: str
) -> dict[str, Any]:
    """The OpenAI body for /ai/v1: the request as sent, with the limit and usage asked for."""
    _check_extras(source, V1_EXTRA_FIELDS, v1_reason)
    body = source
    body["model"] = model
    body.pop("max_completion_tokens", None)
    body["max_tokens"] = max_tokens
    if stream:
        body["stream"] = True
        # The gateway always meters usage (SPEC §6), whatever the client asked for.
        body["stream_options"] = {"include_usage": True}
    return body


def _native_body(
    req: chat_pb2.ChatCompletionRequest,
    source: dict[str, Any],
    stream: bool,
    max_tokens: int,
    vision: bool,
) -> dict[str, Any]:
    """The /ai/run body (wire-formats §2.2)."""
    _check_extras(source, NATIVE_EXTRA_FIELDS, None)
    body: dict[str, Any] = {
        "messages": [
            _native_message(message, index, vision)
            for index, message in enumerate(source["messages"])
        ],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
    for key in ("temperature", "top_p"):
        if key in source:
            body[key] = source[key]
    if req.HasField("seed"):
        low, high = NATIVE_SEED_RANGE
        if not low <= req.seed <= high:
            raise _unsupported("seed", f"Workers AI accepts seeds from {low} to {high}.")
        body["seed"] = req.seed
    for key in ("presence_penalty", "frequency_penalty"):
        if key in source:
            if getattr(req, key) < _NATIVE_PENALTY_MIN:
                raise _unsupported(
                    key,
                    "Workers AI accepts penalties from 0 to 2; a negative value cannot be sent "
                    "as it is, and changing it would change what the request means.",
                )
            body[key] = source[key]
    if "tools" in source:
        body["tools"] = source["tools"]
    fmt = source.get("response_format")
    if fmt is not None and fmt.get("type") != "text":
        if fmt.get("type") == "json_schema":
            # Cloudflare takes the raw schema, not OpenAI's {name, schema, strict} wrapper.
            fmt = {"type": "json_schema", "json_schema": fmt["json_schema"].get("schema", {})}
        body["response_format"] = fmt
    for key in source.keys() - _TYPED_KEYS:
        body[key] = source[key]
    return body


def _native_message(message: dict[str, Any], index: int, vision: bool) -> dict[str, Any]:
    """One message for /ai/run. `message` is a fresh dict from `request_to_json`: edited in place."""
    role = message.get("role")
    if role == "developer":
        message["role"] = "system"
    elif role == "function":
        raise _unsupported(
            f"messages[{index}].role",
            "The deprecated 'function' role has no Workers AI equivalent; use 'tool' messages.",
        )
    content = message.get("content")
    if content is None:
        message["content"] = ""
    elif isinstance(content, list):
        message["content"] = _native_content(content, index, vision)
    return message


def _native_content(parts: list[Any], index: int, vision: bool) -> str | list[Any]:
    kinds = [part.get("type") for part in parts]
    if all(kind in _TEXT_PART_TYPES for kind in kinds):
        return "\n".join(part.get("text") or part.get("refusal") or "" for part in parts)
    allowed = _VISION_PART_TYPES if vision else _TEXT_PART_TYPES
    for position, kind in enumerate(kinds):
        if kind not in allowed and kind != "refusal":
            what = "this model takes text only" if not vision else "it takes text and images"
            raise _unsupported(
                f"messages[{index}].content[{position}].type",
                f"Content parts of type '{kind}' cannot be sent to Workers AI: {what}.",
            )
    # A vision model: keep the parts (a refusal part is text for the model).
    return [
        {"type": "text", "text": part["refusal"]} if part.get("type") == "refusal" else part
        for part in parts
    ]


class WorkersAI:
    """The Workers AI `Provider` (see `gateway_service.providers.base`)."""

    name: ProviderName = "workers-ai"

    def __init__(
        self,
        http: UpstreamClient,
        settings: HttpSettings,
        base_url: str,
        account_id: str,
        *,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        v1_model_prefixes: tuple[str, ...] = V1_MODEL_PREFIXES,
        catalog: WorkersAICatalog | None = None,
    ) -> None:
        if default_max_tokens < 1:
            raise ValueError("default_max_tokens must be at least 1")
        if not account_id:
            raise ValueError("account_id is required")
        self._http = http
        self._settings = settings
        self._default_max_tokens = default_max_tokens
        self._v1_model_prefixes = v1_model_prefixes
        account_url = f"{base_url.rstrip('/')}/accounts/{quote(account_id, safe='')}/ai"
        self._run_url = account_url + "/run/"
        self._v1_url = account_url + "/v1/chat/completions"
        self.catalog = catalog or WorkersAICatalog(http, settings, base_url, account_id)
        # Built once: the static request headers, and each endpoint's parsed URL.
        self._stream_headers = {"Content-Type": "application/json", "Accept": _SSE}
        self._json_headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self._urls: dict[str, URL] = {}

    def max_tokens_for(self, request: chat_pb2.ChatCompletionRequest) -> int:
        """The `max_tokens` this adapter sends for `request` (admission reserves it)."""
        return _max_tokens(request, self._default_max_tokens)

    # ---- Provider ------------------------------------------------------------------------------

    async def complete(self, call: UpstreamCall) -> chat_pb2.ChatCompletion:
        plan = self.plan(call, stream=False)
        try:
            async with asyncio.timeout(self._settings.total_timeout_seconds):
                response = await self._open(plan, call, stream=False)
                try:
                    raw = await response.read()
                finally:
                    await response.aclose()
        except TimeoutError:
            raise errors.timed_out(PROVIDER) from None
        except READ_ERRORS as exc:
            raise ensure_rpc_error(exc, PROVIDER) from None
        return self._completion(raw, call, plan)

    async def stream(
        self, call: UpstreamCall
    ) -> AsyncGenerator[chat_pb2.ChatCompletionChunk, None]:
        plan = self.plan(call, stream=True)
        deadline = time.monotonic() + self._settings.total_timeout_seconds
        response = await self._open(plan, call, stream=True)
        try:
            if _SSE not in response.content_type:
                # gpt-oss style: a streaming request answered with one JSON body.
                raw = await response.read()
                for whole in completion_to_chunks(self._completion(raw, call, plan)):
                    yield whole
                return
            reader = StreamReader(max_tokens=plan.max_tokens, tool_names=plan.tool_names)
            feed = reader.feed
            monotonic = time.monotonic
            async with contextlib.aclosing(response.events()) as events:
                async for event in events:
                    data = event.data
                    if data.startswith(_DONE):
                        break
                    if monotonic() > deadline:
                        raise errors.timed_out(PROVIDER)
                    if not data:
                        continue  # an event without data (e.g. `event:` only) carries nothing
                    try:
                        piece = feed(data)
                    except UpstreamFormatError as exc:
                        raise errors.protocol_error(PROVIDER, str(exc)) from None
                    except UpstreamReportedError as exc:
                        # The answer is cut off; what the provider said is the best detail.
                        raise errors.stream_interrupted(PROVIDER, exc.message[:200]) from None
                    if piece is not None:
                        yield piece
                else:
                    # The body ended cleanly but without [DONE]: the answer may be incomplete,
                    # and a finish chunk now would pretend it was not (SPEC §2).
                    raise errors.stream_interrupted(PROVIDER, "no [DONE] before the end")
                for closing in reader.finish():
                    yield closing
                await drain_after_done(events)
        except READ_ERRORS as exc:
            raise ensure_rpc_error(exc, PROVIDER) from None
        finally:
            # Also on cancellation / generator close: drop the upstream connection at once.
            await response.aclose()

    async def list_models(
        self, api_key: str, *, byok: bool = False
    ) -> list[gateway_service_pb2.Model]:
        return await self.catalog.list_models(api_key, byok=byok)

    # ---- helpers -------------------------------------------------------------------------------

    def plan(self, call: UpstreamCall, *, stream: bool) -> UpstreamPlan:
        """The endpoint and body for `call` (public for tests and diagnostics)."""
        return plan_request(
            call,
            stream=stream,
            run_url=self._run_url,
            v1_url=self._v1_url,
            default_max_tokens=self._default_max_tokens,
            v1_model_prefixes=self._v1_model_prefixes,
            is_vision=self.catalog.is_vision,
        )

    def _url(self, url: str) -> URL:
        urls = self._urls
        parsed = urls.get(url)
        if parsed is None:
            if len(urls) >= _MAX_CACHED_URLS:
                urls.clear()
            parsed = urls[url] = URL(url)
        return parsed

    async def _open(
        self, plan: UpstreamPlan, call: UpstreamCall, *, stream: bool
    ) -> UpstreamResponse:
        headers = self._stream_headers if stream else self._json_headers
        return await open_stream(
            self._http,
            "POST",
            self._url(plan.url),
            headers={**headers, "Authorization": f"Bearer {call.api_key}"},
            body=orjson.dumps(plan.body),
            provider=PROVIDER,
            byok=call.byok,
            parse_error=_scrubbing(call.api_key),
            settings=self._settings,
        )

    def _completion(
        self, raw: bytes, call: UpstreamCall, plan: UpstreamPlan
    ) -> chat_pb2.ChatCompletion:
        try:
            return completion_from_body(
                orjson.loads(raw), model=call.request.model, max_tokens=plan.max_tokens
            )
        except orjson.JSONDecodeError:
            raise errors.protocol_error(PROVIDER, "the body is not JSON") from None
        except UpstreamFormatError as exc:
            raise errors.protocol_error(PROVIDER, str(exc)) from None
        except UpstreamReportedError as exc:
            raise errors.from_upstream_status(
                PROVIDER, _scrub(reported_status(exc), call.api_key), byok=call.byok
            ) from None


def _scrub(failure: errors.UpstreamHTTPError, api_key: str) -> errors.UpstreamHTTPError:
    """Never let the credential reach a message, even if an upstream echoes it."""
    if api_key and api_key in failure.message:
        failure.message = failure.message.replace(api_key, "[redacted]")
    return failure


def _scrubbing(api_key: str) -> ErrorParser:
    def parse(status: int, body: bytes, headers: Headers) -> errors.UpstreamHTTPError:
        return _scrub(parse_error(status, body, headers), api_key)

    return parse
