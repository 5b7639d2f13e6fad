"""Rules for provider keys: what a well-formed key is, and which provider it belongs to (SPEC §2)."""

from __future__ import annotations

import re
from typing import Final

import grpc

from native1api.vault.v1 import api_key_pb2
from rpc_common.status import RpcError

MAX_KEY_BYTES: Final = 1024
OPENROUTER: Final = "openrouter"
TOGETHER: Final = "together"

PROVIDER_NAMES: Final[dict[int, str]] = {
    api_key_pb2.PROVIDER_OPENROUTER: OPENROUTER,
    api_key_pb2.PROVIDER_TOGETHER: TOGETHER,
}
PROVIDER_ENUMS: Final[dict[str, api_key_pb2.Provider.ValueType]] = {
    OPENROUTER: api_key_pb2.PROVIDER_OPENROUTER,
    TOGETHER: api_key_pb2.PROVIDER_TOGETHER,
}

_HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")
# Whitespace, C0/C1 controls, and Unicode separators/format characters (e.g. zero-width space).
_FORBIDDEN: Final = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u2060\ufeff]")


def _invalid(reason: str, message: str, field: str) -> RpcError:
    return RpcError(grpc.StatusCode.INVALID_ARGUMENT, reason, message, {"param": field})


def check_key_format(api_key: str) -> None:
    """Raise INVALID_ARGUMENT for an empty, oversized or whitespace/control-laden key.

    Messages describe the problem and never echo the key.
    """
    if not api_key:
        raise _invalid("API_KEY_EMPTY", "apiKey must not be empty", "apiKey")
    if len(api_key.encode("utf-8")) > MAX_KEY_BYTES:
        raise _invalid(
            "API_KEY_TOO_LONG", f"apiKey must be at most {MAX_KEY_BYTES} bytes", "apiKey"
        )
    if _FORBIDDEN.search(api_key):
        raise _invalid(
            "API_KEY_MALFORMED",
            "apiKey must not contain whitespace or control characters",
            "apiKey",
        )


def infer_provider(api_key: str) -> str | None:
    """The provider a key's format names, or None when it is ambiguous."""
    if api_key.startswith("sk-or-"):
        return OPENROUTER
    if api_key.startswith("tgp_") or _HEX64.fullmatch(api_key):
        return TOGETHER
    return None


def resolve_provider(api_key: str, requested: int) -> str:
    """The provider to store the key under: the requested one, or the one its format names."""
    if requested != api_key_pb2.PROVIDER_UNSPECIFIED:
        try:
            return PROVIDER_NAMES[requested]
        except KeyError:
            raise _invalid(
                "PROVIDER_UNKNOWN",
                "provider must be one of: openrouter, together",
                "provider",
            ) from None
    inferred = infer_provider(api_key)
    if inferred is None:
        raise _invalid(
            "PROVIDER_REQUIRED",
            "cannot tell the key's provider from its format; "
            'send "provider": "openrouter" or "together" with it',
            "provider",
        )
    return inferred
