"""Gateway settings, read once from the environment (SPEC §7)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway_service.ledger.settings import UsageSettings
from gateway_service.limits.settings import LimitsSettings
from gateway_service.upstream_http import HttpSettings
from rpc_common.auth import AppCheckSettings, AuthSettings
from rpc_common.channels import grpc_target
from rpc_common.config import ConfigError, optional, positive_float, positive_int, secret
from rpc_common.tls import TlsSettings


@dataclass(frozen=True)
class GatewaySettings:
    """Everything `python -m gateway_service` needs. Secrets are kept out of `repr`."""

    auth: AuthSettings
    service_token: str = field(repr=False)
    cloudflare_account_id: str
    cloudflare_api_token: str = field(repr=False)
    listen_addr: str = "127.0.0.1:50052"
    vault_addr: str = "127.0.0.1:50051"
    workers_ai_base_url: str = "https://api.cloudflare.com/client/v4"
    openrouter_base_url: str = "https://openrouter.ai/api/v1"
    together_base_url: str = "https://api.together.xyz/v1"
    default_max_tokens: int = 1024
    http: HttpSettings = field(default_factory=HttpSettings)
    vault_timeout_seconds: float = 3.0
    #: How long a user's AccessApiKey answer may be reused (0: ask the vault on every request).
    #: Saves and deletes reach the cache at once over the vault's change feed; see vault_client.
    #: Up to 60 s: with the feed, the TTL is only a backstop.
    vault_cache_seconds: float = 2.0
    metrics_addr: str = ""
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    #: The usage ledger; built in code it is off unless given a database URL.
    usage: UsageSettings = field(default_factory=UsageSettings)
    app_check: AppCheckSettings = field(default_factory=AppCheckSettings)
    shutdown_grace_seconds: float = 15.0
    log_level: str = "INFO"
    tls: TlsSettings = field(default_factory=TlsSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> GatewaySettings:
        """Read and validate the settings; raises ConfigError naming the offending variable."""
        account = environ.get("CLOUDFLARE_ACCOUNT_ID", "").strip()
        if not account:
            raise ConfigError(
                "CLOUDFLARE_ACCOUNT_ID is required (Workers AI runs under the operator's "
                "Cloudflare account; `make run` starts a local stand-in when it is unset)"
            )
        return cls(
            auth=AuthSettings.from_env(environ),
            service_token=secret(environ, "SERVICE_TOKEN"),
            cloudflare_account_id=account,
            cloudflare_api_token=secret(environ, "CLOUDFLARE_API_TOKEN"),
            listen_addr=optional(environ, "GATEWAY_LISTEN_ADDR", "127.0.0.1:50052"),
            vault_addr=grpc_target(environ, "VAULT_ADDR", "127.0.0.1:50051"),
            workers_ai_base_url=optional(
                environ, "WORKERS_AI_BASE_URL", "https://api.cloudflare.com/client/v4"
            ).rstrip("/"),
            openrouter_base_url=optional(
                environ, "OPENROUTER_BASE_URL", "https://openrouter.ai/api/v1"
            ).rstrip("/"),
            together_base_url=optional(
                environ, "TOGETHER_BASE_URL", "https://api.together.xyz/v1"
            ).rstrip("/"),
            default_max_tokens=positive_int(environ, "GATEWAY_DEFAULT_MAX_TOKENS", 1024),
            http=HttpSettings(
                connect_timeout_seconds=positive_float(
                    environ, "UPSTREAM_CONNECT_TIMEOUT_SECONDS", 5.0
                ),
                read_timeout_seconds=positive_float(
                    environ, "UPSTREAM_READ_TIMEOUT_SECONDS", 120.0
                ),
                total_timeout_seconds=positive_float(
                    environ, "UPSTREAM_TOTAL_TIMEOUT_SECONDS", 600.0
                ),
                max_retries=min(2, positive_int(environ, "UPSTREAM_MAX_RETRIES", 2)),
                retry_after_cap_seconds=positive_float(
                    environ, "UPSTREAM_RETRY_AFTER_CAP_SECONDS", 5.0
                ),
                max_connections=positive_int(environ, "UPSTREAM_MAX_CONNECTIONS", 512),
                pool_timeout_seconds=positive_float(environ, "UPSTREAM_POOL_TIMEOUT_SECONDS", 1.0),
            ),
            vault_timeout_seconds=positive_float(environ, "GATEWAY_VAULT_TIMEOUT_SECONDS", 3.0),
            vault_cache_seconds=_cache_seconds(environ, "GATEWAY_VAULT_CACHE_SECONDS", 2.0),
            metrics_addr=optional(environ, "GATEWAY_METRICS_ADDR", ""),
            limits=LimitsSettings.from_env(environ),
            usage=UsageSettings.from_env(environ),
            app_check=AppCheckSettings.from_env(environ),
            shutdown_grace_seconds=positive_float(environ, "SHUTDOWN_GRACE_SECONDS", 15.0),
            log_level=optional(environ, "LOG_LEVEL", "INFO"),
            tls=TlsSettings.from_env(environ),
        )


# The cache may be long: it is used only while the vault's change feed is connected, and every
# save, delete or rewrap, through any vault replica (PostgreSQL NOTIFY), reaches it within
# milliseconds over that feed; a vault that cannot hear its replicas holds the feed off. The TTL
# is only the backstop for what no feed can see (a vault replica older than NOTIFY).
MAX_VAULT_CACHE_SECONDS = 60.0


def _cache_seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    """0 (off) up to MAX_VAULT_CACHE_SECONDS (a backstop; changes arrive over the feed)."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not 0 <= value <= MAX_VAULT_CACHE_SECONDS:
        raise ConfigError(f"{name} must be between 0 and {MAX_VAULT_CACHE_SECONDS:g}, got {raw!r}")
    return value
