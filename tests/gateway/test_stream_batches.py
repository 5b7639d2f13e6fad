"""`allow_batches`: chunks the gateway has ready together share one message; the stream the
caller reads is the same chunk for chunk, and callers that did not ask get one per message."""

from __future__ import annotations

import asyncio
import itertools

from native1api.gateway.v1 import chat_pb2, gateway_service_pb2
from tests.gateway.test_gateway_service import LLAMA, chat
from tests.support.stack import OPENROUTER_KEY, Stack

Message = gateway_service_pb2.StreamChatCompletionResponse


async def _messages(
    stack: Stack, uid: str, prompt: str, *, batches: bool, model: str = LLAMA
) -> list[Message]:
    call = stack.gateway.StreamChatCompletion(
        gateway_service_pb2.StreamChatCompletionRequest(
            request=chat(prompt, model=model), allow_batches=batches
        ),
        metadata=stack.user(uid),
    )
    return [message async for message in call]


def _chunks(messages: list[Message]) -> list[chat_pb2.ChatCompletionChunk]:
    return [chunk for m in messages for chunk in (m.chunk, *m.more_chunks)]


def _comparable(chunk: chat_pb2.ChatCompletionChunk) -> bytes:
    copy = chat_pb2.ChatCompletionChunk()
    copy.CopyFrom(chunk)
    copy.ClearField("id")
    copy.ClearField("created")
    return copy.SerializeToString(deterministic=True)


async def test_a_burst_shares_messages_and_reads_the_same_as_one_per_message(
    stack: Stack,
) -> None:
    prompt = "a fast model [[fake:chunks=120,chunk_delay=0]]"
    batched = await _messages(stack, "batch-a", prompt, batches=True)
    single = await _messages(stack, "batch-b", prompt, batches=False)
    assert all(not m.more_chunks for m in single)
    assert len(_chunks(single)) == len(single) >= 120
    # Ready together: fewer messages than chunks (120 events written back to back).
    assert len(batched) < len(_chunks(batched))
    assert [_comparable(c) for c in _chunks(batched)] == [_comparable(c) for c in _chunks(single)]
    assert batched[0].provider == gateway_service_pb2.PROVIDER_WORKERS_AI
    assert all(m.provider == 0 for m in batched[1:])
    deltas = [c.delta.content for chunk in _chunks(batched) for c in chunk.choices]
    assert len([d for d in deltas if d]) == 120
    assert len({chunk.id for chunk in _chunks(batched)}) == 1


async def test_paced_chunks_are_not_held_back(stack: Stack) -> None:
    call = stack.gateway.StreamChatCompletion(
        gateway_service_pb2.StreamChatCompletionRequest(
            request=chat("slow model [[fake:chunks=4,chunk_delay=0.2]]"), allow_batches=True
        ),
        metadata=stack.user("batch-paced"),
    )
    loop = asyncio.get_running_loop()
    arrivals: list[tuple[float, int]] = []
    async for message in call:
        content = [c for chunk in (message.chunk, *message.more_chunks) for c in chunk.choices]
        arrivals.append((loop.time(), sum(bool(c.delta.content) for c in content)))
    content_times = [at for at, count in arrivals if count]
    # Each content chunk came on its own, about 0.2 s after the one before: none waited.
    assert len(content_times) == 4
    gaps = [b - a for a, b in itertools.pairwise(content_times)]
    assert all(0.12 < gap < 0.45 for gap in gaps), gaps


async def test_batches_on_an_openai_compatible_provider(stack: Stack) -> None:
    await stack.save_key("batch-or", OPENROUTER_KEY)
    prompt = "fast [[fake:chunks=80,chunk_delay=0]]"
    model = "openai/gpt-4o-mini"
    batched = await _messages(stack, "batch-or", prompt, batches=True, model=model)
    single = await _messages(stack, "batch-or", prompt, batches=False, model=model)
    assert batched[0].provider == gateway_service_pb2.PROVIDER_OPENROUTER
    assert [_comparable(c) for c in _chunks(batched)] == [_comparable(c) for c in _chunks(single)]
    last = _chunks(batched)[-1]
    assert list(last.choices) == [] and last.HasField("usage")
