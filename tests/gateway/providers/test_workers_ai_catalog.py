"""The Workers AI model catalog: pagination, the TTL cache, single flight and the fallback list."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs

import pytest

from fakes.app import FakeApp
from fakes.catalog import WORKERS_AI_MODELS, WORKERS_AI_TEXT_GENERATION
from gateway_service.providers.workers_ai_catalog import (
    WorkersAICatalog,
    builtin_entries,
    owned_by_of,
    parse_created_at,
)
from tests.gateway.providers.workers_ai_support import (
    ACCT,
    SEARCH,
    SETTINGS,
    TOKEN,
    VISION,
    Env,
    make_env,
    start_fake,
)

TEXT_MODELS = [m.name for m in WORKERS_AI_MODELS if m.task == WORKERS_AI_TEXT_GENERATION]


@pytest.fixture(scope="module")
def wai_fake() -> Iterator[tuple[FakeApp, str]]:
    yield from start_fake()


@pytest.fixture
async def wai(wai_fake: tuple[FakeApp, str]) -> AsyncIterator[Env]:
    async for env in make_env(wai_fake):
        yield env


class Clock:
    """A hand-driven monotonic clock for TTL tests."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def catalog(
    env: Env,
    clock: Clock | None = None,
    *,
    ttl_seconds: float = 600.0,
    failure_retry_seconds: float = 60.0,
    fetch_timeout_seconds: float = 15.0,
    per_page: int = 100,
) -> WorkersAICatalog:
    return WorkersAICatalog(
        env.http,
        SETTINGS,
        env.base_url,
        ACCT,
        ttl_seconds=ttl_seconds,
        failure_retry_seconds=failure_retry_seconds,
        fetch_timeout_seconds=fetch_timeout_seconds,
        per_page=per_page,
        clock=clock or Clock(),
    )


def searches(env: Env) -> list[dict[str, list[str]]]:
    return [parse_qs(r.query) for r in env.control.requests_to(SEARCH)]


async def test_lists_the_text_generation_models_via_the_provider(wai: Env) -> None:
    models = await wai.provider.list_models(TOKEN, byok=False)
    assert [m.id for m in models] == TEXT_MODELS
    llama = next(m for m in models if m.id == "@cf/meta/llama-3.2-3b-instruct")
    assert llama.owned_by == "meta"
    assert llama.created == 1727294743  # "2024-09-25 20:05:43.986" UTC
    [query] = searches(wai)[:1]
    assert query["task"] == ["Text Generation"] and query["per_page"] == ["100"]
    assert "task=Text%20Generation" in wai.control.requests_to(SEARCH)[0].query
    assert wai.control.requests_to(SEARCH)[0].header("authorization") == f"Bearer {TOKEN}"


async def test_paginates_until_an_empty_page(wai: Env) -> None:
    entries = await catalog(wai, per_page=10).entries(TOKEN)
    assert [e.id for e in entries] == TEXT_MODELS
    pages = [q["page"][0] for q in searches(wai)]
    full_pages = -(-len(TEXT_MODELS) // 10)
    # total_count (the whole catalog) is ignored: one request past the last page, then stop.
    assert pages == [str(n) for n in range(1, full_pages + 2)]


async def test_one_fetch_serves_concurrent_and_later_callers(wai: Env) -> None:
    clock = Clock()
    cat = catalog(wai, clock, ttl_seconds=600)
    results = await asyncio.gather(*(cat.list_models(TOKEN) for _ in range(20)))
    assert all([m.id for m in r] == TEXT_MODELS for r in results)
    fetched = len(searches(wai))
    assert fetched == 2  # page 1 and the empty page 2, once for all twenty callers
    clock.now += 599
    await cat.list_models(TOKEN)
    assert len(searches(wai)) == fetched
    clock.now += 2  # past the TTL
    await cat.list_models(TOKEN)
    assert len(searches(wai)) == 2 * fetched


async def test_returned_protos_are_the_callers_to_keep(wai: Env) -> None:
    cat = catalog(wai)
    first = await cat.list_models(TOKEN)
    first[0].id = "changed"
    assert (await cat.list_models(TOKEN))[0].id == TEXT_MODELS[0]


async def test_falls_back_to_the_builtin_list_and_warns_once(
    wai: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway_service.providers.workers_ai_catalog")
    clock = Clock()
    cat = catalog(wai, clock, failure_retry_seconds=60)
    for _ in range(3):
        models = await cat.list_models("cf-wrong-token-ffffffffffffffff")  # 400 code 10001
        assert [m.id for m in models] == [e.id for e in builtin_entries()]
    assert len(searches(wai)) == 1  # failures are not retried per request
    clock.now += 61
    await cat.list_models("cf-wrong-token-ffffffffffffffff")
    assert len(searches(wai)) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "built-in" in warnings[0].getMessage()
    assert "cf-wrong-token" not in warnings[0].getMessage()
    clock.now += 61
    assert [m.id for m in await cat.list_models(TOKEN)] == TEXT_MODELS  # recovered


async def test_server_error_falls_back(wai: Env) -> None:
    wai.control.fail_next(500, scope="any")
    models = await catalog(wai).list_models(TOKEN)
    assert len(models) == len(builtin_entries())


async def test_unreachable_upstream_falls_back(wai: Env) -> None:
    cat = WorkersAICatalog(wai.http, SETTINGS, "http://127.0.0.1:9/client/v4", ACCT)
    assert len(await cat.list_models(TOKEN)) == len(builtin_entries())


async def test_a_failed_refresh_keeps_the_last_good_list(wai: Env) -> None:
    clock = Clock()
    cat = catalog(wai, clock, ttl_seconds=10)
    await cat.list_models(TOKEN)
    clock.now += 11
    wai.control.fail_next(500, scope="any")
    assert [m.id for m in await cat.list_models(TOKEN)] == TEXT_MODELS


async def test_slow_fetch_gives_up_and_falls_back(wai: Env) -> None:
    wai.control.push(delay_first=2, scope="any")
    cat = catalog(wai, fetch_timeout_seconds=0.2)
    assert len(await cat.list_models(TOKEN)) == len(builtin_entries())


async def test_vision_flags_come_from_the_catalog(wai: Env) -> None:
    cat = catalog(wai)
    assert cat.is_vision(VISION)  # built-in knowledge before any fetch
    assert not cat.is_vision("@cf/meta/llama-3.2-3b-instruct")
    await cat.entries(TOKEN)
    assert cat.is_vision(VISION) and cat.is_vision("@cf/meta/llama-4-scout-17b-16e-instruct")


def test_builtin_list_is_the_recorded_catalog() -> None:
    entries = builtin_entries()
    # wire-formats §2.8: the 28 text-generation models of the live capture (the fake's too).
    assert [e.id for e in entries] == TEXT_MODELS
    assert len(entries) == 28
    assert all(e.owned_by == owned_by_of(e.id) for e in entries)
    assert {e.id for e in entries if e.vision} == {
        m.name for m in WORKERS_AI_MODELS if "v" in m.flags
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-09-25 20:05:43.986", 1727294743),
        ("2024-09-25 20:05:43", 1727294743),
        ("2024-09-25T20:05:43.986Z", 1727294743),
        ("2024-09-25", 1727222400),
        (1727294743, 1727294743),
        ("yesterday", 0),
        ("", 0),
        (None, 0),
    ],
)
def test_parse_created_at(value: object, expected: int) -> None:
    assert parse_created_at(value) == expected


@pytest.mark.parametrize(
    ("model", "owner"),
    [
        ("@cf/meta/llama-3.2-3b-instruct", "meta"),
        ("@hf/thebloke/zephyr-7b-beta-awq", "thebloke"),
        ("@cf/openai/gpt-oss-20b", "openai"),
        ("weird", "cloudflare"),
    ],
)
def test_owned_by_is_the_namespace(model: str, owner: str) -> None:
    assert owned_by_of(model) == owner
