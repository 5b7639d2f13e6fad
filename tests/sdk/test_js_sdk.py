"""The JS SDK (`sdk/js/native1api.mjs`): `node --test tests/sdk/js/` against the live stack.

The stack and bridge run in this process (see conftest); node gets their addresses, two users'
tokens, the fake OpenRouter's key and the prompts with the fake's deterministic replies through
the environment. Node missing: skipped locally, a failure in CI (env `CI` set).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid

import pytest

from fakes.content import reply_text
from tests.sdk.conftest import Live
from tests.sdk.loader import ROOT
from tests.support.stack import OPENROUTER_KEY

JS_TESTS = ROOT / "tests" / "sdk" / "js"
MIN_NODE = 18


def _node() -> str:
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node is not installed"
    else:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
        match = re.match(r"v(\d+)\.", version)
        if match is None or int(match.group(1)) < MIN_NODE:
            problem = f"node {version or '?'} is older than v{MIN_NODE}"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{problem}; CI requires it for the JS SDK tests")
        pytest.skip(problem)
    assert node is not None
    return node


def test_js_sdk_against_the_live_stack(live: Live, uid: str) -> None:
    node = _node()
    run = uuid.uuid4().hex[:8]
    prompts = {
        "hello": f"hello js {run}",
        "stream": f"stream js {run}",
        "byok": f"byok js {run}",
        "cut": f"cut js {run} [[fake:cut_after=2]]",
        "abort": f"abort js {run} [[fake:chunks=200,chunk_delay=0.02]]",
    }
    env = {
        **os.environ,
        "NATIVE1API_BASE_URL": live.base_url,
        "NATIVE1API_DOWN_URL": live.down_url,
        "NATIVE1API_TOKEN": live.token(f"{uid}-a"),
        "NATIVE1API_TOKEN_2": live.token(f"{uid}-b"),
        "NATIVE1API_OPENROUTER_KEY": OPENROUTER_KEY,
        "NATIVE1API_PROMPTS": json.dumps(
            {
                name: {"prompt": prompt, "reply": reply_text(prompt)}
                for name, prompt in prompts.items()
            }
        ),
        "NO_COLOR": "1",
    }
    env.pop("NODE_OPTIONS", None)
    result = subprocess.run(
        [node, "--test", "--test-reporter=spec", str(JS_TESTS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    output = f"--- node stdout ---\n{result.stdout}\n--- node stderr ---\n{result.stderr}"
    assert result.returncode == 0, f"node --test failed (exit {result.returncode})\n{output}"
    # Every test ran and passed. The live suites skip themselves without the environment, and
    # node counts a skipped suite nowhere, so look for their skip reason too.
    assert "run through tests/sdk/test_js_sdk.py" not in result.stdout, output
    counts = dict(
        re.findall(r"^\S* ?(tests|pass|fail|skipped) (\d+)$", result.stdout, re.MULTILINE)
    )
    assert counts.get("fail") == "0" and counts.get("skipped") == "0", output
    assert counts.get("pass") == counts.get("tests") and int(counts.get("tests", 0)) > 0, output
    # Aborting the stream in JS went all the way down: the upstream request was cancelled.
    live.wait_for_outcome(prompts["abort"], "disconnected")
