"""Which provider serves a request, under which model id, with which credential (SPEC §6)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from gateway_service import errors
from gateway_service.providers.base import Provider

DEFAULT_ALIASES: Final = Path(__file__).with_name("aliases.json")
WORKERS_AI_PREFIXES: Final = ("@cf/", "@hf/")


def is_workers_ai_model(model: str) -> bool:
    return model.startswith(WORKERS_AI_PREFIXES)


class AliasTable:
    """Workers AI ids translated to each BYOK provider's id for the same model."""

    def __init__(self, table: Mapping[str, Mapping[str, str]]) -> None:
        self._table = {model: dict(ids) for model, ids in table.items()}

    @classmethod
    def load(cls, path: Path = DEFAULT_ALIASES) -> AliasTable:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls({k: v for k, v in raw.items() if not k.startswith("_")})

    def translate(self, model: str, provider: str) -> str | None:
        return self._table.get(model, {}).get(provider)


@dataclass(frozen=True, slots=True)
class ByokKey:
    """A user's own provider key, as the vault returned it."""

    provider: str
    api_key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Route:
    provider: Provider
    model: str
    api_key: str = field(repr=False)
    byok: bool


class Router:
    """Routes to Workers AI with the operator's token, or to the BYOK provider with the user's
    key. Never falls back from a BYOK provider to the platform account."""

    def __init__(
        self,
        *,
        aliases: AliasTable,
        workers_ai: Provider,
        workers_ai_token: str,
        byok_providers: Mapping[str, Provider],
    ) -> None:
        self._aliases = aliases
        self._workers_ai = workers_ai
        self._workers_ai_token = workers_ai_token
        self._byok = dict(byok_providers)

    def route(self, model: str, key: ByokKey | None) -> Route:
        if key is None:
            if not is_workers_ai_model(model):
                raise errors.model_not_found(
                    model,
                    f"The model `{model}` is not a Workers AI model (ids start with @cf/ or "
                    "@hf/). Save an OpenRouter or Together key with POST /v1/vault to use "
                    "other models.",
                )
            return Route(self._workers_ai, model, self._workers_ai_token, byok=False)
        provider = self._byok[key.provider]
        upstream_model = model
        if is_workers_ai_model(model):
            translated = self._aliases.translate(model, key.provider)
            if translated is None:
                raise errors.model_not_found(
                    model,
                    f"The model `{model}` has no equivalent on {key.provider}, where your "
                    f"stored key sends requests. Use a {key.provider} model id, or delete the "
                    "key to use Workers AI.",
                )
            upstream_model = translated
        return Route(provider, upstream_model, key.api_key, byok=True)

    def for_listing(self, key: ByokKey | None) -> Route:
        """The provider whose catalog a caller sees."""
        if key is None:
            return Route(self._workers_ai, "", self._workers_ai_token, byok=False)
        return Route(self._byok[key.provider], "", key.api_key, byok=True)
