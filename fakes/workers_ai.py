"""Fake Cloudflare Workers AI (reference/wire-formats.md §2 and the §6 checklist).

Serve it under ``/client/v4`` (``WORKERS_AI_BASE_URL=http://127.0.0.1:PORT/client/v4``):

- ``POST /accounts/{acct}/ai/run/{model}``: the native endpoint.
  - non-stream: ``{"result":{"response":…,"usage":…},"success":true,"errors":[],"messages":[]}``;
    tool calls flat (``response:null``, ``arguments`` an object; llama-3.x) or OpenAI-like
    (``id``/``type``/``function.arguments`` string, no ``response`` key; llama-4 and newer);
    ``json_schema`` gives an object ``response`` and ``tool_calls: []``; vLLM-served models
    (`DEFAULT_OPENAI_FRAME_MODELS`) return a full ``chat.completion`` inside ``result``.
  - stream: ``data: {"response":"tok","p":"<pad>"}`` frames, a bare ``data: {}`` after the first
    token, a trailing ``{"response":"","p":…}`` and ``{"tool_calls":[],"p":…}``, then
    ``{"response":"","usage":…}`` and ``[DONE]``; never a finish_reason. Tool calls stream as JSON
    text in ``response`` (flat models) or as top-level ``tool_calls`` deltas (newer models).
    vLLM-served models stream OpenAI ``chat.completion.chunk`` frames with usage on every chunk
    and a final ``choices: []``.
  - ``@cf/openai/gpt-oss-*`` take Responses-style ``input``/``instructions`` and answer JSON
    even with ``stream:true`` (marker ``shape=json`` forces that on any model).
  - no ``max_tokens``: the model default of 256 applies and silently truncates; the record notes
    ``max_tokens_defaulted`` and ``truncated_by_default``.
  - input is validated like the llama schemas (string ``content`` on text-only models, numeric
    ranges): failures are 400 with code 5006 "Bad input" [inferred wording].
- ``POST /accounts/{acct}/ai/v1/chat/completions``: OpenAI-compatible; honours
  ``stream_options.include_usage``; faults use the Cloudflare envelope unless ``envelope=openai``.
- ``GET /accounts/{acct}/ai/models/search``: ``result`` + ``result_info`` (whose ``total_count``
  counts the whole catalog, not the filtered result, like the recording); bad token: 400 10001.
- ``GET /user/tokens/verify`` and ``GET /accounts/{acct}/tokens/verify``.

Errors use the v4 envelope: bad token 401 ``10000``; unknown model 400 ``7000`` "No route for that
URI"; faults by status: 429 ``3040`` (``code=3036`` for the neuron quota), 500 as a text body,
408 ``3007``, 413 ``3006``, 403 ``5016``, 404 ``3042``, 502/503 ``7009``. ``options.rejectIfBusy``
with ``busy`` gives 429 3040 at once; without it a busy fake queues (0.5 s extra delay).
A mid-stream error (``error_after=K``) is a v4 envelope as a data frame, then the stream ends
without ``[DONE]``; the real in-stream format is unknown [inferred].
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from fakes import openai_shapes as oa
from fakes.app import BaseConfig, FakeApp, Incoming, accept_model, route
from fakes.behavior import Behavior
from fakes.catalog import WORKERS_AI_MODELS, WORKERS_AI_TEXT_GENERATION, CfModel
from fakes.content import Completion, max_tokens_of, plan_completion, split_text
from fakes.control import FakeControl
from fakes.wire import (
    SSE_DONE,
    Frame,
    Reply,
    json_bytes,
    json_reply,
    sse_data,
    sse_headers,
    text_reply,
)

__all__ = ["BASE_PATH", "DEFAULT_OPENAI_FRAME_MODELS", "WorkersAIConfig", "create_app"]

BASE_PATH = "/client/v4"

#: Newer vLLM-served models that answer OpenAI-shaped objects even on /ai/run [inferred list].
DEFAULT_OPENAI_FRAME_MODELS: frozenset[str] = frozenset(
    {
        "@cf/qwen/qwen3-30b-a3b-fp8",
        "@cf/google/gemma-4-26b-a4b-it",
        "@cf/zai-org/glm-4.7-flash",
        "@cf/zai-org/glm-5.2",
        "@cf/nvidia/nemotron-3-120b-a12b",
        "@cf/moonshotai/kimi-k2.6",
        "@cf/moonshotai/kimi-k2.7-code",
        "@cf/deepseek-ai/deepseek-v4-flash-0731",
        "@cf/deepseek-ai/deepseek-v4-pro-0813",
    }
)
# llama-3.x and the older families emit flat tool calls; llama-4 and newer ones OpenAI-like calls.
_FLAT_TOOL_PREFIXES = ("@cf/meta/llama-3", "@cf/meta-llama/", "@cf/mistral/", "@hf/")
_MODEL_SHAPE = re.compile(r"@(cf|hf)/[\w.\-]+/[\w.\-]+")
_PAD = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_BUSY_QUEUE_DELAY = 0.5

# Workers AI internal error codes (platform/errors.mdx) -> (HTTP status, message).
_CODES: dict[int, tuple[int, str]] = {
    3003: (400, "Request is missing headers or body"),
    3006: (413, "Request is too large"),
    3007: (408, "Request timeout"),
    3008: (408, "Request aborted"),
    3023: (403, "Account blocked"),
    3036: (
        429,
        "You have used up your daily free allocation of 10,000 neurons, please upgrade to Cloudflare's Workers Paid plan if you would like to continue usage.",
    ),
    3039: (400, "Finetune missing required files"),
    3040: (429, "Capacity temporarily exceeded, please try again."),
    3041: (403, "Account not allowed for private model"),
    3042: (404, "Invalid model ID"),
    3043: (500, "Internal server error"),
    5004: (400, "Invalid data type for base64 input"),
    5005: (405, "Model does not support LoRA"),
    5006: (400, "AiError: Bad input"),
    5007: (400, "No such model or task"),
    5016: (403, "Model agreement: Prior to using this model, you must submit the prompt 'agree'"),
    5018: (403, "Account not allowed for private model"),
    5019: (405, "Deprecated SDK version"),
    7000: (400, "No route for that URI"),
    7009: (503, "Upstream service unavailable"),
    10000: (401, "Authentication error"),
}
_CODE_FOR_STATUS = {
    400: 3003,
    401: 10000,
    403: 5016,
    404: 3042,
    405: 5019,
    408: 3007,
    413: 3006,
    429: 3040,
    500: 3043,
}
_OPENAI_TYPE_FOR_STATUS = {
    401: "invalid_request_error",
    429: "rate_limit_error",
    404: "invalid_request_error",
}

# Numeric ranges of the native schema (llama-3.2-3b-instruct.json), enforced on /ai/run.
_RANGES: dict[str, tuple[float, float, bool]] = {
    "max_tokens": (1, 131072, True),
    "temperature": (0, 5, False),
    "top_p": (0, 2, False),
    "top_k": (1, 50, True),
    "seed": (1, 9999999999, True),
    "repetition_penalty": (0, 2, False),
    "frequency_penalty": (0, 2, False),
    "presence_penalty": (0, 2, False),
}


@dataclass
class WorkersAIConfig(BaseConfig):
    """Settings of the Workers AI fake (see `BaseConfig` for tokens, chunks, ...)."""

    #: Only this account id is served (others get the 10000 auth error); None accepts any.
    account_id: str | None = None
    #: The native default that silently truncates when a request has no max_tokens.
    default_max_tokens: int = 256
    #: Unknown models get 400 7000 like the real API; set False to accept any ``@cf/org/name``.
    strict_models: bool = True
    #: Models that answer OpenAI-shaped objects on /ai/run.
    openai_frame_models: Collection[str] = DEFAULT_OPENAI_FRAME_MODELS
    #: /ai/v1 stream_options support is undocumented: True sends the usage chunk always.
    v1_always_usage: bool = False


def _envelope(result: Any) -> dict[str, Any]:
    return {"result": result, "success": True, "errors": [], "messages": []}


def _cf_error_body(code: int | str, message: str) -> dict[str, Any]:
    return {
        "result": None,
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
    }


def _pad(index: int) -> str:
    # Real frames carry random-length padding against length side channels; ours is deterministic.
    return _PAD[: (index * 7 + 5) % len(_PAD) + 1]


def _bad_input(detail: str) -> str:
    return f"AiError: Bad input: Error: oneOf at '/' not met, 0 matches: {detail}"


def _validate_native(body: Mapping[str, Any], model: CfModel) -> str | None:
    """The schema check of a native /ai/run body; returns an error detail or None."""
    messages, prompt = body.get("messages"), body.get("prompt")
    if messages is None and prompt is None:
        return "required properties at '/' are 'prompt'; required properties at '/' are 'messages'"
    if prompt is not None and not isinstance(prompt, str):
        return f"Type mismatch of '/prompt', '{type(prompt).__name__}' not in 'string'"
    if messages is not None:
        if not isinstance(messages, list):
            return "Type mismatch of '/messages', not in 'array'"
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
                return f"required properties at '/messages/{i}' are 'role,content'"
            content = message.get("content")
            # Only vision models take content parts; null content is refused too.
            if not isinstance(content, str) and not (
                "v" in model.flags and isinstance(content, list)
            ):
                kind = "null" if content is None else type(content).__name__
                return f"Type mismatch of '/messages/{i}/content', '{kind}' not in 'string'"
    for key, (low, high, integral) in _RANGES.items():
        value = body.get(key)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (integral and not isinstance(value, int))
        ):
            return f"Type mismatch of '/{key}', '{type(value).__name__}' not in '{'integer' if integral else 'number'}'"
        if not low <= value <= high:
            return f"'/{key}' must be >= {low} and <= {high}"
    return None


class _WorkersAI:
    """Request handlers; one instance per app."""

    def __init__(self, config: WorkersAIConfig) -> None:
        self.config = config
        self.tokens = frozenset(config.tokens)
        self.models = {m.name: m for m in WORKERS_AI_MODELS}

    # ---- common ----------------------------------------------------------------------------

    def headers(self, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        return [
            (b"server", b"cloudflare"),
            (b"cf-ray", secrets.token_hex(8).encode() + b"-SJC"),
            (b"cf-ai-req-id", secrets.token_hex(16).encode()),
            (b"api-version", b"2025-07-24"),
            *extra,
        ]

    def error(
        self,
        code: int,
        message: str | None = None,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> Reply:
        default_status, default_message = _CODES.get(code, (status or 500, "Internal server error"))
        body = _cf_error_body(code, message or default_message)
        return json_reply(
            status or default_status, body, headers=self.headers(), retry_after=retry_after
        )

    def check_auth(self, inc: Incoming) -> Reply | None:
        account = inc.path_params.get("account_id")
        if not inc.authorized(self.tokens) or (
            self.config.account_id is not None and account != self.config.account_id
        ):
            return self.error(10000)
        return None

    def fault(self, behavior: Behavior, *, openai_envelope: bool = False) -> Reply:
        """The error reply a scripted `status` asks for."""
        status = behavior.status or 500
        if behavior.text or (status == 500 and behavior.text is None and behavior.code is None):
            # Recorded: a plain 5xx may come as a non-JSON text body.
            return text_reply(
                status,
                "Internal Server Error",
                headers=self.headers(),
                retry_after=behavior.retry_after,
            )
        code = (
            behavior.code
            if behavior.code is not None
            else _CODE_FOR_STATUS.get(status, 7009 if status >= 500 else 3003)
        )
        message = (
            _CODES.get(code, (status, "fake fault"))[1] if isinstance(code, int) else str(code)
        )
        if openai_envelope:
            type_ = _OPENAI_TYPE_FOR_STATUS.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            )
            body = oa.openai_error(message, type_, str(code))
            return json_reply(
                status, body, headers=self.headers(), retry_after=behavior.retry_after
            )
        return json_reply(
            status,
            _cf_error_body(code, message),
            headers=self.headers(),
            retry_after=behavior.retry_after,
        )

    def busy(self, inc: Incoming) -> Reply | None:
        """rejectIfBusy fails fast with 429 3040 while `busy`; otherwise the request queues."""
        options = inc.json.get("options")
        if isinstance(options, Mapping) and options.get("rejectIfBusy") is True:
            return self.error(3040, retry_after=inc.behavior.retry_after)
        return None

    def limit(self, inc: Incoming, *keys: str, default: int | None) -> int | None:
        given = max_tokens_of(inc.json, *keys)
        inc.record.notes["max_tokens_defaulted"] = given is None and default is not None
        return given if given is not None else default

    def note_completion(self, inc: Incoming, completion: Completion) -> None:
        notes = inc.record.notes
        notes["max_tokens"] = completion.max_tokens
        notes["truncated_by_default"] = completion.finish == "length" and notes.get(
            "max_tokens_defaulted", False
        )

    def precheck(self, inc: Incoming) -> Reply | None:
        """Body checks shared by both chat endpoints (after auth and routing)."""
        if inc.marker_error is not None:
            return self.error(5006, _bad_input(inc.marker_error))
        if not inc.valid_json or not isinstance(inc.body, dict):
            return self.error(3003)
        return None

    # ---- /ai/run ---------------------------------------------------------------------------

    async def run(self, inc: Incoming) -> Reply:
        if (denied := self.check_auth(inc)) is not None:
            return denied
        name = inc.path_params["model"]
        model = self.models.get(name)
        if model is None and accept_model(name, (), self.config, _MODEL_SHAPE):
            model = CfModel(name, 32768, None, None)
        if model is None:
            return self.error(7000)
        if (bad := self.precheck(inc)) is not None:
            return bad
        behavior = inc.behavior
        if behavior.status is not None:
            return self.fault(behavior)
        if model.task != WORKERS_AI_TEXT_GENERATION:
            return self.error(5006, _bad_input("required properties at '/' are 'text'"))
        if behavior.busy and (rejected := self.busy(inc)) is not None:
            return rejected
        body = inc.json
        stream = body.get("stream") is True
        shape = behavior.shape or (
            "openai" if name in self.config.openai_frame_models else "native"
        )
        inc.record.notes.update(stream=stream, shape=shape)
        if name.startswith("@cf/openai/gpt-oss-"):
            reply = self.responses_json(inc, name)
        else:
            if (detail := _validate_native(body, model)) is not None:
                return self.error(5006, _bad_input(detail))
            schema = self.native_schema(body)
            completion = plan_completion(
                body,
                inc.prompt,
                chunks=behavior.chunks or 0,
                max_tokens=self.limit(inc, "max_tokens", default=self.config.default_max_tokens),
                schema=schema,
                call_id=oa.random_id("chatcmpl-tool-", 8),
            )
            self.note_completion(inc, completion)
            tool_shape = behavior.tool_shape or (
                "flat" if name.startswith(_FLAT_TOOL_PREFIXES) else "openai"
            )
            if shape == "openai":
                reply = self.openai_frames(inc, name, completion, stream)
            elif stream and shape == "native":
                reply = self.native_stream(completion, tool_shape, behavior)
            else:
                reply = json_reply(
                    200,
                    _envelope(self.native_result(completion, tool_shape, schema is not None)),
                    headers=self.headers(),
                )
        if behavior.busy:
            reply.delay_first += _BUSY_QUEUE_DELAY
        return reply

    @staticmethod
    def native_schema(body: Mapping[str, Any]) -> Any:
        fmt = body.get("response_format")
        if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
            # Cloudflare takes the raw schema here (not OpenAI's {name, schema, strict} wrapper).
            return fmt.get("json_schema") or {}
        return None

    @staticmethod
    def native_result(completion: Completion, tool_shape: str, structured: bool) -> dict[str, Any]:
        usage = completion.usage()
        call = completion.tool_call
        if call is not None and tool_shape == "flat":
            return {
                "response": None,
                "tool_calls": [{"name": call.name, "arguments": call.arguments}],
                "usage": usage,
            }
        if call is not None:
            return {"tool_calls": oa.message_tool_calls(call), "usage": usage}
        if structured:
            response = completion.structured if completion.finish != "length" else completion.text
            return {"response": response, "tool_calls": [], "usage": usage}
        return {"response": completion.text, "usage": usage}

    def native_stream(self, completion: Completion, tool_shape: str, behavior: Behavior) -> Reply:
        frames: list[Frame] = []
        call = completion.tool_call
        if call is not None and tool_shape == "openai":
            # llama-4-scout style: OpenAI-like tool_calls deltas at the top level of each frame.
            frames.append(Frame(sse_data({"response": "", "tool_calls": [], "p": _pad(0)})))
            for i, delta in enumerate(oa.tool_call_deltas(call)):
                head = delta[0]
                if "id" in head:
                    delta = [
                        {
                            "id": head["id"],
                            "type": "function",
                            "index": 0,
                            "function": {"name": call.name},
                        }
                    ]
                frames.append(
                    Frame(sse_data({"tool_calls": delta, "p": _pad(i + 1)}), content=True)
                )
            frames.append(Frame(sse_data({"tool_calls": [], "p": _pad(9)})))
        else:
            if call is not None:
                # llama-3.x streams the tool call as JSON text, parameter values as strings.
                text = _flat_tool_text(call.name, call.arguments)
                pieces = split_text(text, 4)
            else:
                pieces = list(completion.pieces)
            for i, piece in enumerate(pieces):
                frames.append(Frame(sse_data({"response": piece, "p": _pad(i)}), content=True))
                if i == 0:
                    frames.append(Frame(b"data: {}\n\n"))  # recorded on deepseek-r1
            frames.append(Frame(sse_data({"response": "", "p": _pad(len(pieces))})))
            frames.append(
                Frame(sse_data({"tool_calls": [], "p": _pad(len(pieces) + 1)}))
            )  # llama-4-scout
        frames.append(Frame(sse_data({"response": "", "usage": completion.usage()})))
        frames.append(Frame(SSE_DONE))
        reply = Reply(200, sse_headers(b"text/event-stream", *self.headers()), frames, stream=True)
        if behavior.error_after is not None:
            code = behavior.code if isinstance(behavior.code, int) else 3043
            message = _CODES.get(code, (500, "Internal server error"))[1]
            reply.fail_midstream(
                behavior.error_after, [Frame(sse_data(_cf_error_body(code, message)))]
            )
        return reply

    def openai_frames(
        self, inc: Incoming, model: str, completion: Completion, stream: bool
    ) -> Reply:
        """vLLM-served models: a chat.completion in `result`, or chunks with usage on each."""
        cid, created = oa.random_id("chatcmpl-", 16), int(time.time())
        if not stream:
            obj = oa.chat_completion(
                cid,
                created,
                model,
                completion,
                message_extra={
                    "reasoning_content": None,
                    "tool_calls": oa.message_tool_calls(completion.tool_call)
                    if completion.tool_call
                    else [],
                },
                choice_extra={"stop_reason": None},
                extra={"prompt_logprobs": None},
            )
            return json_reply(200, _envelope(obj), headers=self.headers())
        prompt_tokens = completion.prompt_tokens

        def usage(done: int) -> dict[str, Any]:
            return {
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + done,
                "completion_tokens": done,
            }

        frames = [
            Frame(
                sse_data(
                    oa.chunk(
                        cid,
                        created,
                        model,
                        {"role": "assistant", "content": ""},
                        extra={"usage": usage(0)},
                    )
                )
            )
        ]
        if completion.tool_call is not None:
            for delta in oa.tool_call_deltas(completion.tool_call):
                frames.append(
                    Frame(
                        sse_data(
                            oa.chunk(
                                cid,
                                created,
                                model,
                                {"tool_calls": delta},
                                extra={"usage": usage(0)},
                            )
                        ),
                        content=True,
                    )
                )
        for i, piece in enumerate(completion.pieces):
            frames.append(
                Frame(
                    sse_data(
                        oa.chunk(
                            cid, created, model, {"content": piece}, extra={"usage": usage(i + 1)}
                        )
                    ),
                    content=True,
                )
            )
        done = completion.completion_tokens
        frames.append(
            Frame(
                sse_data(
                    oa.chunk(
                        cid,
                        created,
                        model,
                        {"content": ""},
                        finish=completion.finish,
                        extra={"usage": usage(done)},
                    )
                )
            )
        )
        frames.append(
            Frame(sse_data(oa.chunk(cid, created, model, None, extra={"usage": usage(done)})))
        )
        frames.append(Frame(SSE_DONE))
        reply = Reply(200, sse_headers(b"text/event-stream", *self.headers()), frames, stream=True)
        if inc.behavior.error_after is not None:
            reply.fail_midstream(
                inc.behavior.error_after,
                [Frame(sse_data(oa.openai_error("Internal server error", "server_error", None)))],
            )
        return reply

    def responses_json(self, inc: Incoming, model: str) -> Reply:
        """gpt-oss on /ai/run: Responses-style input and output, JSON even when stream is true."""
        body = inc.json
        if body.get("input") is None and body.get("messages") is None:
            return self.error(5006, _bad_input("required properties at '/' are 'input'"))
        completion = plan_completion(
            body,
            inc.prompt,
            chunks=inc.behavior.chunks or 0,
            max_tokens=max_tokens_of(body, "max_output_tokens", "max_tokens"),
        )
        self.note_completion(inc, completion)
        result = {
            "id": oa.random_id("resp_"),
            "object": "response",
            "created_at": int(time.time()),
            "model": model,
            "status": "completed" if completion.finish != "length" else "incomplete",
            "output": [
                {
                    "id": oa.random_id("rs_"),
                    "type": "reasoning",
                    "summary": [],
                    "content": [{"type": "reasoning_text", "text": "The user wants a reply."}],
                },
                {
                    "id": oa.random_id("msg_"),
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [
                        {"type": "output_text", "text": completion.text, "annotations": []}
                    ],
                },
            ],
            "usage": {
                "input_tokens": completion.prompt_tokens,
                "output_tokens": completion.completion_tokens,
                "total_tokens": completion.prompt_tokens + completion.completion_tokens,
            },
        }
        return json_reply(200, _envelope(result), headers=self.headers())

    # ---- /ai/v1/chat/completions -----------------------------------------------------------

    async def v1_chat(self, inc: Incoming) -> Reply:
        if (bad := self.check_auth(inc) or self.precheck(inc)) is not None:
            return bad
        behavior = inc.behavior
        openai_envelope = behavior.envelope == "openai"
        body = inc.json
        name = body.get("model")
        if not isinstance(name, str) or not (
            name in self.models or accept_model(name, (), self.config, _MODEL_SHAPE)
        ):
            message = f"No such model {name} or task"
            if openai_envelope:
                body_ = oa.openai_error(
                    f"The model `{name}` does not exist.",
                    "invalid_request_error",
                    "model_not_found",
                    "model",
                )
                return json_reply(404, body_, headers=self.headers())
            return self.error(5007, message)
        if behavior.status is not None:
            return self.fault(behavior, openai_envelope=openai_envelope)
        if behavior.busy and (rejected := self.busy(inc)) is not None:
            return rejected
        schema = oa.json_schema_of(body)
        completion = plan_completion(
            body,
            inc.prompt,
            chunks=behavior.chunks or 0,
            max_tokens=self.limit(
                inc, "max_completion_tokens", "max_tokens", default=self.config.default_max_tokens
            ),
            schema=schema,
            call_id=oa.random_id("chatcmpl-tool-", 8),
        )
        self.note_completion(inc, completion)
        cid, created = oa.random_id("chatcmpl-", 16), int(time.time())
        stream = body.get("stream") is True
        inc.record.notes.update(stream=stream, shape="v1")
        if not stream:
            reply = json_reply(
                200, oa.chat_completion(cid, created, name, completion), headers=self.headers()
            )
        else:
            options = body.get("stream_options")
            include_usage = self.config.v1_always_usage or (
                isinstance(options, Mapping) and options.get("include_usage") is True
            )
            reply = self.v1_stream(cid, created, name, completion, include_usage, behavior)
        if behavior.busy:
            reply.delay_first += _BUSY_QUEUE_DELAY
        return reply

    def v1_stream(
        self,
        cid: str,
        created: int,
        model: str,
        completion: Completion,
        include_usage: bool,
        behavior: Behavior,
    ) -> Reply:
        null_usage = {"usage": None} if include_usage else None
        frames = [
            Frame(
                sse_data(
                    oa.chunk(
                        cid, created, model, {"role": "assistant", "content": ""}, extra=null_usage
                    )
                )
            )
        ]
        if completion.tool_call is not None:
            for delta in oa.tool_call_deltas(completion.tool_call):
                frames.append(
                    Frame(
                        sse_data(
                            oa.chunk(cid, created, model, {"tool_calls": delta}, extra=null_usage)
                        ),
                        content=True,
                    )
                )
        for piece in completion.pieces:
            frames.append(
                Frame(
                    sse_data(oa.chunk(cid, created, model, {"content": piece}, extra=null_usage)),
                    content=True,
                )
            )
        frames.append(
            Frame(
                sse_data(
                    oa.chunk(cid, created, model, {}, finish=completion.finish, extra=null_usage)
                )
            )
        )
        if include_usage:
            frames.append(
                Frame(
                    sse_data(
                        oa.chunk(cid, created, model, None, extra={"usage": completion.usage()})
                    )
                )
            )
        frames.append(Frame(SSE_DONE))
        reply = Reply(200, sse_headers(b"text/event-stream", *self.headers()), frames, stream=True)
        if behavior.error_after is not None:
            reply.fail_midstream(
                behavior.error_after,
                [Frame(sse_data(oa.openai_error("Internal server error", "server_error", None)))],
            )
        return reply

    # ---- catalog and token checks ----------------------------------------------------------

    async def models_search(self, inc: Incoming) -> Reply:
        account = inc.path_params.get("account_id")
        if not inc.authorized(self.tokens) or (
            self.config.account_id is not None and account != self.config.account_id
        ):
            # Recorded: this endpoint answers 400 / 10001 and omits result and messages.
            body = {
                "success": False,
                "errors": [{"code": 10001, "message": "Unable to authenticate request"}],
            }
            return json_reply(400, body, headers=self.headers())
        if inc.behavior.status is not None:
            return self.fault(inc.behavior)
        params = inc.request.query_params
        try:
            page = max(1, int(params.get("page", "1")))
            per_page = max(1, min(1000, int(params.get("per_page", "20"))))
        except ValueError:
            return self.error(3003, "Invalid pagination parameters", status=400)
        task, search, author = params.get("task"), params.get("search"), params.get("author")
        hide_experimental = params.get("hide_experimental", "false").lower() == "true"
        models = [
            m for m in WORKERS_AI_MODELS if _matches(m, task, search, author, hide_experimental)
        ]
        page_items = models[(page - 1) * per_page : page * per_page]
        body = {
            "success": True,
            "result": [_search_item(m) for m in page_items],
            "errors": [],
            "messages": [],
            # The live capture's total_count did not match the real count; ours counts the whole
            # catalog whatever the filter, so clients must paginate until `result` is empty.
            "result_info": {
                "count": len(page_items),
                "page": page,
                "per_page": per_page,
                "total_count": len(WORKERS_AI_MODELS),
            },
        }
        return json_reply(200, body, headers=self.headers())

    async def verify(self, inc: Incoming) -> Reply:
        if not inc.authorized(self.tokens):
            return json_reply(
                401,
                {
                    "success": False,
                    "errors": [{"code": 1000, "message": "Invalid API Token"}],
                    "messages": [],
                    "result": None,
                },
                headers=self.headers(),
            )
        token_id = hashlib.sha256((inc.token or "").encode()).hexdigest()[:32]
        body = {
            "result": {"id": token_id, "status": "active"},
            "success": True,
            "errors": [],
            "messages": [
                {"code": 10000, "message": "This API Token is valid and active", "type": None}
            ],
        }
        return json_reply(200, body, headers=self.headers())

    async def not_found(self, inc: Incoming) -> Reply:
        return self.error(7000, status=404)


def _flat_tool_text(name: str, arguments: Mapping[str, Any]) -> str:
    params = {k: v if isinstance(v, str) else json_bytes(v).decode() for k, v in arguments.items()}
    return json_bytes({"name": name, "parameters": params}).decode()


def _matches(
    model: CfModel,
    task: str | None,
    search: str | None,
    author: str | None,
    hide_experimental: bool,
) -> bool:
    if task and model.task.lower() != task.lower():
        return False
    if search and search.lower() not in model.name.lower():
        return False
    if author and model.name.split("/")[1:2] != [author]:
        return False
    return not (hide_experimental and "beta" in model.flags)


def _search_item(model: CfModel) -> dict[str, Any]:
    properties: list[dict[str, Any]] = []
    if model.price_in is not None and model.price_out is not None:
        properties.append(
            {
                "property_id": "price",
                "value": [
                    {"unit": "per M input tokens", "price": model.price_in, "currency": "USD"},
                    {"unit": "per M output tokens", "price": model.price_out, "currency": "USD"},
                ],
            }
        )
    # Property values are strings, even numbers and booleans (recorded).
    properties.append({"property_id": "context_window", "value": str(model.context)})
    for flag, prop in (
        ("fc", "function_calling"),
        ("r", "reasoning"),
        ("v", "vision"),
        ("lora", "lora"),
        ("beta", "beta"),
        ("paid", "require_workers_paid"),
    ):
        if flag in model.flags:
            properties.append({"property_id": prop, "value": "true"})
    properties.append({"property_id": "terms", "value": "https://example.invalid/terms"})
    return {
        "id": model.id,
        "source": 1,
        "name": model.name,
        "description": f"{model.name.rsplit('/', 1)[-1]} (local fake catalog entry)",
        "task": {"id": model.task_id, "name": model.task, "description": f"{model.task} models."},
        "created_at": "2024-09-25 20:05:43.986",  # not ISO 8601, like the real field
        "tags": [],
        "properties": properties,
    }


def create_app(config: WorkersAIConfig | None = None, **overrides: Any) -> FakeApp:
    """Build the Workers AI fake. ``create_app(tokens=["t"], account_id="acct")`` also works."""
    cfg = config or WorkersAIConfig(**overrides)
    handlers = _WorkersAI(cfg)
    control = FakeControl(
        Behavior(chunks=cfg.chunks, chunk_delay=cfg.chunk_delay), record_limit=cfg.record_limit
    )
    acct = BASE_PATH + "/accounts/{account_id}"
    routes = [
        route(acct + "/ai/run/{model:path}", handlers.run, methods=["POST"], chat=True),
        route(acct + "/ai/v1/chat/completions", handlers.v1_chat, methods=["POST"], chat=True),
        route(acct + "/ai/models/search", handlers.models_search, methods=["GET"]),
        route(acct + "/tokens/verify", handlers.verify, methods=["GET"]),
        route(BASE_PATH + "/user/tokens/verify", handlers.verify, methods=["GET"]),
    ]
    return FakeApp(
        provider="workers-ai",
        base_path=BASE_PATH,
        routes=routes,
        control=control,
        not_found=handlers.not_found,
    )
