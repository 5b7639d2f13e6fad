"""`validate: true`: the vault checks a key with its provider (fakes) before storing it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from fakes import FakeApp, openrouter, together
from fakes.server import serve
from native1api.vault.v1 import vault_service_pb2, vault_service_pb2_grpc
from tests.service.test_vault_service import settings
from tests.support.rpc import error_details, reason
from tests.support.tokens import TokenFactory, bearer
from vault_service.crypto import KeyRing
from vault_service.provider_check import ProviderKeyChecker
from vault_service.server import build_vault

GOOD_OR = "sk-or-v1-" + "1234abcd" * 8
GOOD_TG = "tgp_v1_" + "Qwerty12" * 5


@dataclass
class Env:
    stub: vault_service_pb2_grpc.VaultServiceAsyncStub
    tokens: TokenFactory
    openrouter: FakeApp
    together: FakeApp


@pytest.fixture
async def env(tmp_path: Path, keyring: KeyRing, tokens: TokenFactory) -> AsyncIterator[Env]:
    orr = openrouter.create_app(tokens=[GOOD_OR])
    tog = together.create_app(tokens=[GOOD_TG])
    async with serve(orr) as orr_url, serve(tog) as tog_url:
        checker = ProviderKeyChecker(
            openrouter_base_url=orr_url, together_base_url=tog_url, timeout_seconds=5
        )
        app = await build_vault(
            settings(f"sqlite:///{tmp_path}/v.db"),
            keyring=keyring,
            verifier=tokens.verifier(),
            checker=checker,
        )
        await app.serving.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.serving.port}") as channel:
            yield Env(vault_service_pb2_grpc.VaultServiceStub(channel), tokens, orr, tog)
        await app.serving.stop(None)
        await app.aclose()
        await checker.aclose()


async def _put(env: Env, api_key: str) -> vault_service_pb2.PutApiKeyResponse:
    return await env.stub.PutApiKey(
        vault_service_pb2.PutApiKeyRequest(api_key=api_key, validate=True),
        metadata=bearer(env.tokens.mint("val-user")),
    )


async def test_valid_keys_are_checked_then_stored(env: Env) -> None:
    assert (await _put(env, GOOD_OR)).status.exists
    record = env.openrouter.control.last
    assert record.path.endswith("/key")
    assert record.header("authorization") == f"Bearer {GOOD_OR}"
    assert (await _put(env, GOOD_TG)).status.exists
    assert env.together.control.last.path.endswith("/models")


@pytest.mark.parametrize("bad_key", ["sk-or-v1-" + "bad0" * 16, "tgp_v1_" + "nope" * 10])
async def test_rejected_key_is_invalid_api_key_and_not_stored(env: Env, bad_key: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _put(env, bad_key)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(info.value) == "INVALID_API_KEY"
    assert bad_key not in (info.value.details() or "")
    status = await env.stub.GetApiKeyStatus(
        vault_service_pb2.GetApiKeyStatusRequest(), metadata=bearer(env.tokens.mint("val-user"))
    )
    assert not status.status.exists


async def test_provider_down_is_unavailable_not_invalid(env: Env) -> None:
    env.openrouter.control.fail_next(503, scope="any")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _put(env, GOOD_OR)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_details(info.value).reason == "PROVIDER_UNREACHABLE"


async def test_without_validate_no_provider_call(env: Env) -> None:
    await env.stub.PutApiKey(
        vault_service_pb2.PutApiKeyRequest(api_key=GOOD_OR),
        metadata=bearer(env.tokens.mint("val-user")),
    )
    assert env.openrouter.control.count() == 0
