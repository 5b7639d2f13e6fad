"""Settings helpers: required secrets, _FILE variants, numbers; errors name the variable only."""

from __future__ import annotations

from pathlib import Path

import pytest

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
