"""OpenRouter with the user's own key (reference/wire-formats.md §3).

On top of the shared OpenAI-shaped core (`openai_compat`):

- request: OpenRouter's documented extras are forwarded (`provider`, `models`, `route`,
  `transforms`, `reasoning`, `usage`, the extra samplers, ...); usage is always requested, also
  with the legacy `usage: {"include": true}` switch; `max_completion_tokens` goes as
  `max_tokens`, the name OpenRouter's routing checks providers against (§3.2);
- attribution headers `HTTP-Referer` and `X-OpenRouter-Title` (plus the older `X-Title`);
- errors `{"error":{"code":<status>,"message":…,"metadata":…}}`: an unknown model (400 "… is
  not a valid model ID") is model-not-found, a 403 is a moderation block (OpenRouter reports a
  bad key as 401), a 429 without `Retry-After` honours `X-RateLimit-Reset`;
- `GET /models`: `{"data":[…]}`, owner taken from the id's vendor prefix.

Whitespace-padded bodies, `: OPENROUTER PROCESSING` comments, the usage chunk repeating the
finish reason and mid-stream error chunks are handled by the shared core.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from gateway_service import errors
from gateway_service.providers.base import ProviderName
from gateway_service.providers.openai_compat import Models, OpenAICompatProvider
from gateway_service.upstream_http import Headers, HttpSettings, UpstreamClient
from native1api.gateway.v1 import gateway_service_pb2
from rpc_common.openai import UpstreamFormatError
from rpc_common.openai.upstream import int_of, list_of, object_of, string_of

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_REFERER", "DEFAULT_TITLE", "OpenRouter"]

DEFAULT_BASE_URL: Final = "https://openrouter.ai/api/v1"
DEFAULT_REFERER: Final = "https://github.com/native1api"
DEFAULT_TITLE: Final = "Native1API"

# OpenRouter's documented request fields without an OpenAI typed home (wire-formats §3.2 and
# openrouter.ai/docs/api-reference/parameters). `include_reasoning` is the legacy reasoning
# switch still listed in models' `supported_parameters`.
_EXTRAS: Final = frozenset(
    {
        "provider",
        "models",
        "route",
        "transforms",
        "reasoning",
        "include_reasoning",
        "usage",
        "top_k",
        "min_p",
        "top_a",
        "repetition_penalty",
        "prediction",
        "plugins",
        "verbosity",
        "web_search_options",
    }
)
# Text parts with `cache_control` (prompt caching) arrive as `ContentPart.other` with type text.
_PART_TYPES: Final = frozenset({"text", "image_url", "input_audio", "file"})


class OpenRouter(OpenAICompatProvider):
    """OpenRouter's `/chat/completions` and `/models` with the caller's key."""

    name: ProviderName = "openrouter"
    forwarded_extras: ClassVar[frozenset[str]] = _EXTRAS
    part_types: ClassVar[frozenset[str]] = _PART_TYPES

    def __init__(
        self,
        http: UpstreamClient,
        settings: HttpSettings,
        base_url: str = DEFAULT_BASE_URL,
        *,
        referer: str = DEFAULT_REFERER,
        title: str = DEFAULT_TITLE,
    ) -> None:
        super().__init__(
            http,
            settings,
            base_url,
            headers={"http-referer": referer, "x-openrouter-title": title, "x-title": title},
        )

    def _adapt_body(self, body: dict[str, Any], *, stream: bool) -> None:
        # `usage.include` is the legacy switch (usage is now returned by default); LiteLLM still
        # sends it and so do we, merged into whatever else the client put in `usage`.
        usage = body.get("usage")
        if usage is None:
            body["usage"] = {"include": True}
        elif isinstance(usage, dict):
            body["usage"] = {**usage, "include": True}
        else:
            raise errors.unsupported_parameter(
                self.name, "usage", 'Expected an object such as {"include": true}.'
            )

    def _upstream_error(
        self,
        status: int,
        message: str,
        error: Mapping[str, Any],
        headers: Headers | None,
    ) -> errors.UpstreamHTTPError:
        code = error.get("code")
        provider_code: int | str | None = (
            code if isinstance(code, int | str) and not isinstance(code, bool) else None
        )
        if status == 400 and "not a valid model" in message.lower():
            provider_code = "model_not_available"  # errors._is_model_missing
        elif status == 403:
            # Moderation or guardrail block (§3.5); never a key problem, which is a 401. Without
            # this the echoed code 403 would read as an auth failure.
            provider_code = "moderation"
            metadata = error.get("metadata")
            reasons = metadata.get("reasons") if isinstance(metadata, dict) else None
            if isinstance(reasons, list) and reasons:
                message = f"{message} (reasons: {', '.join(str(r) for r in reasons[:5])})"
        retry_after: float | None = None
        if status == 429 and headers is not None and "retry-after" not in headers:
            retry_after = _reset_delay(headers.get("x-ratelimit-reset"))
        return errors.UpstreamHTTPError(
            status, message, provider_code=provider_code, retry_after=retry_after
        )

    def _models_from_json(self, data: Any) -> Models:
        body = object_of(data, "model list")
        if "data" not in body:
            raise UpstreamFormatError("the model list has no `data`")
        items = list_of(body["data"], "data")
        models: Models = []
        for raw in items:
            item = object_of(raw, "model")
            model_id = string_of(item.get("id"))
            if not model_id:
                continue
            vendor, slash, _ = model_id.partition("/")
            models.append(
                gateway_service_pb2.Model(
                    id=model_id,
                    created=int_of(item.get("created"), "created"),
                    owned_by=vendor if slash else "openrouter",
                )
            )
        return models


def _reset_delay(reset: str | None) -> float | None:
    """Seconds until `X-RateLimit-Reset` (a Unix time in milliseconds), if it is sane."""
    if not reset or not reset.isdigit():
        return None
    return max(0.0, int(reset) / 1000 - time.time())
