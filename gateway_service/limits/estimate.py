"""Token estimates for reserving and for settling what a provider never reported.

The reserve must be cheap and must not undercount grossly: it is the request's serialized size
in bytes / 4 (about four bytes of English per token; field tags and ids make it a little high,
which errs on the side of the budget). Media parts are counted as a flat `MEDIA_PART_TOKENS`
instead of their bytes, since a base64 image is megabytes but a few hundred tokens.
"""

from __future__ import annotations

from typing import Final

from native1api.gateway.v1 import chat_pb2

BYTES_PER_TOKEN: Final = 4
MEDIA_PART_TOKENS: Final = 1000
_MEDIA: Final = frozenset({"image_url", "input_audio", "file"})


def prompt_tokens(request: chat_pb2.ChatCompletionRequest) -> int:
    """An estimate of the prompt's tokens, at least 1."""
    size = request.ByteSize()
    media = 0
    for message in request.messages:
        if message.WhichOneof("content") != "parts":
            continue
        for part in message.parts.parts:
            if part.WhichOneof("part") in _MEDIA:
                size -= part.ByteSize()
                media += 1
    return max(1, -(-size // BYTES_PER_TOKEN) + media * MEDIA_PART_TOKENS)


def text_tokens(characters: int) -> int:
    """An estimate of the tokens in `characters` characters of streamed output."""
    return -(-characters // BYTES_PER_TOKEN)


def chunk_characters(chunk: chat_pb2.ChatCompletionChunk) -> int:
    """The generated characters one streamed chunk carries (content, reasoning, tool arguments)."""
    total = 0
    for choice in chunk.choices:
        delta = choice.delta
        total += len(delta.content) + len(delta.reasoning)
        for call in delta.tool_calls:
            total += len(call.arguments)
    return total
