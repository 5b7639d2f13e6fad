"""A bounded LRU of verified tokens, so the hot path does no RSA work.

Keyed by the SHA-256 of the token (the raw token is not used as a key). An entry lives until the
token's `exp`, and every hit re-checks `exp` against the clock.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Final

from rpc_common.auth.caller import Caller
from rpc_common.auth.claims import is_expired
from rpc_common.auth.errors import TOKEN_EXPIRED, AuthError

DEFAULT_MAX_ENTRIES: Final = 10_000


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


class TokenCache:
    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self._max = max_entries
        self._entries: OrderedDict[bytes, tuple[Caller, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes, now: float) -> Caller | None:
        """The cached caller, None on a miss; raises TOKEN_EXPIRED for an expired entry."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        caller, exp = entry
        if is_expired(exp, now):
            del self._entries[digest]
            raise AuthError(TOKEN_EXPIRED, "the token has expired; get a fresh ID token")
        self._entries.move_to_end(digest)
        return caller

    def put(self, digest: bytes, caller: Caller, exp: int) -> None:
        if self._max == 0:
            return
        self._entries[digest] = (caller, exp)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
