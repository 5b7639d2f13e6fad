"""`AppCheckSettings`: Firebase App Check's configuration, read from the environment (SPEC §11).

Kept apart from `AuthSettings` (the ID token): App Check is a second, independent gate with its
own switch, and `off` (the default) reads nothing else.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from rpc_common.auth.settings import check_key_url
from rpc_common.config import ConfigError

# Google's App Check signing keys, as a JWKS document.
APP_CHECK_JWKS_URL: Final = "https://firebaseappcheck.googleapis.com/v1/jwks"
APP_CHECK_ISSUER_PREFIX: Final = "https://firebaseappcheck.googleapis.com/"

# A Google Cloud project number: digits (12 in practice).
_PROJECT_NUMBER: Final = re.compile(r"[0-9]{1,20}")
# Firebase app ids look like `1:<project number>:<web|android|ios>:<hex>`; accept any id of the
# token's `sub` alphabet but check the embedded project number when the id has that shape.
_APP_ID: Final = re.compile(r"[A-Za-z0-9:._-]{1,128}")
_FIREBASE_APP_ID: Final = re.compile(r"[0-9]+:([0-9]+):[a-z]+:[0-9a-fA-F]+")


class AppCheckConfigError(ConfigError):
    """An APP_CHECK_* or FIREBASE_PROJECT_NUMBER variable is missing or invalid."""


class AppCheckMode(enum.StrEnum):
    """`off`: the header is ignored. `monitor`: verified and counted, never refused.
    `enforce`: a missing or invalid token is refused (UNAUTHENTICATED, APP_CHECK_FAILED)."""

    OFF = "off"
    MONITOR = "monitor"
    ENFORCE = "enforce"


@dataclass(frozen=True)
class AppCheckSettings:
    mode: AppCheckMode = AppCheckMode.OFF
    project_number: str = ""
    #: Accepted app ids (the token's `sub`); empty accepts every app of the project.
    app_ids: frozenset[str] = frozenset()
    jwks_url: str = APP_CHECK_JWKS_URL

    def __post_init__(self) -> None:
        if self.mode is not AppCheckMode.OFF and not _PROJECT_NUMBER.fullmatch(self.project_number):
            raise AppCheckConfigError(
                f"FIREBASE_PROJECT_NUMBER (digits) is required when APP_CHECK_MODE={self.mode}"
            )

    @property
    def issuer(self) -> str:
        """The `iss` of this project's App Check tokens."""
        return APP_CHECK_ISSUER_PREFIX + self.project_number

    @property
    def audience(self) -> str:
        """The entry this project's App Check tokens carry in their `aud` list."""
        return "projects/" + self.project_number

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> AppCheckSettings:
        raw_mode = environ.get("APP_CHECK_MODE", "").strip().lower() or AppCheckMode.OFF.value
        try:
            mode = AppCheckMode(raw_mode)
        except ValueError:
            raise AppCheckConfigError(
                f"APP_CHECK_MODE must be one of off, monitor, enforce; got {raw_mode!r}"
            ) from None
        if mode is AppCheckMode.OFF:
            return cls()

        project_number = environ.get("FIREBASE_PROJECT_NUMBER", "").strip()
        if not project_number:
            raise AppCheckConfigError(
                f"FIREBASE_PROJECT_NUMBER is required when APP_CHECK_MODE={mode} (the numeric "
                "project number from the Firebase console's project settings)"
            )
        if not _PROJECT_NUMBER.fullmatch(project_number):
            raise AppCheckConfigError(
                f"FIREBASE_PROJECT_NUMBER must be digits (the project number, not the project "
                f"id), got {project_number!r}"
            )

        app_ids = frozenset(
            part.strip() for part in environ.get("APP_CHECK_APP_IDS", "").split(",") if part.strip()
        )
        for app_id in sorted(app_ids):
            _check_app_id(app_id, project_number)

        jwks_url = environ.get("APP_CHECK_JWKS_URL", "").strip() or APP_CHECK_JWKS_URL
        _check_jwks_url(jwks_url)
        return cls(mode=mode, project_number=project_number, app_ids=app_ids, jwks_url=jwks_url)


def _check_app_id(app_id: str, project_number: str) -> None:
    if not _APP_ID.fullmatch(app_id):
        raise AppCheckConfigError(
            f"APP_CHECK_APP_IDS entries must be Firebase app ids (e.g. 1:{project_number}:web:"
            f"0a1b2c), got {app_id!r}"
        )
    shaped = _FIREBASE_APP_ID.fullmatch(app_id)
    if shaped is not None and shaped.group(1) != project_number:
        raise AppCheckConfigError(
            f"APP_CHECK_APP_IDS entry {app_id!r} belongs to another project than "
            f"FIREBASE_PROJECT_NUMBER {project_number}"
        )


def _check_jwks_url(url: str) -> None:
    check_key_url("APP_CHECK_JWKS_URL", url, AppCheckConfigError)
