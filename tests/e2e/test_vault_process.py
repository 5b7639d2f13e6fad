"""`python -m vault_service` as a real process: config errors, restart, SIGTERM, rewrap."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc
import pytest

from native1api.vault.v1 import vault_service_pb2, vault_service_pb2_grpc
from tests.support.procs import Service, free_port, run_module
from tests.support.tokens import TokenFactory, bearer

pytestmark = pytest.mark.e2e

PROJECT = "demo-native1api"
MASTER = "e2e-master-passphrase-0123456789-abcdef"
OLD_MASTER = "e2e-old-master-passphrase-0123456789-xyz"
SERVICE_TOKEN = "e2e-service-token-0123456789"
KEY = "sk-or-v1-" + "feedc0de" * 8


def base_env(tmp_path: Path, port: int, master: str = MASTER) -> dict[str, str]:
    return {
        "FIREBASE_PROJECT_ID": PROJECT,
        "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099",
        "VAULT_MASTER_KEY": master,
        "SERVICE_TOKEN": SERVICE_TOKEN,
        "VAULT_LISTEN_ADDR": f"127.0.0.1:{port}",
        "VAULT_DATABASE_URL": f"sqlite:///{tmp_path}/vault.db",
        "LOG_LEVEL": "DEBUG",
    }


@pytest.fixture
def emulator_tokens() -> TokenFactory:
    return TokenFactory(project_id=PROJECT)


def _put_and_access(address: str, tokens: TokenFactory, uid: str, put: bool) -> str:
    with grpc.insecure_channel(address) as channel:
        stub = vault_service_pb2_grpc.VaultServiceStub(channel)
        token = tokens.mint_emulator(uid)
        if put:
            stub.PutApiKey(
                vault_service_pb2.PutApiKeyRequest(api_key=KEY), metadata=bearer(token), timeout=10
            )
        reply = stub.AccessApiKey(
            vault_service_pb2.AccessApiKeyRequest(),
            metadata=(*bearer(token), ("x-service-token", SERVICE_TOKEN)),
            timeout=10,
        )
        return reply.api_key


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"VAULT_MASTER_KEY": ""}, "VAULT_MASTER_KEY"),
        ({"VAULT_MASTER_KEY": "too-short"}, "VAULT_MASTER_KEY"),
        ({"SERVICE_TOKEN": ""}, "SERVICE_TOKEN"),
        ({"FIREBASE_PROJECT_ID": ""}, "FIREBASE_PROJECT_ID"),
        ({"VAULT_DATABASE_URL": "mysql://x"}, "VAULT_DATABASE_URL"),
    ],
)
def test_refuses_to_start_with_bad_config(
    tmp_path: Path, change: dict[str, str], variable: str
) -> None:
    env = {**base_env(tmp_path, free_port()), **change}
    result = run_module("vault_service", [], env, timeout=30)
    assert result.returncode != 0
    assert variable in result.stderr
    assert "too-short" not in result.stderr  # the bad secret itself is not echoed


def test_keys_survive_restart_and_sigterm_exits_zero(
    tmp_path: Path, emulator_tokens: TokenFactory
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = base_env(tmp_path, port)
    first = Service("vault_service", env, tmp_path / "vault.log").start()
    first.wait_grpc_healthy(address)
    assert _put_and_access(address, emulator_tokens, "alice", put=True) == KEY
    assert first.terminate() == 0

    second = Service("vault_service", env, tmp_path / "vault.log").start()
    second.wait_grpc_healthy(address)
    assert _put_and_access(address, emulator_tokens, "alice", put=False) == KEY
    assert second.terminate() == 0

    log = second.log
    assert "signatures are NOT checked" in log or "not checked" in log.lower()
    for secret in (KEY, MASTER, SERVICE_TOKEN):
        assert secret not in log
    assert KEY.encode() not in (tmp_path / "vault.db").read_bytes()


def test_rewrap_moves_rows_to_the_new_master_key(
    tmp_path: Path, emulator_tokens: TokenFactory
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    old_env = base_env(tmp_path, port, master=OLD_MASTER)
    vault = Service("vault_service", old_env, tmp_path / "vault.log").start()
    vault.wait_grpc_healthy(address)
    for uid in ("u1", "u2", "u3"):
        _put_and_access(address, emulator_tokens, uid, put=True)
    assert vault.terminate() == 0
    before = dict(
        sqlite3.connect(tmp_path / "vault.db").execute("SELECT uid, blob FROM vault_keys")
    )

    rotated = {**base_env(tmp_path, port), "VAULT_PREVIOUS_MASTER_KEYS": OLD_MASTER}
    result = run_module("vault_service", ["rewrap"], rotated)
    assert result.returncode == 0, result.stderr
    assert "3 re-sealed" in result.stderr
    after = dict(sqlite3.connect(tmp_path / "vault.db").execute("SELECT uid, blob FROM vault_keys"))
    assert before.keys() == after.keys()
    assert all(before[uid] != after[uid] for uid in before)

    # The old secret can go: every key still decrypts under the new one alone.
    new_only = base_env(tmp_path, port)
    vault = Service("vault_service", new_only, tmp_path / "vault.log").start()
    vault.wait_grpc_healthy(address)
    for uid in ("u1", "u2", "u3"):
        assert _put_and_access(address, emulator_tokens, uid, put=False) == KEY
    assert vault.terminate() == 0
    assert OLD_MASTER not in result.stderr


@pytest.mark.parametrize("module", ["vault_service", "gateway_service"])
def test_emulator_mode_for_a_real_project_refuses_to_start(tmp_path: Path, module: str) -> None:
    """A stray FIREBASE_AUTH_EMULATOR_HOST in production must stop the service, not switch off
    signature checks (SPEC §11)."""
    env = {
        **base_env(tmp_path, free_port()),
        "FIREBASE_PROJECT_ID": "acme-prod",
        "CLOUDFLARE_ACCOUNT_ID": "acct",
        "CLOUDFLARE_API_TOKEN": "cf-token-0123456789",
    }
    result = run_module(module, [], env)
    assert result.returncode != 0
    assert "FIREBASE_AUTH_EMULATOR_HOST" in result.stderr
    assert "FIREBASE_PROJECT_ID" in result.stderr
    assert MASTER not in result.stderr + result.stdout
