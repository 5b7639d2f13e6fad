"""Together AI with the user's own key (reference/wire-formats.md §4).

On top of the shared OpenAI-shaped core (`openai_compat`):

- request: Together's documented extras are forwarded (`top_k`, `repetition_penalty`, `min_p`,
  `echo`, `safety_model`, `reasoning_effort`, `reasoning`); `max_completion_tokens` goes as
  `max_tokens` (the only name Together's API knows); OpenAI's boolean `logprobs` plus
  `top_logprobs` becomes Together's integer `logprobs`; a `json_schema` response format also
  carries the schema at `response_format.schema`, where Together's own SDK puts it;
- content parts: `text`, `image_url`, `video_url`, `audio_url` (others are refused);
- errors: the OpenAI envelope plus a top-level `id`, the 402 `{"type":"credit_limit"}` body,
  `text/plain` bodies; a 403 about the context length is a bad request, not an auth failure;
- `GET /models`: a bare JSON array, filtered to chat and language models.

`eos` finish reasons, `text`/`token_id`/`seed` fields and the unsolicited `choices: []` usage
chunk need nothing here: the shared readers map or ignore them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from gateway_service import errors
from gateway_service.providers.base import ProviderName
from gateway_service.providers.openai_compat import Models, OpenAICompatProvider, error_code_of
from gateway_service.upstream_http import Headers, HttpSettings, UpstreamClient
from native1api.gateway.v1 import gateway_service_pb2
from rpc_common.openai import UpstreamFormatError
from rpc_common.openai.upstream import int_of, list_of, object_of, string_of

__all__ = ["DEFAULT_BASE_URL", "Together"]

DEFAULT_BASE_URL: Final = "https://api.together.xyz/v1"

# Together's documented request fields without an OpenAI typed home (wire-formats §4.1 and
# docs.together.ai's chat-completions reference).
_EXTRAS: Final = frozenset(
    {
        "top_k",
        "repetition_penalty",
        "min_p",
        "echo",
        "safety_model",
        "reasoning_effort",
        "reasoning",
    }
)
_PART_TYPES: Final = frozenset({"text", "image_url", "video_url", "audio_url"})
# Model types usable with /chat/completions (the catalog also has image, embedding, rerank, ...).
_CHAT_TYPES: Final = frozenset({"chat", "language"})
_CONTEXT_WORDS: Final = ("context", "tokens")


class Together(OpenAICompatProvider):
    """Together's `/chat/completions` and `/models` with the caller's key."""

    name: ProviderName = "together"
    forwarded_extras: ClassVar[frozenset[str]] = _EXTRAS
    part_types: ClassVar[frozenset[str]] = _PART_TYPES

    def __init__(
        self, http: UpstreamClient, settings: HttpSettings, base_url: str = DEFAULT_BASE_URL
    ) -> None:
        super().__init__(http, settings, base_url)

    def _adapt_body(self, body: dict[str, Any], *, stream: bool) -> None:
        # Together's `logprobs` is the number of top log probabilities (an int, §4.1); OpenAI's
        # is a boolean with the count in `top_logprobs`, which Together does not know.
        wanted = body.pop("logprobs", None)
        top = body.pop("top_logprobs", None)
        if wanted is True:
            body["logprobs"] = max(1, top) if isinstance(top, int) else 1
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema")
            if isinstance(spec, dict) and "schema" in spec:
                # OpenAI clients nest the schema; Together's SDK sends it at `schema`. Both are
                # sent, so either reading finds it.
                fmt.setdefault("schema", spec["schema"])

    def _upstream_error(
        self,
        status: int,
        message: str,
        error: Mapping[str, Any],
        headers: Headers | None,
    ) -> errors.UpstreamHTTPError:
        provider_code = error_code_of(error)
        if status == 403:
            # Together's documented 403 is "input + max_tokens exceeds the context length"
            # (§4.4): the caller's request is too big, which is a 400. Any other 403 keeps its
            # status but gets a code, so it is never read as a rejected key (that is a 401).
            lowered = message.lower()
            if any(word in lowered for word in _CONTEXT_WORDS):
                status = 400
                provider_code = provider_code or "context_length_exceeded"
            else:
                provider_code = provider_code or "forbidden"
        return errors.UpstreamHTTPError(status, message, provider_code=provider_code)

    def _models_from_json(self, data: Any) -> Models:
        # A bare array (recorded, §4.5); `{"data": [...]}` is accepted too, in case Together
        # aligns with OpenAI one day.
        if isinstance(data, list):
            items = data
        else:
            body = object_of(data, "model list")
            if "data" not in body:
                raise UpstreamFormatError("the model list is neither an array nor has `data`")
            items = list_of(body["data"], "data")
        models: Models = []
        for raw in items:
            item = object_of(raw, "model")
            model_id = string_of(item.get("id"))
            kind = item.get("type")
            if not model_id or (isinstance(kind, str) and kind not in _CHAT_TYPES):
                continue
            owner = string_of(item.get("organization")) or string_of(item.get("owned_by"))
            models.append(
                gateway_service_pb2.Model(
                    id=model_id,
                    created=int_of(item.get("created"), "created"),
                    owned_by=owner or model_id.partition("/")[0],
                )
            )
        return models
