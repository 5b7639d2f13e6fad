"""Dev secrets generated once into `data/` with mode 0600, reused on later runs."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def ensure_secret(path: Path, nbytes: int = 48) -> Path:
    """Create `path` with a random URL-safe secret unless it exists; return the path.

    Created with O_EXCL and mode 0600 so the secret is never readable by others, even briefly.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        return path
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(nbytes) + "\n")
    return path
