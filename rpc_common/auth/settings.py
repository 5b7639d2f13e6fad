"""`AuthSettings`: the verifier's configuration, read from the environment (SPEC §7)."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from rpc_common.auth.constants import GOOGLE_CERTS_URL
from rpc_common.config import ConfigError

# GCP project ids are lowercase words with hyphens; legacy ones look like `example.com:proj`.
_PROJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]{0,127}")
_LOOPBACK_NAMES = frozenset({"localhost"})
# Firebase's convention for projects that exist only in the emulator.
DEMO_PROJECT_PREFIX = "demo-"
# Sign-in provider ids: `password`, `phone`, `anonymous`, `google.com`, `oidc.acme`, `saml.x`...
_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class AuthConfigError(ConfigError):
    """A FIREBASE_* variable is missing or invalid; the message names it."""


@dataclass(frozen=True)
class AuthSettings:
    project_id: str
    certs_url: str = GOOGLE_CERTS_URL
    emulator_host: str | None = None
    allowed_sign_in_providers: frozenset[str] | None = None
    """`firebase.sign_in_provider` values that may call (e.g. `password`, `google.com`); None: any."""

    @property
    def emulator(self) -> bool:
        """Emulator mode (unsigned tokens accepted) is on exactly when the emulator host is set."""
        return self.emulator_host is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> AuthSettings:
        project_id = environ.get("FIREBASE_PROJECT_ID", "").strip()
        if not project_id:
            raise AuthConfigError("FIREBASE_PROJECT_ID is required (the Firebase project id)")
        if not _PROJECT_ID.fullmatch(project_id):
            raise AuthConfigError(f"FIREBASE_PROJECT_ID is not a valid project id: {project_id!r}")

        certs_url = environ.get("FIREBASE_CERTS_URL", "").strip() or GOOGLE_CERTS_URL
        _check_certs_url(certs_url)

        emulator_host = environ.get("FIREBASE_AUTH_EMULATOR_HOST", "").strip() or None
        if emulator_host is not None:
            _check_emulator_host(emulator_host)
            if not project_id.startswith(DEMO_PROJECT_PREFIX):
                # A stray emulator variable must never switch off signature checks for a real
                # project: Firebase reserves `demo-` ids for projects that exist only locally.
                raise AuthConfigError(
                    "FIREBASE_AUTH_EMULATOR_HOST is set, but FIREBASE_PROJECT_ID "
                    f"{project_id!r} does not start with {DEMO_PROJECT_PREFIX!r}: emulator mode "
                    "(unsigned tokens) is only for demo- projects. Unset "
                    "FIREBASE_AUTH_EMULATOR_HOST in production, or use a demo- project id locally"
                )
        return cls(
            project_id=project_id,
            certs_url=certs_url,
            emulator_host=emulator_host,
            allowed_sign_in_providers=_sign_in_providers(environ),
        )


def _sign_in_providers(environ: Mapping[str, str]) -> frozenset[str] | None:
    raw = environ.get("FIREBASE_ALLOWED_SIGN_IN_PROVIDERS", "").strip()
    if not raw:
        return None
    names = frozenset(part.strip() for part in raw.split(",") if part.strip())
    bad = sorted(name for name in names if not _PROVIDER_NAME.fullmatch(name))
    if bad or not names:
        raise AuthConfigError(
            "FIREBASE_ALLOWED_SIGN_IN_PROVIDERS must be a comma list of sign-in provider ids "
            f"such as password,google.com,anonymous; got {raw!r}"
        )
    return names


def _check_certs_url(url: str) -> None:
    check_key_url("FIREBASE_CERTS_URL", url, AuthConfigError)


def check_key_url(variable: str, url: str, error: type[ConfigError]) -> None:
    """A signing-key URL must be https; plain http would let anyone on the path substitute the
    keys, so it is allowed only on loopback (a local fake key server: tests, the dev stack)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and _is_loopback(host):
        return
    raise error(f"{variable} must be an https:// URL (http:// only on loopback), got {url!r}")


def _check_emulator_host(value: str) -> None:
    # Same rule as the Admin SDK: `host:port`, no scheme.
    host, sep, port = value.rpartition(":")
    if "//" in value or not sep or not host or not port.isdigit():
        raise AuthConfigError(
            f"FIREBASE_AUTH_EMULATOR_HOST must be host:port (no scheme), got {value!r}"
        )


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
