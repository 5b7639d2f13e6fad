"""A guard that fails a test when any captured log line carries something credential-shaped."""

from __future__ import annotations

import pytest

from rpc_common.logging import redact


def assert_logs_clean(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    """No record (message, arguments or traceback) of any phase of the test looks like a key or
    token, or names `secrets`.

    Every phase: `caplog.records` read in a fixture's teardown holds only the teardown's records,
    so a check over it alone would never see what the test itself logged.
    """
    records = [r for when in ("setup", "call", "teardown") for r in caplog.get_records(when)]
    for record in records:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + caplog.handler.formatter.formatException(record.exc_info)  # type: ignore[union-attr]
        assert redact(text) == text, f"credential-shaped text logged by {record.name}"
        for secret in secrets:
            assert secret not in text, f"a secret was logged by {record.name}"
