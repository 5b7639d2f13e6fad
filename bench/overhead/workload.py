"""The request the benchmark sends: a realistic chat body, as REST JSON, gRPC proto and upstream body.

The direct (upstream) request is the body the gateway itself would send for the same client
request (`plan_request`), so the upstream does exactly the same work in every case and the
difference between a stack case and the direct case is what the stack adds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from bench.overhead.stack import CF_TOKEN, MODEL
from gateway_service.providers.base import UpstreamCall
from gateway_service.providers.workers_ai import plan_request
from native1api.gateway.v1 import gateway_service_pb2
from rpc_common.openai import request_from_json

_SYSTEM = (
    "You are a concise assistant for a note-taking app. Answer in the user's language, use "
    "Markdown lists when listing more than two items, never invent facts about the user's "
    "notes, and say so when a question cannot be answered from the provided context. Keep "
    "answers under 200 words unless the user asks for more detail. Today is Tuesday."
)
_HISTORY = [
    {"role": "user", "content": "I keep losing track of my reading list. Any ideas?"},
    {
        "role": "assistant",
        "content": (
            "A few options:\n- Keep one note called *Reading list* pinned at the top.\n"
            "- Tag each entry with #to-read and #done.\n- Review it every Sunday evening."
        ),
    },
]
_QUESTION = (
    "Thanks! Could you turn these three books into a short plan for the next month: "
    "'Thinking, Fast and Slow', 'The Pragmatic Programmer' and 'Dune'? I read about 40 "
    "pages a day on weekdays and nothing at weekends."
)


@dataclass(frozen=True)
class Shape:
    """How the upstream answers: content chunks, the pause between them, and for a
    non-streaming request how long the upstream takes before it answers."""

    chunks: int
    chunk_delay: float
    unary_delay: float

    def marker(self, stream: bool) -> str:
        # Markers in the prompt set the fake's behaviour per request (see fakes.behavior).
        if stream:
            return f" [[fake:chunks={self.chunks},chunk_delay={self.chunk_delay}]]"
        return f" [[fake:chunks={self.chunks},delay_first={self.unary_delay}]]"


def chat_body(shape: Shape, *, stream: bool) -> dict[str, Any]:
    """An OpenAI chat request as an SDK sends it (about 1.3 KB of JSON)."""
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": _SYSTEM},
            *_HISTORY,
            {"role": "user", "content": _QUESTION + shape.marker(stream)},
        ],
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 512,
        "user": "bench-end-user-42",
    }
    if stream:
        body["stream"] = True
    return body


@dataclass(frozen=True)
class Requests:
    """One request shape in every form the three targets need."""

    stream: bool
    rest_body: bytes
    upstream_body: bytes
    upstream_headers: dict[str, str]
    unary_proto: gateway_service_pb2.CreateChatCompletionRequest
    stream_proto: gateway_service_pb2.StreamChatCompletionRequest


def build_requests(shape: Shape, *, stream: bool) -> Requests:
    body = chat_body(shape, stream=stream)
    parsed = request_from_json(body)
    call = UpstreamCall(parsed.request, MODEL, CF_TOKEN, False, "bench")
    plan = plan_request(call, stream=stream, run_url="", v1_url="")
    return Requests(
        stream=stream,
        rest_body=orjson.dumps(body),
        upstream_body=orjson.dumps(plan.body),
        upstream_headers={
            "authorization": f"Bearer {CF_TOKEN}",
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
        },
        unary_proto=gateway_service_pb2.CreateChatCompletionRequest(request=parsed.request),
        # As the bridge asks: chunks the gateway has ready together may share a message.
        stream_proto=gateway_service_pb2.StreamChatCompletionRequest(
            request=parsed.request, allow_batches=True
        ),
    )
