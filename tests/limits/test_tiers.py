"""The limits file and the choice of a caller's tier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway_service.config import GatewaySettings
from gateway_service.limits.settings import LimitsSettings
from gateway_service.limits.tiers import Tier, load_tiers, missing_default
from rpc_common.config import ConfigError

GOOD = """\
# comment
[tiers.default]
requests_per_minute = 30
tokens_per_day = 200000
max_concurrent_requests = 4

[tiers.anonymous]
requests_per_minute = 5

[tiers.pro]
tokens_per_day = 0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "limits.toml"
    path.write_text(text, encoding="utf-8")
    return path


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "u", "firebase": {"sign_in_provider": "password"}, **extra}


def anonymous(**extra: Any) -> dict[str, Any]:
    return {"sub": "u", "firebase": {"sign_in_provider": "anonymous"}, **extra}


def test_a_good_file_loads(tmp_path: Path) -> None:
    table = load_tiers(write(tmp_path, GOOD))
    assert table.tiers == {
        "default": Tier("default", 30, 200000, 4),
        "anonymous": Tier("anonymous", 5, None, None),
        "pro": Tier("pro", None, 0, None),
    }
    assert not missing_default(table)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("[tiers.default]\nrequests_per_minute = -1\n", 2, "whole number"),
        ("[tiers.default]\n\nrequests_per_minute = 1.5\n", 3, "whole number"),
        ("[tiers.default]\nrequests_per_minute = true\n", 2, "whole number"),
        ('[tiers.default]\ntokens_per_day = "many"\n', 2, "whole number"),
        ("[tiers.default]\nrequests_per_minute = 1\n\n[tiers.pro]\nrpm = 3\n", 5, "unknown key"),
        ("[tiers.default]\nrequests_per_minute = 1\n[tiers.'bad name']\n", 3, "tier name"),
        ("[tiers.x]\nmax_concurrent_requests = 1\n[limits]\na = 1\n", None, "top-level"),
        ("tiers.default.tokens_per_day = -5\n", 1, "whole number"),
        ("[tiers.default\nrequests_per_minute = 1\n", 1, "not valid TOML"),
        ("requests_per_minute = 1\n", None, "top-level"),
        ("", None, "no tiers"),
    ],
)
def test_a_bad_file_is_refused_naming_the_line(
    tmp_path: Path, text: str, line: int | None, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_tiers(write(tmp_path, text))
    message = str(caught.value)
    assert words in message
    assert "LIMITS_FILE" in message
    if line is not None:
        assert f"line {line}" in message


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_tiers(tmp_path / "absent.toml")


def test_a_file_without_default_leaves_default_unlimited(tmp_path: Path) -> None:
    table = load_tiers(write(tmp_path, "[tiers.pro]\nrequests_per_minute = 9\n"))
    assert table.tiers["default"].unlimited
    assert missing_default(table)


def test_tier_from_claim_anonymous_and_default(tmp_path: Path) -> None:
    table = load_tiers(write(tmp_path, GOOD))
    assert table.for_claims(claims(tier="pro")).name == "pro"
    assert table.for_claims(claims()).name == "default"
    assert table.for_claims(anonymous()).name == "anonymous"
    # An explicit tier wins over the anonymous rule.
    assert table.for_claims(anonymous(tier="pro")).name == "pro"
    # A value that names no tier, or is not a string, falls back.
    assert table.for_claims(claims(tier="platinum")).name == "default"
    assert table.for_claims(claims(tier=["pro"])).name == "default"
    assert table.for_claims(anonymous(tier="platinum")).name == "anonymous"


def test_anonymous_without_an_anonymous_tier_is_default(tmp_path: Path) -> None:
    table = load_tiers(write(tmp_path, "[tiers.default]\nrequests_per_minute = 3\n"))
    assert table.for_claims(anonymous()).name == "default"


def test_the_claim_name_is_configurable(tmp_path: Path) -> None:
    table = load_tiers(write(tmp_path, GOOD), claim="plan")
    assert table.for_claims(claims(plan="pro", tier="anonymous")).name == "pro"


def test_settings_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    settings = LimitsSettings.from_env(
        {
            "LIMITS_FILE": str(path),
            "LIMITS_TIER_CLAIM": "plan",
            "LIMITS_REDIS_URL": "redis://:s3cret-pass@127.0.0.1:6379/0",
            "LIMITS_ON_STORE_ERROR": "allow",
        }
    )
    assert settings.tiers.claim == "plan" and settings.tiers.source == str(path)
    assert settings.on_store_error == "allow"
    assert "s3cret-pass" not in repr(settings)
    unset = LimitsSettings.from_env({})
    assert unset.tiers.source == "" and unset.tiers.for_claims(claims()).unlimited
    assert (unset.redis_url, unset.on_store_error) == ("", "deny")


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"LIMITS_ON_STORE_ERROR": "maybe"}, "LIMITS_ON_STORE_ERROR"),
        ({"LIMITS_REDIS_URL": "http://user:s3cret-pass@host"}, "LIMITS_REDIS_URL"),
        ({"LIMITS_TIER_CLAIM": "has space"}, "LIMITS_TIER_CLAIM"),
        ({"LIMITS_FILE": "/nonexistent/limits.toml"}, "LIMITS_FILE"),
        ({"LIMITS_REDIS_TIMEOUT_SECONDS": "0"}, "LIMITS_REDIS_TIMEOUT_SECONDS"),
    ],
)
def test_bad_settings_name_the_variable_not_the_secret(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        LimitsSettings.from_env(env)
    assert words in str(caught.value)
    assert "s3cret-pass" not in str(caught.value)


def test_the_gateway_reads_the_limits_settings(tmp_path: Path) -> None:
    env = {
        "FIREBASE_PROJECT_ID": "p",
        "SERVICE_TOKEN": "t" * 20,
        "CLOUDFLARE_ACCOUNT_ID": "a",
        "CLOUDFLARE_API_TOKEN": "c" * 20,
        "LIMITS_FILE": str(write(tmp_path, GOOD)),
    }
    settings = GatewaySettings.from_env(env)
    assert settings.limits.tiers.tiers["anonymous"].requests_per_minute == 5
    bad = {**env, "LIMITS_FILE": str(write(tmp_path, "[tiers.default]\nx = 1\n"))}
    with pytest.raises(ConfigError, match="line 2"):
        GatewaySettings.from_env(bad)
