"""Wiring the vault process: settings → key ring, store, servicer, gRPC server."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass

import grpc
from prometheus_client import CollectorRegistry, start_http_server

from native1api.vault.v1 import vault_service_pb2, vault_service_pb2_grpc
from rpc_common.auth import AppCheck, AppCheckVerifier, TokenVerifier, app_check_counter
from rpc_common.serve import Serving, bind_server, serve_until_signal
from vault_service.change_feed import ChangeFeed
from vault_service.config import VaultSettings
from vault_service.crypto import KeyRing
from vault_service.provider_check import ProviderKeyChecker
from vault_service.servicer import VaultServicer
from vault_service.storage import KeyStore, open_store

_LOGGER = logging.getLogger(__name__)
SERVICE_NAME = vault_service_pb2.DESCRIPTOR.services_by_name["VaultService"].full_name


@dataclass
class VaultApp:
    """A bound vault server and what it owns; `aclose` releases everything but the server."""

    serving: Serving
    store: KeyStore
    keyring: KeyRing
    resources: AsyncExitStack
    registry: CollectorRegistry | None = None
    """The vault's Prometheus series (App Check counts), served on VAULT_METRICS_ADDR."""
    app_check: AppCheck | None = None
    feed: ChangeFeed | None = None
    """The change feed behind WatchApiKeyChanges (`feed.live`: gateways may cache)."""

    async def aclose(self) -> None:
        await self.resources.aclose()


async def open_keyring(settings: VaultSettings, store: KeyStore) -> KeyRing:
    """Derive the key-encryption keys once (PBKDF2, slow by design) with the database's salt."""
    salt = await store.get_or_create_salt()
    return KeyRing(settings.master_key, settings.previous_master_keys, salt)


async def build_vault(
    settings: VaultSettings,
    *,
    keyring: KeyRing | None = None,
    verifier: TokenVerifier | None = None,
    checker: ProviderKeyChecker | None = None,
    app_check_verifier: AppCheckVerifier | None = None,
) -> VaultApp:
    """Open storage, derive keys, and bind the server on `settings.listen_addr` (not started).

    Tests inject a pre-derived `keyring` so they do not pay for PBKDF2 on every server.
    """
    resources = AsyncExitStack()
    try:
        store = await open_store(settings.database_url)
        resources.push_async_callback(store.close)
        if keyring is None:
            keyring = await open_keyring(settings, store)
        if verifier is None:
            verifier = TokenVerifier.from_settings(settings.auth)
            resources.push_async_callback(verifier.aclose)
        if checker is None:
            checker = ProviderKeyChecker(
                openrouter_base_url=settings.openrouter_base_url,
                together_base_url=settings.together_base_url,
                timeout_seconds=settings.validate_timeout_seconds,
            )
            resources.push_async_callback(checker.aclose)
        registry = CollectorRegistry()
        app_check = AppCheck.from_settings(
            settings.app_check,
            verifier=app_check_verifier,
            counter=app_check_counter("vault", registry),
        )
        resources.push_async_callback(app_check.aclose)
        servicer = VaultServicer(
            verifier=verifier,
            store=store,
            keyring=keyring,
            service_token=settings.service_token,
            checker=checker,
            app_check=app_check,
        )

        def register(server: grpc.aio.Server) -> None:
            vault_service_pb2_grpc.add_VaultServiceServicer_to_server(servicer, server)

        serving = bind_server(
            settings.listen_addr, register, [SERVICE_NAME], settings.tls.server_credentials()
        )
        serving.on_stopping.append(servicer.feed.close)
        # Hear other replicas' writes (PostgreSQL LISTEN; stops with store.close), or claim the
        # SQLite file for this vault. Returns once the first attempt to listen is over.
        await store.follow_changes(servicer.feed)
    except BaseException:
        await resources.aclose()
        raise
    return VaultApp(serving, store, keyring, resources, registry, app_check, servicer.feed)


async def serve(settings: VaultSettings) -> None:
    """Run the vault until SIGTERM/SIGINT."""
    app = await build_vault(settings)
    if settings.metrics_addr and app.registry is not None:
        host, _, port = settings.metrics_addr.rpartition(":")
        server, _thread = start_http_server(int(port), host or "127.0.0.1", registry=app.registry)
        app.resources.callback(server.shutdown)
    await serve_until_signal(
        app.serving, grace_seconds=settings.shutdown_grace_seconds, on_stopped=app.aclose
    )
