"""`BridgeSettings.from_env`: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import pytest

from rest_bridge.config import BridgeSettings
from rpc_common.config import ConfigError


def test_defaults() -> None:
    settings = BridgeSettings.from_env({})
    assert settings.listen_addr == "127.0.0.1:8080"
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 8080)
    assert settings.gateway_addr == "127.0.0.1:50052"
    assert settings.vault_addr == "127.0.0.1:50051"
    assert settings.cors_origins == ()
    assert settings.max_body_bytes == 4 * 1024 * 1024
    assert settings.first_chunk_wait_seconds == 5.0
    assert settings.keepalive_seconds == 15.0
    assert settings.log_level == "INFO"


def test_values_are_parsed() -> None:
    settings = BridgeSettings.from_env(
        {
            "BRIDGE_LISTEN_ADDR": "[::1]:9000",
            "GATEWAY_ADDR": "gateway:50052",
            "VAULT_ADDR": "vault:50051",
            "BRIDGE_CORS_ORIGINS": " https://a.example , http://localhost:3000/ ,",
            "BRIDGE_MAX_BODY_BYTES": "1024",
            "BRIDGE_FIRST_CHUNK_WAIT_SECONDS": "0.5",
            "BRIDGE_KEEPALIVE_SECONDS": "2",
            "LOG_LEVEL": "debug",
        }
    )
    assert (settings.listen_host, settings.listen_port) == ("::1", 9000)
    assert settings.listen_addr == "[::1]:9000"
    assert settings.cors_origins == ("https://a.example", "http://localhost:3000")
    assert settings.max_body_bytes == 1024
    assert settings.first_chunk_wait_seconds == 0.5
    assert settings.keepalive_seconds == 2.0
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BRIDGE_LISTEN_ADDR", "8080"),
        ("BRIDGE_LISTEN_ADDR", "127.0.0.1:http"),
        ("BRIDGE_LISTEN_ADDR", "127.0.0.1:70000"),
        ("GATEWAY_ADDR", "no port"),
        ("VAULT_ADDR", "vault"),
        ("BRIDGE_CORS_ORIGINS", "ftp://x"),
        ("BRIDGE_MAX_BODY_BYTES", "0"),
        ("BRIDGE_MAX_BODY_BYTES", "lots"),
        ("BRIDGE_FIRST_CHUNK_WAIT_SECONDS", "-1"),
        ("BRIDGE_KEEPALIVE_SECONDS", "nan"),
        ("LOG_LEVEL", "chatty"),
    ],
)
def test_invalid_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        BridgeSettings.from_env({name: value})
