"""The web-chat example (`examples/web-chat/`) in headless Chromium, against the real stack.

A user's path through the page: sign up with the real Firebase Auth Emulator, stream an answer,
stop one, bring their own key and take it back, hit a rate limit, get a refreshed token; and the
browser's CORS rules: the page's origin is allowed, another origin is refused before any request.
"""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Route
from playwright.sync_api import Request as BrowserRequest
from playwright.sync_api import Response as BrowserResponse

from fakes.content import reply_text
from fakes.control import DisconnectEvent
from tests.browser import screenshots
from tests.browser.conftest import CHUNKS, OR_KEY, ChatPage, WebStack

pytestmark = [pytest.mark.emulator, pytest.mark.e2e]

# Records every text the answer shows, in order, from inside the page: a MutationObserver sees
# each change, where polling from Python could miss short-lived ones.
_WATCH_ANSWER = """() => {
  window.__answerStates = [];
  const seen = window.__answerStates;
  new MutationObserver(() => {
    const text = document.querySelector('#transcript li.assistant:last-child .text');
    if (text && seen[seen.length - 1] !== text.textContent) seen.push(text.textContent);
  }).observe(document.getElementById('transcript'),
             {subtree: true, childList: true, characterData: true});
}"""

_CHAT_PATH = "/v1/chat/completions"


def _chat_responses(chat: ChatPage) -> list[BrowserResponse]:
    """Every response to a chat request the page gets from now on (preflights excluded)."""
    seen: list[BrowserResponse] = []

    def keep(response: BrowserResponse) -> None:
        if response.url.endswith(_CHAT_PATH) and response.request.method == "POST":
            seen.append(response)

    chat.page.on("response", keep)
    return seen


def test_sign_up_and_stream_an_answer(
    chat: ChatPage, context: BrowserContext, web_stack: WebStack, tmp_path: Path
) -> None:
    chat.open(web_stack.page.page_url)
    email = chat.sign_up()
    assert chat.page.inner_text("#user") == email
    assert chat.page.get_attribute("#vault-status", "data-provider") == "workers-ai"
    assert chat.page.input_value("#model") == "@cf/meta/llama-3.2-3b-instruct"
    chat.page.evaluate(_WATCH_ANSWER)

    prompt = "Hello! What can you do?"
    chat.send(prompt)
    assert chat.wait_answer_state("done", "error") == "done", chat.error_text()
    expected = reply_text(prompt, CHUNKS)
    assert chat.answer_text() == expected
    # Token by token: the page showed growing prefixes of the answer before the whole of it.
    states = [state for state in chat.page.evaluate("window.__answerStates") if state]
    intermediate = [state for state in states if state != expected]
    assert len(intermediate) >= 2, states
    assert all(expected.startswith(state) for state in intermediate), states
    assert states[-1] == expected
    assert chat.page.get_attribute(chat.last_answer(), "data-provider") == "workers-ai"
    assert chat.error_text() is None

    # The admitted request's x-ratelimit-* state, and the user's /v1/usage after it.
    requests_row = chat.page.inner_text("#ratelimit").split("\n")[:2]
    assert requests_row[0] == "Requests"
    assert re.fullmatch(r"999 of 1,000 left, full again in \d+m?s", requests_row[1]), requests_row
    chat.page.wait_for_function(
        "document.getElementById('usage').textContent.includes('1 request,')"
    )
    assert "default" in chat.page.inner_text("#usage")

    # The finished chat, for the artifacts (and the README when asked): not a blank page.
    png = screenshots.take(chat.page, tmp_path / "web-chat.png")
    measured = screenshots.measure(context, png)
    assert measured["width"] >= 1000 and measured["height"] >= 600, measured
    assert measured["colours"] >= 50, measured


def test_stop_cancels_the_stream_up_to_the_provider(
    chat: ChatPage, web_stack: WebStack, prompt_id: str
) -> None:
    chat.open(web_stack.page.page_url)
    chat.sign_up()
    prompt = f"A long story {prompt_id} [[fake:chunks=300]]"
    chat.send(prompt)
    # Some of the answer is on the page: the stream is under way.
    chat.page.wait_for_function(
        "(document.querySelector('#transcript li.assistant:last-child .text')"
        "?.textContent.split(' ').length ?? 0) >= 3"
    )
    [(provider, record)] = web_stack.upstream_records(prompt)
    assert provider == "workers-ai"
    pressed = time.monotonic()
    chat.page.click("#stop")

    assert chat.wait_answer_state("stopped", "error", "done") == "stopped"
    assert chat.error_text() is None  # stopping is not an error
    assert chat.page.inner_text("#status") == "Stopped."
    shown = chat.answer_text()
    assert shown and reply_text(prompt, 300).startswith(shown)

    # The provider saw the client go away within a second of the click.
    event = _wait_for_disconnect(web_stack, record.seq, within=5.0)
    assert event.at - pressed < 1.0, event
    assert event.phase == "streaming"
    assert event.content_chunks_sent < 300
    # The page is usable again.
    assert chat.page.is_enabled("#send")
    assert not chat.page.is_enabled("#stop")


def _wait_for_disconnect(web_stack: WebStack, seq: int, within: float) -> DisconnectEvent:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for event in web_stack.workers_ai.control.disconnects:
            if event.seq == seq:
                return event
        time.sleep(0.02)
    raise AssertionError(f"the upstream never saw request {seq} disconnect")


def test_own_key_switches_the_provider_and_back(
    chat: ChatPage, web_stack: WebStack, prompt_id: str
) -> None:
    chat.open(web_stack.page.page_url)
    chat.sign_up()
    chat.page.fill("#vault-key", OR_KEY)
    chat.page.click("#vault-save")
    chat.page.wait_for_selector("#vault-status[data-provider='openrouter']")
    assert "OpenRouter key saved" in chat.page.inner_text("#vault-status")
    assert chat.page.input_value("#vault-key") == ""  # the key does not stay in the page
    # The model list is now OpenRouter's.
    chat.page.wait_for_function("document.getElementById('model').value.includes('/')")

    byok_prompt = f"On my own key {prompt_id}"
    chat.send(byok_prompt)
    assert chat.wait_answer_state("done", "error") == "done", chat.error_text()
    assert chat.page.get_attribute(chat.last_answer(), "data-provider") == "openrouter"
    assert chat.answer_text() == reply_text(byok_prompt, CHUNKS)
    [(provider, record)] = web_stack.upstream_records(byok_prompt)
    assert provider == "openrouter"
    assert record.header("authorization") == f"Bearer {OR_KEY}"

    chat.page.click("#vault-delete")
    chat.page.wait_for_selector("#vault-status[data-provider='workers-ai']")
    chat.page.wait_for_function(
        "document.getElementById('model').value === '@cf/meta/llama-3.2-3b-instruct'"
    )
    platform_prompt = f"Back on the platform {prompt_id}"
    chat.send(platform_prompt)
    assert chat.wait_answer_state("done", "error") == "done", chat.error_text()
    assert chat.page.get_attribute(chat.last_answer(), "data-provider") == "workers-ai"
    assert [provider for provider, _ in web_stack.upstream_records(platform_prompt)] == [
        "workers-ai"
    ]


def _access_lines(web_stack: WebStack, method: str, route: str, status: int | None = None) -> int:
    """How many of the bridge's access-log lines are for `method route` (and `status`)."""
    wanted = f" {method} {route} " + ("" if status is None else f"{status} ")
    return sum(
        1
        for line in web_stack.bridge_log.splitlines()
        if "rest_bridge.access" in line and wanted in line
    )


# A cross-origin request with an Authorization header: the browser sends a preflight first, and
# sends the request itself only if the preflight allows this origin.
_PROBE = """async (url) => {
  try {
    const response = await fetch(url, {headers: {Authorization: 'Bearer not-a-token'}});
    return {status: response.status, request_id: response.headers.get('x-request-id')};
  } catch (err) {
    return {failed: String(err)};
  }
}"""


def test_cors_allows_the_page_origin_and_refuses_another(
    chat: ChatPage, context: BrowserContext, web_stack: WebStack, prompt_id: str
) -> None:
    # From the page's origin the preflight passes: the request itself gets the gateway's answer
    # (401 for a bad token), whose headers the page may read.
    chat.open(web_stack.page.page_url)
    probe = chat.page.evaluate(_PROBE, web_stack.bridge_url + "/v1/models")
    assert probe["status"] == 401 and probe["request_id"], probe
    chat.sign_up()
    allowed_prompt = f"From the allowed origin {prompt_id}"
    chat.send(allowed_prompt)
    assert chat.wait_answer_state("done", "error") == "done", chat.error_text()

    # The same page from another origin: the browser sends the preflight, the bridge refuses it,
    # and the browser sends nothing more.
    other = ChatPage(context.new_page()).open(web_stack.other.page_url)
    refused_before = _access_lines(web_stack, "OPTIONS", "unmatched", 400)
    models_before = _access_lines(web_stack, "GET", "/v1/models")
    probe = other.page.evaluate(_PROBE, web_stack.bridge_url + "/v1/models")
    assert "failed" in probe, probe
    assert _access_lines(web_stack, "GET", "/v1/models") == models_before
    assert _access_lines(web_stack, "OPTIONS", "unmatched", 400) > refused_before

    chat_posts_before = _access_lines(web_stack, "POST", _CHAT_PATH)
    other.sign_in_anonymously()  # the Auth Emulator itself allows any origin
    other.page.wait_for_selector("#error:not([hidden])")
    assert "does not allow this page's origin" in (other.error_text() or "")
    refused_prompt = f"From a foreign origin {prompt_id}"
    failures: list[BrowserRequest] = []
    other.page.on("requestfailed", lambda request: failures.append(request))
    other.send(refused_prompt)
    other.page.wait_for_function(
        "document.getElementById('error').textContent.includes('Cannot reach the gateway')"
        " && !document.getElementById('send').disabled"
    )
    assert any(request.url.endswith(_CHAT_PATH) for request in failures)
    # No chat request from that origin reached the bridge's handler, nor any upstream.
    assert _access_lines(web_stack, "POST", _CHAT_PATH) == chat_posts_before
    assert web_stack.upstream_records(refused_prompt) == []
    assert other.errors == []


def _expired_copy(id_token: str) -> str:
    """The same emulator ID token (unsigned, `alg: none`) with its lifetime moved into the past."""
    header, payload, signature = id_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    now = int(time.time())
    claims.update(iat=now - 7200, exp=now - 3600, auth_time=min(claims["auth_time"], now - 7200))
    encoded = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{encoded}.{signature}"


def test_an_expired_token_is_refreshed_once(
    chat: ChatPage, context: BrowserContext, web_stack: WebStack, prompt_id: str
) -> None:
    """The page holds a token the gateway finds expired (as after a laptop slept): the client
    gets a fresh one from Firebase once, resends, and the user sees the answer."""
    context.clock.install()  # the page's clock, which Firebase's token cache goes by
    chat.open(web_stack.page.page_url)
    chat.sign_up()

    # The next token refresh returns an already-expired token that Firebase's cache believes
    # fresh for an hour; later refreshes go to the emulator untouched.
    refreshes: list[str] = []

    def refresh(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        if not refreshes:
            # The JS SDK keeps `access_token` (the same JWT as `id_token`); forge both.
            body["id_token"] = body["access_token"] = _expired_copy(body["id_token"])
            refreshes.append("expired")
        else:
            refreshes.append("fresh")
        route.fulfill(response=response, json=body)

    context.route(re.compile(r"/securetoken\.googleapis\.com/v1/token"), refresh)
    # An hour later by the page's clock, its token is due for renewal.
    chat.page.clock.fast_forward("01:00:00")
    responses = _chat_responses(chat)
    prompt = f"After a long nap {prompt_id}"
    chat.send(prompt)

    assert chat.wait_answer_state("done", "error") == "done", chat.error_text()
    assert chat.answer_text() == reply_text(prompt, CHUNKS)
    assert [response.status for response in responses] == [401, 200], refreshes
    assert refreshes == ["expired", "fresh"]
    assert 'error="invalid_token"' in (responses[0].header_value("www-authenticate") or "")
    assert "refreshed" in chat.page.inner_text("#notice")
    assert chat.error_text() is None
    # Exactly one request reached the upstream: the 401 was the bridge's, before any model work.
    assert len(web_stack.upstream_records(prompt)) == 1


def test_a_rate_limited_request_shows_when_to_retry(
    chat: ChatPage, web_stack: WebStack, prompt_id: str
) -> None:
    chat.open(web_stack.page.page_url)
    chat.sign_in_anonymously()  # the anonymous tier allows one completion a minute
    chat.wait_ready()
    assert "anonymous" in chat.page.inner_text("#usage")
    responses = _chat_responses(chat)
    chat.send(f"First {prompt_id}")
    assert chat.wait_answer_state("done", "error") == "done", chat.error_text()

    refused_prompt = f"Second {prompt_id}"
    chat.send(refused_prompt)
    chat.page.wait_for_selector("#error:not([hidden])")
    assert [response.status for response in responses] == [200, 429]
    retry_after = responses[1].header_value("retry-after")
    assert retry_after is not None and int(retry_after) >= 1
    message = chat.error_text() or ""
    assert message.startswith("Rate limit reached"), message
    assert f"Try again in {retry_after} s." in message
    assert web_stack.upstream_records(refused_prompt) == []
    # The refused prompt left no empty answer behind, and the page accepts input again.
    assert chat.page.locator("#transcript li.assistant").count() == 1
    assert chat.page.is_enabled("#send")


def test_a_provider_failure_is_a_readable_502(
    chat: ChatPage, web_stack: WebStack, prompt_id: str
) -> None:
    chat.open(web_stack.page.page_url)
    chat.sign_up()
    responses = _chat_responses(chat)
    # Workers AI refuses the platform's credentials: not the user's fault, a 502 for them.
    chat.send(f"Provider trouble {prompt_id} [[fake:status=401]]")
    chat.page.wait_for_selector("#error:not([hidden])")
    assert [response.status for response in responses] == [502]
    message = chat.error_text() or ""
    assert message.startswith("The AI provider failed (502): "), message
    assert "Try again" in message
    assert "(request " in message  # the x-request-id, to quote when reporting it
    assert chat.page.locator("#transcript li.assistant").count() == 0
    assert chat.page.is_enabled("#send")
