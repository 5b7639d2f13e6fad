"""The vendored Firebase JS SDK (`examples/web-chat/vendor/firebase/`) is what its manifest says,
and the page loads nothing from the network but our own files.

No browser needed: these read files only. `update.py` in that directory refreshes everything.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

PAGE_DIR = Path(__file__).resolve().parents[2] / "examples" / "web-chat"
VENDOR = PAGE_DIR / "vendor" / "firebase"
MANIFEST = json.loads((VENDOR / "manifest.json").read_text(encoding="utf-8"))
GSTATIC = "https://www.gstatic.com/firebasejs/{version}/firebase-app.js"


def _import_map() -> dict[str, str]:
    page = (PAGE_DIR / "index.html").read_text(encoding="utf-8")
    match = re.search(r'<script type="importmap">(.*?)</script>', page, re.DOTALL)
    assert match, "index.html has no import map"
    imports: dict[str, str] = json.loads(match.group(1))["imports"]
    return imports


def test_the_files_match_the_pinned_version() -> None:
    assert MANIFEST["package"] == "firebase"
    version = MANIFEST["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert MANIFEST["tarball"] == f"https://registry.npmjs.org/firebase/-/firebase-{version}.tgz"
    assert MANIFEST["integrity"].startswith("sha512-")
    assert sorted(MANIFEST["files"]) == ["firebase-app.js", "firebase-auth.js"]
    for name, digest in MANIFEST["files"].items():
        data = (VENDOR / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, f"{name} differs from the manifest"
        # Each build states its own version: the files are the version the manifest names.
        assert f'"{version}"' in data.decode("utf-8") or f"/{version}/" in data.decode("utf-8")


def test_the_import_map_sends_every_module_to_a_local_file() -> None:
    imports = _import_map()
    version = MANIFEST["version"]
    assert imports[GSTATIC.format(version=version)] == "./vendor/firebase/firebase-app.js"
    assert imports["firebase/app"] == "./vendor/firebase/firebase-app.js"
    assert imports["firebase/auth"] == "./vendor/firebase/firebase-auth.js"
    assert imports["native1api"] == "../../sdk/js/native1api.mjs"
    for target in imports.values():
        assert not target.startswith(("http:", "https:", "//")), target
        assert (PAGE_DIR / target).resolve().is_file(), target


def test_the_builds_import_only_what_the_map_covers() -> None:
    mapped = set(_import_map())
    static_import = re.compile(rb'(?:\bfrom|\bimport)\s*"([^"]+)"')
    for name in MANIFEST["files"]:
        specifiers = set(static_import.findall((VENDOR / name).read_bytes()))
        assert {s.decode() for s in specifiers} <= mapped, (name, specifiers)
    page_imports = re.findall(r"from '([^']+)'", (PAGE_DIR / "app.mjs").read_text(encoding="utf-8"))
    assert set(page_imports) == {"firebase/app", "firebase/auth", "native1api"}
