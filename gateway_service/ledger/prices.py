"""The price table: USD per million input and output tokens, per provider and model, as data.

The file is TOML, one table per provider, one inline table per model id as sent upstream:

    [workers-ai]
    "@cf/meta/llama-3.2-3b-instruct" = { input = 0.0509, output = 0.335 }

A completion's cost is the provider's own figure when it reports one (OpenRouter's
`usage.cost`), else input x prompt tokens + output x completion tokens from this table, else
unknown (None): never a guess from a similar model.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from native1api.gateway.v1 import chat_pb2
from rpc_common.config import ConfigError

PROVIDERS: Final = frozenset({"workers-ai", "openrouter", "together"})
_PER_TOKENS: Final = 1_000_000

CostSource = Literal["provider", "price_table"]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / _PER_TOKENS


@dataclass(frozen=True)
class PriceTable:
    """(provider, model) -> Price; `source` names the file for messages."""

    prices: dict[tuple[str, str], Price] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def load(cls, path: Path | None) -> PriceTable:
        """Read and check the file (None: an empty table, every cost unknown).

        Raises ConfigError naming USAGE_PRICES_FILE, the file, and the provider and model at fault.
        """
        if path is None:
            return cls()
        where = f"USAGE_PRICES_FILE ({path})"
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read the file ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from None
        prices: dict[tuple[str, str], Price] = {}
        for provider, models in data.items():
            if provider not in PROVIDERS:
                raise ConfigError(
                    f"{where}: unknown provider [{provider}]; known: {', '.join(sorted(PROVIDERS))}"
                )
            if not isinstance(models, dict):
                raise ConfigError(f"{where}: [{provider}] must be a table of models")
            for model, entry in models.items():
                prices[(provider, model)] = _price(where, provider, model, entry)
        return cls(prices, str(path))

    def price(self, provider: str, model: str) -> Price | None:
        return self.prices.get((provider, model))

    def cost(
        self, provider: str, model: str, usage: chat_pb2.Usage | None, prompt: int, completion: int
    ) -> tuple[float | None, CostSource | None]:
        """The completion's cost in USD and where it came from; (None, None) when unknown."""
        if usage is not None and usage.HasField("cost") and math.isfinite(usage.cost):
            return usage.cost, "provider"
        price = self.prices.get((provider, model))
        if price is None:
            return None, None
        return price.cost(prompt, completion), "price_table"


def _price(where: str, provider: str, model: str, entry: object) -> Price:
    name = f'{where}: [{provider}] "{model}"'
    if not isinstance(entry, dict) or set(entry) != {"input", "output"}:
        raise ConfigError(f"{name} must be {{ input = <USD>, output = <USD> }} per million tokens")
    values = []
    for key in ("input", "output"):
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name}: {key} must be a number")
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name}: {key} must be a finite number ≥ 0")
        values.append(float(value))
    return Price(values[0], values[1])
