"""Fake Together AI (reference/wire-formats.md §4 and the §6 checklist).

Serve it under ``/v1`` (``TOGETHER_BASE_URL=http://127.0.0.1:PORT/v1``):

- ``POST /chat/completions``
  - non-stream: pretty-printed JSON with ``prompt: []``, ``metadata``, ``choices[].seed``,
    ``message.tool_calls: []`` and ``usage.reasoning_tokens``; ``X-Api-Received`` /
    ``X-Api-Call-Start`` / ``X-Api-Call-End`` / ``X-Inference-Version`` headers.
  - stream (``text/event-stream;charset=utf-8``): every choice has ``text`` and a delta with
    ``token_id`` (null on gpt-oss) and ``reasoning``; chunks carry ``usage: null``; the finish
    chunk's choice has ``seed``; a final ``choices: []`` usage chunk is **always** sent, even
    without ``stream_options``; then ``[DONE]``.
  - ``finish_reason`` is ``eos`` for a natural stop on Llama and Mistral models (``finish=eos`` /
    ``finish=stop`` markers force it), ``length`` at ``max_tokens``, ``tool_calls`` for tools.
  - mid-stream error (``error_after=K``; undocumented upstream): an OpenAI-style
    ``data: {"error":{…}}`` frame, then the stream ends without ``[DONE]`` [inferred].
- ``GET /models``: a **bare JSON array**; it doubles as the key check: a bad key gets 401
  ``{"error":{"message":"Unauthorized"}}``.

Errors are the OpenAI envelope plus a top-level request ``id``: bad key 401 ``invalid_api_key``,
unknown model (ids are case-sensitive) 404 ``model_not_available``; faults 400/402 (credit limit,
no ``id``, as documented)/403 (context length)/429/500/503/504/520/524/529; ``text=1`` sends a
``text/plain`` body instead.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fakes import openai_shapes as oa
from fakes.app import BaseConfig, FakeApp, Incoming, accept_model, route
from fakes.behavior import Behavior
from fakes.catalog import TOGETHER_MODELS, TogetherModel
from fakes.content import Completion, digest, max_tokens_of, plan_completion
from fakes.control import FakeControl
from fakes.wire import SSE_DONE, Frame, Reply, json_reply, sse_data, sse_headers, text_reply

__all__ = ["BASE_PATH", "TogetherConfig", "create_app"]

BASE_PATH = "/v1"
_MODEL_SHAPE = re.compile(r"[\w.\-]+/[\w.\-]+")
_EOS_PREFIXES = ("meta-llama/", "mistralai/")
# status -> (message, type, code) of Together's OpenAI-style error envelope.
_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Input validation error", "invalid_request_error", None),
    401: (
        "Invalid API key provided. You can find your API key at https://api.together.ai/settings/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
    ),
    403: (
        "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 8193.",
        "invalid_request_error",
        None,
    ),
    404: ("Unable to access model", "invalid_request_error", "model_not_available"),
    429: (
        "You have reached the rate limit specific to this model. Please try again later.",
        "rate_limit",
        "rate_limit_exceeded",
    ),
    500: ("Internal server error", "server_error", None),
    503: ("The server is overloaded or not ready yet.", "server_error", "service_unavailable"),
    504: ("Request timed out", "server_error", "timeout"),
}


@dataclass
class TogetherConfig(BaseConfig):
    """Settings of the Together fake (see `BaseConfig`)."""


def _request_id() -> str:
    # Recorded ids look like "omJGQiH-2kFHot-a046..." (three dash-separated parts).
    return f"{oa.random_alnum(7)}-{oa.random_alnum(6)}-{secrets.token_hex(8)}"


def _api_headers() -> list[tuple[bytes, bytes]]:
    now = str(int(time.time() * 1000)).encode()
    return [
        (b"x-api-received", now),
        (b"x-api-call-start", now),
        (b"x-api-call-end", now),
        (b"x-inference-version", b"v2"),
    ]


class _Together:
    """Request handlers; one instance per app."""

    def __init__(self, config: TogetherConfig) -> None:
        self.config = config
        self.tokens = frozenset(config.tokens)
        self.models = {m.id: m for m in TOGETHER_MODELS}
        self.lower_ids = {m.id.lower() for m in TOGETHER_MODELS}

    def error(
        self,
        status: int,
        message: str | None = None,
        *,
        code: str | int | None = None,
        retry_after: float | None = None,
    ) -> Reply:
        default_message, type_, default_code = _ERRORS.get(
            status, ("Server error", "server_error", None)
        )
        body = oa.openai_error(
            message or default_message, type_, str(code) if code is not None else default_code
        )
        return json_reply(status, {"id": _request_id(), **body}, retry_after=retry_after)

    def fault(self, behavior: Behavior) -> Reply:
        status = behavior.status or 500
        if behavior.text:
            return text_reply(
                status,
                _ERRORS.get(status, ("Server error", "", None))[0],
                retry_after=behavior.retry_after,
            )
        if status == 402:
            # Documented without the request id.
            return json_reply(
                402,
                {"error": {"message": "Credit limit exceeded", "type": "credit_limit"}},
                retry_after=behavior.retry_after,
            )
        return self.error(status, code=behavior.code, retry_after=behavior.retry_after)

    def known(self, model: str) -> bool:
        if model in self.models:
            return True
        if model.lower() in self.lower_ids:
            return False  # ids are case-sensitive: a wrong-case catalog id is refused
        return accept_model(model, (), self.config, _MODEL_SHAPE)

    # ---- /chat/completions -----------------------------------------------------------------

    async def chat(self, inc: Incoming) -> Reply:
        if not inc.authorized(self.tokens):
            return self.error(401)
        if inc.marker_error is not None:
            return self.error(400, inc.marker_error)
        if not inc.valid_json or not isinstance(inc.body, dict):
            return self.error(400, "Input validation error: invalid JSON body")
        body = inc.json
        model = body.get("model")
        if not isinstance(model, str):
            return self.error(400, "Input validation error: model is required")
        if not isinstance(body.get("messages"), list):
            return self.error(400, "Input validation error: messages is required")
        if not self.known(model):
            message = f"Unable to access model {model}. Please visit https://api.together.ai/models to view the list of supported models."
            return self.error(404, message)
        behavior = inc.behavior
        if behavior.status is not None:
            return self.fault(behavior)
        schema = oa.json_schema_of(body)
        fmt = body.get("response_format")
        if schema is not None and isinstance(fmt, Mapping) and fmt.get("schema"):
            schema = fmt["schema"]  # the together SDK puts the schema at top level
        completion = plan_completion(
            body,
            inc.prompt,
            chunks=behavior.chunks or 0,
            max_tokens=max_tokens_of(body, "max_tokens", "max_completion_tokens"),
            schema=schema,
            call_id=oa.random_id("call_", 12),
        )
        finish: str = completion.finish
        if finish == "stop":
            finish = behavior.finish or ("eos" if model.startswith(_EOS_PREFIXES) else "stop")
        view = _View(_request_id(), int(time.time()), model, completion, finish, body.get("seed"))
        stream = body.get("stream") is True
        inc.record.notes.update(stream=stream, finish_reason=finish)
        if not stream:
            return json_reply(200, view.completion_object(), pretty=True, headers=_api_headers())
        headers = sse_headers(
            b"text/event-stream;charset=utf-8",
            (b"cache-control", b"no-cache, no-transform"),
            *_api_headers(),
        )
        reply = Reply(200, headers, view.stream_frames(), stream=True)
        if behavior.error_after is not None:
            error = oa.openai_error(
                "Internal server error while streaming",
                "server_error",
                str(behavior.code) if behavior.code is not None else None,
            )
            reply.fail_midstream(behavior.error_after, [Frame(sse_data(error))])
        return reply

    # ---- /models ---------------------------------------------------------------------------

    async def list_models(self, inc: Incoming) -> Reply:
        if not inc.authorized(self.tokens):
            return json_reply(401, {"error": {"message": "Unauthorized"}})
        if inc.behavior.status is not None:
            return self.fault(inc.behavior)
        return json_reply(200, [_model_item(m) for m in TOGETHER_MODELS])

    async def not_found(self, inc: Incoming) -> Reply:
        return self.error(404, "Not Found", code="not_found")


class _View:
    """Renders one completion in Together's non-stream and stream shapes."""

    def __init__(
        self, rid: str, created: int, model: str, completion: Completion, finish: str, seed: Any
    ) -> None:
        self.rid = rid
        self.created = created
        self.model = model
        self.completion = completion
        self.finish = finish
        self.gpt_oss = model.startswith("openai/gpt-oss")
        # The seed actually used: the request's, else one derived from the request id.
        self.seed = (
            seed if isinstance(seed, int) and not isinstance(seed, bool) else int(digest(rid), 16)
        )

    def usage(self) -> dict[str, Any]:
        return {**self.completion.usage(), "reasoning_tokens": 0}

    def completion_object(self) -> dict[str, Any]:
        c = self.completion
        message_extra: dict[str, Any] = {
            "tool_calls": oa.message_tool_calls(c.tool_call) if c.tool_call else []
        }
        if self.gpt_oss:
            message_extra["reasoning"] = "The user wants a reply."
        obj = oa.chat_completion(
            self.rid,
            self.created,
            self.model,
            c,
            finish=self.finish,
            message_extra=message_extra,
            choice_extra={"seed": self.seed},
            usage=self.usage(),
        )
        # Key order like the recording: metadata and prompt before choices.
        return {
            "id": obj["id"],
            "object": obj["object"],
            "created": obj["created"],
            "model": obj["model"],
            "metadata": {"weight_version": "default"},
            "prompt": [],
            "choices": obj["choices"],
            "usage": obj["usage"],
        }

    def _token_id(self, piece: str) -> int | None:
        return None if self.gpt_oss else int(digest(piece), 16) % 128_000

    def _chunk(
        self,
        text: str,
        delta: dict[str, Any],
        finish: str | None = None,
        *,
        usage_key: bool = True,
        seed: bool = False,
    ) -> dict[str, Any]:
        choice_extra: dict[str, Any] = {"text": text}
        if seed:
            choice_extra["seed"] = self.seed
        extra = {"usage": None} if usage_key else None
        return oa.chunk(
            self.rid,
            self.created,
            self.model,
            delta,
            finish=finish,
            choice_extra=choice_extra,
            extra=extra,
        )

    def stream_frames(self) -> list[Frame]:
        c = self.completion
        first = {"token_id": None, "role": "assistant", "content": "", "reasoning": None}
        frames = [Frame(sse_data(self._chunk("", first, usage_key=False)))]
        if c.tool_call is not None:
            for tool_delta in oa.tool_call_deltas(c.tool_call):
                delta: dict[str, Any] = {
                    "token_id": None,
                    "role": "assistant",
                    "content": None,
                    "reasoning": None,
                    "tool_calls": tool_delta,
                }
                frames.append(Frame(sse_data(self._chunk("", delta)), content=True))
        for piece in c.pieces:
            delta = {
                "token_id": self._token_id(piece),
                "role": "assistant",
                "content": piece,
                "reasoning": None,
            }
            frames.append(Frame(sse_data(self._chunk(piece, delta)), content=True))
        last = {"token_id": None, "role": "assistant", "content": "", "reasoning": None}
        frames.append(Frame(sse_data(self._chunk("", last, self.finish, seed=True))))
        # Sent whether or not the client asked for stream_options.include_usage.
        frames.append(
            Frame(
                sse_data(
                    oa.chunk(
                        self.rid, self.created, self.model, None, extra={"usage": self.usage()}
                    )
                )
            )
        )
        frames.append(Frame(SSE_DONE))
        return frames


def _model_item(m: TogetherModel) -> dict[str, Any]:
    return {
        "id": m.id,
        "object": "model",
        "created": 1735689600,
        "type": m.type,
        "running": False,
        "display_name": m.display_name,
        "organization": m.organization,
        "link": f"https://huggingface.co/{m.id}",
        "license": "other",
        "context_length": m.context,
        "config": {
            "chat_template": None,
            "stop": ["<|eot_id|>"],
            "bos_token": None,
            "eos_token": None,
        },
        # USD per 1M tokens, as numbers.
        "pricing": {
            "hourly": 0,
            "input": m.price_in,
            "output": m.price_out,
            "base": 0,
            "finetune": 0,
        },
    }


def create_app(config: TogetherConfig | None = None, **overrides: Any) -> FakeApp:
    """Build the Together fake. ``create_app(tokens=["tgp_v1_test"])`` also works."""
    cfg = config or TogetherConfig(**overrides)
    handlers = _Together(cfg)
    control = FakeControl(
        Behavior(chunks=cfg.chunks, chunk_delay=cfg.chunk_delay), record_limit=cfg.record_limit
    )
    routes = [
        route(BASE_PATH + "/chat/completions", handlers.chat, methods=["POST"], chat=True),
        route(BASE_PATH + "/models", handlers.list_models, methods=["GET"]),
    ]
    return FakeApp(
        provider="together",
        base_path=BASE_PATH,
        routes=routes,
        control=control,
        not_found=handlers.not_found,
    )
