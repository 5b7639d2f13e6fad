"""Start the fake upstream, the vault, the gateway and the bridge as subprocesses.

The same commands compose runs (`python -m vault_service` and friends), in Firebase Auth
Emulator mode so the benchmark can mint its own unsigned ID tokens. Every process logs to a file
under the run's temporary directory at the production default level (INFO), so logging costs
what it costs in production.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
PROJECT = "demo-native1api"
ACCOUNT = "bench-acct"
CF_TOKEN = "bench-cf-token-0123456789"
SERVICE_TOKEN = "bench-service-token-0123456789"
MODEL = "@cf/meta/llama-3.1-8b-instruct-fp8"

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Proc:
    """One child process."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole process (all threads) so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    def memory_kib(self) -> tuple[int, int]:
        """(current RSS, peak RSS) in KiB."""
        rss = hwm = 0
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
        return rss, hwm

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()


@dataclass
class Stack:
    """The four running processes and their addresses."""

    upstream_url: str
    gateway_address: str
    bridge_url: str
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def run_url(self) -> str:
        """The native endpoint the gateway calls for `MODEL` (the direct target)."""
        return f"{self.upstream_url}/accounts/{ACCOUNT}/ai/run/{MODEL}"

    def check_alive(self) -> None:
        for proc in self.procs.values():
            proc.check_alive()


def _spawn(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            [sys.executable, *args],
            cwd=str(REPO),
            env={**os.environ, **env},
            stdout=subprocess.PIPE if name == "upstream" else log,
            stderr=log,
        )
    return Proc(name, popen, log_path)


def _wait_grpc(proc: Proc, address: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            proc.check_alive()
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"{proc.name} not healthy within {timeout} s")


def _wait_http(proc: Proc, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check_alive()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} not ready within {timeout} s")


@contextlib.contextmanager
def running_stack(work_dir: Path, *, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """Start upstream, vault, gateway and bridge; stop them (SIGTERM) on exit."""
    procs: dict[str, Proc] = {}
    try:
        upstream = _spawn(
            "upstream",
            [
                "-m",
                "fakes",
                "workers-ai",
                "--port",
                "0",
                f"--token={CF_TOKEN}",
                f"--account-id={ACCOUNT}",
            ],
            {},
            work_dir,
        )
        procs["upstream"] = upstream
        assert upstream.popen.stdout is not None
        line = upstream.popen.stdout.readline().decode().strip()
        if not line.startswith("READY "):
            upstream.check_alive()
            raise RuntimeError(f"the fake upstream did not start: {line!r}")
        upstream_url = line.removeprefix("READY ")
        ports = {name: free_port() for name in ("vault", "gateway", "bridge")}
        env = {
            "FIREBASE_PROJECT_ID": PROJECT,
            "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099",
            "VAULT_MASTER_KEY": "bench-master-passphrase-0123456789-abcdef",
            "SERVICE_TOKEN": SERVICE_TOKEN,
            "VAULT_DATABASE_URL": f"sqlite:///{work_dir}/vault.db",
            "VAULT_LISTEN_ADDR": f"127.0.0.1:{ports['vault']}",
            "GATEWAY_LISTEN_ADDR": f"127.0.0.1:{ports['gateway']}",
            "BRIDGE_LISTEN_ADDR": f"127.0.0.1:{ports['bridge']}",
            "VAULT_ADDR": f"127.0.0.1:{ports['vault']}",
            "GATEWAY_ADDR": f"127.0.0.1:{ports['gateway']}",
            "CLOUDFLARE_ACCOUNT_ID": ACCOUNT,
            "CLOUDFLARE_API_TOKEN": CF_TOKEN,
            "WORKERS_AI_BASE_URL": upstream_url,
            "LOG_LEVEL": "INFO",
            **(extra_env or {}),
        }
        procs["vault"] = _spawn("vault", ["-m", "vault_service"], env, work_dir)
        procs["gateway"] = _spawn("gateway", ["-m", "gateway_service"], env, work_dir)
        procs["bridge"] = _spawn("bridge", ["-m", "rest_bridge"], env, work_dir)
        _wait_grpc(procs["vault"], env["VAULT_ADDR"])
        _wait_grpc(procs["gateway"], env["GATEWAY_ADDR"])
        bridge_url = f"http://127.0.0.1:{ports['bridge']}"
        _wait_http(procs["bridge"], f"{bridge_url}/healthz")
        yield Stack(upstream_url, env["GATEWAY_ADDR"], bridge_url, procs)
    finally:
        for name in ("bridge", "gateway", "vault", "upstream"):
            if name in procs:
                procs[name].stop()
