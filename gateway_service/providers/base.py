"""The contract between the gateway servicer and each upstream provider adapter."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from native1api.gateway.v1 import chat_pb2, gateway_service_pb2

ProviderName = Literal["workers-ai", "openrouter", "together"]

PROVIDER_ENUM: dict[ProviderName, gateway_service_pb2.Provider.ValueType] = {
    "workers-ai": gateway_service_pb2.PROVIDER_WORKERS_AI,
    "openrouter": gateway_service_pb2.PROVIDER_OPENROUTER,
    "together": gateway_service_pb2.PROVIDER_TOGETHER,
}


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One request as a provider adapter sees it."""

    request: chat_pb2.ChatCompletionRequest
    """The client's request, already validated; `request.model` is the id the client sent."""
    model: str
    """The provider's own id for the model (after alias translation)."""
    api_key: str = field(repr=False)
    """The credential: the operator's Cloudflare token, or the user's BYOK key."""
    byok: bool
    """True when `api_key` is the user's own key (changes how a 401 is reported)."""
    request_id: str


class Provider(Protocol):
    """An upstream. Adapters raise `rpc_common.status.RpcError` (built with
    `gateway_service.errors`) for every failure.

    `stream` yields OpenAI-shaped chunks: content / tool-call deltas, at least one chunk with a
    finish reason, and usage on some chunk (often a final `choices: []` chunk). It need not
    emit the leading role chunk, set ids, or de-duplicate finish chunks: the servicer's
    normaliser does that for every provider. Closing the generator must close the upstream
    connection at once.
    """

    name: ProviderName

    async def complete(self, call: UpstreamCall) -> chat_pb2.ChatCompletion: ...

    def stream(self, call: UpstreamCall) -> AsyncGenerator[chat_pb2.ChatCompletionChunk, None]: ...

    async def list_models(self, api_key: str, *, byok: bool) -> list[gateway_service_pb2.Model]: ...
