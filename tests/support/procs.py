"""Running our services as real subprocesses (the same commands compose runs)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rpc_common.tls import TlsSettings

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Service:
    """A `python -m <module>` child with its stderr captured to a file."""

    module: str
    env: Mapping[str, str]
    log_path: Path
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Service:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            cwd=self.env.get("NATIVE1API_TEST_CWD", str(REPO)),
            env={**os.environ, **self.env},
            stdout=log,
            stderr=log,
        )
        log.close()
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_grpc_healthy(self, address: str, timeout: float = 20.0) -> None:
        """Poll grpc.health.v1 until SERVING, over TLS when the service's GRPC_TLS_* say so."""
        deadline = time.monotonic() + timeout
        with TlsSettings.from_env(self.env).sync_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"{self.module} exited early:\n{self.log[-3000:]}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise AssertionError(f"{self.module} not healthy in {timeout} s:\n{self.log[-3000:]}")

    def wait_http_ready(self, url: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"{self.module} exited early:\n{self.log[-3000:]}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.module} not ready in {timeout} s:\n{self.log[-3000:]}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        assert self.process is not None
        if self.process.stdout is not None:
            self.process.stdout.close()

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for a process already told to stop (a second signal would race its shutdown)."""
        assert self.process is not None
        code = self.process.wait(timeout)
        self._close_pipes()
        return code

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"{self.module} ignored SIGTERM:\n{self.log[-3000:]}"
                ) from None
        self._close_pipes()
        return self.process.returncode


def run_module(
    module: str, args: list[str], env: Mapping[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run `python -m module args` to completion (for CLIs and start-up failures)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=str(REPO),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_fake(
    provider: str, tokens: list[str], log_path: Path, *extra: str
) -> tuple[Service, str]:
    """`python -m fakes PROVIDER --port 0` as a subprocess; returns it and its base URL."""
    args = [provider, "--port", "0", *(f"--token={t}" for t in tokens), *extra]
    service = Service("fakes", {}, log_path, tuple(args))
    log = log_path.open("ab")
    service.process = subprocess.Popen(
        [sys.executable, "-m", "fakes", *args],
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=log,
    )
    log.close()
    assert service.process.stdout is not None
    line = service.process.stdout.readline().decode().strip()
    if not line.startswith("READY "):
        service.kill()
        raise AssertionError(f"fake {provider} did not start: {line!r}\n{service.log[-2000:]}")
    return service, line.removeprefix("READY ")
