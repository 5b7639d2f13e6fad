"""The gRPC back end in one process: fake upstreams, a real vault server, a real gateway server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from fakes import FakeApp, openrouter, together, workers_ai
from fakes.server import serve
from gateway_service.config import GatewaySettings
from gateway_service.server import GatewayApp, build_gateway
from native1api.gateway.v1 import gateway_service_pb2_grpc
from native1api.vault.v1 import vault_service_pb2, vault_service_pb2_grpc
from rpc_common.auth import AppCheckMode, AppCheckSettings, AppCheckVerifier, AuthSettings
from tests.support.app_check import AppCheckFactory
from tests.support.tokens import PROJECT_ID, TokenFactory, bearer
from vault_service.config import VaultSettings
from vault_service.crypto import KeyRing
from vault_service.server import VaultApp, build_vault

SERVICE_TOKEN = "stack-service-token-0123456789"
CF_ACCOUNT = "acct-test"
CF_TOKEN = "cf-platform-token-0123456789"
OPENROUTER_KEY = "sk-or-v1-" + "0a1b2c3d" * 8
TOGETHER_KEY = "tgp_v1_" + "ZyXw9876" * 5


@dataclass
class Stack:
    tokens: TokenFactory
    workers_ai: FakeApp
    openrouter: FakeApp
    together: FakeApp
    vault_app: VaultApp
    gateway_app: GatewayApp
    vault: vault_service_pb2_grpc.VaultServiceAsyncStub
    gateway: gateway_service_pb2_grpc.GatewayServiceAsyncStub
    gateway_address: str
    vault_address: str

    def user(self, uid: str) -> tuple[tuple[str, str], ...]:
        return bearer(self.tokens.mint(uid))

    async def save_key(self, uid: str, api_key: str) -> None:
        await self.vault.PutApiKey(
            vault_service_pb2.PutApiKeyRequest(api_key=api_key), metadata=self.user(uid)
        )

    async def delete_key(self, uid: str) -> None:
        await self.vault.DeleteApiKey(
            vault_service_pb2.DeleteApiKeyRequest(), metadata=self.user(uid)
        )


@contextlib.asynccontextmanager
async def running_stack(
    tmp_path: Path,
    tokens: TokenFactory,
    keyring: KeyRing,
    *,
    verifier_options: dict[str, Any] | None = None,
    app_check: AppCheckSettings | None = None,
    app_check_tokens: AppCheckFactory | None = None,
    **gateway_overrides: object,
) -> AsyncIterator[Stack]:
    """`verifier_options` go to both services' token verifiers (TokenVerifier's keywords).

    `app_check` (both services' App Check settings, off by default) needs `app_check_tokens`
    unless off: each service then verifies against that factory's JWKS, in process.
    """
    app_check = app_check or AppCheckSettings()

    def app_check_verifier() -> AppCheckVerifier | None:
        if app_check.mode is AppCheckMode.OFF:
            return None
        assert app_check_tokens is not None, "App Check on needs app_check_tokens"
        return app_check_tokens.verifier(app_check)

    wai = workers_ai.create_app(tokens=[CF_TOKEN], account_id=CF_ACCOUNT)
    orr = openrouter.create_app(tokens=[OPENROUTER_KEY])
    tog = together.create_app(tokens=[TOGETHER_KEY])
    auth = AuthSettings(project_id=PROJECT_ID, certs_url="https://certs.test/x509")
    async with (
        serve(wai) as wai_url,
        serve(orr) as orr_url,
        serve(tog) as tog_url,
    ):
        vault_app = await build_vault(
            VaultSettings(
                auth=auth,
                master_key="m" * 40,
                previous_master_keys=(),
                service_token=SERVICE_TOKEN,
                listen_addr="127.0.0.1:0",
                database_url=f"sqlite:///{tmp_path}/vault.db",
                openrouter_base_url=orr_url,
                together_base_url=tog_url,
                app_check=app_check,
            ),
            keyring=keyring,
            app_check_verifier=app_check_verifier(),
            verifier=tokens.verifier(**(verifier_options or {})),
        )
        await vault_app.serving.start()
        vault_address = f"127.0.0.1:{vault_app.serving.port}"
        settings = GatewaySettings(
            auth=auth,
            service_token=SERVICE_TOKEN,
            cloudflare_account_id=CF_ACCOUNT,
            cloudflare_api_token=CF_TOKEN,
            listen_addr="127.0.0.1:0",
            vault_addr=vault_address,
            workers_ai_base_url=wai_url,
            openrouter_base_url=orr_url,
            together_base_url=tog_url,
            app_check=app_check,
            **gateway_overrides,  # type: ignore[arg-type]
        )
        gateway_app = await build_gateway(
            settings,
            verifier=tokens.verifier(**(verifier_options or {})),
            app_check_verifier=app_check_verifier(),
        )
        await gateway_app.serving.start()
        gateway_address = f"127.0.0.1:{gateway_app.serving.port}"
        try:
            async with (
                grpc.aio.insecure_channel(vault_address) as vault_channel,
                grpc.aio.insecure_channel(gateway_address) as gateway_channel,
            ):
                yield Stack(
                    tokens=tokens,
                    workers_ai=wai,
                    openrouter=orr,
                    together=tog,
                    vault_app=vault_app,
                    gateway_app=gateway_app,
                    vault=vault_service_pb2_grpc.VaultServiceStub(vault_channel),
                    gateway=gateway_service_pb2_grpc.GatewayServiceStub(gateway_channel),
                    gateway_address=gateway_address,
                    vault_address=vault_address,
                )
        finally:
            await gateway_app.serving.stop(None)
            await gateway_app.aclose()
            await vault_app.serving.stop(None)
            await vault_app.aclose()
