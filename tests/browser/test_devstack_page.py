"""`make run` for a newcomer: one URL in the banner, open it, sign in, chat; nothing else to do.

Runs `python -m devstack` as `make run` does (all ports free ones, in a fresh directory), so it
starts the Workers AI stand-in, the three services, the page's web server and the real Auth
Emulator itself; then Chromium opens the URL the banner printed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fakes.content import reply_text
from tests.browser.conftest import ChatPage
from tests.integration.conftest import FIREBASE_JS, skip_or_fail
from tests.support.procs import REPO, free_port

pytestmark = [pytest.mark.emulator, pytest.mark.e2e]

BANNER = "Native1API is running"


def _wait_for(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace")
        if text in content:
            return content
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not seen:\n{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture
def devstack(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    if not FIREBASE_JS.is_file():
        skip_or_fail(
            "firebase-tools is not installed; run `npm ci --prefix tools/firebase-emulator`"
        )
    env = {
        "VAULT_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
        "GATEWAY_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
        "BRIDGE_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
        "WORKERS_AI_STANDIN_PORT": str(free_port()),
        "BRIDGE_METRICS_ADDR": f"127.0.0.1:{free_port()}",
        "GATEWAY_METRICS_ADDR": f"127.0.0.1:{free_port()}",
        "DEVSTACK_WEB_ADDR": f"127.0.0.1:{free_port()}",
        "FIREBASE_AUTH_EMULATOR_HOST": f"127.0.0.1:{free_port()}",
    }
    env["VAULT_ADDR"] = env["VAULT_LISTEN_ADDR"]
    env["GATEWAY_ADDR"] = env["GATEWAY_LISTEN_ADDR"]
    for name in (
        "CLOUDFLARE_ACCOUNT_ID",
        "CLOUDFLARE_API_TOKEN",
        "BRIDGE_CORS_ORIGINS",
        "DEVSTACK_AUTH_EMULATOR",
        "LIMITS_FILE",
        "LIMITS_REDIS_URL",
    ):
        env[name] = ""  # whatever the developer's shell has, the test starts from nothing
    return tmp_path, env


def test_make_run_serves_the_page_and_a_newcomer_chats(
    devstack: tuple[Path, dict[str, str]], chat: ChatPage
) -> None:
    cwd, env = devstack
    log = cwd / "devstack.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "devstack"],
            cwd=cwd,
            env={**os.environ, **env, "PYTHONPATH": str(REPO)},
            stdout=out,
            stderr=out,
        )
    try:
        text = _wait_for(log, BANNER, process, timeout=90)
        match = re.search(r"Web chat \(open in a browser\): (\S+)", text)
        assert match, text[-3000:]
        page_url = match.group(1)
        assert page_url == f"http://{env['DEVSTACK_WEB_ADDR']}/examples/web-chat/"
        emulator = env["FIREBASE_AUTH_EMULATOR_HOST"]
        assert f"Auth Emulator: http://{emulator} (started by devstack" in text

        # The bridge allows the page's origin and nothing else (no `*`).
        bridge = f"http://{env['BRIDGE_LISTEN_ADDR']}"
        origin = page_url.removesuffix("/examples/web-chat/")
        preflight = {"Access-Control-Request-Method": "POST"}
        allowed = httpx.options(f"{bridge}/v1/models", headers={"Origin": origin, **preflight})
        assert allowed.headers.get("access-control-allow-origin") == origin
        foreign = httpx.options(
            f"{bridge}/v1/models", headers={"Origin": "http://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in foreign.headers

        chat.open(page_url)
        chat.sign_in_anonymously()
        chat.wait_ready()
        prompt = "Hi from a newcomer"
        chat.send(prompt)
        assert chat.wait_answer_state("done", "error") == "done", chat.error_text()
        assert chat.answer_text() == reply_text(prompt)
        assert chat.page.get_attribute(chat.last_answer(), "data-provider") == "workers-ai"
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(30)
    assert code == 0, log.read_text(errors="replace")[-3000:]
    # Everything it started is gone: the emulator's and the page's ports are free again.
    for addr in (env["FIREBASE_AUTH_EMULATOR_HOST"], env["DEVSTACK_WEB_ADDR"]):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://{addr}/", timeout=2)
