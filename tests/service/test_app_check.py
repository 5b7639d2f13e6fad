"""Firebase App Check on the vault routes (SPEC §11), through a real in-process VaultService.

PutApiKey, GetApiKeyStatus and DeleteApiKey are guarded; AccessApiKey (the gateway's own call,
with the service token) is not. `monitor` admits and counts in the vault's own registry
(`native1api_vault_app_check_total`), `off` ignores the header.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from native1api.vault.v1 import vault_service_pb2, vault_service_pb2_grpc
from rpc_common.auth import AppCheckMode
from tests.service.test_vault_service import OPENROUTER_KEY, SERVICE_TOKEN, settings
from tests.support.app_check import ATTACKS, AppCheckFactory, app_check
from tests.support.logcheck import assert_logs_clean
from tests.support.rpc import error_details, reason
from tests.support.tokens import TokenFactory, bearer
from vault_service.crypto import KeyRing
from vault_service.server import VaultApp, build_vault

RESULTS = ("valid", "missing", "invalid", "unavailable")
Metadata = tuple[tuple[str, str], ...]
if TYPE_CHECKING:
    Stub = vault_service_pb2_grpc.VaultServiceAsyncStub


@pytest.fixture(autouse=True)
def _call_logs_clean(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    assert_logs_clean(caplog)


@pytest.fixture(scope="module")
def factory() -> AppCheckFactory:
    return AppCheckFactory()


@dataclasses.dataclass
class Vault:
    app: VaultApp
    stub: Stub
    tokens: TokenFactory
    factory: AppCheckFactory

    def user(self, uid: str, app_check_token: str | None = None) -> Metadata:
        extra = app_check(app_check_token) if app_check_token is not None else ()
        return bearer(self.tokens.mint(uid)) + extra

    def valid(self, uid: str) -> Metadata:
        return self.user(uid, self.factory.mint())

    def counts(self) -> dict[str, float]:
        registry = self.app.registry
        assert registry is not None
        return {
            r: registry.get_sample_value("native1api_vault_app_check_total", {"result": r}) or 0
            for r in RESULTS
        }


@contextlib.asynccontextmanager
async def _vault(
    mode: AppCheckMode,
    tmp_path: Path,
    keyring: KeyRing,
    tokens: TokenFactory,
    factory: AppCheckFactory,
) -> AsyncIterator[Vault]:
    app_check_settings = factory.settings(mode)
    app = await build_vault(
        dataclasses.replace(
            settings(f"sqlite:///{tmp_path}/vault.db"), app_check=app_check_settings
        ),
        keyring=keyring,
        verifier=tokens.verifier(),
        app_check_verifier=(
            factory.verifier(app_check_settings) if mode is not AppCheckMode.OFF else None
        ),
    )
    await app.serving.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.serving.port}") as channel:
            yield Vault(app, vault_service_pb2_grpc.VaultServiceStub(channel), tokens, factory)
    finally:
        await app.serving.stop(None)
        await app.aclose()


@pytest.fixture
async def enforce(
    tmp_path: Path, keyring: KeyRing, tokens: TokenFactory, factory: AppCheckFactory
) -> AsyncIterator[Vault]:
    async with _vault(AppCheckMode.ENFORCE, tmp_path, keyring, tokens, factory) as vault:
        yield vault


@pytest.fixture
async def monitor(
    tmp_path: Path, keyring: KeyRing, tokens: TokenFactory, factory: AppCheckFactory
) -> AsyncIterator[Vault]:
    async with _vault(AppCheckMode.MONITOR, tmp_path, keyring, tokens, factory) as vault:
        yield vault


@pytest.fixture
async def off(
    tmp_path: Path, keyring: KeyRing, tokens: TokenFactory, factory: AppCheckFactory
) -> AsyncIterator[Vault]:
    async with _vault(AppCheckMode.OFF, tmp_path, keyring, tokens, factory) as vault:
        yield vault


def put(stub: Stub, metadata: Metadata) -> Awaitable[Any]:
    return stub.PutApiKey(
        vault_service_pb2.PutApiKeyRequest(api_key=OPENROUTER_KEY), metadata=metadata
    )


def status(stub: Stub, metadata: Metadata) -> Awaitable[Any]:
    return stub.GetApiKeyStatus(vault_service_pb2.GetApiKeyStatusRequest(), metadata=metadata)


def delete(stub: Stub, metadata: Metadata) -> Awaitable[Any]:
    return stub.DeleteApiKey(vault_service_pb2.DeleteApiKeyRequest(), metadata=metadata)


ROUTES: dict[str, Callable[[Stub, Metadata], Awaitable[Any]]] = {
    "PutApiKey": put,
    "GetApiKeyStatus": status,
    "DeleteApiKey": delete,
}


async def assert_refused(call: Awaitable[Any], token: str | None) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    info = error_details(error)
    assert info.reason == "APP_CHECK_FAILED"
    assert dict(info.metadata) == {"code": "invalid_app_check_token"}
    if token is not None:
        assert token not in (error.details() or "")


@pytest.mark.parametrize("route", ROUTES)
async def test_enforce_guards_the_vault_routes(enforce: Vault, route: str) -> None:
    call = ROUTES[route]
    await assert_refused(call(enforce.stub, enforce.user("v-missing")), None)
    await assert_refused(call(enforce.stub, enforce.user("v-garbage", "x.y.z")), "x.y.z")
    await call(enforce.stub, enforce.valid("v-valid"))


@pytest.mark.parametrize("attack", ATTACKS)
async def test_enforce_refuses_the_attack_table_on_put(
    enforce: Vault, factory: AppCheckFactory, attack: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = factory.attacks()[attack]
    await assert_refused(put(enforce.stub, enforce.user("v-attack", token)), token)
    reply = await status(enforce.stub, enforce.valid("v-attack"))
    assert not reply.status.exists, "a refused PutApiKey stored nothing"
    assert_logs_clean(caplog, token, OPENROUTER_KEY)


async def test_access_api_key_is_not_guarded(enforce: Vault) -> None:
    await put(enforce.stub, enforce.valid("v-access"))
    # The gateway's call: service token and the user's ID token, no App Check token.
    gateway = (*bearer(enforce.tokens.mint("v-access")), ("x-service-token", SERVICE_TOKEN))
    reply = await enforce.stub.AccessApiKey(
        vault_service_pb2.AccessApiKeyRequest(), metadata=gateway
    )
    assert reply.exists and reply.api_key == OPENROUTER_KEY
    assert enforce.counts() == {"valid": 1, "missing": 0, "invalid": 0, "unavailable": 0}


async def test_the_id_token_is_checked_first(enforce: Vault, factory: AppCheckFactory) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await put(enforce.stub, app_check(factory.mint()))
    assert reason(caught.value) == "TOKEN_MISSING"
    assert enforce.counts() == dict.fromkeys(RESULTS, 0)


async def test_monitor_admits_and_counts(monitor: Vault, factory: AppCheckFactory) -> None:
    attacks = factory.attacks()
    for token in attacks.values():
        await put(monitor.stub, monitor.user("v-monitor", token))
    await status(monitor.stub, monitor.user("v-monitor"))
    await delete(monitor.stub, monitor.valid("v-monitor"))
    assert monitor.counts() == {"valid": 1, "missing": 1, "invalid": len(attacks), "unavailable": 0}


async def test_off_ignores_the_header(off: Vault, factory: AppCheckFactory) -> None:
    for token in [*factory.attacks().values(), None]:
        for call in ROUTES.values():
            await call(off.stub, off.user("v-off", token))
    assert off.counts() == dict.fromkeys(RESULTS, 0)
    assert off.app.app_check is not None and off.app.app_check.verifier is None
