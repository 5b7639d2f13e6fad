"""SDK fixtures: the whole stack (fake upstreams, vault, gateway, REST bridge) on loopback.

The stack runs in its own thread with its own event loop, once per session, so that every kind
of client can use it: the blocking Python client from the test's thread, the async client from
pytest-asyncio's per-test loop, and the JS SDK from a `node --test` subprocess. It reuses the
bridge tests' helper (`tests.bridge.support.serve_bridge`: the real `create_app` under uvicorn).

Tests isolate themselves with their own user ids (`uid` fixture) and prompts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fakes.content import last_user_text
from fakes.control import RequestRecord
from gateway_service.upstream_http import HttpSettings
from tests.bridge.support import bridge_settings, serve_bridge
from tests.support.logcheck import assert_logs_clean
from tests.support.stack import Stack, running_stack
from tests.support.tokens import TokenFactory
from vault_service.crypto import KeyRing

T = TypeVar("T")

LLAMA = "@cf/meta/llama-3.2-3b-instruct"
_START_TIMEOUT = 30.0


@dataclass
class Live:
    """The running stack as the SDK tests see it."""

    base_url: str  # the bridge, http://127.0.0.1:PORT
    down_url: str  # a second bridge whose gateway address has nothing listening (503)
    stack: Stack
    loop: asyncio.AbstractEventLoop
    minted: list[str] = field(default_factory=list)

    def token(self, uid: str) -> str:
        """A valid ID token for `uid`, remembered so the log check can look for it."""
        token = self.stack.tokens.mint(uid)
        self.minted.append(token)
        return token

    def call(self, factory: Callable[[], Coroutine[Any, Any, T]], timeout: float = 10.0) -> T:
        """Run a coroutine on the stack's loop (e.g. `stack.save_key`) and return its result."""
        return asyncio.run_coroutine_threadsafe(factory(), self.loop).result(timeout)

    def upstream_records(self, prompt: str) -> list[RequestRecord]:
        """Every request any fake upstream received whose last user message is `prompt`."""
        fakes = (self.stack.workers_ai, self.stack.openrouter, self.stack.together)
        return [
            record
            for fake in fakes
            for record in fake.control.requests
            if isinstance(record.body, dict) and last_user_text(record.body) == prompt
        ]

    def wait_for_outcome(self, prompt: str, outcome: str, within: float = 5.0) -> RequestRecord:
        """Poll until an upstream request for `prompt` ended with `outcome` (e.g. disconnected)."""
        deadline = time.monotonic() + within
        while True:
            for record in self.upstream_records(prompt):
                if record.outcome == outcome:
                    return record
            if time.monotonic() > deadline:
                seen = [record.outcome for record in self.upstream_records(prompt)]
                raise AssertionError(f"no upstream request for {prompt!r} {outcome}; saw {seen}")
            time.sleep(0.02)


def dead_address() -> str:
    """A loopback address with nothing listening (bound once to reserve a number, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


class _StackThread(threading.Thread):
    """Runs `running_stack` and two bridges on a private event loop until `stop()`."""

    def __init__(self, tmp_path: Path, tokens: TokenFactory, keyring: KeyRing) -> None:
        super().__init__(name="sdk-live-stack", daemon=True)
        self._tmp_path = tmp_path
        self._tokens = tokens
        self._keyring = keyring
        self._ready = threading.Event()
        self._stop_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.live: Live | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to the fixture instead of pytest's thread hook
            self.error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        # No upstream retries in the gateway: a scripted 429/503 comes back at once.
        async with (
            running_stack(
                self._tmp_path, self._tokens, self._keyring, http=HttpSettings(max_retries=0)
            ) as stack,
            serve_bridge(bridge_settings(stack.gateway_address, stack.vault_address)) as bridge,
            serve_bridge(bridge_settings(dead_address(), stack.vault_address)) as down,
        ):
            self.live = Live(bridge.base_url, down.base_url, stack, self._loop)
            self._ready.set()
            await self._stop_event.wait()

    def wait_ready(self) -> Live:
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError(f"the stack did not start within {_START_TIMEOUT} s")
        if self.live is None:
            raise RuntimeError("the stack failed to start") from self.error
        return self.live

    def stop(self) -> None:
        if self._loop is not None and self._stop_event is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop_event.set)
        self.join(15)
        if self.is_alive():
            raise RuntimeError("the stack did not stop within 15 s")
        if self.error is not None:
            raise RuntimeError("the stack failed while stopping") from self.error


@pytest.fixture(scope="session")
def live(
    tmp_path_factory: pytest.TempPathFactory, tokens: TokenFactory, keyring: KeyRing
) -> Iterator[Live]:
    thread = _StackThread(tmp_path_factory.mktemp("sdk-stack"), tokens, keyring)
    thread.start()
    try:
        yield thread.wait_ready()
    finally:
        thread.stop()


@pytest.fixture
def uid() -> str:
    """A user id of this test's own: vault state and fake scripting never leak between tests."""
    return f"sdk-{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _no_secrets_in_logs(
    caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> Iterator[None]:
    """Whatever the stack or the SDK logged during the test carries no token or key."""
    caplog.set_level(logging.DEBUG)
    yield
    minted: list[str] = []
    if "live" in request.fixturenames:
        live: Live = request.getfixturevalue("live")
        minted, live.minted[:] = list(live.minted), []
    assert_logs_clean(caplog, *minted)
