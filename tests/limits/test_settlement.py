"""Settlement runs off the request path; nothing about a user's state may show it.

A store whose settlements are slow stands in for a Redis round trip that has not landed yet.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from gateway_service.limits import Admission, MemoryStore
from gateway_service.limits.store import Quota, Settle
from gateway_service.limits.tiers import Tier, TierTable
from gateway_service.metrics import GatewayMetrics
from native1api.gateway.v1 import chat_pb2
from rpc_common.auth import Caller
from rpc_common.status import RpcError


class SlowSettlements(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.landed = 0

    async def settle(self, settle: Settle) -> None:
        await asyncio.sleep(0.2)
        await super().settle(settle)
        self.landed += 1


def admission(store: MemoryStore) -> Admission:
    tiers = TierTable(
        {"default": Tier("default", max_concurrent_requests=1, tokens_per_day=10_000)}
    )
    return Admission(tiers, store, metrics=GatewayMetrics(), max_tokens_for=lambda _: 100)


def caller(uid: str = "u1") -> Caller:
    return Caller(uid=uid, claims={"sub": uid}, token="t")


REQUEST = chat_pb2.ChatCompletionRequest(
    model="@cf/x/y", messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, text="hi")]
)


async def admit(gate: Admission, who: Caller) -> Any:
    return await gate.admit(who, REQUEST, provider="workers-ai", byok=False)


async def test_the_next_request_is_admitted_before_the_last_settlement_lands() -> None:
    store = SlowSettlements()
    gate = admission(store)
    first = await admit(gate, caller())
    with pytest.raises(RpcError) as caught:
        await admit(gate, caller())  # the one slot is taken
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    first.settle(chat_pb2.Usage(prompt_tokens=3, completion_tokens=4))
    second = await admit(gate, caller())  # at once: the settlement has not landed
    assert store.landed == 0
    second.settle(None)
    await gate.aclose()  # waits for both settlements
    assert store.landed == 2


async def test_usage_waits_for_pending_settlements() -> None:
    store = SlowSettlements()
    gate = admission(store)
    lease = await admit(gate, caller("u2"))
    lease.settle(chat_pb2.Usage(prompt_tokens=30, completion_tokens=12))
    report = await gate.usage(caller("u2"))
    assert report.in_flight == 0
    assert report.today.by_provider["workers-ai"].prompt_tokens == 30
    assert report.remaining.tokens_per_day == 10_000 - 42
    await gate.aclose()


async def test_a_cancelled_caller_cannot_stop_a_settlement() -> None:
    store = SlowSettlements()
    gate = admission(store)
    lease = await admit(gate, caller("u3"))

    async def call() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            lease.settle(None)

    task = asyncio.create_task(call())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await gate.aclose()
    assert store.landed == 1
    assert (await store.snapshot(lease.user, Quota(None, None, None), 0, lease.day)).in_flight == 0
