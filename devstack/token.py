"""`python -m devstack.token [uid]` prints a dev ID token the local stack accepts.

The local stack runs in Firebase Auth Emulator mode, which accepts unsigned tokens in exactly the
emulator's format; every claim check still applies, so the token expires after an hour.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jwt

DEFAULT_PROJECT = "demo-native1api"


def mint_emulator_token(uid: str, project_id: str, lifetime_seconds: int = 3600) -> str:
    """An unsigned ID token like the Auth Emulator's (`alg: none`, empty signature)."""
    now = int(time.time())
    claims = {
        "iss": f"https://securetoken.google.com/{project_id}",
        "aud": project_id,
        "auth_time": now,
        "user_id": uid,
        "sub": uid,
        "iat": now,
        "exp": now + lifetime_seconds,
        "firebase": {"identities": {}, "sign_in_provider": "custom"},
    }
    # pyjwt signs "none" with an empty signature, exactly like the Auth Emulator.
    return jwt.encode(claims, "", algorithm="none")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.token", description=__doc__)
    parser.add_argument("uid", nargs="?", default="alice", help="the user id (token `sub`)")
    parser.add_argument(
        "--project",
        default=os.environ.get("FIREBASE_PROJECT_ID", DEFAULT_PROJECT),
        help="Firebase project id (default: FIREBASE_PROJECT_ID or demo-native1api)",
    )
    args = parser.parse_args(argv)
    if not 1 <= len(args.uid) <= 128:
        parser.error("uid must be 1 to 128 characters")
    sys.stdout.write(mint_emulator_token(args.uid, args.project) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
