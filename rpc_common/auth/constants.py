"""Fixed values of the Firebase ID-token format and the verifier's limits.

Sources: firebase-admin-python `_token_gen.py` (see reference/security.md §1.1).
"""

# S105 ("hardcoded password") misfires on names containing TOKEN: these are public constants.
# ruff: noqa: S105

from __future__ import annotations

from typing import Final

# Google's securetoken signing keys as an x509 map `{kid: PEM certificate}`.
GOOGLE_CERTS_URL: Final = (
    "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
)
ID_TOKEN_ISSUER_PREFIX: Final = "https://securetoken.google.com/"
SESSION_COOKIE_ISSUER_PREFIX: Final = "https://session.firebase.google.com/"
# `aud` of a Firebase *custom* token (minted by the Admin SDK, exchanged for an ID token).
CUSTOM_TOKEN_AUDIENCE: Final = (
    "https://identitytoolkit.googleapis.com/google.identity.identitytoolkit.v1.IdentityToolkit"
)

# Clock skew tolerated on exp / iat / auth_time / nbf. Small on purpose: the Admin SDK allows
# 0..60 s (default 0); a few seconds absorb NTP drift between Google and us.
CLOCK_SKEW_SECONDS: Final = 10
# Real ID tokens are ~1 KiB; anything this large is garbage or an attack on the parser.
MAX_TOKEN_CHARS: Final = 8 * 1024
MAX_SUB_CHARS: Final = 128
MAX_KID_CHARS: Final = 256
# Header members that name key material; we only ever use the pinned key set (RFC 8725 §3.10).
FORBIDDEN_HEADER_MEMBERS: Final = frozenset({"jku", "x5u", "jwk", "x5c"})
