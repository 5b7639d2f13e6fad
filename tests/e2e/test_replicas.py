"""The replicated stack of `make run-replicas`, end to end through its one URL (SPEC §12).

Two vaults on one PostgreSQL schema (fresh for this module), two gateways sharing their limits
through the machine's Redis, two bridges and the round-robin front, as subprocesses
(`tests.support.replicas` starts the children `devstack.replicas` builds). Every request opens
its own connection, so the front alternates them between the bridges; each bridge starts its
gateway list at a different gateway, so the two bridges also reach different gateways.

The processes are shared by the module: the test that restarts a gateway runs after the tests
that count on both gateways, and the log check runs last.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from fakes.content import reply_text
from tests.support.replicas import MODEL, OR_KEY, ReplicaStack, running_replicas

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

RPM = 6
LIMITS_TOML = f"""
[tiers.default]
requests_per_minute = 100000

[tiers.rpm]
requests_per_minute = {RPM}
"""
STREAMS = 200
STREAM_SPACING = 0.03
"""Seconds between stream starts: 200 streams over about 6 s, about 30 open at once."""
SLOW = "[[fake:chunk_delay=0.05,chunks=10]]"
READ_TIMEOUT = 10.0
"""Seconds any read (the head, the next SSE line) may take."""
STREAM_TIMEOUT = 20.0
"""Seconds one whole stream may take."""


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, postgres_admin: str, redis_url: str
) -> Iterator[ReplicaStack]:
    tmp = tmp_path_factory.mktemp("replicas")
    with running_replicas(tmp, postgres_admin, redis_url, LIMITS_TOML) as running:
        yield running


def uid(test: str) -> str:
    return f"replicas-{test}-{uuid.uuid4().hex[:8]}"


def chat(prompt: str, *, stream: bool = False) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": stream}


def post(stack: ReplicaStack, path: str, body: object, headers: dict[str, str]) -> httpx.Response:
    """One request on a connection of its own (so the front picks the next bridge)."""
    return httpx.post(f"{stack.url}{path}", json=body, headers=headers, timeout=READ_TIMEOUT)


def completions_served(stack: ReplicaStack, status: int) -> dict[str, int]:
    return {
        bridge: stack.bridge_requests(bridge, "/v1/chat/completions", status)
        for bridge in ("bridge-1", "bridge-2")
    }


# -- (a) one URL, both bridges -------------------------------------------------------------


def test_completions_and_the_vault_through_the_front_reach_both_bridges(
    stack: ReplicaStack,
) -> None:
    headers = stack.headers(uid("front"))
    before = completions_served(stack, 200)
    for i in range(6):
        reply = post(stack, "/v1/chat/completions", chat(f"hello {i}"), headers)
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == reply_text(f"hello {i}")
    after = completions_served(stack, 200)
    # The front alternates connections: three on each bridge.
    assert {bridge: after[bridge] - before[bridge] for bridge in after} == {
        "bridge-1": 3,
        "bridge-2": 3,
    }

    # A key saved through one bridge (and vault) is read back through the other.
    vault_user = stack.headers(uid("vault"))
    saved = post(stack, "/v1/vault", {"apiKey": OR_KEY}, vault_user)
    assert saved.status_code == 200, saved.text
    assert saved.json() == {"exists": True, "provider": "openrouter"}
    before = {b: stack.bridge_requests(b, "/v1/vault", 200) for b in ("bridge-1", "bridge-2")}
    for _ in range(2):
        read = httpx.get(f"{stack.url}/v1/vault", headers=vault_user, timeout=READ_TIMEOUT)
        assert read.status_code == 200, read.text
        assert read.json() == {"exists": True, "provider": "openrouter"}
        assert read.headers["cache-control"] == "no-store"
    after = {b: stack.bridge_requests(b, "/v1/vault", 200) for b in ("bridge-1", "bridge-2")}
    assert {b: after[b] - before[b] for b in after} == {"bridge-1": 1, "bridge-2": 1}


def _providers(base: str, headers: dict[str, str], count: int) -> list[str]:
    """The provider of `count` completions sent through one bridge (each its own connection)."""
    served = []
    for i in range(count):
        reply = httpx.post(
            f"{base}/v1/chat/completions", json=chat(f"who {i}"), headers=headers, timeout=10
        )
        assert reply.status_code == 200, reply.text
        served.append(reply.headers["x-native1api-provider"])
    return served


def _converged(base: str, headers: dict[str, str], provider: str) -> float:
    """Seconds until a completion through `base` runs on `provider` (at most 1 s)."""
    started = time.monotonic()
    while _providers(base, headers, 1) != [provider]:
        assert time.monotonic() - started < 1.0, f"the key change did not reach {base} in 1 s"
    return time.monotonic() - started


def test_key_changes_reach_every_gateway_through_any_bridge(stack: ReplicaStack) -> None:
    """Save through bridge A, use through bridge B; delete through B, use through A. The
    gateways cache AccessApiKey answers for 60 s and follow whichever vault round robin gave
    their change feed, so only the vaults' NOTIFY explains the change arriving in time."""
    headers = stack.headers(uid("byok"))
    bridge_a, bridge_b = (f"http://{address}" for address in stack.layout.bridges)
    # Both gateways cache "no key" for this user first (through both bridges).
    assert set(_providers(bridge_a, headers, 4) + _providers(bridge_b, headers, 4)) == {
        "workers-ai"
    }
    saved = httpx.post(f"{bridge_a}/v1/vault", json={"apiKey": OR_KEY}, headers=headers)
    assert saved.status_code == 200, saved.text
    _converged(bridge_b, headers, "openrouter")
    assert _providers(bridge_b, headers, 20) == ["openrouter"] * 20
    deleted = httpx.delete(f"{bridge_b}/v1/vault", headers=headers)
    assert deleted.json() == {"exists": False}
    _converged(bridge_a, headers, "workers-ai")
    assert _providers(bridge_a, headers, 20) == ["workers-ai"] * 20


# -- (b) one budget across both bridges and gateways ---------------------------------------


def test_requests_per_minute_is_one_budget_across_bridges_and_gateways(
    stack: ReplicaStack,
) -> None:
    headers = stack.headers(uid("rpm"), tier="rpm")
    logs_before = {name: stack.services[name].log for name in ("gateway-1", "gateway-2")}
    before = {status: completions_served(stack, status) for status in (200, 429)}
    started = time.monotonic()
    replies = [
        post(stack, "/v1/chat/completions", chat(f"budget {i}"), headers) for i in range(RPM + 1)
    ]
    elapsed = time.monotonic() - started
    # The bucket refills one request every 60/RPM s: the calls must all fall inside that.
    assert elapsed < 60 / RPM, f"the calls took {elapsed:.1f} s, the bucket refilled meanwhile"
    assert [r.status_code for r in replies] == [200] * RPM + [429], [r.text for r in replies]
    refused = replies[-1]
    assert refused.json()["error"]["type"] == "requests"
    assert int(refused.headers["retry-after"]) >= 1

    # Spread over both bridges (the front alternates)...
    after = {status: completions_served(stack, status) for status in (200, 429)}
    served = {
        bridge: sum(after[s][bridge] - before[s][bridge] for s in (200, 429))
        for bridge in ("bridge-1", "bridge-2")
    }
    assert sorted(served.values()) == [(RPM + 1) // 2, (RPM + 2) // 2], served
    # ...and over both gateways: each logged some of these requests.
    request_ids = [r.headers["x-request-id"] for r in replies]
    deadline = time.monotonic() + 5
    while True:
        seen = {
            name: sum(
                f"request_id={rid}" in stack.services[name].log.removeprefix(logs_before[name])
                for rid in request_ids
            )
            for name in ("gateway-1", "gateway-2")
        }
        if sum(seen.values()) == RPM + 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sum(seen.values()) == RPM + 1, seen
    assert all(seen.values()), f"one gateway served every request: {seen}"


# -- (c) 200 streams while a gateway restarts ----------------------------------------------


@dataclass
class Outcome:
    kind: str
    """completed, error-frame, http-error, or what went wrong."""
    detail: str = ""


async def one_stream(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], n: int
) -> Outcome:
    prompt = f"stream {n} {SLOW}"
    expected = reply_text(f"stream {n}", chunks=10)
    async with client.stream(
        "POST", f"{url}/v1/chat/completions", json=chat(prompt, stream=True), headers=headers
    ) as response:
        if response.status_code != 200:
            body = json.loads(await response.aread())
            assert set(body["error"]) >= {"message", "type", "code"}, body
            return Outcome("http-error", f"{response.status_code} {body['error']['code']}")
        frames: list[str] = []
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                frames.append(line.removeprefix("data: "))
            else:
                assert line == "" or line.startswith(":"), line
    if frames and frames[-1] == "[DONE]":
        chunks = [json.loads(frame) for frame in frames[:-1]]
        assert all("error" not in chunk for chunk in chunks), frames
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert finish and finish[-1] is not None and all(f is None for f in finish[:-1]), frames
        content = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        assert content == expected, frames
        return Outcome("completed")
    errors = [frame for frame in frames if frame != "[DONE]" and "error" in json.loads(frame)]
    assert len(errors) == 1 and frames[-1] == errors[0], f"not one error frame at the end: {frames}"
    assert "[DONE]" not in frames
    return Outcome("error-frame", json.loads(errors[0])["error"].get("code") or "")


async def bounded_stream(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], n: int
) -> Outcome:
    try:
        return await asyncio.wait_for(one_stream(client, url, headers, n), STREAM_TIMEOUT)
    except TimeoutError:
        return Outcome("HUNG", f"stream {n} not over after {STREAM_TIMEOUT} s")
    except httpx.TimeoutException as exc:
        return Outcome("HUNG", f"stream {n}: no byte for {READ_TIMEOUT} s ({type(exc).__name__})")
    except (httpx.HTTPError, AssertionError, ValueError, KeyError) as exc:
        return Outcome("BROKEN", f"stream {n}: {type(exc).__name__}: {exc}")


async def test_streams_over_both_bridges_survive_a_gateway_restart(stack: ReplicaStack) -> None:
    """Runs after the tests that count on both gateways: it restarts gateway-1."""
    headers = stack.headers(uid("streams"))
    before = completions_served(stack, 200)
    restart: dict[str, float] = {}

    async def restart_gateway() -> None:
        await asyncio.sleep(STREAMS * STREAM_SPACING / 4)  # a quarter of the streams started
        restart["sigterm"] = time.monotonic()
        code = await asyncio.to_thread(stack.stop, "gateway-1")
        restart["exited"] = time.monotonic()
        assert code == 0
        await asyncio.to_thread(stack.start, "gateway-1")
        restart["serving"] = time.monotonic()

    # A connection per stream (no keep-alive), so the front spreads them over both bridges.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    timeout = httpx.Timeout(READ_TIMEOUT)
    started = time.monotonic()
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        restarter = asyncio.create_task(restart_gateway())
        tasks = []
        for n in range(STREAMS):
            tasks.append(asyncio.create_task(bounded_stream(client, stack.url, headers, n)))
            await asyncio.sleep(STREAM_SPACING)
        outcomes = await asyncio.gather(*tasks)
        await restarter
    elapsed = time.monotonic() - started

    kinds = Counter(outcome.kind for outcome in outcomes)
    # Only this test streams: how many streams each gateway process logged.
    per_gateway = {
        name: stack.services[name].log.count("rpc=StreamChatCompletion")
        for name in ("gateway-1", "gateway-2")
    }
    details = Counter(f"{o.kind}: {o.detail}" for o in outcomes if o.kind != "completed")
    t0 = restart["sigterm"] - started
    print(  # noqa: T201 (the numbers the report quotes; shown with -s or on failure)
        f"\n{STREAMS} streams in {elapsed:.1f} s: {dict(kinds)}; {dict(details)}; "
        f"logged by {per_gateway}; gateway-1 "
        f"SIGTERM at {t0:.1f} s, exited {restart['exited'] - restart['sigterm']:.1f} s later, "
        f"serving again {restart['serving'] - restart['sigterm']:.1f} s after the SIGTERM"
    )
    bad = [o.detail for o in outcomes if o.kind not in ("completed", "error-frame", "http-error")]
    assert not bad, bad[:10]
    # The surviving gateway carried the load: most streams completed.
    assert kinds["completed"] >= STREAMS // 2, dict(kinds)
    after = completions_served(stack, 200)
    for bridge in after:
        assert after[bridge] - before[bridge] >= STREAMS // 4, (before, after)
    assert elapsed < 45


def test_every_process_stops_cleanly_and_no_secret_is_logged(stack: ReplicaStack) -> None:
    """Runs last: stops every process, then reads every log."""
    codes = stack.stop_all()
    assert codes == dict.fromkeys(codes, 0), codes
    assert set(codes) == {
        "front",
        "bridge-1",
        "bridge-2",
        "gateway-1",
        "gateway-2",
        "vault-1",
        "vault-2",
    }
    assert stack.leaked() == []
