"""Firebase App Check on the gateway's completions (SPEC §11), through the real gRPC services.

`enforce` refuses every token of the attack table (UNAUTHENTICATED, APP_CHECK_FAILED, code
`invalid_app_check_token`) before any upstream call; `monitor` admits them all and counts them by
result; `off` ignores the header. ListModels and GetUsage are not guarded. The JWKS is fetched once
for many calls, and unknown kids do not make the gateway hammer the key endpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from fakes.content import last_user_text, reply_text
from native1api.gateway.v1 import chat_pb2, gateway_service_pb2
from rpc_common.auth import AppCheckMode
from tests.support.app_check import ATTACKS, AppCheckFactory, app_check
from tests.support.logcheck import assert_logs_clean
from tests.support.rpc import error_details, reason
from tests.support.stack import Stack, running_stack
from tests.support.tokens import TokenFactory, bearer
from vault_service.crypto import KeyRing

pytestmark = pytest.mark.asyncio(loop_scope="module")

LLAMA = "@cf/meta/llama-3.2-3b-instruct"
RPCS = ("unary", "stream")
RESULTS = ("valid", "missing", "invalid", "unavailable")
Metadata = tuple[tuple[str, str], ...]


@pytest.fixture(autouse=True)
def _call_logs_clean(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    assert_logs_clean(caplog)


@pytest.fixture(scope="module")
def factory() -> AppCheckFactory:
    return AppCheckFactory()


@pytest.fixture(scope="module")
def attacks(factory: AppCheckFactory) -> dict[str, str]:
    return factory.attacks()


def _stack(
    path: Path, tokens: TokenFactory, keyring: KeyRing, factory: AppCheckFactory, mode: str
) -> contextlib.AbstractAsyncContextManager[Stack]:
    settings = factory.settings(AppCheckMode(mode))
    return running_stack(path, tokens, keyring, app_check=settings, app_check_tokens=factory)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def enforce(
    tmp_path_factory: pytest.TempPathFactory,
    tokens: TokenFactory,
    keyring: KeyRing,
    factory: AppCheckFactory,
) -> AsyncIterator[Stack]:
    path = tmp_path_factory.mktemp("enforce")
    async with _stack(path, tokens, keyring, factory, "enforce") as stack:
        yield stack


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def monitor(
    tmp_path_factory: pytest.TempPathFactory,
    tokens: TokenFactory,
    keyring: KeyRing,
    factory: AppCheckFactory,
) -> AsyncIterator[Stack]:
    path = tmp_path_factory.mktemp("monitor")
    async with _stack(path, tokens, keyring, factory, "monitor") as stack:
        yield stack


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def off(
    tmp_path_factory: pytest.TempPathFactory,
    tokens: TokenFactory,
    keyring: KeyRing,
    factory: AppCheckFactory,
) -> AsyncIterator[Stack]:
    async with _stack(tmp_path_factory.mktemp("off"), tokens, keyring, factory, "off") as stack:
        yield stack


def chat(prompt: str) -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(
        model=LLAMA, messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, text=prompt)]
    )


def creds(stack: Stack, uid: str, token: str | None) -> Metadata:
    return stack.user(uid) + (app_check(token) if token is not None else ())


async def complete(stack: Stack, rpc: str, metadata: Metadata, prompt: str) -> str:
    """The completion's text, by the unary or the streaming RPC."""
    if rpc == "unary":
        reply = await stack.gateway.CreateChatCompletion(
            gateway_service_pb2.CreateChatCompletionRequest(request=chat(prompt)),
            metadata=metadata,
        )
        return reply.completion.choices[0].message.content
    call = stack.gateway.StreamChatCompletion(
        gateway_service_pb2.StreamChatCompletionRequest(request=chat(prompt)), metadata=metadata
    )
    return "".join([c.delta.content async for m in call for c in m.chunk.choices])


async def refused(stack: Stack, rpc: str, metadata: Metadata, prompt: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await complete(stack, rpc, metadata, prompt)
    return caught.value


def upstream_saw(stack: Stack, prompt: str) -> bool:
    return any(
        isinstance(record.body, dict) and last_user_text(record.body) == prompt
        for record in stack.workers_ai.control.requests
    )


def counts(stack: Stack) -> dict[str, float | None]:
    registry = stack.gateway_app.metrics.registry
    return {
        result: registry.get_sample_value("native1api_gateway_app_check_total", {"result": result})
        for result in RESULTS
    }


def assert_app_check_failed(error: grpc.aio.AioRpcError, token: str | None) -> None:
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED, error.details()
    info = error_details(error)
    assert info.reason == "APP_CHECK_FAILED"
    assert dict(info.metadata) == {"code": "invalid_app_check_token"}
    details = error.details() or ""
    assert details.startswith("App Check token")
    if token is not None:
        assert token not in details
        assert token not in str(info)


# --- enforce ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rpc", RPCS)
async def test_enforce_admits_a_valid_token(
    enforce: Stack, factory: AppCheckFactory, rpc: str
) -> None:
    prompt = f"app check valid {rpc}"
    text = await complete(enforce, rpc, creds(enforce, "ac-valid", factory.mint()), prompt)
    assert text == reply_text(prompt)


@pytest.mark.parametrize("attack", [*ATTACKS, "missing"])
@pytest.mark.parametrize("rpc", RPCS)
async def test_enforce_refuses(
    enforce: Stack,
    attacks: dict[str, str],
    rpc: str,
    attack: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = attacks.get(attack)
    prompt = f"app check {attack} {rpc}"
    error = await refused(enforce, rpc, creds(enforce, "ac-attacker", token), prompt)
    assert_app_check_failed(error, token)
    assert not upstream_saw(enforce, prompt), "refused before any upstream call"
    assert_logs_clean(caplog, *([token] if token else []))


async def test_enforce_refusal_is_recorded_with_its_reason(
    enforce: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    registry = enforce.gateway_app.metrics.registry
    labels = {"rpc": "CreateChatCompletion", "provider": "none", "status": "UNAUTHENTICATED"}
    before = registry.get_sample_value("native1api_gateway_requests_total", labels) or 0
    await refused(enforce, "unary", creds(enforce, "ac-log", None), "app check log")
    assert registry.get_sample_value("native1api_gateway_requests_total", labels) == before + 1
    lines = [r.getMessage() for r in caplog.records if r.name == "native1api.requests"]
    assert any("status=UNAUTHENTICATED reason=APP_CHECK_FAILED" in line for line in lines)


@pytest.mark.parametrize("app_check_token", ["valid", "missing"])
async def test_the_id_token_is_checked_first(
    enforce: Stack, factory: AppCheckFactory, tokens: TokenFactory, app_check_token: str
) -> None:
    """Without a valid ID token the call is refused for that, whatever the App Check token."""
    extra = app_check(factory.mint()) if app_check_token == "valid" else ()
    expired = tokens.mint("ac-first", exp=1_000_000_000, iat=999_999_000, auth_time=999_999_000)
    for metadata in (extra, bearer(expired) + extra):
        error = await refused(enforce, "unary", metadata, "app check order")
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert reason(error).startswith("TOKEN_")


async def test_listing_models_and_usage_are_not_guarded(enforce: Stack) -> None:
    user = enforce.user("ac-unguarded")  # no App Check token
    models = await enforce.gateway.ListModels(
        gateway_service_pb2.ListModelsRequest(), metadata=user
    )
    assert len(models.models) > 0
    await enforce.gateway.GetUsage(gateway_service_pb2.GetUsageRequest(), metadata=user)


async def test_keys_are_fetched_once_and_unknown_kids_do_not_refetch(
    enforce: Stack, factory: AppCheckFactory, attacks: dict[str, str]
) -> None:
    app = enforce.gateway_app.app_check
    assert app is not None and app.verifier is not None
    keys = app.verifier.key_source
    for n in range(12):
        # Distinct tokens (their jti differs), so the verified-token cache cannot answer.
        prompt = f"app check keys {n}"
        text = await complete(enforce, "unary", creds(enforce, "ac-keys", factory.mint()), prompt)
        assert text == reply_text(prompt)
        unknown = factory.mint(headers={"kid": f"unknown-{n}"})
        error = await refused(enforce, "unary", creds(enforce, "ac-keys", unknown), "unknown")
        assert_app_check_failed(error, unknown)
    # One fetch for everything: within the 30 s cooldown, unknown kids refetch nothing.
    assert keys.fetch_count == 1


async def test_enforce_counts_by_result(enforce: Stack, factory: AppCheckFactory) -> None:
    before = counts(enforce)
    await complete(enforce, "unary", creds(enforce, "ac-count", factory.mint()), "ac count")
    await refused(enforce, "unary", creds(enforce, "ac-count", None), "ac count")
    await refused(enforce, "unary", creds(enforce, "ac-count", "x.y.z"), "ac count")
    after = counts(enforce)
    assert {r: (after[r] or 0) - (before[r] or 0) for r in RESULTS} == {
        "valid": 1,
        "missing": 1,
        "invalid": 1,
        "unavailable": 0,
    }


# --- monitor ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attack", "result"),
    [("valid", "valid"), ("missing", "missing")] + [(a, "invalid") for a in ATTACKS],
)
async def test_monitor_admits_and_counts(
    monitor: Stack,
    factory: AppCheckFactory,
    attacks: dict[str, str],
    attack: str,
    result: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = factory.mint() if attack == "valid" else attacks.get(attack)
    prompt = f"app check monitor {attack}"
    before = counts(monitor)
    text = await complete(monitor, "unary", creds(monitor, "ac-monitor", token), prompt)
    assert text == reply_text(prompt)
    after = counts(monitor)
    delta = {r: (after[r] or 0) - (before[r] or 0) for r in RESULTS}
    assert delta == {r: 1 if r == result else 0 for r in RESULTS}
    assert_logs_clean(caplog, *([token] if token else []))


async def test_monitor_admits_streams_too(monitor: Stack, attacks: dict[str, str]) -> None:
    before = counts(monitor)["invalid"] or 0
    metadata = creds(monitor, "ac-monitor", attacks["expired"])
    assert await complete(monitor, "stream", metadata, "ac monitor stream") == reply_text(
        "ac monitor stream"
    )
    assert counts(monitor)["invalid"] == before + 1


# --- off -------------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", [*ATTACKS, "missing"])
async def test_off_ignores_the_header(off: Stack, attacks: dict[str, str], attack: str) -> None:
    prompt = f"app check off {attack}"
    metadata = creds(off, "ac-off", attacks.get(attack))
    for rpc in RPCS:
        assert await complete(off, rpc, metadata, prompt) == reply_text(prompt)
    app = off.gateway_app.app_check
    assert app is not None and app.mode is AppCheckMode.OFF and app.verifier is None
    assert counts(off) == dict.fromkeys(RESULTS)  # nothing verified, nothing counted
