"""Several gateway and vault replicas as subprocesses behind one bridge (SPEC §12).

`running_cluster` starts fake upstreams, N vaults (one database), M gateways (each with
`VAULT_ADDR=ipv4:<every vault>`) and one bridge (`GATEWAY_ADDR=ipv4:<every gateway>`, the same
`VAULT_ADDR`), all in emulator-mode auth, and stops them afterwards; then every log is checked
for the deployment's secrets. Tests see where a call ran from the gateways' request log lines
(`request_id=... rpc=... status=...`: a client's `X-Request-Id` is kept end to end) and their
Prometheus metrics, and which backends a process is connected to from /proc.

The chat helpers are asyncio (httpx.AsyncClient) and every read is bounded: a request that hangs
fails its test instead of holding the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devstack.token import mint_emulator_token
from tests.support.e2e import CF_TOKEN, MODEL, OR_KEY, PROJECT
from tests.support.procs import Service, free_port, start_fake

MASTER_KEY = "balancing-master-passphrase-0123456789-abcdef"
SERVICE_TOKEN = "balancing-service-token-0123456789"

TIMEOUT = httpx.Timeout(connect=5.0, read=10.0, write=5.0, pool=5.0)
"""Per operation: no read waits more than 10 s (a stream sends a chunk or a ping far sooner)."""
REQUEST_DEADLINE = 60.0
"""Seconds any one request, streamed or not, may take from start to end."""

_REQUEST_LINE = re.compile(r"request_id=(\S+) uid_hash=\S+ rpc=(\S+) .*? status=(\S+)")
_IN_FLIGHT = re.compile(r"^native1api_gateway_streams_in_flight (\S+)$", re.MULTILINE)


@dataclass
class Replica:
    """One vault or gateway process and where to reach it."""

    name: str
    address: str
    service: Service
    metrics_addr: str = ""

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    @property
    def running(self) -> bool:
        process = self.service.process
        return process is not None and process.poll() is None

    def logged(self) -> dict[str, tuple[str, str]]:
        """Gateways: request id -> (rpc, status) of every request line in its log so far."""
        return {
            match[1]: (match[2], match[3]) for match in _REQUEST_LINE.finditer(self.service.log)
        }

    def streams_in_flight(self) -> int:
        """Gateways: the `native1api_gateway_streams_in_flight` gauge."""
        text = httpx.get(f"http://{self.metrics_addr}/metrics", timeout=5).text
        match = _IN_FLIGHT.search(text)
        assert match is not None, "no streams_in_flight gauge in the gateway's metrics"
        return int(float(match[1]))


@dataclass
class Cluster:
    tmp: Path
    bridge_url: str
    vault_addr: str
    """The `VAULT_ADDR` the gateways and the bridge were given."""
    gateway_addr: str
    """The bridge's `GATEWAY_ADDR`."""
    vaults: dict[str, Replica]
    gateways: dict[str, Replica]
    bridge: Service
    fakes: list[Service] = field(default_factory=list)

    def headers(self, uid: str, request_id: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {mint_emulator_token(uid, PROJECT)}"}
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        return headers

    def served_by(self, request_ids: Sequence[str]) -> dict[str, list[str]]:
        """Which gateways logged each request id (a call retried on another logs on both only
        if the first gateway finished it, which a dead one does not)."""
        logs = {name: gateway.logged() for name, gateway in self.gateways.items()}
        return {rid: [name for name, lines in logs.items() if rid in lines] for rid in request_ids}


def _processes(cluster: Cluster) -> list[Service]:
    return [
        cluster.bridge,
        *(r.service for r in cluster.gateways.values()),
        *(r.service for r in cluster.vaults.values()),
        *cluster.fakes,
    ]


@contextlib.contextmanager
def running_cluster(
    tmp_path: Path,
    *,
    gateways: Sequence[str] = ("a", "b"),
    vaults: Sequence[str] = ("v1",),
    database_url: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[Cluster]:
    """The whole stack with several replicas; see the module docstring. Vaults start one after
    the other (they share the database schema), gateways together."""
    workers, workers_url = start_fake(
        "workers-ai", [CF_TOKEN], tmp_path / "wai.log", "--account-id=acct"
    )
    fakes = [workers]
    cluster: Cluster | None = None
    try:
        openrouter, openrouter_url = start_fake("openrouter", [OR_KEY], tmp_path / "or.log")
        fakes.append(openrouter)
        vault_addresses = {name: f"127.0.0.1:{free_port()}" for name in vaults}
        gateway_addresses = {name: f"127.0.0.1:{free_port()}" for name in gateways}
        vault_addr = "ipv4:" + ",".join(vault_addresses.values())
        gateway_addr = "ipv4:" + ",".join(gateway_addresses.values())
        bridge_port = free_port()
        env = {
            "FIREBASE_PROJECT_ID": PROJECT,
            "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099",
            "VAULT_MASTER_KEY": MASTER_KEY,
            "SERVICE_TOKEN": SERVICE_TOKEN,
            "VAULT_DATABASE_URL": database_url or f"sqlite:///{tmp_path}/vault.db",
            # One file for the cluster's gateways (SQLite serialises them), never the repo's data/.
            "USAGE_DATABASE_URL": f"sqlite:///{tmp_path}/usage.db",
            "VAULT_ADDR": vault_addr,
            "GATEWAY_ADDR": gateway_addr,
            "BRIDGE_LISTEN_ADDR": f"127.0.0.1:{bridge_port}",
            "BRIDGE_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "CLOUDFLARE_ACCOUNT_ID": "acct",
            "CLOUDFLARE_API_TOKEN": CF_TOKEN,
            "WORKERS_AI_BASE_URL": workers_url,
            "OPENROUTER_BASE_URL": openrouter_url,
            "LOG_LEVEL": "DEBUG",
            **(extra_env or {}),
        }
        cluster = Cluster(
            tmp=tmp_path,
            bridge_url=f"http://127.0.0.1:{bridge_port}",
            vault_addr=vault_addr,
            gateway_addr=gateway_addr,
            vaults={},
            gateways={},
            bridge=Service("rest_bridge", env, tmp_path / "bridge.log"),
            fakes=fakes,
        )
        for name, address in vault_addresses.items():
            service = Service(
                "vault_service", {**env, "VAULT_LISTEN_ADDR": address}, tmp_path / f"{name}.log"
            )
            cluster.vaults[name] = Replica(name, address, service.start())
            service.wait_grpc_healthy(address)
        for name, address in gateway_addresses.items():
            metrics = f"127.0.0.1:{free_port()}"
            gateway_env = {**env, "GATEWAY_LISTEN_ADDR": address, "GATEWAY_METRICS_ADDR": metrics}
            service = Service("gateway_service", gateway_env, tmp_path / f"gateway-{name}.log")
            cluster.gateways[name] = Replica(name, address, service.start(), metrics)
        for gateway in cluster.gateways.values():
            gateway.service.wait_grpc_healthy(gateway.address)
        cluster.bridge.start().wait_http_ready(f"{cluster.bridge_url}/readyz")
        yield cluster
    finally:
        services = _processes(cluster) if cluster is not None else fakes
        for service in services:
            if service.process is not None and service.process.poll() is None:
                service.terminate()
    # Nothing secret in any process's log, whatever the test did.
    for path in tmp_path.glob("*.log"):
        text = path.read_text(errors="replace")
        for secret in (OR_KEY, CF_TOKEN, MASTER_KEY, SERVICE_TOKEN):
            assert secret not in text, f"a secret leaked into {path.name}"


# -- what a process is connected to -----------------------------------------------------------


def connected_ports(pid: int) -> set[int]:
    """The remote ports of `pid`'s established TCP connections to 127.0.0.1 (Linux /proc)."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):  # gRPC may dial IPv4 from a dual-stack socket (::ffff:...)
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            host, port = remote.split(":")
            # 01: ESTABLISHED; 127.0.0.1 in little-endian hex, alone or IPv4-mapped
            if state == "01" and inode in inodes and host.endswith("0100007F"):
                ports.add(int(port, 16))
    return ports


def wait_connected(service: Service, ports: set[int], timeout: float = 10.0) -> None:
    """Wait until `service` holds a connection to each of `ports`."""
    assert service.process is not None
    deadline = time.monotonic() + timeout
    while not ports <= (seen := connected_ports(service.process.pid)):
        assert time.monotonic() < deadline, f"{service.module} is connected to {seen}, not {ports}"
        time.sleep(0.1)


# -- chat over the bridge -----------------------------------------------------------------------


@dataclass
class Outcome:
    """How one request through the bridge ended."""

    request_id: str
    status: int = 0
    content: str = ""
    done: bool = False
    """The stream ended with `data: [DONE]` (or the JSON answer arrived)."""
    errors: list[dict[str, object]] = field(default_factory=list)
    """The error body of a non-2xx answer, or each `data: {"error": ...}` frame."""
    provider: str = ""
    ended_at: float = 0.0
    first: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at the first content (or at the end, whatever it was)."""


def chat_body(prompt: str, *, stream: bool) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": stream}


async def complete(
    client: httpx.AsyncClient, cluster: Cluster, uid: str, prompt: str, outcome: Outcome
) -> Outcome:
    """One non-streamed completion, into `outcome`."""
    try:
        response = await asyncio.wait_for(
            client.post(
                f"{cluster.bridge_url}/v1/chat/completions",
                json=chat_body(prompt, stream=False),
                headers=cluster.headers(uid, outcome.request_id),
            ),
            REQUEST_DEADLINE,
        )
        outcome.status = response.status_code
        body = response.json()
        if response.status_code == 200:
            outcome.content = body["choices"][0]["message"]["content"]
            outcome.provider = response.headers["x-native1api-provider"]
            outcome.done = True
        else:
            outcome.errors.append(body["error"])
    finally:
        outcome.ended_at = time.monotonic()
        outcome.first.set()
    return outcome


async def stream(
    client: httpx.AsyncClient, cluster: Cluster, uid: str, prompt: str, outcome: Outcome
) -> Outcome:
    """One streamed completion read to its end, into `outcome` (`first` is set at the first
    content: start it as a task and wait for that)."""
    try:
        await asyncio.wait_for(
            _read_stream(client, cluster, uid, prompt, outcome), REQUEST_DEADLINE
        )
    finally:
        outcome.ended_at = time.monotonic()
        outcome.first.set()
    return outcome


async def _read_stream(
    client: httpx.AsyncClient, cluster: Cluster, uid: str, prompt: str, outcome: Outcome
) -> None:
    async with client.stream(
        "POST",
        f"{cluster.bridge_url}/v1/chat/completions",
        json=chat_body(prompt, stream=True),
        headers=cluster.headers(uid, outcome.request_id),
    ) as response:
        outcome.status = response.status_code
        if response.status_code != 200:
            await response.aread()
            outcome.errors.append(response.json()["error"])
            return
        outcome.provider = response.headers["x-native1api-provider"]
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue  # blank separators and `: ping` keep-alives
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                outcome.done = True
                continue
            frame = json.loads(data)
            if "error" in frame:
                outcome.errors.append(frame["error"])
                continue
            for choice in frame["choices"]:
                outcome.content += choice["delta"].get("content") or ""
            if outcome.content:
                outcome.first.set()
