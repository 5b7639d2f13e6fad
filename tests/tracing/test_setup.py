"""Tracing's switch: off unless an OTLP endpoint is set, and off means nothing is installed.

Each case runs in a fresh interpreter (the switch is process-wide, read once at start-up, as
each service's `main` does), with every `OTEL_*` variable of the test's own environment removed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.support.e2e import MODEL, running_processes
from tests.support.procs import REPO
from tests.tracing.otlp_receiver import OtlpReceiver

# What a service's start-up does (setup, then build the servers and the bridge's app), and what
# that left behind: whether tracing is on, the interceptors a gRPC server gets, the bridge's
# middleware, and whether the SDK was ever imported.
PROBE = textwrap.dedent(
    """
    import sys
    from rpc_common import tracing
    on = tracing.setup("probe")
    from rest_bridge.app import create_app
    from rest_bridge.config import BridgeSettings
    from rest_bridge.tracing import install
    app = create_app(BridgeSettings.from_env())
    before = list(app.user_middleware)
    added = install(app)
    install(app)  # a second hook adds nothing
    print(on, len(tracing.server_interceptors()), added, len(app.user_middleware) - len(before),
          "opentelemetry.sdk" in sys.modules)
    """
)


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_off_by_default_installs_nothing_and_never_loads_the_sdk() -> None:
    assert _probe() == "False 0 False 0 False"


def test_sdk_disabled_or_exporter_none_wins_over_an_endpoint() -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}
    assert _probe(**endpoint, OTEL_SDK_DISABLED="true") == "False 0 False 0 False"
    assert _probe(**endpoint, OTEL_TRACES_EXPORTER="none") == "False 0 False 0 False"


def test_an_endpoint_turns_it_on_everywhere() -> None:
    assert _probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4317") == "True 1 True 1 True"
    on = _probe(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://127.0.0.1:4317/")
    assert on == "True 1 True 1 True"


def test_a_protocol_we_cannot_speak_stops_the_service_naming_the_variable() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env = {
        **clean,
        "FIREBASE_PROJECT_ID": "demo-native1api",
        "SERVICE_TOKEN": "setup-test-service-token-0123",
        "CLOUDFLARE_ACCOUNT_ID": "acct",
        "CLOUDFLARE_API_TOKEN": "cf-token-0123456789",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    result = subprocess.run(
        [sys.executable, "-m", "gateway_service"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "OTEL_EXPORTER_OTLP_PROTOCOL must be grpc" in result.stderr


@pytest.mark.e2e
def test_sdk_disabled_stack_exports_nothing(tmp_path: Path) -> None:
    """The real processes with an endpoint but OTEL_SDK_DISABLED, a receiver listening: not a
    single span arrives."""
    with OtlpReceiver() as receiver:
        env = {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        with running_processes(tmp_path, extra_env=env) as stack:
            body = {"model": MODEL, "messages": [{"role": "user", "content": "untraced"}]}
            reply = httpx.post(
                f"{stack.bridge_url}/v1/chat/completions",
                json=body,
                headers=stack.headers("quiet"),
                timeout=30,
            )
            assert reply.status_code == 200
        # The services have exited (their shutdown flushes what they had): nothing was sent.
        assert receiver.raw() == b""
