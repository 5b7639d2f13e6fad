"""What `python -m devstack` and `python -m devstack --replicas` share: the environment every child
starts from (dev secrets in `data/`, emulator-mode auth, the shipped limits, the Workers AI
stand-in when no Cloudflare credentials are set), the children themselves, and stopping them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from devstack.secrets import ensure_secret

DATA = Path("data")
# The shipped limits file, found from the code rather than the working directory.
LIMITS_FILE = Path(__file__).resolve().parents[1] / "config" / "limits.toml"
READY_TIMEOUT_SECONDS = 60.0
STANDIN_PORT = int(os.environ.get("WORKERS_AI_STANDIN_PORT", "8787"))


@dataclass
class Child:
    """One `python -m MODULE ARGS` child; `env` None means the stack's common environment."""

    name: str
    module: str
    args: tuple[str, ...] = ()
    env: dict[str, str] | None = None
    role: str = ""
    """What it is (vault, gateway, bridge, front, standin): replicas of one role stand in for
    each other."""
    address: str = ""
    """Where it serves (HOST:PORT), when the stack needs to know."""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _relay: threading.Thread | None = field(default=None, repr=False)

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]

    def start(self, env: dict[str, str], *, label: bool = False) -> None:
        """Start it in a new session (Ctrl-C reaches only devstack, which stops the children in
        order). With `label`, each line it prints reaches our stderr prefixed with its name."""
        output = subprocess.PIPE if label else None
        self.process = subprocess.Popen(  # noqa: S603 (our own argv)
            self.argv,
            env=self.env if self.env is not None else env,
            start_new_session=True,
            stdout=output,
            stderr=subprocess.STDOUT if label else None,
        )
        if label:
            assert self.process.stdout is not None
            prefix = f"{self.name:<10}| ".encode()
            self._relay = threading.Thread(
                target=_relay, args=(self.process.stdout, prefix), daemon=True
            )
            self._relay.start()

    def flush_output(self, timeout: float = 2.0) -> None:
        """Wait (a little) for the labelled output of an exited child to be relayed."""
        if self._relay is not None:
            self._relay.join(timeout)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


_OUTPUT = threading.Lock()


def say(message: str) -> None:
    with _OUTPUT:
        sys.stderr.write(f"[devstack] {message}\n")
        sys.stderr.flush()


def announce(text: str) -> None:
    """Write a block (the banner) to stderr in one piece, between relayed lines."""
    with _OUTPUT:
        sys.stderr.write(text)
        sys.stderr.flush()


def _relay(stream: IO[bytes], prefix: bytes) -> None:
    with stream:
        for line in iter(stream.readline, b""):
            with _OUTPUT:
                sys.stderr.buffer.write(prefix + line)
                sys.stderr.buffer.flush()


def common_env() -> tuple[dict[str, str], bool]:
    """The children's environment (no vault database yet), and whether the stand-in is needed."""
    # An empty variable counts as unset, as it does for the services themselves.
    env = {key: value for key, value in os.environ.items() if value}
    env.setdefault("FIREBASE_PROJECT_ID", "demo-native1api")
    env.setdefault("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9099")
    if "VAULT_MASTER_KEY" not in env:
        env.setdefault("VAULT_MASTER_KEY_FILE", str(ensure_secret(DATA / "master.key")))
    if "SERVICE_TOKEN" not in env:
        env.setdefault("SERVICE_TOKEN_FILE", str(ensure_secret(DATA / "service.token")))
    if "LIMITS_FILE" not in env:
        if LIMITS_FILE.is_file():
            env["LIMITS_FILE"] = str(LIMITS_FILE)
        else:
            say(f"{LIMITS_FILE} is missing; starting without limits")
    standin = not (env.get("CLOUDFLARE_ACCOUNT_ID") and env.get("CLOUDFLARE_API_TOKEN"))
    if standin:
        token_path = ensure_secret(DATA / "workers-ai-standin.token", 24)
        env["CLOUDFLARE_ACCOUNT_ID"] = "local-standin"
        env["CLOUDFLARE_API_TOKEN"] = token_path.read_text(encoding="utf-8").strip()
        env["WORKERS_AI_BASE_URL"] = f"http://127.0.0.1:{STANDIN_PORT}/client/v4"
    return env, standin


def standin_child(env: dict[str, str]) -> Child:
    """The local Workers AI stand-in (`python -m fakes workers-ai`) for the token in `env`."""
    # `--token=VALUE`: a random token may start with "-", which argparse would take for an option.
    args = ("workers-ai", "--port", str(STANDIN_PORT), f"--token={env['CLOUDFLARE_API_TOKEN']}")
    return Child("workers-ai-standin", "fakes", args, role="standin")


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (our own http URL)
            return bool(response.status == 200)
    except OSError:
        return False


def stop(waves: Sequence[Sequence[Child]], grace_seconds: float = 15.0) -> None:
    """SIGTERM each wave's running children together, then wait for them, wave after wave."""
    for wave in waves:
        running = [child for child in wave if child.running]
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(grace_seconds)
            except subprocess.TimeoutExpired:
                say(f"{child.name} did not stop in {grace_seconds:.0f} s; killing it")
                child.process.kill()
                child.process.wait()
        for child in wave:
            child.flush_output()
