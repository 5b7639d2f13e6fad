"""Provider names as the REST API spells them, for both services' enums."""

from __future__ import annotations

from typing import Final

from native1api.gateway.v1 import gateway_service_pb2
from native1api.vault.v1 import api_key_pb2

PROVIDER_HEADER: Final = b"x-native1api-provider"
OVERHEAD_HEADER: Final = b"x-native1api-overhead-ms"

_GATEWAY_NAMES: Final[dict[int, str]] = {
    gateway_service_pb2.PROVIDER_WORKERS_AI: "workers-ai",
    gateway_service_pb2.PROVIDER_OPENROUTER: "openrouter",
    gateway_service_pb2.PROVIDER_TOGETHER: "together",
}
VAULT_NAMES: Final[dict[int, str]] = {
    api_key_pb2.PROVIDER_OPENROUTER: "openrouter",
    api_key_pb2.PROVIDER_TOGETHER: "together",
}
VAULT_ENUMS: Final[dict[str, api_key_pb2.Provider.ValueType]] = {
    "openrouter": api_key_pb2.PROVIDER_OPENROUTER,
    "together": api_key_pb2.PROVIDER_TOGETHER,
}


def gateway_provider_name(value: int) -> str:
    """`workers-ai`, `openrouter` or `together`; `unknown` for a value this build does not know
    (the enum is open), which is never empty so it is always a valid header value."""
    return _GATEWAY_NAMES.get(value, "unknown")
