"""Vault settings, read once from the environment (SPEC §7)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from rpc_common.auth import AppCheckSettings, AuthSettings
from rpc_common.config import ConfigError, optional, positive_float, secret
from rpc_common.tls import TlsSettings

MIN_MASTER_KEY_CHARS = 32
DEFAULT_DATABASE_URL = "sqlite:///data/vault.db"


@dataclass(frozen=True)
class VaultSettings:
    """Everything `python -m vault_service` needs. Secrets are kept out of `repr`."""

    auth: AuthSettings
    master_key: str = field(repr=False)
    previous_master_keys: tuple[str, ...] = field(repr=False)
    service_token: str = field(repr=False)
    listen_addr: str = "127.0.0.1:50051"
    database_url: str = DEFAULT_DATABASE_URL
    openrouter_base_url: str = "https://openrouter.ai/api/v1"
    together_base_url: str = "https://api.together.xyz/v1"
    validate_timeout_seconds: float = 10.0
    app_check: AppCheckSettings = field(default_factory=AppCheckSettings)
    #: `host:port` of a Prometheus endpoint (App Check counts); empty: none.
    metrics_addr: str = ""
    shutdown_grace_seconds: float = 10.0
    log_level: str = "INFO"
    tls: TlsSettings = field(default_factory=TlsSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> VaultSettings:
        """Read and validate the settings; raises ConfigError naming the offending variable."""
        master_key = secret(environ, "VAULT_MASTER_KEY")
        if len(master_key) < MIN_MASTER_KEY_CHARS:
            raise ConfigError(
                f"VAULT_MASTER_KEY must be at least {MIN_MASTER_KEY_CHARS} characters "
                "(a long random passphrase, e.g. `openssl rand -base64 48`)"
            )
        previous = tuple(
            part.strip()
            for part in environ.get("VAULT_PREVIOUS_MASTER_KEYS", "").split(",")
            if part.strip()
        )
        if any(len(key) < MIN_MASTER_KEY_CHARS for key in previous):
            raise ConfigError(
                f"every VAULT_PREVIOUS_MASTER_KEYS entry must be at least "
                f"{MIN_MASTER_KEY_CHARS} characters"
            )
        return cls(
            auth=AuthSettings.from_env(environ),
            master_key=master_key,
            previous_master_keys=previous,
            service_token=secret(environ, "SERVICE_TOKEN"),
            listen_addr=optional(environ, "VAULT_LISTEN_ADDR", "127.0.0.1:50051"),
            database_url=optional(environ, "VAULT_DATABASE_URL", DEFAULT_DATABASE_URL),
            openrouter_base_url=optional(
                environ, "OPENROUTER_BASE_URL", "https://openrouter.ai/api/v1"
            ).rstrip("/"),
            together_base_url=optional(
                environ, "TOGETHER_BASE_URL", "https://api.together.xyz/v1"
            ).rstrip("/"),
            validate_timeout_seconds=positive_float(
                environ, "VAULT_VALIDATE_TIMEOUT_SECONDS", 10.0
            ),
            app_check=AppCheckSettings.from_env(environ),
            metrics_addr=optional(environ, "VAULT_METRICS_ADDR", ""),
            shutdown_grace_seconds=positive_float(environ, "SHUTDOWN_GRACE_SECONDS", 10.0),
            log_level=optional(environ, "LOG_LEVEL", "INFO"),
            tls=TlsSettings.from_env(environ),
        )
