"""`python -m devstack` (what `make run` runs): from nothing to a streamed completion."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from devstack.token import mint_emulator_token
from fakes.content import reply_text
from tests.support.procs import REPO, free_port

pytestmark = pytest.mark.e2e


def _start(cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "devstack"],
            cwd=cwd,
            env={**os.environ, **env, "PYTHONPATH": str(REPO)},
            stdout=out,
            stderr=out,
        )


def _wait_for(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not seen:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def ports() -> dict[str, str]:
    bridge = free_port()
    env = {
        "VAULT_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
        "GATEWAY_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
        "BRIDGE_LISTEN_ADDR": f"127.0.0.1:{bridge}",
        "WORKERS_AI_STANDIN_PORT": str(free_port()),
        "BRIDGE_METRICS_ADDR": f"127.0.0.1:{free_port()}",
        # The page on a free port, and no Auth Emulator of the devstack's own (fixed port 9099):
        # tests/browser/test_devstack_page.py covers both.
        "DEVSTACK_WEB_ADDR": f"127.0.0.1:{free_port()}",
        "DEVSTACK_AUTH_EMULATOR": "off",
    }
    env["VAULT_ADDR"] = env["VAULT_LISTEN_ADDR"]
    env["GATEWAY_ADDR"] = env["GATEWAY_LISTEN_ADDR"]
    for name in (
        "CLOUDFLARE_ACCOUNT_ID",
        "CLOUDFLARE_API_TOKEN",
        "FIREBASE_AUTH_EMULATOR_HOST",
        "LIMITS_FILE",
        "LIMITS_REDIS_URL",
        "LIMITS_TIER_CLAIM",
    ):
        env[name] = ""  # whatever the developer's shell has, the test starts from nothing
    return env


def test_fresh_directory_to_streamed_completion_and_clean_stop(
    tmp_path: Path, ports: dict[str, str]
) -> None:
    log = tmp_path / "devstack.log"
    process = _start(tmp_path, ports, log)
    try:
        _wait_for(log, "Native1API is running", process)
        text = log.read_text()
        assert "LOCAL Workers AI STAND-IN" in text
        assert "make token USER=alice" in text
        limits_file = REPO / "config" / "limits.toml"
        assert f"Limits: {limits_file} (in-process store)" in text
        assert "/v1/usage" in text

        for name in ("master.key", "service.token"):
            mode = stat.S_IMODE((tmp_path / "data" / name).stat().st_mode)
            assert mode == 0o600
        assert (tmp_path / "data" / "vault.db").exists()

        token = mint_emulator_token("alice", "demo-native1api")
        url = f"http://{ports['BRIDGE_LISTEN_ADDR']}/v1/chat/completions"
        body = {
            "model": "@cf/meta/llama-3.2-3b-instruct",
            "messages": [{"role": "user", "content": "Hello"}],
            "stream": True,
        }
        with (
            httpx.Client(timeout=30) as client,
            connect_sse(
                client, "POST", url, json=body, headers={"Authorization": f"Bearer {token}"}
            ) as source,
        ):
            assert source.response.headers["x-native1api-provider"] == "workers-ai"
            limit_header = source.response.headers.get("x-ratelimit-limit-requests")
            data = [event.data for event in source.iter_sse()]
        content = "".join(
            c["delta"].get("content") or "" for d in data[:-1] for c in json.loads(d)["choices"]
        )
        assert content == reply_text("Hello")
        assert data[-1] == "[DONE]"

        # The shipped limits apply: a plain user is in the default tier.
        shipped = tomllib.loads(limits_file.read_text(encoding="utf-8"))["tiers"]["default"]
        assert limit_header == str(shipped["requests_per_minute"])
        usage = httpx.get(
            f"http://{ports['BRIDGE_LISTEN_ADDR']}/v1/usage",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert usage.status_code == 200, usage.text
        report = usage.json()
        assert report["object"] == "usage"
        assert report["tier"] == "default"
        assert report["limits"] == {
            key: shipped.get(key)
            for key in ("requests_per_minute", "tokens_per_day", "max_concurrent_requests")
        }
        master_key = (tmp_path / "data" / "master.key").read_text()
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    assert master_key not in log.read_text()

    # A second run reuses the generated secrets.
    second_log = tmp_path / "devstack-2.log"
    process = _start(tmp_path, ports, second_log)
    try:
        _wait_for(second_log, "Native1API is running", process)
        assert (tmp_path / "data" / "master.key").read_text() == master_key
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0


def test_a_dying_child_stops_the_others(tmp_path: Path, ports: dict[str, str]) -> None:
    log = tmp_path / "devstack.log"
    process = _start(tmp_path, ports, log)
    try:
        _wait_for(log, "Native1API is running", process)
        pid = int(log.read_text().split("started vault_service (pid ")[1].split(")")[0])
        os.kill(pid, signal.SIGKILL)
        assert process.wait(30) == 1
        assert "vault_service exited" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    # Every child is gone with it: the bridge port is free again.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{ports['BRIDGE_LISTEN_ADDR']}/healthz", timeout=2)
