"""Tiers: the limits file (`LIMITS_FILE`, TOML) and which tier a caller's token selects.

File format (SPEC §10)::

    [tiers.default]
    requests_per_minute = 30
    tokens_per_day = 200000
    max_concurrent_requests = 4

    [tiers.anonymous]
    requests_per_minute = 5

A key that is absent means no limit of that kind; `0` means none allowed. Anything else (an
unknown key, a negative or non-integer value, a tier name that could not be a metric label) is a
start-up error that names the file's line, so an operator never runs with a limit they did not
mean.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final

from rpc_common.config import ConfigError

DEFAULT_TIER: Final = "default"
ANONYMOUS_TIER: Final = "anonymous"
_TIER_NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The largest value a limit may have: keeps every counter well inside Lua's exact integers.
MAX_LIMIT: Final = 10**12


@dataclass(frozen=True, slots=True)
class Tier:
    """One tier's limits; None means no limit of that kind."""

    name: str
    requests_per_minute: int | None = None
    tokens_per_day: int | None = None
    max_concurrent_requests: int | None = None

    @property
    def unlimited(self) -> bool:
        return (
            self.requests_per_minute is None
            and self.tokens_per_day is None
            and self.max_concurrent_requests is None
        )


LIMIT_KEYS: Final = tuple(f.name for f in fields(Tier) if f.name != "name")


@dataclass(frozen=True, slots=True)
class TierTable:
    """The tiers of a limits file and the rule that picks one for a caller."""

    tiers: Mapping[str, Tier]
    claim: str = "tier"
    source: str = ""
    """The file the tiers came from; empty when there is none (then nothing is limited)."""

    @classmethod
    def unlimited(cls, claim: str = "tier") -> TierTable:
        return cls({DEFAULT_TIER: Tier(DEFAULT_TIER)}, claim)

    def for_claims(self, claims: Mapping[str, Any]) -> Tier:
        """The caller's tier: the custom claim when it names a tier, else `anonymous` for an
        anonymous sign-in when that tier exists, else `default`."""
        tiers = self.tiers
        value = claims.get(self.claim)
        if isinstance(value, str):
            tier = tiers.get(value)
            if tier is not None:
                return tier
        if ANONYMOUS_TIER in tiers:
            firebase = claims.get("firebase")
            if isinstance(firebase, Mapping) and firebase.get("sign_in_provider") == "anonymous":
                return tiers[ANONYMOUS_TIER]
        return tiers[DEFAULT_TIER]


def load_tiers(path: Path, claim: str = "tier") -> TierTable:
    """Read and check a limits file; raises ConfigError naming the line of the first problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"LIMITS_FILE: cannot read {path} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"LIMITS_FILE: {path} is not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line N, column M)".
        raise ConfigError(f"LIMITS_FILE: {path} is not valid TOML: {exc}") from None
    where = _Locator(path, text)
    unknown = sorted(set(data) - {"tiers"})
    if unknown:
        raise where.error(f"unknown top-level key {unknown[0]!r} (only [tiers.<name>] tables)")
    raw_tiers = data.get("tiers", {})
    if not isinstance(raw_tiers, dict) or not raw_tiers:
        raise where.error("no tiers: add at least a [tiers.default] table")
    tiers: dict[str, Tier] = {}
    for name, body in raw_tiers.items():
        if not _TIER_NAME.match(name):
            raise where.error(
                f"tier name {name!r} must be 1-64 letters, digits, '-' or '_'", tier=name
            )
        if not isinstance(body, dict):
            raise where.error(f"tiers.{name} must be a table", tier=name)
        values: dict[str, int] = {}
        for key, value in body.items():
            if key not in LIMIT_KEYS:
                raise where.error(
                    f"unknown key {key!r} in [tiers.{name}] (known: {', '.join(LIMIT_KEYS)})",
                    tier=name,
                    key=key,
                )
            if type(value) is not int or not 0 <= value <= MAX_LIMIT:
                raise where.error(
                    f"tiers.{name}.{key} must be a whole number from 0 to {MAX_LIMIT}, "
                    f"got {value!r}",
                    tier=name,
                    key=key,
                )
            values[key] = value
        tiers[name] = Tier(name, **values)
    if DEFAULT_TIER not in tiers:
        tiers[DEFAULT_TIER] = Tier(DEFAULT_TIER)  # see `missing_default` for the warning
    return TierTable(tiers, claim, str(path))


def missing_default(table: TierTable) -> bool:
    """True when the file left callers without a tier unlimited (worth a start-up warning)."""
    return bool(table.source) and table.tiers[DEFAULT_TIER].unlimited


class _Locator:
    """Finds the line a tier or key was written on (tomllib keeps no positions)."""

    def __init__(self, path: Path, text: str) -> None:
        self._path = path
        self._lines = text.splitlines()

    def error(
        self, problem: str, *, tier: str | None = None, key: str | None = None
    ) -> ConfigError:
        line = self._line(tier, key)
        at = f", line {line}" if line else ""
        return ConfigError(f"LIMITS_FILE {self._path}{at}: {problem}")

    def _line(self, tier: str | None, key: str | None) -> int | None:
        if tier is None:
            return None
        name = rf"[\"']?{re.escape(tier)}[\"']?"
        header = re.compile(rf"^\s*\[\s*tiers\s*\.\s*{name}\s*\]")
        dotted = re.compile(rf"^\s*tiers\s*\.\s*{name}\s*\.\s*{re.escape(key or '')}")
        start = None
        for number, line in enumerate(self._lines, 1):
            if key is not None and dotted.match(line):
                return number
            if header.match(line):
                start = number
                if key is None:
                    return number
                continue
            if start is not None:
                if line.lstrip().startswith("["):
                    break
                if re.match(rf"^\s*[\"']?{re.escape(key or '')}[\"']?\s*=", line):
                    return number
        return start
