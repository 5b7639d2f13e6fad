"""Fixtures for the browser tests: the web-chat example in headless Chromium, against real servers.

What runs, all on free loopback ports:

- the real Firebase Auth Emulator (`tests.integration.conftest.run_auth_emulator`, one per session);
- fake Workers AI / OpenRouter / Together upstreams, in this process (so a test can read what they
  saw, e.g. when the browser's Stop reached the upstream);
- the vault, the gateway and the REST bridge as subprocesses, the commands compose runs, with
  emulator-mode auth, a limits file and `BRIDGE_CORS_ORIGINS` naming the page's origin only;
- the devstack's static server (`devstack.web`) twice: the page's origin, and a second origin the
  bridge does not allow;
- Debian's Chromium (`/usr/bin/chromium`, or `NATIVE1API_CHROMIUM`) driven by Playwright, headless.
  Playwright's own browser downloads are never used.

Without Chromium the tests skip, saying how to install it; with `NATIVE1API_REQUIRE_BROWSER=1`
(set by `.ci/run`) they fail instead. Without Node/firebase-tools they skip or fail like the other
Auth Emulator tests (`CI` set: fail).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from devstack.web import PageConfig, WebServer
from fakes import FakeApp, openrouter, together, workers_ai
from fakes.behavior import Behavior
from fakes.content import last_user_text
from fakes.control import RequestRecord
from fakes.server import serve_in_thread
from tests.integration.conftest import AuthEmulator, run_auth_emulator
from tests.support.procs import Service, free_port

CHROMIUM: str = os.environ.get("NATIVE1API_CHROMIUM", "/usr/bin/chromium")
INSTALL_HINT = "sudo apt-get install -y chromium (Debian/Ubuntu), or set NATIVE1API_CHROMIUM"
# Flags for a quiet, offline, reproducible headless run: no sandbox (containers, root), no GPU,
# no QUIC, and none of Chromium's own background traffic (updates, sync, field trials).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

PROJECT = "demo-native1api"
MASTER_KEY = "browser-master-passphrase-0123456789-abcdef"
SERVICE_TOKEN = "browser-service-token-0123456789"
START_ATTEMPTS = 3
CF_TOKEN = "browser-cf-token-0123456789"
OR_KEY = "sk-or-v1-" + "b0b0" * 16
MODEL = "@cf/meta/llama-3.2-3b-instruct"
# Every reply streams as CHUNKS pieces CHUNK_DELAY apart: slow enough that the page shows
# intermediate states, fast enough for a quick suite.
CHUNKS = 12
CHUNK_DELAY = 0.06
# The anonymous tier allows one completion a minute: the second one shows the 429.
LIMITS = """\
[tiers.default]
requests_per_minute = 1000
tokens_per_day = 10000000
max_concurrent_requests = 8

[tiers.anonymous]
requests_per_minute = 1
"""


def _browser_problem() -> str | None:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"Chromium not found at {CHROMIUM}; install it: {INSTALL_HINT}"
    return None


@dataclass
class WebStack:
    """The running servers as the tests see them."""

    tmp: Path
    emulator: AuthEmulator
    bridge_url: str
    page: WebServer  # the origin the bridge allows
    other: WebServer  # the same page from an origin the bridge does not allow
    workers_ai: FakeApp
    openrouter: FakeApp
    services: dict[str, Service] = field(default_factory=dict)

    def upstream_records(self, prompt: str) -> list[tuple[str, RequestRecord]]:
        """(provider, record) of every upstream chat request whose last user text is `prompt`."""
        return [
            (name, record)
            for name, fake in (("workers-ai", self.workers_ai), ("openrouter", self.openrouter))
            for record in fake.control.requests
            if isinstance(record.body, dict) and last_user_text(record.body) == prompt
        ]

    @property
    def bridge_log(self) -> str:
        return self.services["bridge"].log


# Module scope, not session: Playwright's sync API runs an event loop on this thread while it is
# started, and pytest-asyncio's tests elsewhere in the suite cannot run theirs meanwhile.
@pytest.fixture(scope="module")
def playwright_instance() -> Iterator[Playwright]:
    problem = _browser_problem()
    if problem is not None:
        if os.environ.get("NATIVE1API_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{problem} (NATIVE1API_REQUIRE_BROWSER=1: a failure, not a skip)")
        pytest.skip(problem)
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    """Chromium, headless. Each test gets its own context: a fresh profile (storage, cookies)."""
    browser = playwright_instance.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
    )
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(scope="session")
def browser_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthEmulator]:
    with run_auth_emulator(tmp_path_factory.mktemp("browser-auth-emulator")) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def web_stack(
    tmp_path_factory: pytest.TempPathFactory, browser_emulator: AuthEmulator
) -> Iterator[WebStack]:
    tmp = tmp_path_factory.mktemp("web-stack")
    wai = workers_ai.create_app(tokens=[CF_TOKEN], account_id="acct")
    orr = openrouter.create_app(tokens=[OR_KEY])
    tog = together.create_app(tokens=["tgp_unused"])
    for fake in (wai, orr):
        fake.control.defaults = Behavior(chunks=CHUNKS, chunk_delay=CHUNK_DELAY)
    with contextlib.ExitStack() as stack:
        wai_url = stack.enter_context(serve_in_thread(wai))
        orr_url = stack.enter_context(serve_in_thread(orr))
        tog_url = stack.enter_context(serve_in_thread(tog))
        urls = {"WORKERS_AI": wai_url, "OPENROUTER": orr_url, "TOGETHER": tog_url}
        for attempt in range(1, START_ATTEMPTS + 1):
            web = _start_stack(stack, tmp / f"attempt-{attempt}", browser_emulator, urls, wai, orr)
            if web is not None:
                break
        else:
            pytest.fail(f"the stack did not start in {START_ATTEMPTS} attempts: ports taken")
        yield web
    # Nothing secret in any service's log, whatever the tests did.
    for path in tmp.glob("*/*.log"):
        text = path.read_text(errors="replace")
        for secret in (OR_KEY, CF_TOKEN, MASTER_KEY, SERVICE_TOKEN):
            assert secret not in text, f"a secret leaked into {path}"
        assert "eyJ" not in text, f"something JWT-shaped was logged in {path}"


def _start_stack(
    stack: contextlib.ExitStack,
    tmp: Path,
    emulator: AuthEmulator,
    upstreams: dict[str, str],
    wai: FakeApp,
    orr: FakeApp,
) -> WebStack | None:
    """Web servers, vault, gateway and bridge on fresh free ports, stopped when `stack` closes.

    None when a port picked as free was taken before the service bound it (other test runs on
    the machine): the caller tries again with new ports.
    """
    tmp.mkdir()
    limits = tmp / "limits.toml"
    limits.write_text(LIMITS, encoding="utf-8")
    ports = {name: free_port() for name in ("vault", "gateway", "bridge")}
    bridge_url = f"http://127.0.0.1:{ports['bridge']}"
    config = PageConfig(bridge_url, PROJECT, emulator.base_url)
    page_server = stack.enter_context(_web_server(config))
    other_server = stack.enter_context(_web_server(config))
    env = {
        "FIREBASE_PROJECT_ID": PROJECT,
        "FIREBASE_AUTH_EMULATOR_HOST": emulator.host_port,
        "VAULT_MASTER_KEY": MASTER_KEY,
        "SERVICE_TOKEN": SERVICE_TOKEN,
        "VAULT_DATABASE_URL": f"sqlite:///{tmp}/vault.db",
        # Never the default data/usage.db: that is relative to the repository (the cwd).
        "USAGE_DATABASE_URL": f"sqlite:///{tmp}/usage.db",
        "VAULT_LISTEN_ADDR": f"127.0.0.1:{ports['vault']}",
        "GATEWAY_LISTEN_ADDR": f"127.0.0.1:{ports['gateway']}",
        "BRIDGE_LISTEN_ADDR": f"127.0.0.1:{ports['bridge']}",
        "VAULT_ADDR": f"127.0.0.1:{ports['vault']}",
        "GATEWAY_ADDR": f"127.0.0.1:{ports['gateway']}",
        "CLOUDFLARE_ACCOUNT_ID": "acct",
        "CLOUDFLARE_API_TOKEN": CF_TOKEN,
        **{f"{name}_BASE_URL": url for name, url in upstreams.items()},
        "LIMITS_FILE": str(limits),
        # The page's origin only: the other server's origin must be refused.
        "BRIDGE_CORS_ORIGINS": page_server.origin,
        "GATEWAY_METRICS_ADDR": f"127.0.0.1:{free_port()}",
        "BRIDGE_METRICS_ADDR": f"127.0.0.1:{free_port()}",
        "LOG_LEVEL": "INFO",
    }
    web = WebStack(
        tmp=tmp,
        emulator=emulator,
        bridge_url=bridge_url,
        page=page_server,
        other=other_server,
        workers_ai=wai,
        openrouter=orr,
    )
    stack.callback(_stop_services, web)
    for name, module in (
        ("vault", "vault_service"),
        ("gateway", "gateway_service"),
        ("bridge", "rest_bridge"),
    ):
        service = Service(module, env, tmp / f"{name}.log").start()
        web.services[name] = service
        try:
            if name == "bridge":
                service.wait_http_ready(f"{bridge_url}/readyz")
            else:
                service.wait_grpc_healthy(env[f"{name.upper()}_ADDR"])
        except AssertionError:
            if "in use" not in service.log:
                raise
            _stop_services(web)
            return None
    return web


def _stop_services(web: WebStack) -> None:
    for service in reversed(web.services.values()):
        if service.process is not None and service.process.poll() is None:
            service.terminate()


@contextlib.contextmanager
def _web_server(config: PageConfig) -> Iterator[WebServer]:
    server = WebServer("127.0.0.1", 0, config).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 1200, "height": 820})
    try:
        yield context
    finally:
        context.close()


@dataclass
class ChatPage:
    """The web-chat page in a browser tab, driven the way a user would."""

    page: Page
    errors: list[str] = field(default_factory=list)

    def open(self, url: str) -> ChatPage:
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready='true']")
        return self

    def sign_up(self) -> str:
        """Create an email/password account in the page; returns its email."""
        email = f"user-{uuid.uuid4().hex[:10]}@example.com"
        self.page.fill("#email", email)
        self.page.fill("#password", "browser-test-password")
        self.page.click("#sign-up")
        self.wait_ready()
        return email

    def sign_in_anonymously(self) -> None:
        self.page.click("#sign-in-anon")
        self.page.wait_for_selector("#signed-in:not([hidden])")

    def wait_ready(self) -> None:
        """Signed in, and the vault status, models and usage loaded."""
        self.page.wait_for_selector("#signed-in:not([hidden])")
        self.page.wait_for_function("document.getElementById('status').textContent === 'Ready.'")

    def send(self, prompt: str) -> None:
        self.page.fill("#prompt", prompt)
        self.page.click("#send")

    def last_answer(self) -> str:
        return "#transcript li.assistant:last-child"

    def wait_answer_state(self, *states: str) -> str:
        """Wait until the last answer's data-state is one of `states`; return it."""
        selector = ", ".join(f"{self.last_answer()}[data-state='{state}']" for state in states)
        element = self.page.wait_for_selector(selector)
        assert element is not None
        state = element.get_attribute("data-state")
        assert state is not None
        return state

    def answer_text(self) -> str:
        return self.page.inner_text(f"{self.last_answer()} .text")

    def error_text(self) -> str | None:
        box = self.page.locator("#error")
        return None if box.is_hidden() else box.inner_text()


@pytest.fixture
def chat(context: BrowserContext) -> Iterator[ChatPage]:
    page = ChatPage(context.new_page())
    yield page
    assert page.errors == [], f"uncaught errors in the page: {page.errors}"


@pytest.fixture
def prompt_id() -> str:
    """A word of this test's own, so prompts (and the fakes' records of them) never collide."""
    return uuid.uuid4().hex[:8]
