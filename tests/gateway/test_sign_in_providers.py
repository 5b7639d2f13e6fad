"""FIREBASE_ALLOWED_SIGN_IN_PROVIDERS: a token from another sign-in method is 403 (SPEC §11),
in both gRPC services and through the REST bridge."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import grpc
import pytest

from native1api.gateway.v1 import chat_pb2, gateway_service_pb2
from native1api.vault.v1 import vault_service_pb2
from tests.bridge.support import bridge_settings, chat_body, serve_bridge
from tests.support.rpc import error_details
from tests.support.stack import Stack, running_stack
from tests.support.tokens import TokenFactory, bearer
from vault_service.crypto import KeyRing


@pytest.fixture
async def stack(tmp_path: Path, tokens: TokenFactory, keyring: KeyRing) -> AsyncIterator[Stack]:
    options = {"allowed_sign_in_providers": frozenset({"password", "google.com"})}
    async with running_stack(tmp_path, tokens, keyring, verifier_options=options) as running:
        yield running


def anonymous(stack: Stack, uid: str) -> tuple[tuple[str, str], ...]:
    return bearer(stack.tokens.mint(uid, firebase={"sign_in_provider": "anonymous"}))


def request() -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(
        model="@cf/meta/llama-3.2-3b-instruct",
        messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, text="hi")],
    )


async def test_allowed_providers_pass_others_are_403(stack: Stack) -> None:
    google = bearer(stack.tokens.mint("g", firebase={"sign_in_provider": "google.com"}))
    reply = await stack.gateway.CreateChatCompletion(
        gateway_service_pb2.CreateChatCompletionRequest(request=request()), metadata=google
    )
    assert reply.completion.choices
    calls: dict[str, Awaitable[object]] = {
        "gateway": stack.gateway.CreateChatCompletion(
            gateway_service_pb2.CreateChatCompletionRequest(request=request()),
            metadata=anonymous(stack, "anon-1"),
        ),
        "models": stack.gateway.ListModels(
            gateway_service_pb2.ListModelsRequest(), metadata=anonymous(stack, "anon-1")
        ),
        "vault": stack.vault.GetApiKeyStatus(
            vault_service_pb2.GetApiKeyStatusRequest(), metadata=anonymous(stack, "anon-1")
        ),
    }
    for name, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
        info = error_details(caught.value)
        assert info.reason == "SIGN_IN_PROVIDER_NOT_ALLOWED"
        assert info.metadata["code"] == "sign_in_provider_not_allowed"
    # A token without any sign-in provider is refused too (it is not on the list).
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.gateway.ListModels(
            gateway_service_pb2.ListModelsRequest(),
            metadata=bearer(stack.tokens.mint("none", firebase={})),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_bridge_answers_403_in_the_envelope(stack: Stack) -> None:
    async with serve_bridge(bridge_settings(stack.gateway_address, stack.vault_address)) as bridge:
        token = stack.tokens.mint("anon-2", firebase={"sign_in_provider": "anonymous"})
        async with bridge.client(token) as http:
            for response in (
                await http.post("/v1/chat/completions", json=chat_body("hi")),
                await http.post("/v1/chat/completions", json=chat_body("hi", stream=True)),
                await http.get("/v1/vault"),
            ):
                assert response.status_code == 403
                error = response.json()["error"]
                assert (error["type"], error["code"]) == (
                    "permission_error",
                    "sign_in_provider_not_allowed",
                )
