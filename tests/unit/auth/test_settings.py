"""AuthSettings.from_env: required project id, certs URL default and checks, emulator host."""

from __future__ import annotations

import pytest

from rpc_common.auth import GOOGLE_CERTS_URL, AuthConfigError, AuthSettings, TokenVerifier


def test_defaults() -> None:
    settings = AuthSettings.from_env({"FIREBASE_PROJECT_ID": "demo-native1api"})
    assert settings == AuthSettings("demo-native1api", GOOGLE_CERTS_URL, None)
    assert not settings.emulator


def test_all_variables() -> None:
    settings = AuthSettings.from_env(
        {
            "FIREBASE_PROJECT_ID": " demo-proj ",
            "FIREBASE_CERTS_URL": "http://127.0.0.1:8085/keys",
            "FIREBASE_AUTH_EMULATOR_HOST": "localhost:9099",
            "FIREBASE_ALLOWED_SIGN_IN_PROVIDERS": "password, google.com,,",
        }
    )
    assert settings == AuthSettings(
        "demo-proj",
        "http://127.0.0.1:8085/keys",
        "localhost:9099",
        frozenset({"password", "google.com"}),
    )
    assert settings.emulator


@pytest.mark.parametrize("project", ["my-proj", "prod-demo-x", "Demo-x"])
def test_emulator_mode_is_refused_for_a_real_project(project: str) -> None:
    """A stray FIREBASE_AUTH_EMULATOR_HOST must not turn off signature checks in production."""
    env = {"FIREBASE_PROJECT_ID": project, "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099"}
    with pytest.raises(AuthConfigError) as caught:
        AuthSettings.from_env(env)
    assert "FIREBASE_AUTH_EMULATOR_HOST" in str(caught.value)
    assert "FIREBASE_PROJECT_ID" in str(caught.value)


@pytest.mark.parametrize("value", ["Password", "pass word", "a,b/c"])
def test_bad_sign_in_provider_lists_are_refused(value: str) -> None:
    env = {"FIREBASE_PROJECT_ID": "p", "FIREBASE_ALLOWED_SIGN_IN_PROVIDERS": value}
    with pytest.raises(AuthConfigError, match="FIREBASE_ALLOWED_SIGN_IN_PROVIDERS"):
        AuthSettings.from_env(env)


@pytest.mark.parametrize("env", [{}, {"FIREBASE_PROJECT_ID": "  "}])
def test_project_id_is_required(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="FIREBASE_PROJECT_ID"):
        AuthSettings.from_env(env)


def test_project_id_must_look_like_one() -> None:
    with pytest.raises(AuthConfigError, match="FIREBASE_PROJECT_ID"):
        AuthSettings.from_env({"FIREBASE_PROJECT_ID": "a/b"})


@pytest.mark.parametrize(
    "url", ["http://keys.example/x", "ftp://keys.example/x", "not a url", "https://"]
)
def test_certs_url_must_be_https_off_loopback(url: str) -> None:
    with pytest.raises(AuthConfigError, match="FIREBASE_CERTS_URL"):
        AuthSettings.from_env({"FIREBASE_PROJECT_ID": "p", "FIREBASE_CERTS_URL": url})


@pytest.mark.parametrize("host", ["http://localhost:9099", "localhost", "localhost:port", ":9099"])
def test_emulator_host_must_be_host_port(host: str) -> None:
    with pytest.raises(AuthConfigError, match="FIREBASE_AUTH_EMULATOR_HOST"):
        AuthSettings.from_env(
            {"FIREBASE_PROJECT_ID": "demo-p", "FIREBASE_AUTH_EMULATOR_HOST": host}
        )


def test_empty_emulator_host_means_off() -> None:
    env = {"FIREBASE_PROJECT_ID": "p", "FIREBASE_AUTH_EMULATOR_HOST": ""}
    assert not AuthSettings.from_env(env).emulator


async def test_from_settings_uses_the_certs_url() -> None:
    settings = AuthSettings.from_env(
        {"FIREBASE_PROJECT_ID": "p", "FIREBASE_CERTS_URL": "https://keys.example/x"}
    )
    verifier = TokenVerifier.from_settings(settings)
    assert verifier.project_id == "p"
    assert not verifier.emulator
    assert verifier.key_source is not None
    assert verifier.key_source.url == "https://keys.example/x"
    await verifier.aclose()
