"""``python -m fakes``: the loud banner, the READY line, markers end to end, clean SIGTERM exit."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fakes.content import reply_text

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workers_ai_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    cmd = [
        sys.executable,
        "-m",
        "fakes",
        "workers-ai",
        "--port",
        "0",
        "--token",
        "dev-token",
        "--account-id",
        "acct",
        "--chunks",
        "3",
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY "), line
        yield proc, line.split()[1]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_cli_serves_until_sigterm(workers_ai_process: tuple[subprocess.Popen[str], str]) -> None:
    proc, base_url = workers_ai_process
    assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/client/v4")
    with httpx.Client(
        base_url=base_url, headers={"Authorization": "Bearer dev-token"}, timeout=5
    ) as client:
        r = client.post(
            "/accounts/acct/ai/run/@cf/meta/llama-3.2-3b-instruct",
            json={"prompt": "hello", "max_tokens": 9},
        )
        assert r.json()["result"]["response"] == reply_text("hello", 3)
        # Markers are how subprocess end-to-end tests reach the fault modes.
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(
                "/accounts/acct/ai/run/@cf/meta/llama-3.2-3b-instruct",
                json={"prompt": "x [[fake:cut_after=1]]", "stream": True, "max_tokens": 9},
            )
        r = client.post(
            "/accounts/other/ai/run/@cf/meta/llama-3.2-3b-instruct", json={"prompt": "x"}
        )
        assert r.status_code == 401
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "LOCAL STAND-IN: THIS IS NOT THE REAL CLOUDFLARE WORKERS AI" in stderr
    assert f"WORKERS_AI_BASE_URL={base_url}" in stderr
    assert "dev-token" not in stderr  # the banner never echoes tokens
    assert "Exception in ASGI application" not in stderr


def test_cli_rejects_unknown_provider() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fakes", "openai"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2 and "invalid choice" in result.stderr
