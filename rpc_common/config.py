"""Reading settings from the environment, failing fast with the variable's name."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


class ConfigError(ValueError):
    """A required setting is missing or invalid. The message names the variable, never its value."""


def optional(environ: Mapping[str, str], name: str, default: str) -> str:
    """The variable's value, or `default` when unset or empty."""
    value = environ.get(name, "").strip()
    return value or default


def secret(environ: Mapping[str, str], name: str) -> str:
    """A secret given as `NAME` or as a file named by `NAME_FILE` (e.g. a Docker secret).

    Raises ConfigError naming both variables when neither is set, or when both are.
    """
    file_name = f"{name}_FILE"
    value = environ.get(name, "")
    path = environ.get(file_name, "")
    if value and path:
        raise ConfigError(f"set only one of {name} and {file_name}")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{file_name}: cannot read the file ({exc.strerror})") from None
    value = value.strip()
    if not value:
        raise ConfigError(f"{name} (or {file_name}) is required")
    return value


def positive_float(environ: Mapping[str, str], name: str, default: float) -> float:
    """A positive number of (usually) seconds."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value > 0:
        raise ConfigError(f"{name} must be greater than 0, got {raw!r}")
    return value


def positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    """A positive integer."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be greater than 0, got {raw!r}")
    return value
