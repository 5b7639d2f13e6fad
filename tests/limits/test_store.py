"""The limiter rules, store by store (in process and Redis), with the clock driven by the test.

Times are passed in, so a minute of refill or a dead replica's 45 s lease expiry is tested
exactly, without waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest

from gateway_service.limits import LimitStore
from gateway_service.limits.store import (
    LEASE_TTL_MS,
    Admit,
    Decision,
    ProviderDay,
    Quota,
    Settle,
)

T0 = 1_800_000_000_000  # ms; a fixed instant, mid-day UTC
DAY = "2027-01-15"
DAY_END = T0 + 3_600_000
NONE = Quota(None, None, None)


def user() -> str:
    return uuid.uuid4().hex


def admit(
    who: str,
    quota: Quota,
    now: int = T0,
    *,
    reserve: int = 0,
    provider: str = "workers-ai",
    lease: str | None = None,
    day: str = DAY,
) -> Admit:
    return Admit(
        user=who,
        quota=quota,
        now_ms=now,
        day=day,
        day_end_ms=DAY_END,
        reserve=reserve,
        provider=provider,
        lease=lease or uuid.uuid4().hex[:16],
    )


def settle(who: str, lease: str, *, reserve: int = 0, spent: int = 0, day: str = DAY) -> Settle:
    return Settle(
        user=who,
        day=day,
        lease=lease,
        provider="workers-ai",
        reserve=reserve,
        spent=spent,
        prompt_tokens=spent // 2,
        completion_tokens=spent - spent // 2,
    )


# -- requests per minute -------------------------------------------------------------------


async def test_bucket_admits_n_back_to_back_then_refuses(store: LimitStore) -> None:
    who, quota = user(), Quota(5, None, None)
    decisions = [await store.admit(admit(who, quota)) for _ in range(6)]
    assert [d.admitted for d in decisions] == [True] * 5 + [False]
    assert [d.bucket for d in decisions[:5]] == [4, 3, 2, 1, 0]
    refused = decisions[-1]
    assert refused.limit == "requests"
    assert refused.retry_after_ms == 12_000  # one request refills in 60 s / 5


async def test_retry_after_is_exact(store: LimitStore) -> None:
    who, quota = user(), Quota(3, None, None)
    for _ in range(3):
        assert (await store.admit(admit(who, quota))).admitted
    refused = await store.admit(admit(who, quota, T0 + 5_000))
    assert not refused.admitted
    assert refused.retry_after_ms == 15_000  # 20 s per request, 5 s already passed
    early = await store.admit(admit(who, quota, T0 + 5_000 + refused.retry_after_ms - 1))
    assert not early.admitted
    on_time = await store.admit(admit(who, quota, T0 + 5_000 + refused.retry_after_ms))
    assert on_time.admitted


async def test_bucket_refills_continuously_up_to_n(store: LimitStore) -> None:
    who, quota = user(), Quota(60, None, None)
    for _ in range(60):
        assert (await store.admit(admit(who, quota))).admitted
    half = await store.admit(admit(who, quota, T0 + 30_000))
    assert half.admitted and half.bucket == pytest.approx(29)
    later = await store.admit(admit(who, quota, T0 + 10 * 60_000))
    assert later.bucket == pytest.approx(59)  # capped at N, minus this one


async def test_refusal_takes_nothing(store: LimitStore) -> None:
    who = user()
    quota = Quota(2, 100, 5)
    assert (await store.admit(admit(who, quota, reserve=60))).admitted
    # Refused for tokens: the bucket, the leases and the budget are untouched.
    assert not (await store.admit(admit(who, quota, reserve=60))).admitted
    snap = await store.snapshot(who, quota, T0, DAY)
    assert snap.bucket == pytest.approx(1)
    assert snap.in_flight == 1
    assert snap.tokens_used == 60
    assert snap.today["workers-ai"].requests == 1


async def test_zero_requests_refuses_everything(store: LimitStore) -> None:
    decision = await store.admit(admit(user(), Quota(0, None, None)))
    assert decision == Decision(False, "requests", 60_000)


async def test_users_do_not_share_buckets(store: LimitStore) -> None:
    quota = Quota(1, None, None)
    assert (await store.admit(admit(user(), quota))).admitted
    assert (await store.admit(admit(user(), quota))).admitted


# -- concurrency ---------------------------------------------------------------------------


async def test_concurrency_counts_leases_until_settled(store: LimitStore) -> None:
    who, quota = user(), Quota(None, None, 2)
    first = await store.admit(admit(who, quota, lease="a"))
    second = await store.admit(admit(who, quota, lease="b"))
    assert (first.in_flight, second.in_flight) == (1, 2)
    third = await store.admit(admit(who, quota, lease="c"))
    assert (third.admitted, third.limit) == (False, "concurrency")
    await store.settle(settle(who, "a"))
    assert (await store.admit(admit(who, quota, lease="c"))).admitted


async def test_a_dead_replicas_lease_expires_and_a_renewed_one_does_not(
    store: LimitStore,
) -> None:
    who, quota = user(), Quota(None, None, 2)
    await store.admit(admit(who, quota, lease="alive"))
    await store.admit(admit(who, quota, lease="dead"))
    # The live replica renews its lease; the dead one's owner never will.
    await store.renew([(who, "alive")], T0 + LEASE_TTL_MS - 1000)
    before = await store.admit(admit(who, quota, T0 + LEASE_TTL_MS - 1))
    assert not before.admitted
    after = await store.admit(admit(who, quota, T0 + LEASE_TTL_MS + 1, lease="new"))
    assert after.admitted and after.in_flight == 2  # "alive" and "new"
    assert LEASE_TTL_MS <= 60_000  # SPEC §10: a dead replica's slot frees within 60 s


async def test_renewing_a_settled_lease_does_not_resurrect_it(store: LimitStore) -> None:
    who, quota = user(), Quota(None, None, 1)
    await store.admit(admit(who, quota, lease="x"))
    await store.settle(settle(who, "x"))
    await store.renew([(who, "x")], T0 + 1000)
    assert (await store.snapshot(who, quota, T0 + 1000, DAY)).in_flight == 0


async def test_settling_twice_frees_one_slot(store: LimitStore) -> None:
    who, quota = user(), Quota(None, None, 2)
    await store.admit(admit(who, quota, lease="a"))
    await store.admit(admit(who, quota, lease="b"))
    await store.settle(settle(who, "a"))
    await store.settle(settle(who, "a"))
    assert (await store.snapshot(who, quota, T0, DAY)).in_flight == 1


async def test_concurrent_admissions_never_exceed_the_limit(store: LimitStore) -> None:
    who, quota = user(), Quota(None, None, 4)
    decisions = await asyncio.gather(*(store.admit(admit(who, quota)) for _ in range(50)))
    assert sum(d.admitted for d in decisions) == 4


# -- tokens per day ------------------------------------------------------------------------


async def test_reserve_that_does_not_fit_is_refused(store: LimitStore) -> None:
    who, quota = user(), Quota(None, 1000, None)
    assert (await store.admit(admit(who, quota, reserve=700))).admitted
    refused = await store.admit(admit(who, quota, reserve=301))
    assert (refused.admitted, refused.limit) == (False, "tokens")
    assert refused.retry_after_ms == DAY_END - T0
    fits = await store.admit(admit(who, quota, reserve=300))
    assert fits.admitted and fits.tokens_used == 1000


async def test_settlement_replaces_the_reserve_by_what_was_spent(store: LimitStore) -> None:
    who, quota = user(), Quota(None, 1000, None)
    decision = await store.admit(admit(who, quota, reserve=900, lease="l1"))
    assert decision.tokens_used == 900
    await store.settle(settle(who, "l1", reserve=900, spent=120))
    snap = await store.snapshot(who, quota, T0, DAY)
    assert snap.tokens_used == 120
    assert snap.today == {"workers-ai": ProviderDay(1, 60, 60)}
    assert (await store.admit(admit(who, quota, reserve=880))).admitted


async def test_byok_admissions_reserve_nothing(store: LimitStore) -> None:
    who, quota = user(), Quota(None, 0, None)
    decision = await store.admit(admit(who, quota, reserve=0, provider="openrouter"))
    assert decision.admitted
    refused = await store.admit(admit(who, quota, reserve=10))
    assert (refused.admitted, refused.limit) == (False, "tokens")


async def test_days_are_separate_and_settle_against_their_own_day(store: LimitStore) -> None:
    who, quota = user(), Quota(None, 100, None)
    assert (await store.admit(admit(who, quota, reserve=100, lease="late"))).admitted
    next_day = "2027-01-16"
    assert (await store.admit(admit(who, quota, reserve=100, day=next_day))).admitted
    # The completion admitted yesterday settles against yesterday, not today.
    await store.settle(settle(who, "late", reserve=100, spent=10))
    assert (await store.snapshot(who, quota, T0, DAY)).tokens_used == 10
    assert (await store.snapshot(who, quota, T0, next_day)).tokens_used == 100


async def test_today_counts_each_provider(store: LimitStore) -> None:
    who = user()
    await store.admit(admit(who, NONE, provider="openrouter", lease="o"))
    await store.admit(admit(who, NONE, provider="workers-ai", reserve=50, lease="w"))
    await store.settle(
        Settle(who, DAY, "o", "openrouter", 0, 0, prompt_tokens=7, completion_tokens=3)
    )
    await store.settle(
        Settle(who, DAY, "w", "workers-ai", 50, 12, prompt_tokens=8, completion_tokens=4)
    )
    snap = await store.snapshot(who, NONE, T0, DAY)
    assert snap.today == {
        "openrouter": ProviderDay(1, 7, 3),
        "workers-ai": ProviderDay(1, 8, 4),
    }
    assert snap.tokens_used == 12  # only the platform's tokens count against the day
    assert snap.bucket is None


async def test_snapshot_of_a_new_user_is_whole(store: LimitStore) -> None:
    snap = await store.snapshot(user(), Quota(30, 1000, 3), T0, DAY)
    assert (snap.bucket, snap.tokens_used, snap.in_flight, dict(snap.today)) == (30, 0, 0, {})


async def test_released_leases_are_removed_before_counting(store: LimitStore) -> None:
    who, quota = user(), Quota(None, None, 1)
    assert (await store.admit(admit(who, quota, lease="ended"))).admitted
    refused = await store.admit(admit(who, quota, lease="next"))
    assert (refused.admitted, refused.limit) == (False, "concurrency")
    # The gateway ended "ended"; its settlement has not landed yet.
    again = dataclasses.replace(admit(who, quota, lease="next"), released=("ended", "gone"))
    decision = await store.admit(again)
    assert decision.admitted and decision.in_flight == 1
    await store.settle(settle(who, "ended"))  # the late settlement changes nothing
    assert (await store.snapshot(who, quota, T0, DAY)).in_flight == 1
