"""Several gateway and vault replicas behind one bridge (SPEC §12), as real processes.

The bridge gets `GATEWAY_ADDR=ipv4:<a>,<b>` and every service `VAULT_ADDR=ipv4:<v1>[,<v2>]`
(tests/support/balancing.py). Which gateway served a request is read from its request log line
(the client's X-Request-Id is kept end to end); a gateway's open streams from its
`native1api_gateway_streams_in_flight` gauge. Every client read is bounded (10 s per read, 60 s
per request): a hang fails the test.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fakes.content import reply_text
from rest_bridge.grpc_clients import GATEWAY_SERVICE
from tests.support.balancing import (
    TIMEOUT,
    Cluster,
    Outcome,
    complete,
    running_cluster,
    stream,
    wait_connected,
)
from tests.support.e2e import OR_KEY

pytestmark = pytest.mark.e2e

SLOW = "[[fake:chunk_delay=0.2,chunks=20]]"
"""A stream of about 4 s: 20 chunks, one every 0.2 s."""
UNANSWERED = "[[fake:delay_first=3]]"
"""The upstream answers after 3 s: until then the gateway has sent nothing back."""
ENDS_WITHIN = 10.0
"""Seconds within which a stream cut by its gateway's death must have ended at the client."""
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, gateways=("a", "b")) as running:
        yield running


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=TIMEOUT, limits=httpx.Limits(max_connections=64))


async def in_flight(cluster: Cluster, name: str) -> int:
    return await asyncio.to_thread(cluster.gateways[name].streams_in_flight)


async def warm_up(http: httpx.AsyncClient, cluster: Cluster) -> None:
    """Completions until each gateway has served one: both are in the bridge's rotation."""
    ids = []
    for i in range(20):
        ids.append(f"warm-{i}")
        outcome = await complete(http, cluster, "warm", f"warm {i}", Outcome(ids[-1]))
        assert outcome.status == 200, outcome.errors
        if {name for names in cluster.served_by(ids).values() for name in names} == {"a", "b"}:
            return
    raise AssertionError(f"20 completions did not reach both gateways: {cluster.served_by(ids)}")


async def test_completions_are_spread_over_both_gateways(cluster: Cluster) -> None:
    ids = [f"spread-{i}" for i in range(20)]
    async with client() as http:
        outcomes = [
            await complete(http, cluster, "spread", f"spread {i}", Outcome(rid))
            for i, rid in enumerate(ids)
        ]
    assert [o.status for o in outcomes] == [200] * 20
    assert all(o.content == reply_text(f"spread {i}") for i, o in enumerate(outcomes))
    served = cluster.served_by(ids)
    assert all(len(names) == 1 for names in served.values()), f"served twice: {served}"
    per_gateway = Counter(names[0] for names in served.values())
    # round_robin alternates; the first calls may find only one gateway connected yet.
    assert per_gateway["a"] >= 5 and per_gateway["b"] >= 5, per_gateway


async def test_a_killed_gateway_cuts_only_what_it_was_sending(cluster: Cluster) -> None:
    """SIGKILL gateway a under load: its streams that had sent content end with one error frame;
    calls it had not answered at all are retried on b; every new request succeeds on b."""
    a, b = cluster.gateways["a"], cluster.gateways["b"]
    async with client() as http:
        await warm_up(http, cluster)

        # Four streams sending content, two per gateway (round_robin).
        sending = [Outcome(f"sending-{i}") for i in range(4)]
        sending_tasks = [
            asyncio.create_task(stream(http, cluster, f"s{i}", f"sending {i} {SLOW}", o))
            for i, o in enumerate(sending)
        ]
        await asyncio.wait_for(asyncio.gather(*(o.first.wait() for o in sending)), ENDS_WITHIN)
        sending_on_a = await in_flight(cluster, "a")
        assert (sending_on_a, await in_flight(cluster, "b")) == (2, 2)

        # Four more whose upstream has not answered yet: their gateway has sent nothing back.
        waiting = [Outcome(f"waiting-{i}") for i in range(4)]
        waiting_tasks = [
            asyncio.create_task(stream(http, cluster, f"w{i}", f"waiting {i} {UNANSWERED}", o))
            for i, o in enumerate(waiting)
        ]
        deadline = time.monotonic() + ENDS_WITHIN
        while await in_flight(cluster, "a") + await in_flight(cluster, "b") < 8:
            assert time.monotonic() < deadline, "the waiting streams did not reach the gateways"
            await asyncio.sleep(0.05)
        waiting_on_a = await in_flight(cluster, "a") - sending_on_a
        assert waiting_on_a == 2

        # Short completions all along, two at a time, until 2 s after the kill.
        stop = asyncio.Event()
        load: list[tuple[float, Outcome]] = []

        async def keep_loading(worker: int) -> None:
            n = 0
            while not stop.is_set():
                outcome = Outcome(f"load-{worker}-{n}")
                load.append((time.monotonic(), outcome))
                await complete(http, cluster, f"load{worker}", f"load {worker} {n}", outcome)
                n += 1

        loaders = [asyncio.create_task(keep_loading(w)) for w in range(2)]
        await asyncio.sleep(0.5)
        a.service.kill()
        killed = time.monotonic()
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*loaders)
        await asyncio.gather(*sending_tasks, *waiting_tasks)
        ready = await http.get(f"{cluster.bridge_url}/readyz")
    assert ready.status_code == 200, ready.text  # one healthy gateway is enough

    # The streams gateway a was sending: cut, each with one error frame, promptly; b's finished.
    cut = [o for o in sending if o.errors]
    assert len(cut) == sending_on_a, [(o.request_id, o.errors, o.done) for o in sending]
    for outcome in cut:
        assert (outcome.status, outcome.done, len(outcome.errors)) == (200, False, 1)
        assert outcome.content, "a cut stream had sent content before the kill"
        assert outcome.ended_at - killed < ENDS_WITHIN
    for i, outcome in enumerate(sending):
        if outcome not in cut:
            assert outcome.done and outcome.content == reply_text(f"sending {i}", 20)

    # The streams gateway a had not answered: retried on b (the retry policy), all complete.
    for i, outcome in enumerate(waiting):
        assert (outcome.status, outcome.errors, outcome.done) == (200, [], True), outcome
        assert outcome.content == reply_text(f"waiting {i}")
    served = cluster.served_by([o.request_id for o in waiting])
    assert all(names == ["b"] for names in served.values()), served

    # No short completion was lost; those sent after the kill all ran on b.
    assert [o for _, o in load if o.status != 200] == []
    after = [o.request_id for started, o in load if started > killed]
    assert len(after) >= 4, f"only {len(after)} completions after the kill"
    assert all(names == ["b"] for names in cluster.served_by(after).values())
    assert b.running


async def test_a_draining_gateway_gets_no_new_calls_and_finishes_its_stream(
    cluster: Cluster,
) -> None:
    """SIGTERM gateway a with a stream in flight: new requests all go to b while a's stream
    runs to its end; then a exits 0."""
    a = cluster.gateways["a"]
    async with client() as http:
        await warm_up(http, cluster)
        streams = [Outcome(f"drain-{i}") for i in range(2)]
        tasks = [
            asyncio.create_task(stream(http, cluster, f"d{i}", f"drain {i} {SLOW}", o))
            for i, o in enumerate(streams)
        ]
        await asyncio.wait_for(asyncio.gather(*(o.first.wait() for o in streams)), ENDS_WITHIN)
        assert (await in_flight(cluster, "a"), await in_flight(cluster, "b")) == (1, 1)

        # Gateway a's own health, as the bridge's channel watches it.
        async with grpc.aio.insecure_channel(a.address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=GATEWAY_SERVICE)
            )
            assert (await asyncio.wait_for(watch.read(), ENDS_WITHIN)).status == SERVING
            assert a.service.process is not None
            a.service.process.send_signal(signal.SIGTERM)
            draining = time.monotonic()
            assert (await asyncio.wait_for(watch.read(), ENDS_WITHIN)).status == NOT_SERVING
            watch.cancel()
        # Our servers stop accepting calls right after reporting NOT_SERVING; let the bridge's
        # watch deliver the news first (see the report on rpc_common/serve.py).
        await asyncio.sleep(0.2)

        new = [Outcome(f"during-{i}") for i in range(10)]
        for i, outcome in enumerate(new):
            await complete(http, cluster, "during", f"during {i}", outcome)
        ready = await http.get(f"{cluster.bridge_url}/readyz")
        assert a.running, "gateway a stopped before its stream ended: not a drain"
        await asyncio.gather(*tasks)

    assert ready.status_code == 200, ready.text
    assert [o.status for o in new] == [200] * 10
    assert all(names == ["b"] for names in cluster.served_by([o.request_id for o in new]).values())
    # Both streams ran to their last chunk, the one on the draining gateway included.
    for i, outcome in enumerate(streams):
        assert (outcome.errors, outcome.done) == ([], True)
        assert outcome.content == reply_text(f"drain {i}", 20)
    served = cluster.served_by([o.request_id for o in streams])
    assert sorted(names[0] for names in served.values()) == ["a", "b"], served
    assert await asyncio.to_thread(a.service.wait_exit, 20) == 0
    drained_for = time.monotonic() - draining
    assert drained_for < 15, f"the drain took {drained_for:.1f} s: something held it open"


async def test_a_killed_vault_replica_loses_no_key_and_no_request(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two vaults on one PostgreSQL; the gateway and the bridge balance over both. SIGKILL one:
    keys saved before are all there, saves, reads and BYOK completions go on through the other."""
    with running_cluster(
        tmp_path, gateways=("a",), vaults=("v1", "v2"), database_url=postgres_url
    ) as cluster:
        v1, v2 = cluster.vaults["v1"], cluster.vaults["v2"]
        ports = {v1.port, v2.port}
        # round_robin keeps a connection to every replica (pick_first would hold one).
        await asyncio.to_thread(wait_connected, cluster.bridge, ports)
        await asyncio.to_thread(wait_connected, cluster.gateways["a"].service, ports)
        vault_url = f"{cluster.bridge_url}/v1/vault"
        async with client() as http:
            before = [f"keeper-{i}" for i in range(6)]
            for uid in before:
                saved = await http.post(
                    vault_url, json={"apiKey": OR_KEY}, headers=cluster.headers(uid)
                )
                assert saved.json() == {"exists": True, "provider": "openrouter"}, saved.text
            for uid in before[:2]:
                outcome = await complete(http, cluster, uid, f"byok {uid}", Outcome(f"pre-{uid}"))
                assert (outcome.status, outcome.provider) == (200, "openrouter"), outcome

            v1.service.kill()

            after = [f"newcomer-{i}" for i in range(3)]
            for uid in after:
                saved = await http.post(
                    vault_url, json={"apiKey": OR_KEY}, headers=cluster.headers(uid)
                )
                assert saved.json() == {"exists": True, "provider": "openrouter"}, saved.text
            for uid in before + after:
                status = await http.get(vault_url, headers=cluster.headers(uid))
                assert status.json() == {"exists": True, "provider": "openrouter"}, (
                    uid,
                    status.text,
                )
            for uid in [*before, *after]:
                prompt = f"byok after {uid}"
                outcome = await stream(http, cluster, uid, prompt, Outcome(f"post-{uid}"))
                assert (outcome.status, outcome.provider, outcome.errors) == (200, "openrouter", [])
                assert outcome.done and outcome.content == reply_text(prompt)
            ready = await http.get(f"{cluster.bridge_url}/readyz")
            assert ready.status_code == 200, ready.text
        assert v2.running
