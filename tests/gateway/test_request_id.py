"""A direct gRPC caller's `x-request-id` cannot forge fields in the gateway's request log."""

from __future__ import annotations

import logging

import pytest

from native1api.gateway.v1 import chat_pb2, gateway_service_pb2
from tests.support.stack import Stack


def request() -> gateway_service_pb2.CreateChatCompletionRequest:
    return gateway_service_pb2.CreateChatCompletionRequest(
        request=chat_pb2.ChatCompletionRequest(
            model="@cf/meta/llama-3.2-3b-instruct",
            messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, text="hi")],
        )
    )


@pytest.mark.parametrize(
    "forged",
    ["x uid_hash=0000 status=OK", "x" * 129, "id;rm", "ok=1"],
)
async def test_a_forged_request_id_is_replaced(
    stack: Stack, caplog: pytest.LogCaptureFixture, forged: str
) -> None:
    caplog.set_level(logging.INFO, logger="native1api.requests")
    metadata = (*stack.user("rid"), ("x-request-id", forged))
    await stack.gateway.CreateChatCompletion(request(), metadata=metadata)
    [line] = [r.getMessage() for r in caplog.records if r.name == "native1api.requests"]
    assert forged not in line
    assert line.count("status=") == 1 and line.count("uid_hash=") == 1
    request_id = line.split()[0].removeprefix("request_id=")
    assert len(request_id) == 32 and request_id.isalnum()


async def test_a_sane_request_id_is_kept(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="native1api.requests")
    metadata = (*stack.user("rid"), ("x-request-id", "trace-42.a:b"))
    await stack.gateway.CreateChatCompletion(request(), metadata=metadata)
    assert any(r.getMessage().startswith("request_id=trace-42.a:b ") for r in caplog.records)
