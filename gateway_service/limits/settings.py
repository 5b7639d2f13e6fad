"""The admission-control settings of the gateway (SPEC §10), read from the environment.

| variable | meaning | default |
| --- | --- | --- |
| `LIMITS_FILE` | TOML tiers file | unset: no limits (warned at start-up) |
| `LIMITS_TIER_CLAIM` | custom claim naming the caller's tier | `tier` |
| `LIMITS_REDIS_URL` | Redis for limits shared by all replicas | unset: in-process store |
| `LIMITS_ON_STORE_ERROR` | `deny` (503) or `allow` (admit unmetered) when the store is down | `deny` |
| `LIMITS_REDIS_TIMEOUT_SECONDS` | connect and command timeout for Redis | `0.5` |
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from gateway_service.limits.admission import StorePolicy
from gateway_service.limits.tiers import TierTable, load_tiers
from rpc_common.config import ConfigError, optional, positive_float

_CLAIM_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True)
class LimitsSettings:
    tiers: TierTable = field(default_factory=TierTable.unlimited)
    redis_url: str = field(default="", repr=False)  # may carry a password
    on_store_error: StorePolicy = "deny"
    redis_timeout_seconds: float = 0.5

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LimitsSettings:
        claim = optional(environ, "LIMITS_TIER_CLAIM", "tier")
        if not _CLAIM_NAME.match(claim):
            raise ConfigError(f"LIMITS_TIER_CLAIM must be a claim name, got {claim!r}")
        path = optional(environ, "LIMITS_FILE", "")
        tiers = load_tiers(Path(path), claim) if path else TierTable.unlimited(claim)
        redis_url = environ.get("LIMITS_REDIS_URL", "").strip()
        if redis_url and not redis_url.startswith(_REDIS_SCHEMES):
            # Never echo the value: it may hold a password.
            raise ConfigError(
                "LIMITS_REDIS_URL must start with redis://, rediss:// or unix:// "
                "(e.g. redis://127.0.0.1:6379/0)"
            )
        policy = optional(environ, "LIMITS_ON_STORE_ERROR", "deny").lower()
        if policy not in ("deny", "allow"):
            raise ConfigError(f"LIMITS_ON_STORE_ERROR must be deny or allow, got {policy!r}")
        return cls(
            tiers=tiers,
            redis_url=redis_url,
            on_store_error="allow" if policy == "allow" else "deny",
            redis_timeout_seconds=positive_float(environ, "LIMITS_REDIS_TIMEOUT_SECONDS", 0.5),
        )
