"""`--baseline REF`: the services as they were at a git revision, measured beside the change.

This machine is noisy from minute to minute, so a change is judged against its baseline in the
same run: the benchmark unpacks REF's tree (`git archive`, read-only: no worktree, no checkout)
into the run's temporary directory and starts a second gateway + bridge pair from it, on the
same upstream, vault and Redis, with the same environment. Their targets (`grpc@baseline`,
`rest@baseline`) are interleaved with the change's within every round, so both see the same
seconds of machine noise, and the report sets them side by side.

The baseline runs with this checkout's virtual environment: REF must need no dependency that
is not installed (any commit since the dependencies were last changed qualifies).
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASELINE = "baseline"
"""The name of the baseline's configuration (and the suffix of its targets)."""


class BaselineError(RuntimeError):
    """REF could not be unpacked; the message says why and what to do."""


def _git(*args: str) -> bytes:
    try:
        return subprocess.run(  # noqa: S603 (fixed program, arguments checked by git)
            ["git", "--no-optional-locks", "-C", str(REPO), *args],  # noqa: S607
            capture_output=True,
            check=True,
        ).stdout
    except FileNotFoundError:
        raise BaselineError("--baseline needs git on PATH") from None
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise BaselineError(
            f"git {args[0]} failed ({' '.join(detail) or exc.returncode}): check that the "
            "revision exists in this clone (`git log --oneline`)"
        ) from None


def unpack(ref: str, into: Path) -> tuple[Path, str]:
    """Unpack REF's tree into `into/baseline`; return (that directory, REF's short hash)."""
    if ref.startswith("-"):
        raise BaselineError(f"--baseline {ref!r}: not a revision")
    short = _git("rev-parse", "--short", "--verify", f"{ref}^{{commit}}").decode().strip()
    target = into / BASELINE
    target.mkdir(parents=True)
    archive = _git("archive", "--format=tar", short)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target, short
