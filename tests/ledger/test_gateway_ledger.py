"""Every admitted completion ends in exactly one ledger record, and users read their own history.

A real gateway (in process, real gRPC) in front of the fake upstreams, with limits on and the
ledger on SQLite or PostgreSQL; the REST side is the real bridge under uvicorn.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway_service.ledger import LedgerEntry, PriceTable, UsageSettings
from gateway_service.ledger.settings import SHIPPED_PRICES
from gateway_service.limits.estimate import prompt_tokens
from gateway_service.providers.workers_ai import WorkersAI
from native1api.gateway.v1 import chat_pb2, gateway_service_pb2
from tests.bridge.support import bridge_settings, serve_bridge
from tests.ledger.support import (
    LLAMA,
    OPENROUTER_LLAMA,
    Outcome,
    chat,
    complete,
    ledger_stack,
    read_all,
    today,
)
from tests.support.stack import OPENROUTER_KEY, Stack
from tests.support.tokens import TokenFactory, bearer
from vault_service.crypto import KeyRing

KINDS = ("ok", "stream", "cut", "error", "cancel")
PRICES = PriceTable.load(SHIPPED_PRICES)


def usage_settings(url: str, **overrides: Any) -> UsageSettings:
    return UsageSettings(database_url=url, prices=PRICES, flush_seconds=0.2, **overrides)


async def wait_for_records(url: str, count: int, within: float = 15.0) -> list[LedgerEntry]:
    deadline = time.monotonic() + within
    while True:
        entries = await read_all(url, today() - dt.timedelta(days=1), today())
        if len(entries) >= count or time.monotonic() > deadline:
            return entries
        await asyncio.sleep(0.1)


async def usage_of(stack: Stack, uid: str, **dates: str) -> gateway_service_pb2.GetUsageResponse:
    return await stack.gateway.GetUsage(
        gateway_service_pb2.GetUsageRequest(**dates),
        metadata=bearer(stack.tokens.mint(uid)),
        timeout=10,
    )


async def run_mix(stack: Stack, users: tuple[str, str], total: int) -> list[Outcome]:
    slots = asyncio.Semaphore(25)

    async def one(i: int) -> Outcome:
        async with slots:
            uid = users[i % 2]
            return await complete(stack, uid, KINDS[i % len(KINDS)], f"mix {i}", f"mix-{i}")

    return await asyncio.gather(*(one(i) for i in range(total)))


def check_record(entry: LedgerEntry, outcome: Outcome, byok_user: str) -> None:
    byok = outcome.uid == byok_user
    assert entry.uid == outcome.uid
    assert entry.byok is byok
    assert entry.provider == ("openrouter" if byok else "workers-ai")
    assert entry.model == LLAMA
    assert entry.upstream_model == (OPENROUTER_LLAMA if byok else LLAMA)
    assert entry.stream is (outcome.kind not in ("ok", "error"))
    assert entry.status == outcome.status
    assert abs(entry.created_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    if outcome.status == "OK":
        usage = outcome.usage
        assert usage is not None
        assert not entry.estimated
        assert (entry.prompt_tokens, entry.completion_tokens, entry.total_tokens) == (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens,
        )
        if byok:  # OpenRouter's own figure wins
            assert usage.HasField("cost")
            assert entry.cost_source == "provider"
            assert entry.cost_usd == usage.cost
        else:
            price = PRICES.price("workers-ai", LLAMA)
            assert price is not None
            expected = (
                usage.prompt_tokens * price.input + usage.completion_tokens * price.output
            ) / 1e6
            assert entry.cost_source == "price_table"
            assert entry.cost_usd is not None and math.isclose(entry.cost_usd, expected)
        return
    # Cut, failed or cancelled: the provider reported nothing, so the settlement's estimate.
    assert entry.estimated
    if outcome.kind == "error":
        assert entry.status == "UNAVAILABLE" and entry.reason == "UPSTREAM_ERROR"
        assert (entry.prompt_tokens, entry.completion_tokens) == (0, 0)
    if outcome.kind == "cut":
        assert entry.reason == "UPSTREAM_STREAM_INTERRUPTED"
    if outcome.kind in ("cut", "cancel") and entry.completion_tokens:
        prompt = {
            "cut": " [[fake:cut_after=2,chunks=8]]",
            "cancel": " [[fake:chunk_delay=0.05,chunks=40]]",
        }
        request = chat(f"mix {outcome.request_id.removeprefix('mix-')}{prompt[outcome.kind]}")
        assert entry.prompt_tokens == prompt_tokens(request)
    assert entry.total_tokens == entry.prompt_tokens + entry.completion_tokens
    if byok:
        assert entry.cost_usd is None and entry.cost_source is None  # no OpenRouter prices
    else:
        assert entry.cost_source == "price_table"


def sum_by_model(entries: list[LedgerEntry]) -> dict[tuple[str, str, str], tuple[int, ...]]:
    sums: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    for e in entries:
        row = sums[(e.day.isoformat(), e.provider, e.upstream_model)]
        for i, value in enumerate(
            (
                1,
                e.prompt_tokens,
                e.completion_tokens,
                e.total_tokens,
                int(e.cost_usd is None),
                int(e.estimated),
            )
        ):
            row[i] += value
    return {key: tuple(value) for key, value in sums.items()}


def history_by_model(
    history: gateway_service_pb2.UsageHistory,
) -> dict[tuple[str, str, str], tuple[int, ...]]:
    return {
        (day.date, m.provider, m.model): (
            m.requests,
            m.prompt_tokens,
            m.completion_tokens,
            m.total_tokens,
            m.unpriced_requests,
            m.estimated_requests,
        )
        for day in history.days
        for m in day.by_model
    }


async def test_200_mixed_completions_make_exactly_200_records_and_each_user_sees_their_own(
    tmp_path: Path, tokens: TokenFactory, keyring: KeyRing, usage_url: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    alice, bob = f"ledger-alice-{tag}", f"ledger-bob-{tag}"
    async with ledger_stack(tmp_path, tokens, keyring, usage_settings(usage_url)) as stack:
        await stack.save_key(
            bob, OPENROUTER_KEY
        )  # bob is BYOK on OpenRouter, alice on the platform
        outcomes = await run_mix(stack, (alice, bob), 200)
        kinds = {(o.kind, o.status) for o in outcomes}
        assert {
            ("ok", "OK"),
            ("stream", "OK"),
            ("error", "UNAVAILABLE"),
            ("cancel", "CANCELLED"),
        } <= kinds
        assert ("cut", "UNAVAILABLE") in kinds or ("cut", "INTERNAL") in kinds

        entries = await wait_for_records(usage_url, 200)
        await asyncio.sleep(0.5)  # nothing more arrives
        entries = await read_all(usage_url, today() - dt.timedelta(days=1), today())
        assert len(entries) == 200
        by_request = {e.request_id: e for e in entries}
        assert len(by_request) == 200
        for outcome in outcomes:
            check_record(by_request[outcome.request_id], outcome, bob)

        # History over gRPC: the user's own rollups, equal to their own records.
        first = (today() - dt.timedelta(days=1)).isoformat()
        for uid in (alice, bob):
            report = await usage_of(stack, uid, from_date=first, to_date=today().isoformat())
            assert report.HasField("history")
            assert report.history.from_date == first
            assert report.history.to_date == today().isoformat()
            mine = [e for e in entries if e.uid == uid]
            assert len(mine) == 100
            assert history_by_model(report.history) == sum_by_model(mine)
            day = report.history.days[-1]
            assert day.requests == 100
            priced = [e.cost_usd for e in mine if e.cost_usd is not None]
            if priced:
                assert math.isclose(day.cost_usd, sum(priced))
            else:
                assert not day.HasField("cost_usd")
            assert day.unpriced_requests == sum(e.cost_usd is None for e in mine)
            # Without a range, exactly today's report: no history.
            assert not (await usage_of(stack, uid)).HasField("history")

        # The same over REST, through the real bridge.
        async with serve_bridge(
            bridge_settings(stack.gateway_address, stack.vault_address)
        ) as bridge:
            for uid in (alice, bob):
                grpc_report = await usage_of(stack, uid, from_date=first)
                async with bridge.client(stack.tokens.mint(uid)) as client:
                    response = await client.get("/v1/usage", params={"from": first})
                assert response.status_code == 200
                body = response.json()
                history = body["history"]
                assert history["from"] == first and history["to"] == today().isoformat()
                rest_rows = {
                    (d["date"], m["provider"], m["model"]): (
                        m["requests"],
                        m["prompt_tokens"],
                        m["completion_tokens"],
                        m["total_tokens"],
                        m["unpriced_requests"],
                        m["estimated_requests"],
                    )
                    for d in history["days"]
                    for m in d["by_model"]
                }
                assert rest_rows == history_by_model(grpc_report.history)
                other = bob if uid == alice else alice
                assert other not in response.text
                providers = {m["provider"] for d in history["days"] for m in d["by_model"]}
                assert providers == {"openrouter" if uid == bob else "workers-ai"}
                async with bridge.client(stack.tokens.mint(uid)) as client:
                    plain = (await client.get("/v1/usage")).json()
                assert "history" not in plain


@pytest.mark.parametrize(
    ("dates", "param"),
    [
        ({"from_date": "2026-13-01"}, "from"),
        ({"from_date": "20261201"}, "from"),
        ({"from_date": "2026-12-01", "to_date": "yesterday"}, "to"),
        ({"from_date": "2026-12-02", "to_date": "2026-12-01"}, "from"),
        ({"from_date": "2024-01-01", "to_date": "2025-01-01"}, "to"),  # 367 days
        ({"to_date": "2026-12-01"}, "from"),
    ],
)
async def test_a_bad_range_is_invalid_argument_and_400(
    tmp_path: Path, tokens: TokenFactory, keyring: KeyRing, dates: dict[str, str], param: str
) -> None:
    url = f"sqlite:///{tmp_path}/usage.db"
    async with ledger_stack(tmp_path, tokens, keyring, usage_settings(url)) as stack:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await usage_of(stack, "ledger-range", **dates)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        query = {"from" if key == "from_date" else "to": value for key, value in dates.items()}
        async with (
            serve_bridge(bridge_settings(stack.gateway_address, stack.vault_address)) as bridge,
            bridge.client(stack.tokens.mint("ledger-range")) as client,
        ):
            response = await client.get("/v1/usage", params=query)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param
        assert error["message"]


async def test_a_full_year_is_accepted(
    tmp_path: Path, tokens: TokenFactory, keyring: KeyRing
) -> None:
    url = f"sqlite:///{tmp_path}/usage.db"
    async with ledger_stack(tmp_path, tokens, keyring, usage_settings(url)) as stack:
        report = await usage_of(stack, "ledger-year", from_date="2024-01-01", to_date="2024-12-31")
        assert report.history.from_date == "2024-01-01"
        assert list(report.history.days) == []


async def test_refused_completions_leave_no_record(
    tmp_path: Path, tokens: TokenFactory, keyring: KeyRing
) -> None:
    """Only admitted completions are usage: a request refused before admission is not."""
    url = f"sqlite:///{tmp_path}/usage.db"
    async with ledger_stack(tmp_path, tokens, keyring, usage_settings(url)) as stack:
        metadata = bearer(stack.tokens.mint("ledger-refused"))
        for request in (chat("hi", model=""), chat_pb2.ChatCompletionRequest(model=LLAMA)):
            with pytest.raises(grpc.aio.AioRpcError):
                await stack.gateway.CreateChatCompletion(
                    gateway_service_pb2.CreateChatCompletionRequest(request=request),
                    metadata=metadata,
                    timeout=10,
                )
        outcome = await complete(stack, "ledger-refused", "ok", "counted", "refused-ok")
        assert outcome.status == "OK"
        entries = await wait_for_records(url, 1)
        await asyncio.sleep(0.5)
        entries = await read_all(url, today() - dt.timedelta(days=1), today())
        assert [e.request_id for e in entries] == ["refused-ok"]


@pytest.mark.parametrize("kind", ["ok", "stream"])
async def test_an_unexpected_failure_is_recorded_as_internal_not_ok(
    tmp_path: Path,
    tokens: TokenFactory,
    keyring: KeyRing,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    """A bug in the gateway is INTERNAL to the caller, and so in the ledger (and the log)."""

    async def broken(*_: object, **__: object) -> Any:
        raise RuntimeError("a gateway bug")

    async def broken_stream(*_: object, **__: object) -> Any:
        raise RuntimeError("a gateway bug")
        yield  # pragma: no cover - an async generator that fails on first use

    monkeypatch.setattr(WorkersAI, "complete", broken)
    monkeypatch.setattr(WorkersAI, "stream", broken_stream)
    url = f"sqlite:///{tmp_path}/usage.db"
    async with ledger_stack(tmp_path, tokens, keyring, usage_settings(url)) as stack:
        outcome = await complete(stack, "ledger-bug", kind, "boom", f"bug-{kind}")
        assert outcome.status == "INTERNAL"
        [entry] = await wait_for_records(url, 1)
    assert (entry.request_id, entry.status) == (f"bug-{kind}", "INTERNAL")
    assert entry.estimated and entry.total_tokens == 0


async def test_history_from_a_gateway_without_a_ledger_is_unimplemented(
    tmp_path: Path, tokens: TokenFactory, keyring: KeyRing
) -> None:
    """Only gateways built in code (tests) can lack a ledger; they say so instead of guessing."""
    async with ledger_stack(tmp_path, tokens, keyring, UsageSettings()) as stack:
        assert stack.gateway_app.ledger is None
        assert not (await usage_of(stack, "ledger-none")).HasField("history")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await usage_of(stack, "ledger-none", from_date="2026-12-01")
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
