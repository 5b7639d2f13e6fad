"""Fixtures for integration tests that need real external programs.

`firebase_auth_emulator` (session scope) runs the real Firebase Auth Emulator from the
firebase-tools version pinned in tools/firebase-emulator/package-lock.json, via
tools/firebase-emulator/launch.mjs, on a free loopback port. It is started once, on first use, and
always stopped (its whole process group) at the end of the session; the launcher also stops it by
itself if this process dies without tearing down.

Not installed (no node_modules, or no `node`): the test is skipped locally, with the install
command, but fails when the `CI` environment variable is set, because CI installs it and a missing
install there is a bug.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, NoReturn

import httpx
import pytest

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
EMULATOR_DIR: Final = REPO_ROOT / "tools" / "firebase-emulator"
LAUNCHER: Final = EMULATOR_DIR / "launch.mjs"
FIREBASE_JS: Final = (
    EMULATOR_DIR / "node_modules" / "firebase-tools" / "lib" / "bin" / "firebase.js"
)
INSTALL_COMMAND: Final = "npm ci --prefix tools/firebase-emulator"
EMULATOR_PROJECT_ID: Final = "demo-native1api"
EMULATOR_HOST: Final = "127.0.0.1"

# Startup takes ~7 s on a developer machine (CPU-bound: the CLI compiles the Auth API's OpenAPI
# spec); leave room for a slow CI runner, but stay under the 120 s per-test pytest-timeout.
STARTUP_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 10.0
POLL_INTERVAL_S: Final = 0.1
START_ATTEMPTS: Final = 3  # a new free port each time, in case another process took ours
LOG_TAIL_LINES: Final = 60

# Anything shaped like a JWT (the emulator does not log tokens at its default verbosity, but a
# log tail ends up in CI output, so be sure).
_JWT_RE: Final = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")

# Log lines meaning "someone else holds the port": retry on a new port instead of failing.
_PORT_IN_USE_MARKERS: Final = ("port is already in use", "port taken", "EADDRINUSE")


def running_in_ci() -> bool:
    """CI sets `CI` (GitHub Actions, GitLab, ...: "true"); "", "0" and "false" mean not CI."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def skip_or_fail(reason: str) -> NoReturn:
    """Skip locally; fail in CI, where the emulator must be installed."""
    if running_in_ci():
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True, slots=True)
class AuthEmulator:
    """A running Firebase Auth Emulator."""

    host: str
    port: int
    project_id: str
    log_path: Path

    @property
    def host_port(self) -> str:
        """The `host:port` form that `FIREBASE_AUTH_EMULATOR_HOST` takes."""
        return f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host_port}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log_path, lines)


class EmulatorStartError(Exception):
    def __init__(self, message: str, *, port_in_use: bool = False) -> None:
        super().__init__(message)
        self.port_in_use = port_in_use


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"<could not read {path}: {exc}>"
    return _JWT_RE.sub("<redacted JWT>", "\n".join(text.splitlines()[-lines:]))


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _is_ready(client: httpx.Client, base_url: str) -> bool:
    """The emulator's root answers `{"authEmulator": {"ready": true, ...}}` once it serves."""
    try:
        response = client.get(base_url + "/")
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return False
    if response.status_code != httpx.codes.OK or not isinstance(body, dict):
        return False
    status = body.get("authEmulator")
    return isinstance(status, dict) and status.get("ready") is True


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the launcher and everything it started: SIGTERM to the group, then SIGKILL."""
    pgid = proc.pid  # start_new_session=True: the launcher leads its own process group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)
    # The launcher has exited; sweep any member of its group that outlived it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _launch(node: str, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            node,
            str(LAUNCHER),
            "--host",
            EMULATOR_HOST,
            "--port",
            str(port),
            "--project",
            EMULATOR_PROJECT_ID,
            "--exit-with-parent",
        ],
        cwd=EMULATOR_DIR,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_until_ready(proc: subprocess.Popen[bytes], emulator: AuthEmulator) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with httpx.Client(timeout=httpx.Timeout(1.0), trust_env=False) as client:
        while True:
            if _is_ready(client, emulator.base_url):
                return
            code = proc.poll()
            if code is not None:
                tail = emulator.log_tail()
                raise EmulatorStartError(
                    f"the Firebase Auth Emulator exited with status {code} before it was ready",
                    port_in_use=any(marker in tail for marker in _PORT_IN_USE_MARKERS),
                )
            if time.monotonic() >= deadline:
                raise EmulatorStartError(
                    f"the Firebase Auth Emulator was not ready within {STARTUP_TIMEOUT_S:.0f} s"
                )
            time.sleep(POLL_INTERVAL_S)


@contextlib.contextmanager
def run_auth_emulator(log_dir: Path) -> Iterator[AuthEmulator]:
    """Start the emulator, yield it once it serves requests, and always stop it afterwards."""
    node = shutil.which("node")
    if not FIREBASE_JS.is_file():
        skip_or_fail(f"firebase-tools is not installed; run `{INSTALL_COMMAND}`")
    if node is None:
        skip_or_fail("`node` (Node.js >= 20) is not on PATH; the Firebase Auth Emulator needs it")

    for attempt in range(1, START_ATTEMPTS + 1):
        emulator = AuthEmulator(
            host=EMULATOR_HOST,
            port=_free_port(EMULATOR_HOST),
            project_id=EMULATOR_PROJECT_ID,
            log_path=log_dir / f"firebase-auth-emulator-{attempt}.log",
        )
        with emulator.log_path.open("wb") as log:
            proc = _launch(node, emulator.port, log)
        try:
            try:
                _wait_until_ready(proc, emulator)
            except EmulatorStartError as exc:
                if exc.port_in_use and attempt < START_ATTEMPTS:
                    continue  # `finally` stops this attempt's process group first
                pytest.fail(
                    f"{exc}; log {emulator.log_path}, last lines:\n{emulator.log_tail()}",
                    pytrace=False,
                )
            yield emulator
            return
        finally:
            _stop(proc)


@pytest.fixture(scope="session")
def firebase_auth_emulator(
    tmp_path_factory: pytest.TempPathFactory,
) -> Generator[AuthEmulator, None, None]:
    """The real Firebase Auth Emulator for project `demo-native1api`, shared by the session.

    Its log is kept under pytest's basetemp (the last few sessions are retained).
    """
    with run_auth_emulator(tmp_path_factory.mktemp("firebase-auth-emulator")) as emulator:
        yield emulator


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failing test that used the emulator, attach the tail of the emulator's log."""
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        emulator = funcargs.get("firebase_auth_emulator")
        if isinstance(emulator, AuthEmulator):
            report.sections.append(
                (f"Firebase Auth Emulator log (tail of {emulator.log_path})", emulator.log_tail())
            )
    return report
