"""AppCheckSettings.from_env (SPEC §11), and both services reading it."""

from __future__ import annotations

import pytest

from gateway_service.config import GatewaySettings
from rpc_common.auth import (
    APP_CHECK_JWKS_URL,
    AppCheckConfigError,
    AppCheckMode,
    AppCheckSettings,
)
from rpc_common.config import ConfigError
from vault_service.config import VaultSettings

NUMBER = "123456789012"


def test_off_by_default_and_then_reads_nothing_else() -> None:
    assert AppCheckSettings.from_env({}) == AppCheckSettings()
    assert AppCheckSettings().mode is AppCheckMode.OFF
    junk = {"FIREBASE_PROJECT_NUMBER": "my-proj", "APP_CHECK_JWKS_URL": "http://evil.test/"}
    assert AppCheckSettings.from_env({"APP_CHECK_MODE": "off", **junk}) == AppCheckSettings()


@pytest.mark.parametrize(("raw", "mode"), [("monitor", "monitor"), (" Enforce ", "enforce")])
def test_modes(raw: str, mode: str) -> None:
    settings = AppCheckSettings.from_env(
        {"APP_CHECK_MODE": raw, "FIREBASE_PROJECT_NUMBER": f" {NUMBER} "}
    )
    assert settings == AppCheckSettings(AppCheckMode(mode), NUMBER, frozenset(), APP_CHECK_JWKS_URL)
    assert settings.issuer == f"https://firebaseappcheck.googleapis.com/{NUMBER}"
    assert settings.audience == f"projects/{NUMBER}"


def test_all_variables() -> None:
    settings = AppCheckSettings.from_env(
        {
            "APP_CHECK_MODE": "enforce",
            "FIREBASE_PROJECT_NUMBER": NUMBER,
            "APP_CHECK_APP_IDS": f" 1:{NUMBER}:web:0a1b , 1:{NUMBER}:android:ff00,,",
            "APP_CHECK_JWKS_URL": "http://127.0.0.1:9000/v1/jwks",
        }
    )
    assert settings.app_ids == {f"1:{NUMBER}:web:0a1b", f"1:{NUMBER}:android:ff00"}
    assert settings.jwks_url == "http://127.0.0.1:9000/v1/jwks"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"APP_CHECK_MODE": "on"}, "APP_CHECK_MODE"),
        ({"APP_CHECK_MODE": "enforce"}, "FIREBASE_PROJECT_NUMBER"),
        ({"APP_CHECK_MODE": "monitor", "FIREBASE_PROJECT_NUMBER": "demo-proj"}, "FIREBASE_PROJECT_NUMBER"),
        ({"APP_CHECK_APP_IDS": "1:1:web:ab cd"}, "APP_CHECK_APP_IDS"),
        ({"APP_CHECK_APP_IDS": "1:999:web:abcd"}, "APP_CHECK_APP_IDS"),  # another project's app
        ({"APP_CHECK_JWKS_URL": "http://keys.example.com/jwks"}, "APP_CHECK_JWKS_URL"),
        ({"APP_CHECK_JWKS_URL": "ftp://127.0.0.1/jwks"}, "APP_CHECK_JWKS_URL"),
        ({"APP_CHECK_JWKS_URL": "https:///jwks"}, "APP_CHECK_JWKS_URL"),
    ],
)  # fmt: skip
def test_bad_values_name_their_variable(env: dict[str, str], variable: str) -> None:
    base = {"APP_CHECK_MODE": "enforce", "FIREBASE_PROJECT_NUMBER": NUMBER}
    with pytest.raises(AppCheckConfigError, match=variable) as caught:
        AppCheckSettings.from_env({**base, **env} if "APP_CHECK_MODE" not in env else env)
    assert isinstance(caught.value, ConfigError)  # the services' __main__ report these


@pytest.mark.parametrize(
    "url", ["http://localhost:8080/jwks", "http://[::1]:1/jwks", "https://keys.test/v1/jwks"]
)
def test_jwks_url_https_or_loopback_http(url: str) -> None:
    env = {
        "APP_CHECK_MODE": "monitor",
        "FIREBASE_PROJECT_NUMBER": NUMBER,
        "APP_CHECK_JWKS_URL": url,
    }
    assert AppCheckSettings.from_env(env).jwks_url == url  # fmt: skip


def test_a_mode_without_a_project_number_cannot_be_built() -> None:
    with pytest.raises(AppCheckConfigError, match="FIREBASE_PROJECT_NUMBER"):
        AppCheckSettings(mode=AppCheckMode.ENFORCE)


BASE_ENV = {
    "FIREBASE_PROJECT_ID": "demo-native1api",
    "SERVICE_TOKEN": "service-token-0123456789",
    "CLOUDFLARE_ACCOUNT_ID": "acct",
    "CLOUDFLARE_API_TOKEN": "cf-token-0123456789",
    "VAULT_MASTER_KEY": "m" * 40,
}
APP_CHECK_ENV = {
    "APP_CHECK_MODE": "monitor",
    "FIREBASE_PROJECT_NUMBER": NUMBER,
    "APP_CHECK_APP_IDS": f"1:{NUMBER}:web:0a1b",
}


def test_both_services_read_the_app_check_settings() -> None:
    expected = AppCheckSettings.from_env(APP_CHECK_ENV)
    env = {**BASE_ENV, **APP_CHECK_ENV, "VAULT_METRICS_ADDR": "127.0.0.1:9102"}
    assert GatewaySettings.from_env(env).app_check == expected
    vault = VaultSettings.from_env(env)
    assert vault.app_check == expected
    assert vault.metrics_addr == "127.0.0.1:9102"
    assert GatewaySettings.from_env(BASE_ENV).app_check == AppCheckSettings()
    assert VaultSettings.from_env(BASE_ENV).metrics_addr == ""
    with pytest.raises(ConfigError, match="APP_CHECK_MODE"):
        VaultSettings.from_env({**BASE_ENV, "APP_CHECK_MODE": "strict"})
