"""`BridgeSettings.from_env`: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import pytest

from rest_bridge.app import create_app
from rest_bridge.config import BridgeSettings
from rest_bridge.http_protocol import BridgeHttpProtocol, EdgeLimits
from rest_bridge.uvicorn_config import uvicorn_config
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
        ("GATEWAY_ADDR", "127.0.0.1:50052,127.0.0.1:50062"),  # several need ipv4: or dns:
        ("GATEWAY_ADDR", "ipv4:127.0.0.1:50052,gateway:50062"),
        ("GATEWAY_ADDR", "http://gateway:50052"),
        ("VAULT_ADDR", "dns:///vault"),
        ("VAULT_ADDR", "ipv4:"),
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


@pytest.mark.parametrize(
    ("gateway", "vault"),
    [
        ("ipv4:127.0.0.1:50052,127.0.0.1:50062", "ipv4:127.0.0.1:50051,127.0.0.1:50061"),
        ("dns:///gateway:50052", "dns:///vault:50051"),
        ("[::1]:50052", "ipv6:[::1]:50051,[::1]:50061"),
    ],
)
def test_targets_may_name_several_replicas(gateway: str, vault: str) -> None:
    settings = BridgeSettings.from_env({"GATEWAY_ADDR": gateway, "VAULT_ADDR": vault})
    assert (settings.gateway_addr, settings.vault_addr) == (gateway, vault)


# The HTTP edge (SPEC §11) and the metrics listener ------------------------------------------------


def test_edge_defaults() -> None:
    settings = BridgeSettings.from_env({})
    assert settings.max_header_bytes == 32768
    assert settings.header_timeout_seconds == 10.0
    assert settings.body_timeout_seconds == 30.0
    assert settings.max_connections == 1024
    assert settings.metrics_addr == "127.0.0.1:9464"
    assert BridgeSettings().metrics_addr == settings.metrics_addr  # the dataclass agrees


def test_edge_values_are_parsed() -> None:
    settings = BridgeSettings.from_env(
        {
            "BRIDGE_MAX_HEADER_BYTES": "8192",
            "BRIDGE_HEADER_TIMEOUT_SECONDS": "2.5",
            "BRIDGE_BODY_TIMEOUT_SECONDS": "60",
            "BRIDGE_MAX_CONNECTIONS": "50",
            "BRIDGE_METRICS_ADDR": "[::1]:9100",
        }
    )
    assert settings.max_header_bytes == 8192
    assert settings.header_timeout_seconds == 2.5
    assert settings.body_timeout_seconds == 60.0
    assert settings.max_connections == 50
    assert settings.metrics_addr == "[::1]:9100"


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_metrics_addr_turns_the_listener_off(value: str) -> None:
    assert BridgeSettings.from_env({"BRIDGE_METRICS_ADDR": value}).metrics_addr == ""


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BRIDGE_MAX_HEADER_BYTES", "0"),
        ("BRIDGE_MAX_HEADER_BYTES", "32k"),
        ("BRIDGE_HEADER_TIMEOUT_SECONDS", "0"),
        ("BRIDGE_HEADER_TIMEOUT_SECONDS", "inf"),
        ("BRIDGE_BODY_TIMEOUT_SECONDS", "-5"),
        ("BRIDGE_BODY_TIMEOUT_SECONDS", "soon"),
        ("BRIDGE_MAX_CONNECTIONS", "0"),
        ("BRIDGE_MAX_CONNECTIONS", "1.5"),
        ("BRIDGE_METRICS_ADDR", "9464"),
        ("BRIDGE_METRICS_ADDR", "127.0.0.1:99999"),
    ],
)
def test_invalid_edge_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        BridgeSettings.from_env({name: value})


def test_tests_and_production_serve_the_same_protocol_with_the_settings_limits() -> None:
    """`uvicorn_config` is what `python -m rest_bridge` and `serve_bridge` both use."""
    settings = BridgeSettings.from_env(
        {
            "BRIDGE_MAX_HEADER_BYTES": "4096",
            "BRIDGE_HEADER_TIMEOUT_SECONDS": "3",
            "BRIDGE_BODY_TIMEOUT_SECONDS": "4",
            "BRIDGE_MAX_CONNECTIONS": "7",
        }
    )
    app = create_app(settings)
    config = uvicorn_config(app, settings)
    protocol = config.http
    assert isinstance(protocol, type) and issubclass(protocol, BridgeHttpProtocol)
    assert protocol.edge_limits == EdgeLimits(
        max_header_bytes=4096,
        header_timeout_seconds=3.0,
        body_timeout_seconds=4.0,
        max_connections=7,
    )
    assert protocol.edge_metrics is app.state.bridge.metrics
    assert config.ws == "none"  # an upgrade must not take a connection out of the count
    assert config.limit_concurrency is None  # the cap counts connections, in the protocol
