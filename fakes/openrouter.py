"""Fake OpenRouter (reference/wire-formats.md §3 and the §6 checklist).

Serve it under ``/api/v1`` (``OPENROUTER_BASE_URL=http://127.0.0.1:PORT/api/v1``):

- ``POST /chat/completions``
  - non-stream: the JSON is preceded by whitespace keep-alive padding (sent as a separate write);
    ``provider``, ``native_finish_reason``, ``message.reasoning``/``reasoning_details`` for
    reasoning models, ``usage.cost``/``is_byok``/``cost_details``/token details; ``model`` is the
    catalog's (often dated) slug, not the requested id.
  - stream: ``: OPENROUTER PROCESSING`` comment first and again after the first token; every
    delta repeats ``role: "assistant"``; chunks carry ``provider`` and ``native_finish_reason``; a
    finish chunk, then a usage chunk that repeats ``finish_reason`` with non-empty ``choices``
    (always sent, with or without ``stream_options``); then ``[DONE]``.
  - mid-stream error (``error_after=K``): a chunk with a top-level ``error``
    (``{"code":"server_error","message":"Provider disconnected unexpectedly"}``) and
    ``finish_reason: "error"``, then the stream ends without ``[DONE]``.
  - attribution headers (``HTTP-Referer``, ``X-OpenRouter-Title``, ``X-Title``,
    ``X-OpenRouter-Categories``) are copied to ``record.notes["attribution"]``.
- ``GET /key`` (and the older ``/auth/key``): the key's limits and usage; 401 on a bad key.
- ``GET /models``: ``{"data":[…],"total_count":n,"links":{"next":null}}``, public by default.

Errors: ``{"error":{"code":<int = HTTP status>,"message":…,"metadata"?:…}}``; a missing header is
401 "Missing Authentication header", a wrong key 401 "No auth credentials found", an unknown
model 400 "<id> is not a valid model ID" with a top-level ``user_id``; faults 402/403 (moderation
metadata)/408/429 (``X-RateLimit-*`` headers)/502 (provider metadata)/503 in the same shape.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fakes import openai_shapes as oa
from fakes.app import BaseConfig, FakeApp, Incoming, accept_model, route
from fakes.behavior import Behavior
from fakes.catalog import OPENROUTER_MODELS, OpenRouterModel
from fakes.content import Completion, digest, max_tokens_of, plan_completion
from fakes.control import FakeControl
from fakes.wire import (
    SSE_DONE,
    Frame,
    Reply,
    json_reply,
    sse_comment,
    sse_data,
    sse_headers,
    text_reply,
)

__all__ = ["BASE_PATH", "OpenRouterConfig", "create_app"]

BASE_PATH = "/api/v1"
_PADDING = b"\n         \n\n         \n"
_PROCESSING = sse_comment("OPENROUTER PROCESSING")
_MODEL_SHAPE = re.compile(r"[\w.\-]+/[\w.\-]+(:[\w.\-]+)?")
_ATTRIBUTION = ("http-referer", "x-openrouter-title", "x-title", "x-openrouter-categories")
_MESSAGES = {
    400: "Bad request",
    401: "No auth credentials found",
    402: "Insufficient credits. Add more using https://openrouter.ai/settings/credits",
    403: "Your input was flagged by the moderation model. No credits were charged.",
    404: "Not Found",
    408: "Request timed out",
    429: "Rate limit exceeded: limit_rpm/fake/requests-per-minute",
    500: "Internal Server Error",
    502: "Provider returned error",
    503: "No endpoints found that can handle the requested parameters.",
}


@dataclass
class OpenRouterConfig(BaseConfig):
    """Settings of the OpenRouter fake (see `BaseConfig`)."""

    #: ``/models`` is reportedly public; set True to make it check the key too.
    models_require_auth: bool = False
    #: ``/key`` numbers; a None limit means unlimited.
    key_limit: float | None = 100.0
    key_usage: float = 25.5


def _error_body(
    status: int, message: str, code: int | str | None = None, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "code": code if code is not None else status}
    if metadata is not None:
        error["metadata"] = metadata
    return {"error": error}


def _cost(model: OpenRouterModel | None, prompt: int, completion: int) -> tuple[float, float]:
    pin, pout = (
        (float(model.prompt_price), float(model.completion_price)) if model else (1e-7, 2e-7)
    )
    return round(max(pin, 0.0) * prompt, 10), round(max(pout, 0.0) * completion, 10)


class _OpenRouter:
    """Request handlers; one instance per app."""

    def __init__(self, config: OpenRouterConfig) -> None:
        self.config = config
        self.tokens = frozenset(config.tokens)
        self.models = {m.id: m for m in OPENROUTER_MODELS}

    def error(
        self,
        status: int,
        message: str | None = None,
        *,
        code: int | str | None = None,
        metadata: dict[str, Any] | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        retry_after: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Reply:
        body = _error_body(
            status, message or _MESSAGES.get(status, "Internal Server Error"), code, metadata
        )
        if extra:
            body.update(extra)
        return json_reply(status, body, headers=headers or [], retry_after=retry_after)

    def auth_error(self, inc: Incoming) -> Reply | None:
        if inc.authorized(self.tokens):
            return None
        return self.error(
            401,
            "No auth credentials found" if inc.has_auth_header else "Missing Authentication header",
        )

    def fault(self, behavior: Behavior, model: str, prompt: str) -> Reply:
        status = behavior.status or 500
        message = _MESSAGES.get(status, "Internal Server Error")
        if behavior.text:
            return text_reply(status, message, retry_after=behavior.retry_after)
        metadata: dict[str, Any] | None = None
        headers: list[tuple[bytes, bytes]] = []
        if status == 403:
            metadata = {
                "reasons": ["harassment"],
                "flagged_input": prompt[:100],
                "provider_name": "OpenAI",
                "model_slug": model,
            }
        elif status == 429:
            reset = str(int(time.time() * 1000) + 60_000)
            limits = {
                "X-RateLimit-Limit": "20",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": reset,
            }
            metadata = {"headers": limits}
            headers = [(k.lower().encode(), v.encode()) for k, v in limits.items()]
        elif status == 502:
            metadata = {"provider_name": "DeepInfra", "raw": "upstream provider error"}
        return self.error(
            status,
            message,
            code=behavior.code,
            metadata=metadata,
            headers=headers,
            retry_after=behavior.retry_after,
        )

    # ---- /chat/completions -----------------------------------------------------------------

    async def chat(self, inc: Incoming) -> Reply:
        attribution = {k: v for k in _ATTRIBUTION if (v := inc.record.headers.get(k)) is not None}
        inc.record.notes["attribution"] = attribution
        if (denied := self.auth_error(inc)) is not None:
            return denied
        if inc.marker_error is not None:
            return self.error(400, inc.marker_error)
        if not inc.valid_json or not isinstance(inc.body, dict):
            return self.error(400, "Invalid JSON body")
        body = inc.json
        if not isinstance(body.get("messages"), list) and not isinstance(body.get("prompt"), str):
            return self.error(400, 'Input required: specify "prompt" or "messages"')
        model_field = body.get("model")
        requested = model_field if isinstance(model_field, str) else "openrouter/auto"
        base_id = requested.split(":", 1)[0]  # ":free" and other variants share the base model
        if not accept_model(base_id, self.models, self.config, _MODEL_SHAPE):
            return self.error(
                400,
                f"{requested} is not a valid model ID",
                extra={"user_id": "user_" + digest(str(inc.token))},
            )
        behavior = inc.behavior
        if behavior.status is not None:
            return self.fault(behavior, requested, inc.prompt)
        entry = self.models.get(base_id)
        schema = oa.json_schema_of(body)
        completion = plan_completion(
            body,
            inc.prompt,
            chunks=behavior.chunks or 0,
            max_tokens=max_tokens_of(body, "max_tokens", "max_completion_tokens"),
            schema=schema,
            call_id=oa.random_id("call_", 8),
        )
        reasoning = _wants_reasoning(entry, body)
        slug = entry.slug if entry else requested
        provider = entry.provider if entry else "DeepInfra"
        gen_id = f"gen-{int(time.time())}-{oa.random_alnum(20)}"
        stream = body.get("stream") is True
        inc.record.notes["stream"] = stream
        view = _View(
            gen_id,
            int(time.time()),
            slug,
            provider,
            completion,
            f"Thinking about {digest(inc.prompt)}." if reasoning else None,
        )
        usage = view.usage(entry)
        if not stream:
            return json_reply(
                200,
                view.completion_object(usage),
                prefix=_PADDING,
                headers=[(b"x-generation-id", gen_id.encode())],
            )
        reply = Reply(
            200,
            sse_headers(
                b"text/event-stream",
                (b"cache-control", b"no-cache"),
                (b"x-generation-id", gen_id.encode()),
            ),
            view.stream_frames(usage),
            stream=True,
        )
        if behavior.error_after is not None:
            code = behavior.code if behavior.code is not None else "server_error"
            reply.fail_midstream(behavior.error_after, [Frame(sse_data(view.error_chunk(code)))])
        return reply

    # ---- /key and /models ------------------------------------------------------------------

    async def key(self, inc: Incoming) -> Reply:
        if (denied := self.auth_error(inc)) is not None:
            return denied
        if inc.behavior.status is not None:
            return self.fault(inc.behavior, "", "")
        cfg = self.config
        token = inc.token or ""
        remaining = None if cfg.key_limit is None else round(cfg.key_limit - cfg.key_usage, 6)
        data = {
            "label": f"{token[:12]}...{token[-3:]}" if len(token) > 15 else token,
            "limit": cfg.key_limit,
            "limit_remaining": remaining,
            "limit_reset": "monthly",
            "include_byok_in_limit": False,
            "usage": cfg.key_usage,
            "usage_daily": 0.0,
            "usage_weekly": 0.0,
            "usage_monthly": cfg.key_usage,
            "byok_usage": 0.0,
            "byok_usage_daily": 0.0,
            "byok_usage_weekly": 0.0,
            "byok_usage_monthly": 0.0,
            "is_free_tier": False,
            "is_provisioning_key": False,
            "is_management_key": False,
            "expires_at": None,
            "rate_limit": {"requests": 1000, "interval": "1h", "note": "deprecated"},
        }
        return json_reply(200, {"data": data})

    async def list_models(self, inc: Incoming) -> Reply:
        if self.config.models_require_auth and (denied := self.auth_error(inc)) is not None:
            return denied
        if inc.behavior.status is not None:
            return self.fault(inc.behavior, "", "")
        data = [_model_item(m) for m in OPENROUTER_MODELS]
        return json_reply(200, {"data": data, "total_count": len(data), "links": {"next": None}})

    async def not_found(self, inc: Incoming) -> Reply:
        return self.error(404, "Not Found")


def _wants_reasoning(entry: OpenRouterModel | None, body: Mapping[str, Any]) -> bool:
    option = body.get("reasoning")
    if isinstance(option, Mapping):
        return not option.get("exclude") and option.get("enabled", True) is not False
    return bool(entry and entry.reasoning)


class _View:
    """Renders one completion in OpenRouter's non-stream and stream shapes."""

    def __init__(
        self,
        gen_id: str,
        created: int,
        model: str,
        provider: str,
        completion: Completion,
        reasoning: str | None,
    ) -> None:
        self.gen_id = gen_id
        self.created = created
        self.model = model
        self.provider = provider
        self.completion = completion
        self.reasoning = reasoning
        self.extra = {"provider": provider}

    def usage(self, entry: OpenRouterModel | None) -> dict[str, Any]:
        c = self.completion
        reasoning_tokens = 1 if self.reasoning else 0
        completion_tokens = c.completion_tokens + reasoning_tokens
        prompt_cost, completion_cost = _cost(entry, c.prompt_tokens, completion_tokens)
        total_cost = round(prompt_cost + completion_cost, 10)
        return {
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": c.prompt_tokens + completion_tokens,
            "cost": total_cost,
            "is_byok": False,
            "prompt_tokens_details": {
                "cached_tokens": 0,
                "cache_write_tokens": 0,
                "audio_tokens": 0,
                "video_tokens": 0,
            },
            "cost_details": {
                "upstream_inference_cost": total_cost,
                "upstream_inference_prompt_cost": prompt_cost,
                "upstream_inference_completions_cost": completion_cost,
            },
            "completion_tokens_details": {
                "reasoning_tokens": reasoning_tokens,
                "image_tokens": 0,
                "audio_tokens": 0,
            },
        }

    def completion_object(self, usage: dict[str, Any]) -> dict[str, Any]:
        c = self.completion
        message_extra: dict[str, Any] = {"refusal": None, "reasoning": self.reasoning}
        if self.reasoning:
            message_extra["reasoning_details"] = [
                {"type": "reasoning.text", "text": self.reasoning, "format": "unknown", "index": 0}
            ]
        return oa.chat_completion(
            self.gen_id,
            self.created,
            self.model,
            c,
            message_extra=message_extra,
            choice_extra={"native_finish_reason": c.finish},
            usage=usage,
            extra={"provider": self.provider, "system_fingerprint": None},
        )

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return oa.chunk(
            self.gen_id,
            self.created,
            self.model,
            delta,
            finish=finish,
            choice_extra={"native_finish_reason": finish},
            extra=self.extra,
        )

    def stream_frames(self, usage: dict[str, Any]) -> list[Frame]:
        c = self.completion
        frames = [Frame(_PROCESSING)]
        if self.reasoning:
            details = [
                {"type": "reasoning.text", "text": self.reasoning, "format": "unknown", "index": 0}
            ]
            delta = {
                "content": "",
                "role": "assistant",
                "reasoning": self.reasoning,
                "reasoning_details": details,
            }
            frames.append(Frame(sse_data(self._chunk(delta))))
        if c.tool_call is not None:
            for tool_delta in oa.tool_call_deltas(c.tool_call):
                frames.append(
                    Frame(
                        sse_data(
                            self._chunk(
                                {"content": None, "role": "assistant", "tool_calls": tool_delta}
                            )
                        ),
                        content=True,
                    )
                )
        for i, piece in enumerate(c.pieces):
            frames.append(
                Frame(sse_data(self._chunk({"content": piece, "role": "assistant"})), content=True)
            )
            if i == 0:
                # Comments can arrive anywhere while OpenRouter waits on the provider.
                frames.append(Frame(_PROCESSING))
        finish_delta = {"content": "", "role": "assistant"}
        frames.append(Frame(sse_data(self._chunk(finish_delta, c.finish))))
        # Not OpenAI-shaped: usage rides on a chunk that repeats finish_reason and has choices.
        usage_chunk = self._chunk(finish_delta, c.finish)
        usage_chunk["usage"] = usage
        frames.append(Frame(sse_data(usage_chunk)))
        frames.append(Frame(SSE_DONE))
        return frames

    def error_chunk(self, code: int | str) -> dict[str, Any]:
        chunk = {
            "id": self.gen_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "provider": self.provider,
            "error": {"code": code, "message": "Provider disconnected unexpectedly"},
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": ""},
                    "finish_reason": "error",
                    "native_finish_reason": "error",
                }
            ],
        }
        return chunk


def _model_item(m: OpenRouterModel) -> dict[str, Any]:
    params = [
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "tools",
        "tool_choice",
        "response_format",
    ]
    if m.reasoning:
        params += ["reasoning", "include_reasoning"]
    return {
        "id": m.id,
        "canonical_slug": m.slug,
        "hugging_face_id": "",
        "name": m.name,
        "created": 1735689600,
        "description": f"{m.name} (local fake catalog entry)",
        "context_length": m.context,
        "architecture": {
            "modality": "text->text",
            "input_modalities": ["text"],
            "output_modalities": ["text"],
            "tokenizer": "Other",
            "instruct_type": None,
        },
        # USD per token, as strings (recorded).
        "pricing": {
            "prompt": m.prompt_price,
            "completion": m.completion_price,
            "request": "0",
            "image": "0",
            "web_search": "0",
            "internal_reasoning": "0",
        },
        "top_provider": {
            "context_length": m.context,
            "max_completion_tokens": 16384,
            "is_moderated": m.provider == "OpenAI",
        },
        "per_request_limits": None,
        "supported_parameters": params,
        "default_parameters": {},
        "knowledge_cutoff": None,
        "expiration_date": None,
        "links": {"details": f"/api/v1/models/{m.id}/endpoints"},
    }


def create_app(config: OpenRouterConfig | None = None, **overrides: Any) -> FakeApp:
    """Build the OpenRouter fake. ``create_app(tokens=["sk-or-v1-test"])`` also works."""
    cfg = config or OpenRouterConfig(**overrides)
    handlers = _OpenRouter(cfg)
    control = FakeControl(
        Behavior(chunks=cfg.chunks, chunk_delay=cfg.chunk_delay), record_limit=cfg.record_limit
    )
    routes = [
        route(BASE_PATH + "/chat/completions", handlers.chat, methods=["POST"], chat=True),
        route(BASE_PATH + "/key", handlers.key, methods=["GET"]),
        route(BASE_PATH + "/auth/key", handlers.key, methods=["GET"]),
        route(BASE_PATH + "/models", handlers.list_models, methods=["GET"]),
    ]
    return FakeApp(
        provider="openrouter",
        base_path=BASE_PATH,
        routes=routes,
        control=control,
        not_found=handlers.not_found,
    )
