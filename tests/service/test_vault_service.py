"""VaultService through a real in-process gRPC server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest

from native1api.vault.v1 import api_key_pb2, vault_service_pb2, vault_service_pb2_grpc
from rpc_common.auth import AuthSettings
from tests.support.rpc import reason
from tests.support.tokens import PROJECT_ID, TokenFactory, bearer
from vault_service.config import VaultSettings
from vault_service.crypto import KeyRing
from vault_service.server import VaultApp, build_vault

SERVICE_TOKEN = "test-service-token-0123456789"
OPENROUTER_KEY = "sk-or-v1-" + "0123456789abcdef" * 4
TOGETHER_KEY = "tgp_v1_" + "A1b2C3d4" * 5


@dataclass
class Vault:
    app: VaultApp
    stub: vault_service_pb2_grpc.VaultServiceAsyncStub
    tokens: TokenFactory

    def user(self, uid: str) -> tuple[tuple[str, str], ...]:
        return bearer(self.tokens.mint(uid))

    def gateway(self, uid: str) -> tuple[tuple[str, str], ...]:
        return (*self.user(uid), ("x-service-token", SERVICE_TOKEN))


def settings(database_url: str) -> VaultSettings:
    return VaultSettings(
        auth=AuthSettings(
            project_id=PROJECT_ID, certs_url="https://certs.test/x509", emulator_host=None
        ),
        master_key="m" * 40,
        previous_master_keys=(),
        service_token=SERVICE_TOKEN,
        listen_addr="127.0.0.1:0",
        database_url=database_url,
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def vault(
    request: pytest.FixtureRequest, keyring: KeyRing, tokens: TokenFactory, tmp_path: Path
) -> AsyncIterator[Vault]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/vault.db"
    else:
        url = request.getfixturevalue("postgres_url")
    app = await build_vault(settings(url), keyring=keyring, verifier=tokens.verifier())
    await app.serving.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.serving.port}") as channel:
        yield Vault(app, vault_service_pb2_grpc.VaultServiceStub(channel), tokens)
    await app.serving.stop(None)
    await app.aclose()


async def test_put_status_access_delete(vault: Vault) -> None:
    put = await vault.stub.PutApiKey(
        vault_service_pb2.PutApiKeyRequest(api_key=OPENROUTER_KEY), metadata=vault.user("alice")
    )
    assert put.status.exists
    assert put.status.provider == api_key_pb2.PROVIDER_OPENROUTER
    assert put.status.update_time.seconds > 0

    status = await vault.stub.GetApiKeyStatus(
        vault_service_pb2.GetApiKeyStatusRequest(), metadata=vault.user("alice")
    )
    assert status.status.exists
    assert status.status.provider == api_key_pb2.PROVIDER_OPENROUTER
    assert OPENROUTER_KEY not in str(status)

    access = await vault.stub.AccessApiKey(
        vault_service_pb2.AccessApiKeyRequest(), metadata=vault.gateway("alice")
    )
    assert (access.exists, access.provider, access.api_key) == (
        True,
        api_key_pb2.PROVIDER_OPENROUTER,
        OPENROUTER_KEY,
    )

    deleted = await vault.stub.DeleteApiKey(
        vault_service_pb2.DeleteApiKeyRequest(), metadata=vault.user("alice")
    )
    assert deleted.deleted
    again = await vault.stub.DeleteApiKey(
        vault_service_pb2.DeleteApiKeyRequest(), metadata=vault.user("alice")
    )
    assert not again.deleted  # idempotent
    access = await vault.stub.AccessApiKey(
        vault_service_pb2.AccessApiKeyRequest(), metadata=vault.gateway("alice")
    )
    assert not access.exists
    assert access.api_key == ""


async def test_put_replaces_and_users_are_isolated(vault: Vault) -> None:
    await vault.stub.PutApiKey(
        vault_service_pb2.PutApiKeyRequest(api_key=OPENROUTER_KEY), metadata=vault.user("alice")
    )
    await vault.stub.PutApiKey(
        vault_service_pb2.PutApiKeyRequest(api_key=TOGETHER_KEY), metadata=vault.user("alice")
    )
    access = await vault.stub.AccessApiKey(
        vault_service_pb2.AccessApiKeyRequest(), metadata=vault.gateway("alice")
    )
    assert (access.provider, access.api_key) == (api_key_pb2.PROVIDER_TOGETHER, TOGETHER_KEY)
    bob = await vault.stub.AccessApiKey(
        vault_service_pb2.AccessApiKeyRequest(), metadata=vault.gateway("bob")
    )
    assert not bob.exists


@pytest.mark.parametrize(
    ("api_key", "provider", "expected_reason"),
    [
        ("", api_key_pb2.PROVIDER_OPENROUTER, "API_KEY_EMPTY"),
        ("sk-or-" + "x" * 1100, api_key_pb2.PROVIDER_UNSPECIFIED, "API_KEY_TOO_LONG"),
        ("sk-or-abc def", api_key_pb2.PROVIDER_UNSPECIFIED, "API_KEY_MALFORMED"),
        ("sk-or-abc\ndef", api_key_pb2.PROVIDER_UNSPECIFIED, "API_KEY_MALFORMED"),
        ("sk-or-abc\x00def", api_key_pb2.PROVIDER_UNSPECIFIED, "API_KEY_MALFORMED"),
        ("sk-or-abc\u200bdef", api_key_pb2.PROVIDER_UNSPECIFIED, "API_KEY_MALFORMED"),
        ("some-other-key-format", api_key_pb2.PROVIDER_UNSPECIFIED, "PROVIDER_REQUIRED"),
        ("abc", 99, "PROVIDER_UNKNOWN"),
    ],
)
async def test_bad_keys_are_invalid_argument(
    vault: Vault, api_key: str, provider: int, expected_reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await vault.stub.PutApiKey(
            vault_service_pb2.PutApiKeyRequest(api_key=api_key, provider=provider),  # type: ignore[arg-type]
            metadata=vault.user("alice"),
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(info.value) == expected_reason
    if api_key:
        assert api_key not in (info.value.details() or "")
    status = await vault.stub.GetApiKeyStatus(
        vault_service_pb2.GetApiKeyStatusRequest(), metadata=vault.user("alice")
    )
    assert not status.status.exists  # nothing was stored


@pytest.mark.parametrize(
    ("api_key", "provider"),
    [
        ("sk-or-v1-abc", api_key_pb2.PROVIDER_OPENROUTER),
        ("tgp_v1_abc", api_key_pb2.PROVIDER_TOGETHER),
        ("ab" * 32, api_key_pb2.PROVIDER_TOGETHER),
    ],
)
async def test_provider_inferred_from_format(vault: Vault, api_key: str, provider: int) -> None:
    put = await vault.stub.PutApiKey(
        vault_service_pb2.PutApiKeyRequest(api_key=api_key), metadata=vault.user("carol")
    )
    assert put.status.provider == provider


async def test_explicit_provider_wins_over_format(vault: Vault) -> None:
    put = await vault.stub.PutApiKey(
        vault_service_pb2.PutApiKeyRequest(
            api_key="custom-key", provider=api_key_pb2.PROVIDER_TOGETHER
        ),
        metadata=vault.user("dave"),
    )
    assert put.status.provider == api_key_pb2.PROVIDER_TOGETHER


async def test_access_requires_service_token(vault: Vault) -> None:
    await vault.stub.PutApiKey(
        vault_service_pb2.PutApiKeyRequest(api_key=OPENROUTER_KEY), metadata=vault.user("alice")
    )
    for metadata in (
        vault.user("alice"),  # a user token alone
        (*vault.user("alice"), ("x-service-token", "wrong")),
        (*vault.user("alice"), ("x-service-token", SERVICE_TOKEN[:-1])),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await vault.stub.AccessApiKey(
                vault_service_pb2.AccessApiKeyRequest(), metadata=metadata
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason(info.value) == "SERVICE_TOKEN_REQUIRED"


async def test_access_requires_user_token_too(vault: Vault) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await vault.stub.AccessApiKey(
            vault_service_pb2.AccessApiKeyRequest(),
            metadata=(("x-service-token", SERVICE_TOKEN),),
        )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("method", ["PutApiKey", "GetApiKeyStatus", "DeleteApiKey"])
async def test_every_rpc_requires_a_token(
    vault: Vault, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    requests = {
        "PutApiKey": vault_service_pb2.PutApiKeyRequest(api_key=OPENROUTER_KEY),
        "GetApiKeyStatus": vault_service_pb2.GetApiKeyStatusRequest(),
        "DeleteApiKey": vault_service_pb2.DeleteApiKeyRequest(),
    }
    for metadata in ((), bearer("not-a-token"), bearer(vault.tokens.mint("x", exp=1))):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await getattr(vault.stub, method)(requests[method], metadata=metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # A refused token is an ordinary outcome, not an unhandled error with a traceback.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_tampered_row_is_one_generic_error(vault: Vault) -> None:
    await vault.stub.PutApiKey(
        vault_service_pb2.PutApiKeyRequest(api_key=OPENROUTER_KEY), metadata=vault.user("alice")
    )
    row = await vault.app.store.get("alice")
    assert row is not None
    # Copy alice's sealed row onto bob: it must not decrypt for bob.
    await vault.app.store.put("bob", row.provider, row.blob)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await vault.stub.AccessApiKey(
            vault_service_pb2.AccessApiKeyRequest(), metadata=vault.gateway("bob")
        )
    assert info.value.code() == grpc.StatusCode.DATA_LOSS
    assert reason(info.value) == "API_KEY_UNREADABLE"
    assert OPENROUTER_KEY not in (info.value.details() or "")


async def test_no_secret_reaches_the_logs(vault: Vault, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    alice = vault.tokens.mint("alice")
    await vault.stub.PutApiKey(
        vault_service_pb2.PutApiKeyRequest(api_key=OPENROUTER_KEY), metadata=bearer(alice)
    )
    await vault.stub.AccessApiKey(
        vault_service_pb2.AccessApiKeyRequest(),
        metadata=(*bearer(alice), ("x-service-token", SERVICE_TOKEN)),
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await vault.stub.AccessApiKey(
            vault_service_pb2.AccessApiKeyRequest(), metadata=bearer(alice)
        )
    text = caplog.text
    for secret in (OPENROUTER_KEY, alice, SERVICE_TOKEN, "m" * 40):
        assert secret not in text


def test_settings_repr_hides_secrets() -> None:
    text = repr(replace(settings("sqlite:///x.db")))
    assert SERVICE_TOKEN not in text
    assert "m" * 40 not in text
