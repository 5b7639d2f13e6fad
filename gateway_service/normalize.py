"""One stream shape for every provider: the OpenAI chunk sequence (SPEC §2, §3).

Providers yield whatever OpenAI-shaped chunks their upstream produced. The normaliser stamps one
id/created/model on all of them, emits the assistant role chunk first, lets exactly one finish
reason per choice through, and holds usage back for a final `choices: []` chunk.
"""

from __future__ import annotations

import time
import uuid

from gateway_service import errors
from native1api.gateway.v1 import chat_pb2

_ASSISTANT = chat_pb2.ROLE_ASSISTANT
_UNSPECIFIED = chat_pb2.FINISH_REASON_UNSPECIFIED


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class StreamNormalizer:
    """Feeds provider chunks in, gets OpenAI-conformant chunks out."""

    __slots__ = (
        "_created",
        "_finished",
        "_id",
        "_model",
        "_provider",
        "_started",
        "finish_reasons",
        "usage",
    )

    def __init__(self, model: str, provider: str) -> None:
        self._id = new_completion_id()
        self._created = int(time.time())
        self._model = model
        self._provider = provider
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self.usage: chat_pb2.Usage | None = None
        #: Each finished choice's reason, in the order they finished (for traces).
        self.finish_reasons: list[chat_pb2.FinishReason.ValueType] = []

    def _stamp(self, chunk: chat_pb2.ChatCompletionChunk) -> chat_pb2.ChatCompletionChunk:
        chunk.id = self._id
        chunk.created = self._created
        chunk.model = self._model
        return chunk

    def feed(self, chunk: chat_pb2.ChatCompletionChunk) -> list[chat_pb2.ChatCompletionChunk]:
        """The chunks to send for one provider chunk (possibly none)."""
        out: list[chat_pb2.ChatCompletionChunk] = []
        if chunk.HasField("usage"):
            usage = chat_pb2.Usage()
            usage.CopyFrom(chunk.usage)
            self.usage = usage
            chunk.ClearField("usage")
        keep: list[chat_pb2.ChunkChoice] = []
        for choice in chunk.choices:
            index = choice.index
            if index in self._finished:
                continue  # e.g. OpenRouter's usage chunk repeating the finish reason
            if index not in self._started:
                self._started.add(index)
                out.append(self._role_chunk(index))
            delta = choice.delta
            if delta.role:
                delta.role = chat_pb2.ROLE_UNSPECIFIED  # the role chunk already said it
            if choice.finish_reason != _UNSPECIFIED:
                self._finished.add(index)
                self.finish_reasons.append(choice.finish_reason)
            elif not _has_content(delta) and not choice.HasField("logprobs"):
                continue  # an empty delta carries nothing worth a frame
            keep.append(choice)
        if keep:
            del chunk.choices[:]
            chunk.choices.extend(keep)
            out.append(self._stamp(chunk))
        return out

    def _role_chunk(self, index: int) -> chat_pb2.ChatCompletionChunk:
        chunk = chat_pb2.ChatCompletionChunk()
        chunk.choices.add(index=index, delta=chat_pb2.ChoiceDelta(role=_ASSISTANT, content=""))
        return self._stamp(chunk)

    def finish(self) -> list[chat_pb2.ChatCompletionChunk]:
        """The closing chunks; raises when the provider never finished a started choice."""
        if not self._finished or self._started - self._finished:
            raise errors.stream_interrupted(self._provider, "no finish reason was received")
        if self.usage is None:
            return []
        chunk = chat_pb2.ChatCompletionChunk(usage=self.usage)
        return [self._stamp(chunk)]


def _has_content(delta: chat_pb2.ChoiceDelta) -> bool:
    return bool(delta.content or delta.tool_calls or delta.HasField("refusal") or delta.reasoning)
