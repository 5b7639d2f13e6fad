"""Request and response shapes, for validation (vault body) and the OpenAPI document.

The chat request is parsed by `rpc_common.openai.request_from_json` (its rules are shared with
gRPC callers), so it is described here only as a JSON schema for the docs; the vault body is a
strict pydantic model that FastAPI validates (its errors are rendered as 400, never 422).
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope, used for every error on every endpoint."""

    error: ErrorDetail


class ModelEntry(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelEntry]


class VaultStatus(BaseModel):
    """Whether the caller has a stored key, and its provider. Never the key."""

    exists: bool
    provider: Literal["openrouter", "together"] | None = Field(
        default=None, description="Present only when `exists` is true."
    )


class PutKeyBody(BaseModel):
    """`POST /v1/vault` body. Unknown fields are refused rather than silently dropped."""

    model_config = ConfigDict(extra="forbid")

    api_key: StrictStr = Field(alias="apiKey", description="The provider key; never echoed.")
    provider: Literal["openrouter", "together"] | None = Field(
        default=None, description="Omit to infer it from the key's format."
    )
    validate_key: StrictBool = Field(
        default=False,
        alias="validate",
        description="Check the key with the provider before storing it.",
    )

    @field_validator("api_key")
    @classmethod
    def _encodable(cls, value: str) -> str:
        # stdlib JSON accepts lone surrogates ("\ud800"), which cannot travel in a proto string.
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("apiKey must be valid Unicode text") from None
        return value


class HealthStatus(BaseModel):
    status: str


class ReadyStatus(BaseModel):
    status: str
    backends: dict[str, bool]


_NUMBER: Final = {"type": "number"}
CHAT_REQUEST_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["model", "messages"],
    "additionalProperties": True,
    "properties": {
        "model": {"type": "string", "example": "@cf/meta/llama-3.2-3b-instruct"},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role"],
                "properties": {
                    "role": {
                        "type": "string",
                        "enum": ["system", "developer", "user", "assistant", "tool", "function"],
                    },
                    "content": {
                        "anyOf": [
                            {"type": "string"},
                            {"type": "array", "items": {"type": "object"}},
                            {"type": "null"},
                        ]
                    },
                    "name": {"type": "string"},
                    "tool_call_id": {"type": "string"},
                    "tool_calls": {"type": "array", "items": {"type": "object"}},
                },
            },
        },
        "stream": {"type": "boolean"},
        "stream_options": {
            "type": "object",
            "properties": {"include_usage": {"type": "boolean"}},
        },
        "temperature": {**_NUMBER, "minimum": 0, "maximum": 2},
        "top_p": {**_NUMBER, "minimum": 0, "maximum": 1},
        "n": {"type": "integer", "minimum": 1},
        "max_tokens": {"type": "integer", "minimum": 1},
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "presence_penalty": {**_NUMBER, "minimum": -2, "maximum": 2},
        "frequency_penalty": {**_NUMBER, "minimum": -2, "maximum": 2},
        "stop": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "maxItems": 4},
            ]
        },
        "seed": {"type": "integer"},
        "tools": {"type": "array", "items": {"type": "object"}},
        "tool_choice": {"anyOf": [{"type": "string"}, {"type": "object"}]},
        "response_format": {"type": "object"},
        "user": {"type": "string"},
    },
}

CHAT_RESPONSE_CONTENT: Final[dict[str, Any]] = {
    "application/json": {
        "schema": {
            "type": "object",
            "description": "An OpenAI `chat.completion` (when `stream` is false).",
        }
    },
    "text/event-stream": {
        "schema": {
            "type": "string",
            "description": "`data: <chat.completion.chunk>` frames, then `data: [DONE]` "
            "(when `stream` is true).",
        }
    },
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for error statuses, all with the OpenAI envelope."""
    return {status: {"model": ErrorResponse} for status in statuses}


class LimitValues(BaseModel):
    """One number per limit kind; null where the tier has no such limit."""

    requests_per_minute: int | None
    tokens_per_day: int | None
    max_concurrent_requests: int | None


class ResetSeconds(BaseModel):
    """Seconds until the request bucket is full and until the UTC token day ends."""

    requests_per_minute: float | None
    tokens_per_day: float | None


class ProviderUsage(BaseModel):
    requests: int
    prompt_tokens: int
    completion_tokens: int


class DayUsage(BaseModel):
    date: str = Field(description="The UTC day, YYYY-MM-DD.")
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    by_provider: dict[str, ProviderUsage]


class ModelHistory(BaseModel):
    """One provider and model's totals on one day, from the usage ledger."""

    provider: str
    model: str = Field(description="The model id as sent to the provider (what it bills).")
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float | None = Field(
        description="The priced completions' cost in USD; null when none had a price."
    )
    unpriced_requests: int = Field(description="Completions without a price, not in cost_usd.")
    estimated_requests: int = Field(
        description="Completions whose tokens are estimates (the provider reported no usage)."
    )


class DayHistory(BaseModel):
    date: str = Field(description="The UTC day, YYYY-MM-DD.")
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float | None
    unpriced_requests: int
    by_model: list[ModelHistory]


class UsageHistory(BaseModel):
    """The caller's days with usage from `from` to `to` (inclusive), oldest first."""

    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    days: list[DayHistory]


class UsageReport(BaseModel):
    """`GET /v1/usage`: the caller's tier, limits, what remains, and today's totals; with
    `?from=YYYY-MM-DD[&to=YYYY-MM-DD]`, also the caller's history from the usage ledger."""

    object: Literal["usage"] = "usage"
    tier: str
    limits: LimitValues
    remaining: LimitValues
    reset_seconds: ResetSeconds
    in_flight: int
    today: DayUsage
    history: UsageHistory | None = Field(
        default=None, description="Only when `from` (and optionally `to`) were given."
    )
