"""The devstack's static web server: the browser example (`examples/web-chat/`) on its own origin.

`make run` serves the page from here, not from the bridge: the page is a separate web app, as an
app developer's site would be, so the browser does what it does in production: a CORS preflight
to the gateway, which must list this origin in `BRIDGE_CORS_ORIGINS` (the devstack adds it).

It serves only what the page loads, read from the repository on every request (edit and reload):

- `/examples/web-chat/...`: the page, its script, style and the vendored Firebase JS SDK;
- `/examples/web-chat/config.json`: generated from the running stack (gateway URL, Auth Emulator,
  Firebase project), instead of the committed dev defaults;
- `/sdk/js/native1api.mjs`: our JS SDK, which the page imports;
- `/`: a redirect to the page.

Anything else is 404, including paths that climb out with `..`. Responses are `no-store`: a
developer editing the page never sees a stale copy. Standard library only; one thread per
connection.

    python -m devstack.web --port 8090 --gateway-url http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mimetypes
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

REPO = Path(__file__).resolve().parents[1]
PAGE_DIR = REPO / "examples" / "web-chat"
SDK_FILE = REPO / "sdk" / "js" / "native1api.mjs"
PAGE_PATH = "/examples/web-chat/"
DEFAULT_MODEL = "@cf/meta/llama-3.2-3b-instruct"

# Browsers refuse to run an ES module served with a non-JavaScript type; Python's table may lack
# .mjs (it depends on the system's mime.types).
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class PageConfig:
    """What the page needs to know about the stack (served as its `config.json`)."""

    gateway_url: str
    project_id: str = "demo-native1api"
    auth_emulator_url: str | None = None
    default_model: str = DEFAULT_MODEL

    def as_json(self) -> dict[str, Any]:
        return {
            "gatewayUrl": self.gateway_url,
            "firebase": {
                # Any API key works against the Auth Emulator; a real app puts its own here.
                "apiKey": "demo-api-key",
                "authDomain": f"{self.project_id}.firebaseapp.com",
                "projectId": self.project_id,
            },
            "authEmulatorUrl": self.auth_emulator_url,
            "defaultModel": self.default_model,
        }


def _resolve(path: str) -> Path | None:
    """The file for a URL path, or None when it is not one the page may load."""
    if path == "/sdk/js/native1api.mjs":
        return SDK_FILE
    if not path.startswith(PAGE_PATH):
        return None
    relative = path.removeprefix(PAGE_PATH) or "index.html"
    if relative.endswith("/"):
        relative += "index.html"
    candidate = (PAGE_DIR / relative).resolve()
    if not candidate.is_relative_to(PAGE_DIR) or not candidate.is_file():
        return None
    # The vendoring script and its notes are in the directory, but not part of the page.
    if candidate.suffix not in _TYPES:
        return None
    return candidate


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "native1api-devstack-web"
    sys_version = ""

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, *, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if path in ("/", "/examples/web-chat"):
            self._send(HTTPStatus.FOUND, b"", "text/plain", head, location=PAGE_PATH)
            return
        if path == PAGE_PATH + "config.json":
            body = json.dumps(self.server.page_config.as_json(), indent=2).encode()
            self._send(HTTPStatus.OK, body, "application/json", head)
            return
        file = _resolve(path)
        if file is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", head)
            return
        content_type = _TYPES.get(file.suffix) or (
            mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        )
        self._send(HTTPStatus.OK, file.read_bytes(), content_type, head)

    def _send(
        self, status: HTTPStatus, body: bytes, content_type: str, head: bool, location: str = ""
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if location:
            self.send_header("Location", location)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet: every asset request of every reload would fill the devstack's terminal.
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], page_config: PageConfig) -> None:
        self.page_config = page_config
        super().__init__(address, _Handler)


class WebServer:
    """The static server on a background thread. Port 0 picks a free port."""

    def __init__(self, host: str, port: int, page_config: PageConfig) -> None:
        self._server = _Server((host, port), page_config)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="devstack-web", daemon=True
        )

    @property
    def origin(self) -> str:
        """`http://HOST:PORT`: what the bridge's BRIDGE_CORS_ORIGINS must contain."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def page_url(self) -> str:
        return self.origin + PAGE_PATH

    def start(self) -> WebServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@contextlib.contextmanager
def serving(host: str, port: int, page_config: PageConfig) -> Iterator[WebServer]:
    """`with serving("127.0.0.1", 0, config) as web:` ... then stopped."""
    server = WebServer(host, port, page_config).start()
    try:
        yield server
    finally:
        server.stop()


def origins_for(origin: str) -> list[str]:
    """The origins a browser may use for the page: `127.0.0.1` and `localhost` are different
    origins to a browser, and a newcomer may type either."""
    scheme, _, rest = origin.partition("://")
    host, _, port = rest.rpartition(":")
    if host in ("127.0.0.1", "localhost"):
        return [f"{scheme}://127.0.0.1:{port}", f"{scheme}://localhost:{port}"]
    return [origin]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.web", description="Serve examples/web-chat/ for a running stack."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--gateway-url", default="http://127.0.0.1:8080")
    parser.add_argument("--auth-emulator-url", default="http://127.0.0.1:9099")
    parser.add_argument("--project", default="demo-native1api")
    args = parser.parse_args(argv)
    config = PageConfig(args.gateway_url, args.project, args.auth_emulator_url or None)
    server = WebServer(args.host, args.port, config)
    print(f"serving {server.page_url} (Ctrl-C stops)", flush=True)  # noqa: T201
    with contextlib.suppress(KeyboardInterrupt):
        server._server.serve_forever()
    server._server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
