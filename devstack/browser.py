"""What `make run` adds for the browser: the web-chat page on its own origin, and the real Firebase
Auth Emulator for it to sign users in.

- The page: `devstack.web` on `DEVSTACK_WEB_ADDR` (default `127.0.0.1:8090`; `off` disables it).
  Its origin (with the `localhost` spelling too) is added to the bridge's `BRIDGE_CORS_ORIGINS`:
  exactly those origins, never `*`.
- The Auth Emulator: with `DEVSTACK_AUTH_EMULATOR=auto` (the default) the devstack starts the
  pinned firebase-tools of `tools/firebase-emulator/` at `FIREBASE_AUTH_EMULATOR_HOST` (default
  `127.0.0.1:9099`) when Node and that install are present, or uses an emulator already answering
  there. `off` never starts one. Without it the page cannot sign in, but `make token` still works,
  so a missing or dead emulator never stops the stack.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devstack.stack import Child, say
from devstack.web import PageConfig, WebServer, origins_for

REPO = Path(__file__).resolve().parents[1]
EMULATOR_DIR = REPO / "tools" / "firebase-emulator"
FIREBASE_JS = EMULATOR_DIR / "node_modules" / "firebase-tools" / "lib" / "bin" / "firebase.js"
DEFAULT_WEB_ADDR = "127.0.0.1:8090"
_OFF = ("off", "0", "false", "no")
_EMULATOR_ENV = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "TERM", "NODE_EXTRA_CA_CERTS")


@dataclass
class CommandChild(Child):
    """A child that is not a Python module (the emulator's Node launcher)."""

    command: tuple[str, ...] = ()

    @property
    def argv(self) -> list[str]:
        return list(self.command)


def start_web(env: dict[str, str]) -> WebServer | None:
    """Bind and start the page's server; add its origins to the bridge's CORS list in `env`.

    None when disabled or the address is taken (said on stderr; the stack runs without it).
    """
    addr = env.get("DEVSTACK_WEB_ADDR", DEFAULT_WEB_ADDR)
    if addr.lower() in _OFF:
        return None
    host, _, port = addr.rpartition(":")
    bridge = env.get("BRIDGE_LISTEN_ADDR", "127.0.0.1:8080")
    emulator = env.get("FIREBASE_AUTH_EMULATOR_HOST")
    config = PageConfig(
        gateway_url=f"http://{_reachable(bridge)}",
        project_id=env["FIREBASE_PROJECT_ID"],
        auth_emulator_url=f"http://{emulator}" if emulator else None,
    )
    try:
        server = WebServer(host or "127.0.0.1", int(port), config)
    except (OSError, ValueError) as exc:
        say(f"cannot serve the web-chat page on {addr} ({exc}); set DEVSTACK_WEB_ADDR")
        return None
    origins = [o for o in env.get("BRIDGE_CORS_ORIGINS", "").split(",") if o.strip()]
    origins += [o for o in origins_for(server.origin) if o not in origins]
    env["BRIDGE_CORS_ORIGINS"] = ",".join(origins)
    return server.start()


def _reachable(addr: str) -> str:
    """A listen address as a browser can reach it (0.0.0.0 listens on loopback too)."""
    host, _, port = addr.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "", "[::]") else addr  # noqa: S104


def emulator_ready(host_port: str) -> bool:
    """The emulator's root answers `{"authEmulator": {"ready": true}}` once it serves."""
    try:
        with urllib.request.urlopen(f"http://{host_port}/", timeout=1) as response:
            body = json.loads(response.read())
    except (OSError, ValueError):
        return False
    status = body.get("authEmulator") if isinstance(body, dict) else None
    return isinstance(status, dict) and status.get("ready") is True


def emulator_child(env: dict[str, str]) -> tuple[CommandChild | None, str]:
    """The Auth Emulator to start (or None) and a sentence for the banner saying what runs."""
    host_port = env.get("FIREBASE_AUTH_EMULATOR_HOST", "")
    if not host_port:
        return None, "no FIREBASE_AUTH_EMULATOR_HOST"
    if env.get("DEVSTACK_AUTH_EMULATOR", "auto").lower() in _OFF:
        return None, f"not started (DEVSTACK_AUTH_EMULATOR=off); expected at http://{host_port}"
    if emulator_ready(host_port):
        return None, f"http://{host_port} (already running; not started by devstack)"
    node = shutil.which("node")
    if node is None or not FIREBASE_JS.is_file():
        missing = "Node.js 20+" if node is None else "the pinned firebase-tools"
        return None, (
            f"NOT RUNNING: {missing} missing (npm ci --prefix tools/firebase-emulator); "
            "the page cannot sign in, `make token` works"
        )
    host, _, port = host_port.rpartition(":")
    command = (
        node,
        str(EMULATOR_DIR / "launch.mjs"),
        "--host",
        host or "127.0.0.1",
        "--port",
        port,
        "--project",
        env["FIREBASE_PROJECT_ID"],
        "--exit-with-parent",
    )
    child = CommandChild("auth-emulator", "", command=command, role="emulator")
    # Not the stack's environment: the emulator needs none of its secrets.
    child.env = {k: v for k, v in os.environ.items() if k in _EMULATOR_ENV}
    return child, f"http://{host_port} (started by devstack; accounts live until Ctrl-C)"
