"""One logging setup for every process, with a last-line-of-defence redaction filter.

Our code never logs secrets on purpose; the filter catches what a library or an exception message
might carry (a bearer token, a JWT, a provider key) before it reaches a handler.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Final

REDACTED: Final = "[REDACTED]"

_SECRET_PATTERNS: Final = re.compile(
    r"|".join(
        (
            # Authorization header values (not a WWW-Authenticate challenge's `error=`/`realm=`)
            r"(?i)bearer\s+(?!error=|realm=)[A-Za-z0-9._~+/=-]+",
            r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*",  # JWTs (incl. unsigned)
            r"sk-or-[A-Za-z0-9_-]{6,}",  # OpenRouter keys
            r"tgp_[A-Za-z0-9_-]{6,}",  # Together keys
            r"\b[0-9a-fA-F]{64}\b",  # legacy Together keys, hex secrets
        )
    )
)


def redact(text: str) -> str:
    """Replace anything that looks like a credential with a placeholder."""
    return _SECRET_PATTERNS.sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    """Renders each record's message once, redacted, so handlers never see the raw arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks are formatted later from exc_info; render and redact them now.
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, redact(formatted)
        return True


def configure_logging(level: str = "INFO", *, service: str) -> None:
    """Log to stderr as `time level service logger: message`, redacted. Idempotent."""
    root = logging.getLogger()
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR; got {level!r}")
    for handler in list(root.handlers):
        if getattr(handler, "_native1api", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._native1api = True  # type: ignore[attr-defined]
    handler.addFilter(RedactingFilter())
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(numeric)
    # httpx logs every request URL at INFO; URLs are not secret, but the volume is noise.
    logging.getLogger("httpx").setLevel(max(numeric, logging.WARNING))
