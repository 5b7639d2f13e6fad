"""`devstack.web`, the page's static server: what it serves, and nothing else."""

from __future__ import annotations

import socket

import httpx

from devstack.web import PageConfig, origins_for, serving

CONFIG = PageConfig("http://127.0.0.1:18080", "demo-x", "http://127.0.0.1:19099")


def _raw_get(origin: str, path: str) -> int:
    """The status for a request line sent as is (an HTTP client would normalise `..` away)."""
    host, port = origin.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        return int(sock.recv(64).split()[1])


def test_it_serves_the_page_its_modules_and_a_config_for_the_stack() -> None:
    with serving("127.0.0.1", 0, CONFIG) as web, httpx.Client(base_url=web.origin) as client:
        assert web.page_url == web.origin + "/examples/web-chat/"
        root = client.get("/")
        assert root.status_code == 302 and root.headers["location"] == "/examples/web-chat/"
        page = client.get("/examples/web-chat/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script type="importmap">' in page.text
        assert page.headers["cache-control"] == "no-store"
        for path in (
            "/examples/web-chat/app.mjs",
            "/sdk/js/native1api.mjs",
            "/examples/web-chat/vendor/firebase/firebase-auth.js",
        ):
            response = client.get(path)
            assert response.status_code == 200, path
            # Browsers run ES modules only when served as JavaScript.
            assert response.headers["content-type"].startswith("text/javascript"), path
        config = client.get("/examples/web-chat/config.json").json()
        assert config["gatewayUrl"] == "http://127.0.0.1:18080"
        assert config["authEmulatorUrl"] == "http://127.0.0.1:19099"
        assert config["firebase"]["projectId"] == "demo-x"


def test_nothing_else_of_the_repository_is_served() -> None:
    with serving("127.0.0.1", 0, CONFIG) as web, httpx.Client(base_url=web.origin) as client:
        for path in (
            "/examples/web-chat/vendor/firebase/update.py",
            "/sdk/python/native1api_client.py",
            "/pyproject.toml",
            "/data/master.key",
        ):
            assert client.get(path).status_code == 404, path
        for path in (
            "/examples/web-chat/../../pyproject.toml",
            "/examples/web-chat/%2e%2e/%2e%2e/pyproject.toml",
            "/examples/web-chat/..%2f..%2fdata/master.key",
        ):
            assert _raw_get(web.origin, path) == 404, path


def test_origins_for_loopback_include_both_spellings() -> None:
    assert origins_for("http://127.0.0.1:8090") == [
        "http://127.0.0.1:8090",
        "http://localhost:8090",
    ]
    assert origins_for("http://10.0.0.5:8090") == ["http://10.0.0.5:8090"]
