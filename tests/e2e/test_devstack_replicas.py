"""`python -m devstack --replicas` (what `make run-replicas` runs) and its round-robin front.

The front is tested in process against small TCP servers; the replicated stack as the command a
developer runs, on the machine's PostgreSQL (a schema of the test's own, which devstack creates)
and Redis, with the ports the system has free.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import psycopg
import pytest
from httpx_sse import connect_sse
from psycopg import sql

from devstack.front import NO_BACKEND_RESPONSE, Front
from devstack.replicas import (
    Layout,
    _on_deaths,
    redacted,
    replica_children,
    role_env,
    search_path_schema,
    stop_waves,
    target_list,
)
from devstack.stack import Child
from devstack.token import mint_emulator_token
from fakes.content import reply_text
from tests.support.procs import REPO, free_port

# -- the front, in process --------------------------------------------------------------------


async def _backend(tag: bytes) -> asyncio.Server:
    """A TCP server that answers each connection's first line with `tag` and closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(tag + b"\n")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.fixture
async def front_over() -> AsyncIterator[Callable[..., Any]]:
    servers: list[asyncio.Server] = []

    async def start(*backends: tuple[str, int]) -> tuple[Front, int]:
        front = Front(backends, connect_timeout=1.0)
        server = await asyncio.start_server(front.handle, "127.0.0.1", 0)
        servers.append(server)
        return front, server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _ask(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hello\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


def _port(server: asyncio.Server) -> tuple[str, int]:
    return "127.0.0.1", server.sockets[0].getsockname()[1]


async def test_front_alternates_connections_and_skips_a_refusing_backend(
    front_over: Callable[..., Any],
) -> None:
    one, two = await _backend(b"one"), await _backend(b"two")
    dead = ("127.0.0.1", free_port())  # nothing listens there: refused
    try:
        front, port = await front_over(_port(one), dead, _port(two))
        answers = [await _ask(port) for _ in range(6)]
        assert answers == [b"one\n", b"two\n"] * 3
        assert front.connections == [3, 0, 3]
        # Everything a backend sends arrives, up to its close.
        assert front.unserved == 0
    finally:
        for server in (one, two):
            server.close()
            await server.wait_closed()


async def test_front_answers_502_when_no_backend_accepts(
    front_over: Callable[..., Any],
) -> None:
    front, port = await front_over(("127.0.0.1", free_port()), ("127.0.0.1", free_port()))
    answer = await _ask(port)
    assert answer == NO_BACKEND_RESPONSE
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 ")
    assert json.loads(body)["error"]["code"] == "no_backend"
    assert front.unserved == 1


# -- how devstack --replicas wires the replicas -------------------------------------------------


def test_each_client_gets_every_replica_starting_at_a_different_one() -> None:
    layout = Layout(
        front="127.0.0.1:8080",
        vaults=("127.0.0.1:1", "127.0.0.1:2"),
        gateways=("127.0.0.1:3", "127.0.0.1:4"),
        bridges=("127.0.0.1:5", "127.0.0.1:6"),
        bridge_metrics=("127.0.0.1:7", "127.0.0.1:8"),
    )
    assert target_list(layout.vaults, 1) == "ipv4:127.0.0.1:2,127.0.0.1:1"
    common = {
        "VAULT_MASTER_KEY_FILE": "/k",
        "SERVICE_TOKEN_FILE": "/t",
        "CLOUDFLARE_API_TOKEN": "cf",
        "CLOUDFLARE_ACCOUNT_ID": "acct",
        "VAULT_DATABASE_URL": "postgresql://u:pw@h/db",
        "LIMITS_REDIS_URL": "redis://:pw@h/0",
        "LIMITS_FILE": "/limits.toml",
        "BRIDGE_LISTEN_ADDR": "127.0.0.1:9999",  # a shell's setting never reaches a replica
        "FIREBASE_PROJECT_ID": "demo-x",
    }
    children = {c.name: c for c in replica_children(common, layout, standin=False)}
    assert list(children) == [
        "vault-1",
        "vault-2",
        "gateway-1",
        "gateway-2",
        "bridge-1",
        "bridge-2",
        "front",
    ]
    env = {name: cast(dict[str, str], child.env) for name, child in children.items()}
    assert env["gateway-1"]["VAULT_ADDR"] == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert env["gateway-2"]["VAULT_ADDR"] == "ipv4:127.0.0.1:2,127.0.0.1:1"
    assert env["bridge-1"]["GATEWAY_ADDR"] == "ipv4:127.0.0.1:3,127.0.0.1:4"
    assert env["bridge-2"]["GATEWAY_ADDR"] == "ipv4:127.0.0.1:4,127.0.0.1:3"
    assert env["bridge-2"]["VAULT_ADDR"] == "ipv4:127.0.0.1:2,127.0.0.1:1"
    assert env["bridge-2"]["BRIDGE_LISTEN_ADDR"] == "127.0.0.1:6"
    assert env["bridge-2"]["BRIDGE_METRICS_ADDR"] == "127.0.0.1:8"
    assert children["front"].args == (
        "--listen",
        "127.0.0.1:8080",
        "--backend",
        "127.0.0.1:5",
        "--backend",
        "127.0.0.1:6",
    )
    # Each process holds only its own secrets, as in compose.
    secret_names = {
        "VAULT_MASTER_KEY_FILE",
        "SERVICE_TOKEN_FILE",
        "CLOUDFLARE_API_TOKEN",
        "CLOUDFLARE_ACCOUNT_ID",
        "VAULT_DATABASE_URL",
        "LIMITS_REDIS_URL",
    }
    held = {name: secret_names & set(variables) for name, variables in env.items()}
    assert held["vault-1"] == {"VAULT_MASTER_KEY_FILE", "SERVICE_TOKEN_FILE", "VAULT_DATABASE_URL"}
    assert held["gateway-2"] == {
        "SERVICE_TOKEN_FILE",
        "CLOUDFLARE_API_TOKEN",
        "CLOUDFLARE_ACCOUNT_ID",
        "LIMITS_REDIS_URL",
    }
    assert held["bridge-1"] == held["front"] == set()
    assert role_env(common, "bridge", {})["LIMITS_FILE"] == "/limits.toml"
    # Stopped front and bridges together first, the vaults last.
    waves = [[c.name for c in wave] for wave in stop_waves(list(children.values()))]
    assert waves == [
        ["bridge-1", "bridge-2", "front"],
        ["gateway-1", "gateway-2"],
        ["vault-1", "vault-2"],
        [],
    ]


def test_urls_are_shown_without_passwords_and_the_schema_is_found() -> None:
    assert redacted("postgresql://u:s3cret@h:5432/db?x=1") == "postgresql://u:***@h:5432/db?x=1"
    assert redacted("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert redacted("redis://h:6379/0") == "redis://h:6379/0"
    url = "postgresql://postgres@127.0.0.1/test?options=-csearch_path%3Dnative1api_dev"
    assert search_path_schema(url) == "native1api_dev"
    assert search_path_schema("postgresql://postgres@127.0.0.1/test") is None


class _Exited:
    """Stands in for a Popen: exited with `returncode`, or running when it is None."""

    def __init__(self, returncode: int | None) -> None:
        self.returncode = returncode

    def poll(self) -> int | None:
        return self.returncode


def _child(name: str, role: str, returncode: int | None) -> Child:
    child = Child(name, "x", role=role)
    child.process = cast(subprocess.Popen[bytes], _Exited(returncode))
    return child


def test_a_dead_replica_leaves_its_peers_serving_but_the_last_of_a_kind_stops_all() -> None:
    gateways = [_child("gateway-1", "gateway", -9), _child("gateway-2", "gateway", None)]
    front = _child("front", "front", None)
    assert _on_deaths(gateways[:1], [*gateways, front], announced=True) == 0
    # The same death while starting stops everything (a bad setting, a port in use...).
    assert _on_deaths(gateways[:1], [*gateways, front], announced=False) == 1
    gateways[1].process = cast(subprocess.Popen[bytes], _Exited(1))
    assert _on_deaths(gateways[1:], [*gateways, front], announced=True) == 1
    # The front and the stand-in have no peer.
    front.process = cast(subprocess.Popen[bytes], _Exited(0))
    assert _on_deaths([front], [front], announced=True) == 1


# -- python -m devstack --replicas, as a developer runs it ---------------------------------------

e2e = pytest.mark.e2e


def _start(cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "devstack", "--replicas"],
            cwd=cwd,
            env={**os.environ, **env, "PYTHONPATH": str(REPO)},
            stdout=out,
            stderr=out,
        )


def _wait_for(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not seen:\n{log.read_text(errors='replace')[-5000:]}")


def _pids(text: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"started (\S+) \(pid (\d+)\)", text)}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def replica_env(postgres_admin: str, redis_url: str) -> Iterator[dict[str, str]]:
    """Free ports, the machine's Redis, and a schema that does not exist yet (devstack creates
    it; dropped afterwards)."""
    schema = f"t_devstack_{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in postgres_admin else "?"
    env = {
        "DEVSTACK_REPLICA_PORTS": "free",
        "DEVSTACK_FRONT_ADDR": f"127.0.0.1:{free_port()}",
        "WORKERS_AI_STANDIN_PORT": str(free_port()),
        "VAULT_DATABASE_URL": f"{postgres_admin}{sep}options=-csearch_path%3D{schema}",
        "LIMITS_REDIS_URL": redis_url,
    }
    for name in (
        "CLOUDFLARE_ACCOUNT_ID",
        "CLOUDFLARE_API_TOKEN",
        "FIREBASE_AUTH_EMULATOR_HOST",
        "LIMITS_FILE",
        "LIMITS_TIER_CLAIM",
        "VAULT_MASTER_KEY",
        "SERVICE_TOKEN",
    ):
        env[name] = ""  # whatever the developer's shell has, the test starts from nothing
    yield env
    with psycopg.connect(postgres_admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _stream(front: str, uid: str, prompt: str) -> list[str]:
    token = mint_emulator_token(uid, "demo-native1api")
    body = {
        "model": "@cf/meta/llama-3.2-3b-instruct",
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
    }
    with (
        httpx.Client(timeout=30) as client,
        connect_sse(
            client,
            "POST",
            f"http://{front}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as source,
    ):
        assert source.response.status_code == 200
        return [event.data for event in source.iter_sse()]


def _content(data: list[str]) -> str:
    return "".join(
        c["delta"].get("content") or "" for d in data[:-1] for c in json.loads(d)["choices"]
    )


def _served(metrics_url: str) -> float:
    text = httpx.get(metrics_url, timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("native1api_bridge_requests_total{")
        and 'route="/v1/chat/completions"' in line
    )


@e2e
def test_replicas_start_answer_through_the_front_and_stop_on_sigint(
    tmp_path: Path, replica_env: dict[str, str], postgres_admin: str
) -> None:
    log = tmp_path / "devstack.log"
    process = _start(tmp_path, replica_env, log)
    front = replica_env["DEVSTACK_FRONT_ADDR"]
    pids: dict[str, int] = {}
    try:
        _wait_for(log, "replicas of each service, is running", process)
        text = log.read_text()
        assert f"is running: http://{front}" in text
        assert "VAULT_DATABASE_URL" in text and "LIMITS_REDIS_URL" in text
        assert replica_env["VAULT_DATABASE_URL"] in text  # no password to hide here
        assert "one budget for both gateways in Redis" in text
        assert "LOCAL Workers AI STAND-IN" in text
        pids = _pids(text)
        assert set(pids) >= {
            "vault-1",
            "vault-2",
            "gateway-1",
            "gateway-2",
            "bridge-1",
            "bridge-2",
            "front",
        }
        # Each child's lines are labelled with its name.
        assert re.search(r"^gateway-2 +\| .*serving native1api.gateway", text, re.MULTILINE)
        # devstack created the schema the URL names.
        schema = search_path_schema(replica_env["VAULT_DATABASE_URL"])
        with psycopg.connect(postgres_admin) as conn:
            found = conn.execute(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (schema,)
            ).fetchone()
        assert found is not None

        metrics = re.findall(r"^ +bridge-\d .* metrics (http://\S+/metrics)$", text, re.MULTILINE)
        assert len(metrics) == 2
        before = [_served(url) for url in metrics]
        for i in range(4):
            data = _stream(front, "alice", f"Hello {i}")
            assert data[-1] == "[DONE]"
            assert _content(data) == reply_text(f"Hello {i}")
        after = [_served(url) for url in metrics]
        assert [b - a for a, b in zip(before, after, strict=True)] == [2, 2]
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
    assert code == 0, log.read_text()[-3000:]
    assert all(_gone(pid) for pid in pids.values())
    text = log.read_text()
    assert "front" in text and "stopped after" in text
    assert "did not stop" not in text


@e2e
def test_a_dead_replica_is_reported_the_rest_serve_and_sigterm_stops_all(
    tmp_path: Path, replica_env: dict[str, str]
) -> None:
    log = tmp_path / "devstack.log"
    process = _start(tmp_path, replica_env, log)
    front = replica_env["DEVSTACK_FRONT_ADDR"]
    pids: dict[str, int] = {}
    try:
        _wait_for(log, "replicas of each service, is running", process)
        pids = _pids(log.read_text())
        os.kill(pids["gateway-1"], signal.SIGKILL)
        _wait_for(log, "gateway-1 exited with status -9; gateway-2 still serving", process)
        # Both bridges still answer, through the surviving gateway.
        for i in range(2):
            data = _stream(front, "bob", f"after {i}")
            assert data[-1] == "[DONE]"
            assert _content(data) == reply_text(f"after {i}")
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    assert code == 0, log.read_text()[-3000:]
    assert all(_gone(pid) for pid in pids.values())
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{front}/healthz", timeout=2)


@e2e
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"VAULT_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/test"},
            "PostgreSQL is not usable at postgresql://postgres@127.0.0.1:1/test",
        ),
        (
            {"VAULT_DATABASE_URL": "postgresql://postgres:hunter2hunter2@127.0.0.1:1/test"},
            "PostgreSQL is not usable at postgresql://postgres:***@127.0.0.1:1/test",
        ),
        ({"LIMITS_REDIS_URL": "redis://127.0.0.1:1/0"}, "Redis is not reachable at redis://"),
        ({"VAULT_DATABASE_URL": "sqlite:///data/vault.db"}, "must share one PostgreSQL"),
        ({"DEVSTACK_REPLICA_PORTS": "some"}, "DEVSTACK_REPLICA_PORTS must be fixed or free"),
    ],
)
def test_fails_fast_and_clearly_without_what_it_needs(
    tmp_path: Path, replica_env: dict[str, str], change: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "--replicas"],
        cwd=tmp_path,
        env={**os.environ, **replica_env, **change, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert message in result.stderr, result.stderr
    assert "started" not in result.stderr
    assert "hunter2" not in result.stderr


@e2e
def test_a_port_in_use_is_named_before_anything_starts(
    tmp_path: Path, replica_env: dict[str, str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        result = subprocess.run(
            [sys.executable, "-m", "devstack", "--replicas"],
            cwd=tmp_path,
            env={
                **os.environ,
                **replica_env,
                "DEVSTACK_FRONT_ADDR": address,
                "PYTHONPATH": str(REPO),
            },
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    assert f"{address} is in use" in result.stderr, result.stderr
    assert "started" not in result.stderr
