"""Vendor the Firebase JS SDK's browser builds that the web-chat example loads.

    python3 examples/web-chat/vendor/firebase/update.py            # re-fetch the pinned version
    python3 examples/web-chat/vendor/firebase/update.py 13.3.0     # move the pin

The page cannot load the SDK from a CDN (it must work offline, and the browser tests have no
network), and it has no build step, so we keep two files of the `firebase` npm package here:
`firebase-app.js` and `firebase-auth.js`, the self-contained ES module builds the package ships for
browsers (the same files Google serves from www.gstatic.com/firebasejs/VERSION/). The auth build
imports the app build by its gstatic URL; the page's import map points that URL at our copy.

What this script does: `npm pack firebase@VERSION` (npm checks the tarball against the registry's
sha512 integrity), extracts the two files, records version, tarball URL, integrity and each file's
SHA-256 in `manifest.json`, and rewrites the version in `examples/web-chat/index.html`'s import
map. `tests/browser/test_vendored_firebase.py` checks that the files, the manifest and the import
map agree. Needs `npm` (Node 18+) and the npm registry; nothing else.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGE = HERE.parents[1] / "index.html"
MANIFEST = HERE / "manifest.json"
FILES = ("firebase-app.js", "firebase-auth.js")
# The source-map comment points at files we do not vendor (they are 6x the size of the code).
_SOURCE_MAP = re.compile(rb"\n//# sourceMappingURL=[^\n]*\n?$")


def _pinned() -> str:
    version: str = json.loads(MANIFEST.read_text(encoding="utf-8"))["version"]
    return version


def main(argv: list[str]) -> int:
    version = argv[0] if argv else _pinned()
    with tempfile.TemporaryDirectory() as tmp:
        packed = subprocess.run(  # noqa: S603 (a fixed command; the version is the argument)
            ["npm", "pack", f"firebase@{version}", "--json", "--pack-destination", tmp],  # noqa: S607
            check=True,
            capture_output=True,
            text=True,
        )
        info = json.loads(packed.stdout)[0]
        files: dict[str, str] = {}
        with tarfile.open(Path(tmp) / info["filename"]) as tar:
            for name in FILES:
                member = tar.extractfile(f"package/{name}")
                if member is None:
                    raise SystemExit(f"firebase@{version} has no {name}")
                data = _SOURCE_MAP.sub(b"\n", member.read())
                (HERE / name).write_bytes(data)
                files[name] = hashlib.sha256(data).hexdigest()
    manifest = {
        "package": "firebase",
        "version": info["version"],
        "tarball": f"https://registry.npmjs.org/firebase/-/firebase-{info['version']}.tgz",
        "integrity": info["integrity"],
        "license": "Apache-2.0",
        "files": files,
        "note": "Written by update.py; the files have their sourceMappingURL comment removed.",
    }
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    page = PAGE.read_text(encoding="utf-8")
    PAGE.write_text(
        re.sub(r"firebasejs/[0-9][^/\"]*/", f"firebasejs/{info['version']}/", page),
        encoding="utf-8",
    )
    print(f"vendored firebase@{info['version']} ({info['integrity']})")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
