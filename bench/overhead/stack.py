"""Start the fake upstream, the vault, the gateway and the bridge as subprocesses.

The same commands compose runs (`python -m vault_service` and friends), in Firebase Auth
Emulator mode so the benchmark can mint its own unsigned ID tokens. Every process logs to a file
under the run's temporary directory at the production default level (INFO), so logging costs
what it costs in production.

One upstream and one vault serve one gateway + bridge pair per gateway configuration (the
limits configurations of `limits.py`), so configurations can be measured side by side,
interleaved, in one run: `Stack.configs` has a view of the stack per configuration.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
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


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds a process has run so far, to the nanosecond: the sum of its threads'
    /proc/<pid>/task/<tid>/schedstat. /proc/<pid>/stat counts in clock ticks of 10 ms, and at
    c=1 a measured window holds ~100 requests, so ticks would blur CPU per request by ~0.1 ms.
    A thread that ends inside a window would take its time with it; the servers' threads live
    as long as the process (checked: the same threads, and the same CPU as the tick count to
    within a tick, over 15 s of load). Ticks are the fallback where schedstat is missing."""
    total = 0
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            try:
                with open(f"{task.path}/schedstat") as stat:
                    total += int(stat.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue  # the thread ended between the listing and the read
    except FileNotFoundError:
        total = 0
    if total:
        return total / 1e9
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


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
        """CPU of the whole process (all threads) so far."""
        return process_cpu_seconds(self.pid)

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
    """One configuration's view of the stack: its four processes and their addresses.

    `procs` is keyed by role (upstream, vault, gateway, bridge); `external_cpu` holds CPU
    counters of processes the benchmark did not start but whose CPU counts (Redis).
    `configs` maps every configuration started to its view, this one included.
    """

    upstream_url: str
    gateway_address: str
    bridge_url: str
    procs: dict[str, Proc] = field(default_factory=dict)
    config: str = ""
    metrics_url: str = ""
    external_cpu: dict[str, Callable[[], float]] = field(default_factory=dict)
    configs: dict[str, Stack] = field(default_factory=dict)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far of every process of this view, by role."""
        out = {name: proc.cpu_seconds() for name, proc in self.procs.items()}
        out.update((name, read()) for name, read in self.external_cpu.items())
        return out

    @property
    def run_url(self) -> str:
        """The native endpoint the gateway calls for `MODEL` (the direct target)."""
        return f"{self.upstream_url}/accounts/{ACCOUNT}/ai/run/{MODEL}"

    def all_procs(self) -> dict[str, Proc]:
        """Every process started, of every configuration, by its own name."""
        out: dict[str, Proc] = {}
        for view in self.configs.values() or [self]:
            out.update((proc.name, proc) for proc in view.procs.values())
        return out

    def check_alive(self) -> None:
        for proc in self.all_procs().values():
            proc.check_alive()


def _spawn(
    name: str, args: list[str], env: dict[str, str], log_dir: Path, code: Path = REPO
) -> Proc:
    """Start `python ARGS` from the services' code in `code` (this checkout, or a baseline's
    unpacked tree: `python -m` finds the packages of its working directory first)."""
    log_path = log_dir / f"{name}.log"
    if code != REPO:
        env = {**env, "PYTHONPATH": str(code)}
    with log_path.open("ab") as log:
        popen = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            [sys.executable, *args],
            cwd=str(code),
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
def running_stack(
    work_dir: Path,
    *,
    extra_env: dict[str, str] | None = None,
    gateway_envs: Mapping[str, dict[str, str]] | None = None,
    external_cpu: dict[str, Callable[[], float]] | None = None,
    code_dirs: Mapping[str, Path] | None = None,
) -> Iterator[Stack]:
    """Start upstream, vault, and a gateway + bridge per entry of `gateway_envs` (name -> the
    gateway's extra environment; default one pair, no extra variables); stop them (SIGTERM)
    on exit. Yields the first configuration's view; `.configs` has all of them.
    `code_dirs` names configurations whose gateway and bridge run another tree's code (a
    baseline's, see baseline.py); the others run this checkout's."""
    envs = dict(gateway_envs or {"default": {}})
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
        vault_address = f"127.0.0.1:{free_port()}"
        env = {
            "FIREBASE_PROJECT_ID": PROJECT,
            "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099",
            "VAULT_MASTER_KEY": "bench-master-passphrase-0123456789-abcdef",
            "SERVICE_TOKEN": SERVICE_TOKEN,
            "VAULT_DATABASE_URL": f"sqlite:///{work_dir}/vault.db",
            "VAULT_LISTEN_ADDR": vault_address,
            "VAULT_ADDR": vault_address,
            "CLOUDFLARE_ACCOUNT_ID": ACCOUNT,
            "CLOUDFLARE_API_TOKEN": CF_TOKEN,
            "WORKERS_AI_BASE_URL": upstream_url,
            "LOG_LEVEL": "INFO",
            **(extra_env or {}),
        }
        procs["vault"] = _spawn("vault", ["-m", "vault_service"], env, work_dir)
        views: dict[str, Stack] = {}
        for config, gateway_env in envs.items():
            suffix = "" if len(envs) == 1 else f"-{config}"
            gateway_address = f"127.0.0.1:{free_port()}"
            metrics_address = f"127.0.0.1:{free_port()}"
            bridge_port = free_port()
            pair_env = {
                **env,
                "GATEWAY_LISTEN_ADDR": gateway_address,
                "GATEWAY_ADDR": gateway_address,
                "GATEWAY_METRICS_ADDR": metrics_address,
                "BRIDGE_LISTEN_ADDR": f"127.0.0.1:{bridge_port}",
                # Its own (the default, 127.0.0.1:9464, is one for the whole machine).
                "BRIDGE_METRICS_ADDR": f"127.0.0.1:{free_port()}",
                # Its own ledger file (the default, data/usage.db, is relative to the cwd: the repo).
                "USAGE_DATABASE_URL": f"sqlite:///{work_dir}/usage{suffix}.db",
                **gateway_env,
            }
            code = (code_dirs or {}).get(config, REPO)
            gateway = _spawn(
                f"gateway{suffix}", ["-m", "gateway_service"], pair_env, work_dir, code
            )
            procs[gateway.name] = gateway
            bridge = _spawn(f"bridge{suffix}", ["-m", "rest_bridge"], pair_env, work_dir, code)
            procs[bridge.name] = bridge
            views[config] = Stack(
                upstream_url,
                gateway_address,
                f"http://127.0.0.1:{bridge_port}",
                {
                    "upstream": upstream,
                    "vault": procs["vault"],
                    "gateway": gateway,
                    "bridge": bridge,
                },
                config=config,
                metrics_url=f"http://{metrics_address}/metrics",
                external_cpu=dict(external_cpu or {}),
            )
        _wait_grpc(procs["vault"], vault_address)
        for view in views.values():
            _wait_grpc(view.procs["gateway"], view.gateway_address)
            _wait_http(view.procs["bridge"], f"{view.bridge_url}/healthz")
        for view in views.values():
            view.configs = views
        yield next(iter(views.values()))
    finally:
        # Bridges first, then gateways, the vault, the upstream: the reverse of their start.
        for proc in reversed(list(procs.values())):
            proc.stop()
