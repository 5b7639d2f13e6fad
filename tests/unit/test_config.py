"""Settings helpers: required secrets, _FILE variants, numbers; errors name the variable only."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway_service.config import GatewaySettings
from rpc_common.config import ConfigError, optional, positive_float, positive_int, secret


def test_secret_from_variable() -> None:
    assert secret({"SERVICE_TOKEN": " s3cret-value "}, "SERVICE_TOKEN") == "s3cret-value"


def test_secret_from_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("from-file\n")
    assert secret({"SERVICE_TOKEN_FILE": str(path)}, "SERVICE_TOKEN") == "from-file"


def test_secret_missing_names_both_variables() -> None:
    with pytest.raises(ConfigError, match=r"SERVICE_TOKEN \(or SERVICE_TOKEN_FILE\) is required"):
        secret({}, "SERVICE_TOKEN")


def test_secret_both_given_is_refused_without_echoing(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("file-value")
    with pytest.raises(ConfigError) as info:
        secret({"SERVICE_TOKEN": "env-value", "SERVICE_TOKEN_FILE": str(path)}, "SERVICE_TOKEN")
    assert "env-value" not in str(info.value)
    assert "file-value" not in str(info.value)


def test_secret_unreadable_file_names_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SERVICE_TOKEN_FILE: cannot read"):
        secret({"SERVICE_TOKEN_FILE": str(tmp_path / "missing")}, "SERVICE_TOKEN")


def test_optional_default_and_value() -> None:
    assert optional({}, "LOG_LEVEL", "INFO") == "INFO"
    assert optional({"LOG_LEVEL": ""}, "LOG_LEVEL", "INFO") == "INFO"
    assert optional({"LOG_LEVEL": "DEBUG"}, "LOG_LEVEL", "INFO") == "DEBUG"


@pytest.mark.parametrize("raw", ["abc", "0", "-1"])
def test_positive_numbers_reject_bad_values(raw: str) -> None:
    with pytest.raises(ConfigError, match="X_SECONDS"):
        positive_float({"X_SECONDS": raw}, "X_SECONDS", 1.0)
    with pytest.raises(ConfigError, match="X_SECONDS"):
        positive_int({"X_SECONDS": raw}, "X_SECONDS", 1)


def test_positive_numbers_parse() -> None:
    assert positive_float({"X": "2.5"}, "X", 1.0) == 2.5
    assert positive_int({}, "X", 7) == 7


# The gateway's VAULT_ADDR: one vault or several replicas (SPEC §12) ----------------------------

_GATEWAY_ENV = {
    "FIREBASE_PROJECT_ID": "demo-native1api",
    "SERVICE_TOKEN": "service-token-0123456789",
    "CLOUDFLARE_ACCOUNT_ID": "acct",
    "CLOUDFLARE_API_TOKEN": "cf-token-0123456789",
}


@pytest.mark.parametrize(
    "target",
    ["vault:50051", "ipv4:127.0.0.1:50051,127.0.0.1:50061", "dns:///vault:50051", "[::1]:50051"],
)
def test_the_gateway_accepts_vault_targets_naming_several_replicas(target: str) -> None:
    assert GatewaySettings.from_env({**_GATEWAY_ENV, "VAULT_ADDR": target}).vault_addr == target
    assert GatewaySettings.from_env(_GATEWAY_ENV).vault_addr == "127.0.0.1:50051"


@pytest.mark.parametrize(
    "target", ["vault", "127.0.0.1:50051,127.0.0.1:50061", "http://vault:50051", "ipv4:vault:1"]
)
def test_the_gateway_refuses_a_garbage_vault_addr_naming_it(target: str) -> None:
    with pytest.raises(ConfigError, match="VAULT_ADDR must be a gRPC target"):
        GatewaySettings.from_env({**_GATEWAY_ENV, "VAULT_ADDR": target})
