"""The real openai SDK against the fakes' OpenAI-shaped endpoints, quirks included.

Workers AI's ``/ai/v1`` is documented to work with ``base_url=…/ai/v1``; OpenRouter and Together
are OpenAI-compatible with extras (padding, comments, ``eos``, extra usage chunks) that the SDK
must tolerate. A provider's mid-stream error frame must surface as ``openai.APIError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import openai
import pytest

from fakes import openrouter, together, workers_ai
from fakes.app import FakeApp
from fakes.content import reply_text
from fakes.server import serve_in_thread

KEY = "sdk-key"
CASES: dict[str, tuple[Callable[..., FakeApp], str, str]] = {
    "workers-ai": (
        workers_ai.create_app,
        "/accounts/acct/ai/v1",
        "@cf/meta/llama-3.1-8b-instruct-fp8",
    ),
    "openrouter": (openrouter.create_app, "", "meta-llama/llama-3.2-3b-instruct"),
    "together": (together.create_app, "", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def target(request: pytest.FixtureRequest) -> Iterator[tuple[FakeApp, str, str]]:
    factory, suffix, model = CASES[request.param]
    app = factory(tokens=[KEY], chunks=3)
    with serve_in_thread(app) as base_url:
        yield app, base_url + suffix, model


def sdk(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0)


async def test_non_stream(target: tuple[FakeApp, str, str]) -> None:
    _, base_url, model = target
    async with sdk(base_url) as client:
        completion = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=20
        )
    assert completion.choices[0].message.content == reply_text("hi", 3)
    assert completion.usage is not None and completion.usage.completion_tokens == 3


async def test_stream(target: tuple[FakeApp, str, str]) -> None:
    _, base_url, model = target
    async with sdk(base_url) as client:
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
        )
        text = ""
        finish: list[str] = []
        async for chunk in stream:
            for choice in chunk.choices:
                text += choice.delta.content or ""
                if choice.finish_reason:
                    finish.append(choice.finish_reason)
    assert text == reply_text("hi", 3)
    assert finish and finish[0] in ("stop", "eos")


async def test_mid_stream_error_raises_api_error(target: tuple[FakeApp, str, str]) -> None:
    app, base_url, model = target
    app.control.error_next(1)
    async with sdk(base_url) as client:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=20, stream=True
        )
        with pytest.raises(openai.APIError):
            async for _chunk in stream:
                pass


async def test_bad_key_is_authentication_error(target: tuple[FakeApp, str, str]) -> None:
    _, base_url, model = target
    async with openai.AsyncOpenAI(base_url=base_url, api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}]
            )
