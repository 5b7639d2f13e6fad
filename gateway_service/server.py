"""Wiring the gateway process: settings → HTTP client, providers, router, vault client, server."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass

import grpc
from prometheus_client import start_http_server

from gateway_service.config import GatewaySettings
from gateway_service.ledger import UsageLedger, start_ledger
from gateway_service.limits import Admission, LimitStore, MemoryStore, RedisStore
from gateway_service.metrics import GatewayMetrics
from gateway_service.providers.base import PROVIDER_ENUM, ProviderName
from gateway_service.providers.openrouter import OpenRouter
from gateway_service.providers.together import Together
from gateway_service.providers.workers_ai import WorkersAI
from gateway_service.routing import AliasTable, Router
from gateway_service.servicer import GatewayServicer
from gateway_service.upstream_http import UpstreamClient, make_client
from gateway_service.vault_client import VaultClient
from native1api.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc
from rpc_common.auth import AppCheck, AppCheckVerifier, TokenVerifier
from rpc_common.serve import Serving, bind_server, serve_until_signal

SERVICE_NAME = gateway_service_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name


@dataclass
class GatewayApp:
    """A bound gateway server and what it owns; `aclose` releases all but the server."""

    serving: Serving
    http: dict[ProviderName, UpstreamClient]
    """One pooled client per provider (`upstream_http`)."""
    metrics: GatewayMetrics
    resources: AsyncExitStack
    vault: VaultClient | None = None
    admission: Admission | None = None
    app_check: AppCheck | None = None
    ledger: UsageLedger | None = None

    async def aclose(self) -> None:
        await self.resources.aclose()


def build_router(
    settings: GatewaySettings,
    http: Mapping[ProviderName, UpstreamClient],
    workers_ai: WorkersAI,
) -> Router:
    return Router(
        aliases=AliasTable.load(),
        workers_ai=workers_ai,
        workers_ai_token=settings.cloudflare_api_token,
        byok_providers={
            "openrouter": OpenRouter(
                http["openrouter"], settings.http, settings.openrouter_base_url
            ),
            "together": Together(http["together"], settings.http, settings.together_base_url),
        },
    )


async def build_gateway(
    settings: GatewaySettings,
    *,
    verifier: TokenVerifier | None = None,
    app_check_verifier: AppCheckVerifier | None = None,
) -> GatewayApp:
    """Create the providers' HTTP clients, the providers and the vault channel; bind (not start)
    the server."""
    resources = AsyncExitStack()
    try:
        # One pool per provider: a flood to one provider cannot take another's connections.
        http: dict[ProviderName, UpstreamClient] = {}
        for name in PROVIDER_ENUM:
            http[name] = make_client(settings.http)
            resources.push_async_callback(http[name].aclose)
        if verifier is None:
            verifier = TokenVerifier.from_settings(settings.auth)
            resources.push_async_callback(verifier.aclose)
        vault = VaultClient(
            settings.vault_addr,
            settings.service_token,
            timeout_seconds=settings.vault_timeout_seconds,
            cache_seconds=settings.vault_cache_seconds,
            tls=settings.tls,
        )
        resources.push_async_callback(vault.close)
        vault.start()
        metrics = GatewayMetrics()
        app_check = AppCheck.from_settings(
            settings.app_check, verifier=app_check_verifier, counter=metrics.app_check
        )
        resources.push_async_callback(app_check.aclose)
        workers_ai = WorkersAI(
            http["workers-ai"],
            settings.http,
            settings.workers_ai_base_url,
            settings.cloudflare_account_id,
            default_max_tokens=settings.default_max_tokens,
        )
        limits = settings.limits
        store: LimitStore = (
            RedisStore.from_url(limits.redis_url, timeout_seconds=limits.redis_timeout_seconds)
            if limits.redis_url
            else MemoryStore()
        )
        admission = Admission(
            limits.tiers,
            store,
            metrics=metrics,
            max_tokens_for=workers_ai.max_tokens_for,
            on_store_error=limits.on_store_error,
        )
        resources.push_async_callback(admission.aclose)
        admission.start()
        # Closed before the admission (LIFO), after the server has drained: every completion
        # that ended is in the queue, and the close writes it out.
        ledger = await start_ledger(settings.usage, metrics.registry)
        if ledger is not None:
            resources.push_async_callback(ledger.aclose)
        servicer = GatewayServicer(
            verifier=verifier,
            vault=vault,
            router=build_router(settings, http, workers_ai),
            metrics=metrics,
            admission=admission,
            app_check=app_check,
            ledger=ledger,
        )

        def register(server: grpc.aio.Server) -> None:
            gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)

        serving = bind_server(
            settings.listen_addr, register, [SERVICE_NAME], settings.tls.server_credentials()
        )
    except BaseException:
        await resources.aclose()
        raise
    return GatewayApp(serving, http, metrics, resources, vault, admission, app_check, ledger)


async def serve(settings: GatewaySettings) -> None:
    """Run the gateway until SIGTERM/SIGINT, letting in-flight streams finish."""
    app = await build_gateway(settings)
    if settings.metrics_addr:
        host, _, port = settings.metrics_addr.rpartition(":")
        server, _thread = start_http_server(
            int(port), host or "127.0.0.1", registry=app.metrics.registry
        )
        app.resources.callback(server.shutdown)
    await serve_until_signal(
        app.serving, grace_seconds=settings.shutdown_grace_seconds, on_stopped=app.aclose
    )
