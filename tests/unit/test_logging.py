"""The redaction filter removes credentials from messages, arguments and tracebacks."""

from __future__ import annotations

import io
import logging

import pytest

from rpc_common.logging import REDACTED, RedactingFilter, configure_logging, redact

JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl"
SECRETS = [
    "Bearer abc.def.ghi",
    JWT,
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9.",  # unsigned emulator token
    "sk-or-v1-0123456789abcdef",
    "tgp_v1_abcdefghijklmnop",
    "a" * 64,
]


@pytest.mark.parametrize("value", SECRETS)
def test_redact_removes_secret(value: str) -> None:
    cleaned = redact(f"prefix {value} suffix")
    assert value not in cleaned
    assert REDACTED in cleaned
    assert cleaned.startswith("prefix ")


def test_redact_leaves_ordinary_text() -> None:
    text = "model @cf/meta/llama-3.2-3b-instruct took 12 ms for uid-hash 1a2b3c"
    assert redact(text) == text


def _logger_to(stream: io.StringIO) -> logging.Logger:
    logger = logging.getLogger("test.redaction")
    logger.handlers.clear()
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    return logger


def test_filter_redacts_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    logger = _logger_to(stream)
    logger.warning("upstream said %s", f"bad key sk-or-v1-{'x' * 20}")
    try:
        raise RuntimeError(f"token {JWT} rejected")
    except RuntimeError:
        logger.exception("failed")
    output = stream.getvalue()
    assert "sk-or-v1-" not in output
    assert JWT not in output
    assert output.count(REDACTED) == 2
    assert "RuntimeError" in output  # the traceback itself survives


def test_configure_logging_rejects_unknown_level() -> None:
    with pytest.raises(ValueError, match="LOG_LEVEL"):
        configure_logging("LOUD", service="test")


def test_log_guard_catches_a_logged_key(caplog: pytest.LogCaptureFixture) -> None:
    from tests.support.logcheck import assert_logs_clean

    caplog.set_level(logging.DEBUG)
    logging.getLogger("test.guard").debug("fine: model=%s", "@cf/meta/llama")
    assert_logs_clean(caplog)
    logging.getLogger("test.guard").debug("oops %s", "sk-or-v1-abcdef0123456789")
    with pytest.raises(AssertionError, match="credential-shaped"):
        assert_logs_clean(caplog)
