"""Reading Workers AI replies: error envelopes, JSON bodies and SSE streams, as OpenAI protos.

Workers AI answers in more shapes than any other upstream (reference/wire-formats.md §2.3-2.6,
mapping in §5.2):

- errors: the Cloudflare v4 envelope ``{"success":false,"errors":[{"code","message"}]}``, plain
  text for some 5xx (possibly ``"AiError: 3040: ..."``), or OpenAI's ``{"error":{...}}`` from
  ``/ai/v1``;
- non-stream bodies: the v4 envelope around a native result (``response`` string or object, flat
  or OpenAI-like ``tool_calls``, ``usage``), around a full ``chat.completion`` (vLLM-served
  models) or a Responses object (gpt-oss on ``/ai/run``), or a bare ``chat.completion``
  (``/ai/v1``);
- streams: native ``{"response":"tok","p":"pad"}`` frames, ``{}``/padding-only/``tool_calls: []``
  frames, top-level tool-call deltas, OpenAI ``choices[].delta`` frames, a usage frame and
  ``[DONE]``; never a finish reason on native frames.

Everything here is pure (no I/O): `workers_ai.py` owns the HTTP side. Failures are raised as
`rpc_common.openai.UpstreamFormatError` (unreadable) or `UpstreamReportedError` (the provider
said it failed); the adapter turns them into gRPC statuses.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Final

import orjson

from gateway_service import errors
from gateway_service.upstream_http import Headers
from native1api.gateway.v1 import chat_pb2
from rpc_common.openai import (
    FINISH_REASON_ALIASES,
    FINISH_REASON_VALUES,
    UpstreamFormatError,
    UpstreamReportedError,
    chunk_from_json,
    completion_from_json,
    usage_from_json,
)

PROVIDER: Final = "workers-ai"

# Workers AI internal error codes -> the HTTP status they stand for (platform/errors.mdx,
# wire-formats §2.6). The code is more specific than the HTTP status it arrives with (the auth
# code 10001 comes as HTTP 400 from models/search, "AiError: 3040: ..." may come in a plain 500),
# so when we know the code, its status decides how `errors.from_upstream_status` maps it.
CODE_STATUS: Final[dict[int, int]] = {
    10000: 401,
    10001: 401,
    7000: 404,
    5007: 404,
    3042: 404,
    3040: 429,
    3036: 429,
    3007: 408,
    3008: 408,
    5016: 403,
    5018: 403,
    3041: 403,
    3023: 403,
    3003: 400,
    3039: 400,
    5004: 400,
    5006: 400,
    3006: 413,
    5005: 405,
    5019: 405,
    7009: 503,
}

# `"AiError: 3040: Capacity ..."` / `"InferenceUpstreamError: 3040: ..."` / `"3040: ..."`; the
# code must lead the message so that times ("12:30") inside it are never read as codes.
_PREFIXED_CODE: Final = re.compile(r"\s*(?:[A-Za-z]*Error:\s*)?(\d{3,5})\s*:\s*")
_MAX_MESSAGE: Final = 300
# Text held back while it may be a tool call written as JSON (llama-3.x streams); past this it is
# plainly not one and is released as content.
_MAX_HELD_CHARS: Final = 64 * 1024

_loads = orjson.loads
_dumps = orjson.dumps
_Chunk = chat_pb2.ChatCompletionChunk
_STOP: Final = chat_pb2.FINISH_REASON_STOP
_LENGTH: Final = chat_pb2.FINISH_REASON_LENGTH
_TOOL_CALLS: Final = chat_pb2.FINISH_REASON_TOOL_CALLS
_UNSPECIFIED: Final = chat_pb2.FINISH_REASON_UNSPECIFIED


def new_completion_id() -> str:
    """A fresh OpenAI-style completion id (Workers AI native replies carry none)."""
    return f"chatcmpl-{uuid.uuid4().hex}"


def new_call_id() -> str:
    """A fresh tool-call id, for native calls that come without one."""
    return f"call_{uuid.uuid4().hex[:24]}"


# ---- errors ------------------------------------------------------------------------------------


def parse_error(status: int, body: bytes, headers: Headers) -> errors.UpstreamHTTPError:
    """Read a non-2xx answer: v4 envelope, OpenAI envelope (``/ai/v1``) or a text body.

    `headers` is part of the `upstream_http.ErrorParser` signature; `open_stream` itself copies
    `Retry-After` onto the result.
    """
    message, code = _error_fields(body)
    mapped = CODE_STATUS.get(code) if isinstance(code, int) else None
    return errors.UpstreamHTTPError(
        mapped or status, message or f"HTTP {status}", provider_code=code
    )


def _error_fields(body: bytes) -> tuple[str, int | str | None]:
    """(message, provider code) of an error body, whatever its shape."""
    data: Any = None
    if body[:1] in (b"{", b" ", b"\n", b"\r", b"\t"):
        try:
            data = _loads(body)
        except orjson.JSONDecodeError:
            data = None
    message = ""
    code: int | str | None = None
    if isinstance(data, dict):
        message, code = _envelope_error(data)
    else:
        message = body.decode("utf-8", "replace").strip()
    return _split_prefixed_code(message[:_MAX_MESSAGE], code)


def _envelope_error(data: dict[str, Any]) -> tuple[str, int | str | None]:
    """(message, code) of a v4 envelope or an OpenAI error envelope."""
    errs = data.get("errors")
    if isinstance(errs, list) and errs and isinstance(errs[0], dict):
        first = errs[0]
        return _text(first.get("message")), _code_of(first.get("code"))
    error = data.get("error")
    if isinstance(error, dict):
        return _text(error.get("message")), _code_of(error.get("code"))
    if isinstance(error, str):
        return error, None
    return "", None


def _split_prefixed_code(message: str, code: int | str | None) -> tuple[str, int | str | None]:
    """Take the code out of an ``"AiError: 3040: ..."`` message (and use it if none was given)."""
    match = _PREFIXED_CODE.match(message)
    if match is None:
        return message, code
    rest = message[match.end() :].strip()
    return rest or message, code if code is not None else int(match.group(1))


def _code_of(value: Any) -> int | str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value:
        return int(value) if value.isdigit() else value
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def reported_status(error: UpstreamReportedError) -> errors.UpstreamHTTPError:
    """An error reported inside a 2xx body, as the HTTP failure its code stands for."""
    code = _code_of(error.body.get("code"))
    status = CODE_STATUS.get(code, 502) if isinstance(code, int) else 502
    return errors.UpstreamHTTPError(status, error.message, provider_code=code)


def _raise_envelope_error(data: dict[str, Any]) -> None:
    """Raise `UpstreamReportedError` for a v4 envelope or OpenAI body that reports a failure."""
    errs = data.get("errors")
    if data.get("success") is False or (errs and "result" not in data and "choices" not in data):
        message, code = _envelope_error(data)
        message, code = _split_prefixed_code(message, code)
        raise UpstreamReportedError(
            message or "Workers AI reported an error.", {"message": message, "code": code}
        )
    error = data.get("error")
    if error:
        message, code = _envelope_error(data)
        raise UpstreamReportedError(
            message or "Workers AI reported an error.", {"message": message, "code": code}
        )


# ---- non-stream bodies -------------------------------------------------------------------------


def completion_from_body(data: Any, *, model: str, max_tokens: int) -> chat_pb2.ChatCompletion:
    """The `ChatCompletion` of a 2xx JSON body, whichever Workers AI shape it has.

    `model` is the id the client asked for (the reply's `model`); `max_tokens` is the limit we
    sent, used to report `length` where Workers AI gives no finish reason.
    """
    if not isinstance(data, dict):
        raise UpstreamFormatError("the body is not a JSON object")
    _raise_envelope_error(data)
    if "choices" in data:  # /ai/v1: a bare chat.completion
        return _openai_completion(data, model, max_tokens)
    result = data.get("result", data)
    if not isinstance(result, dict):
        raise UpstreamFormatError("`result` is not a JSON object")
    if "choices" in result:  # vLLM-served models: a full chat.completion inside the envelope
        return _openai_completion(result, model, max_tokens)
    if result.get("object") == "response" or isinstance(result.get("output"), list):
        return _responses_completion(result, model, max_tokens)
    return _native_completion(result, model, max_tokens)


def _new_completion(model: str) -> chat_pb2.ChatCompletion:
    return chat_pb2.ChatCompletion(id=new_completion_id(), created=int(time.time()), model=model)


def _native_completion(
    result: dict[str, Any], model: str, max_tokens: int
) -> chat_pb2.ChatCompletion:
    completion = _new_completion(model)
    choice = completion.choices.add(index=0)
    message = choice.message
    message.role = chat_pb2.ROLE_ASSISTANT
    calls = result.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise UpstreamFormatError("`tool_calls` is not a JSON array")
    for raw in calls or ():
        _add_tool_call(message, raw)
    content = _content_text(result.get("response"))
    if content or not message.tool_calls:
        # With tool calls and no text OpenAI sends `content: null`; a text answer is never null.
        message.content = content or ""
    reasoning = _reasoning_of(result)
    if reasoning is not None:
        message.reasoning = reasoning
    if result.get("usage") is not None:
        usage_from_json(result["usage"], completion.usage)
    reported = _finish_of(result.get("finish_reason"))
    choice.finish_reason = _derive_finish(
        bool(message.tool_calls),
        reported,
        completion.usage.completion_tokens if completion.HasField("usage") else None,
        max_tokens,
    )
    return completion


def _openai_completion(
    data: dict[str, Any], model: str, max_tokens: int
) -> chat_pb2.ChatCompletion:
    completion = completion_from_json(data)
    if not completion.choices:
        raise UpstreamFormatError("the completion has no choices")
    completion.model = model
    if not completion.id:
        completion.id = new_completion_id()
    if not completion.created:
        completion.created = int(time.time())
    used = completion.usage.completion_tokens if completion.HasField("usage") else None
    for choice, raw in zip(completion.choices, data.get("choices") or (), strict=False):
        # `completion_from_json` reads a missing reason as stop/tool_calls; only we know the
        # limit we sent, so only we can tell a silent truncation.
        if (
            isinstance(raw, dict)
            and raw.get("finish_reason") in (None, "")
            and choice.finish_reason == _STOP
            and used is not None
            and used >= max_tokens
        ):
            choice.finish_reason = _LENGTH
    return completion


def _responses_completion(
    result: dict[str, Any], model: str, max_tokens: int
) -> chat_pb2.ChatCompletion:
    """A Responses-API object (gpt-oss on ``/ai/run``): output items -> one assistant message."""
    completion = _new_completion(model)
    choice = completion.choices.add(index=0)
    message = choice.message
    message.role = chat_pb2.ROLE_ASSISTANT
    texts: list[str] = []
    thoughts: list[str] = []
    for item in result.get("output") or ():
        if not isinstance(item, dict):
            raise UpstreamFormatError("`output` holds a non-object")
        kind = item.get("type")
        if kind == "function_call":
            call = message.tool_calls.add(
                id=_text(item.get("call_id")) or new_call_id(), type="function"
            )
            call.function.name = _text(item.get("name"))
            call.function.arguments = _arguments_text(item.get("arguments"))
            continue
        target = texts if kind == "message" else thoughts if kind == "reasoning" else None
        if target is None:
            continue
        for part in item.get("content") or ():
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                target.append(part["text"])
    if texts or not message.tool_calls:
        message.content = "".join(texts)
    if thoughts:
        message.reasoning = "".join(thoughts)
    usage = result.get("usage")
    if isinstance(usage, dict):
        usage_from_json(
            {
                "prompt_tokens": usage.get("input_tokens", usage.get("prompt_tokens")),
                "completion_tokens": usage.get("output_tokens", usage.get("completion_tokens")),
                "total_tokens": usage.get("total_tokens"),
            },
            completion.usage,
        )
    reported = _LENGTH if result.get("status") == "incomplete" else _UNSPECIFIED
    choice.finish_reason = _derive_finish(
        bool(message.tool_calls),
        reported,
        completion.usage.completion_tokens if completion.HasField("usage") else None,
        max_tokens,
    )
    return completion


def _add_tool_call(message: chat_pb2.ChatCompletionMessage, raw: Any) -> None:
    """One native tool call: flat ``{name, arguments:{...}}`` or OpenAI-like, as an OpenAI call."""
    if not isinstance(raw, dict):
        raise UpstreamFormatError("a tool call is not a JSON object")
    function = raw.get("function")
    if isinstance(function, dict):
        call_id, name, arguments = raw.get("id"), function.get("name"), function.get("arguments")
    else:  # llama-3.x: flat, arguments an object (or `parameters`, as in its text form)
        call_id, name = None, raw.get("name")
        arguments = raw.get("arguments", raw.get("parameters"))
    if not isinstance(name, str) or not name:
        raise UpstreamFormatError("a tool call has no function name")
    call = message.tool_calls.add(
        id=call_id if isinstance(call_id, str) and call_id else new_call_id(), type="function"
    )
    call.function.name = name
    call.function.arguments = _arguments_text(arguments)


def _arguments_text(value: Any) -> str:
    """Tool-call arguments as the JSON string OpenAI clients expect."""
    if isinstance(value, str):
        return value
    return "{}" if value is None else _dumps(value).decode()


def _content_text(value: Any) -> str | None:
    """`response` as text: strings as they are, a json_schema object (or any JSON) encoded."""
    if value is None or isinstance(value, str):
        return value
    return _dumps(value).decode()


def _reasoning_of(body: dict[str, Any]) -> str | None:
    for key in ("reasoning_content", "reasoning"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _finish_of(value: Any) -> chat_pb2.FinishReason.ValueType:
    """A finish reason some native frames carry; unknown spellings read as absent."""
    if not isinstance(value, str) or not value:
        return _UNSPECIFIED
    name = value.lower()
    return FINISH_REASON_VALUES.get(name) or FINISH_REASON_ALIASES.get(name) or _UNSPECIFIED


def _derive_finish(
    tool_calls: bool,
    reported: chat_pb2.FinishReason.ValueType,
    completion_tokens: int | None,
    max_tokens: int,
) -> chat_pb2.FinishReason.ValueType:
    """wire-formats §5.2: tool_calls if any; else what the model said; else `length` when the
    limit we sent was used up (native replies stop there silently); else `stop`."""
    if tool_calls:
        return _TOOL_CALLS
    if reported != _UNSPECIFIED:
        return reported
    if completion_tokens is not None and completion_tokens >= max_tokens:
        return _LENGTH
    return _STOP


def completion_to_chunks(completion: chat_pb2.ChatCompletion) -> list[chat_pb2.ChatCompletionChunk]:
    """A whole completion as stream chunks: reasoning, content, tool calls, finish, usage.

    For gpt-oss-style replies that answer a streaming request with one JSON body.
    """
    chunks: list[chat_pb2.ChatCompletionChunk] = []
    for choice in completion.choices:
        message = choice.message
        if message.HasField("reasoning") and message.reasoning:
            chunk = _Chunk()
            chunk.choices.add(index=choice.index).delta.reasoning = message.reasoning
            chunks.append(chunk)
        if message.HasField("content") and message.content:
            chunk = _Chunk()
            chunk.choices.add(index=choice.index).delta.content = message.content
            chunks.append(chunk)
        if message.tool_calls:
            chunk = _Chunk()
            delta = chunk.choices.add(index=choice.index).delta
            for index, call in enumerate(message.tool_calls):
                delta.tool_calls.add(
                    index=index,
                    id=call.id,
                    type=call.type or "function",
                    name=call.function.name,
                    arguments=call.function.arguments,
                )
            chunks.append(chunk)
        chunk = _Chunk()
        chunk.choices.add(index=choice.index, finish_reason=choice.finish_reason)
        chunks.append(chunk)
    if completion.HasField("usage"):
        chunk = _Chunk()
        chunk.usage.CopyFrom(completion.usage)
        chunks.append(chunk)
    return chunks


# ---- streams -----------------------------------------------------------------------------------


class StreamReader:
    """Turns the data of each SSE event of one stream into OpenAI chunks.

    `feed` is the per-chunk path: one `orjson.loads`, a few dict look-ups and one small proto
    for a native token frame; no regex, no copies, no logging. `finish` (after ``[DONE]``) emits
    the finish chunk Workers AI never sends, then the usage chunk.

    `tool_names`: when the request offered tools on the native endpoint, text that starts like
    JSON is held back: llama-3.x models stream their tool calls as JSON text in `response`
    (wire-formats §2.4). At the end it becomes a tool call if it is one (an object, or an array
    of objects, naming an offered tool); otherwise it is released as the content it was.
    """

    __slots__ = (
        "_held",
        "_held_chars",
        "_held_json",
        "_tool_indexes",
        "_tool_names",
        "finish_sent",
        "max_tokens",
        "reported_finish",
        "tool_calls_seen",
        "usage",
    )

    def __init__(self, *, max_tokens: int, tool_names: frozenset[str] = frozenset()) -> None:
        self.max_tokens = max_tokens
        self.usage: chat_pb2.Usage | None = None
        self.reported_finish: chat_pb2.FinishReason.ValueType = _UNSPECIFIED
        self.finish_sent = False
        self.tool_calls_seen = False
        self._tool_indexes: set[int] = set()
        self._tool_names = tool_names
        # None: not holding text back (no tools offered, or the text is plainly not a call).
        self._held: list[str] | None = [] if tool_names else None
        self._held_chars = 0
        self._held_json = False

    def feed(self, data: str) -> chat_pb2.ChatCompletionChunk | None:
        """The chunk for one SSE event's data (not ``[DONE]``), or None if it carries nothing."""
        try:
            obj = _loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamFormatError("a stream event is not JSON") from None
        if obj.__class__ is not dict:
            raise UpstreamFormatError("a stream event is not a JSON object")
        text = obj.get("response")
        # The hot path: `{"response": "tok", "p": "<padding>"}` (or without `p`).
        if text.__class__ is str and (len(obj) == 1 or (len(obj) == 2 and "p" in obj)):
            if not text:
                return None
            if self._held is not None:
                return self._hold(text)
            chunk = _Chunk()
            chunk.choices.add().delta.content = text
            return chunk
        return self._other_frame(obj, text)

    def _other_frame(self, obj: dict[str, Any], text: Any) -> chat_pb2.ChatCompletionChunk | None:
        if "choices" in obj:
            return self._openai_frame(obj)
        _raise_envelope_error(obj)
        usage = obj.get("usage")
        if usage is not None:
            self._keep_usage(usage)
        finish = obj.get("finish_reason")
        if finish:
            self.reported_finish = _finish_of(finish)
        calls = obj.get("tool_calls")
        chunk: chat_pb2.ChatCompletionChunk | None = None
        if calls:
            if not isinstance(calls, list):
                raise UpstreamFormatError("`tool_calls` is not a JSON array")
            chunk = _Chunk()
            self._tool_call_deltas(chunk.choices.add().delta, calls)
        reasoning = _reasoning_of(obj)
        if reasoning is not None:
            if chunk is None:
                chunk = _Chunk()
                chunk.choices.add()
            chunk.choices[0].delta.reasoning = reasoning
        content = _content_text(text)
        if content:
            if chunk is None and self._held is not None:
                return self._hold(content)
            if chunk is None:
                chunk = _Chunk()
                chunk.choices.add()
            chunk.choices[0].delta.content = content
        return chunk

    def _openai_frame(self, obj: dict[str, Any]) -> chat_pb2.ChatCompletionChunk | None:
        """A `chat.completion.chunk` (``/ai/v1``, vLLM-served models on ``/ai/run``)."""
        chunk = chunk_from_json(obj)
        if chunk.HasField("usage"):
            # vLLM repeats a running usage on every chunk; keep the last, emit it once at the end.
            self.usage = chat_pb2.Usage()
            self.usage.CopyFrom(chunk.usage)
            chunk.ClearField("usage")
        keep = False
        for choice in chunk.choices:
            delta = choice.delta
            delta.role = chat_pb2.ROLE_UNSPECIFIED  # the servicer emits the one role chunk
            if choice.finish_reason:
                self.finish_sent = keep = True
                if delta.HasField("content") and not delta.content:
                    delta.ClearField("content")  # OpenAI's finish chunk has `delta: {}`
            if delta.tool_calls:
                self.tool_calls_seen = keep = True
            if delta.content or delta.reasoning or delta.refusal:
                keep = True
        return chunk if keep else None

    def _keep_usage(self, raw: Any) -> None:
        usage = chat_pb2.Usage()
        usage_from_json(raw, usage)
        self.usage = usage

    def _tool_call_deltas(self, delta: chat_pb2.ChoiceDelta, calls: list[Any]) -> None:
        """Top-level tool-call deltas (llama-4-scout), or whole flat calls in one frame."""
        self.tool_calls_seen = True
        seen = self._tool_indexes
        for position, raw in enumerate(calls):
            if not isinstance(raw, dict):
                raise UpstreamFormatError("a tool call delta is not a JSON object")
            function = raw.get("function")
            index = raw.get("index")
            if not isinstance(index, int) or isinstance(index, bool):
                index = len(seen) if function is None else position
            out = delta.tool_calls.add(index=index)
            first = index not in seen
            seen.add(index)
            call_id = raw.get("id")
            if isinstance(call_id, str) and call_id:
                out.id = call_id
            elif first:
                out.id = new_call_id()  # OpenAI clients key calls by the id on the first fragment
            if isinstance(function, dict):
                name, arguments = function.get("name"), function.get("arguments")
            else:
                name, arguments = raw.get("name"), raw.get("arguments", raw.get("parameters"))
                if arguments is None:
                    arguments = {}
            if first or isinstance(raw.get("type"), str):
                out.type = _text(raw.get("type")) or "function"
            if isinstance(name, str):
                out.name = name
            if arguments is not None:
                out.arguments = _arguments_text(arguments)

    def _hold(self, text: str) -> chat_pb2.ChatCompletionChunk | None:
        held = self._held
        assert held is not None
        held.append(text)
        self._held_chars += len(text)
        if not self._held_json:
            # Everything held before this piece was whitespace, so this piece decides.
            start = text.lstrip()
            if not start:
                return None
            if start[0] not in "{[":
                return self._release()
            self._held_json = True
        return None if self._held_chars <= _MAX_HELD_CHARS else self._release()

    def _release(self) -> chat_pb2.ChatCompletionChunk | None:
        held = self._held or []
        self._held = None
        text = "".join(held)
        if not text:
            return None
        chunk = _Chunk()
        chunk.choices.add().delta.content = text
        return chunk

    def finish(self) -> list[chat_pb2.ChatCompletionChunk]:
        """The closing chunks after ``[DONE]``: held text, the finish chunk (unless the upstream
        sent one), then usage (a ``choices: []`` chunk)."""
        out: list[chat_pb2.ChatCompletionChunk] = []
        if self._held:
            calls = _text_tool_calls("".join(self._held), self._tool_names)
            if calls is not None:
                self._held = None
                chunk = _Chunk()
                self._tool_call_deltas(chunk.choices.add().delta, calls)
                out.append(chunk)
            else:
                released = self._release()
                if released is not None:
                    out.append(released)
        if not self.finish_sent:
            self.finish_sent = True
            chunk = _Chunk()
            chunk.choices.add(
                finish_reason=_derive_finish(
                    self.tool_calls_seen,
                    self.reported_finish,
                    self.usage.completion_tokens if self.usage is not None else None,
                    self.max_tokens,
                )
            )
            out.append(chunk)
        if self.usage is not None:
            chunk = _Chunk()
            chunk.usage.CopyFrom(self.usage)
            out.append(chunk)
        return out


def _text_tool_calls(text: str, names: frozenset[str]) -> list[dict[str, Any]] | None:
    """Flat tool calls written as JSON text, or None if `text` is not exactly that."""
    try:
        value = _loads(text)
    except orjson.JSONDecodeError:
        return None
    items = value if isinstance(value, list) else [value]
    calls: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            return None
        function = item.get("function")
        spec = function if isinstance(function, dict) else item
        name = spec.get("name")
        if not isinstance(name, str) or name not in names:
            return None
        arguments = spec.get("parameters", spec.get("arguments"))
        if arguments is not None and not isinstance(arguments, dict | str):
            return None
        calls.append({"name": name, "arguments": {} if arguments is None else arguments})
    return calls or None
