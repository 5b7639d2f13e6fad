"""`Caller`: the identity established by a verified ID token."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Caller:
    """A verified caller. `uid` is the token's `sub`, never a request field.

    `token` is the raw ID token, kept only so it can be forwarded (to the vault); it is left out
    of `repr` so a logged Caller never leaks it. The claims (email, name, ...) are personal data,
    so they are left out of `repr` as well.
    """

    uid: str
    claims: Mapping[str, Any] = field(repr=False)
    token: str = field(repr=False)
