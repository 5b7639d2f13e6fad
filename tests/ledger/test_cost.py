"""Cost: the price table times the tokens, the provider's own figure when it reports one, and
null (never a guess) for a model without a price."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gateway_service.ledger import PriceTable, entry_from_record
from gateway_service.ledger.settings import SHIPPED_PRICES, UsageSettings
from gateway_service.request_log import RequestRecord
from native1api.gateway.v1 import chat_pb2
from rpc_common.config import ConfigError

LLAMA = "@cf/meta/llama-3.2-3b-instruct"


def finished(
    provider: str, model: str, usage: chat_pb2.Usage | None, streamed: int = 0
) -> RequestRecord:
    record = RequestRecord("req-1", "uid-1", "StreamChatCompletion", model=model, provider=provider)
    record.routed(model, provider != "workers-ai", prompt_estimate=40)
    record.usage = usage
    record.streamed_characters = streamed
    record.latency_ms = 250.0
    return record


def test_a_known_price_times_the_reported_tokens() -> None:
    prices = PriceTable.load(SHIPPED_PRICES)
    usage = chat_pb2.Usage(prompt_tokens=1200, completion_tokens=300, total_tokens=1500)
    entry = entry_from_record(finished("workers-ai", LLAMA, usage), 1_765_000_000.0, prices)
    # config/prices.toml: 0.0509 USD per million input tokens, 0.335 per million output.
    assert entry.cost_usd is not None
    assert math.isclose(entry.cost_usd, (1200 * 0.0509 + 300 * 0.335) / 1_000_000)
    assert entry.cost_source == "price_table"
    assert (entry.prompt_tokens, entry.completion_tokens, entry.total_tokens) == (1200, 300, 1500)
    assert not entry.estimated


def test_the_providers_reported_cost_wins_over_the_table(tmp_path: Path) -> None:
    table = tmp_path / "prices.toml"
    table.write_text('[openrouter]\n"meta-llama/x" = { input = 100.0, output = 100.0 }\n')
    prices = PriceTable.load(table)
    usage = chat_pb2.Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15, cost=0.000123)
    entry = entry_from_record(finished("openrouter", "meta-llama/x", usage), 0.0, prices)
    assert entry.cost_usd == 0.000123
    assert entry.cost_source == "provider"
    assert entry.byok


def test_an_unknown_model_has_a_null_cost() -> None:
    prices = PriceTable.load(SHIPPED_PRICES)
    usage = chat_pb2.Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15)
    for provider, model in (("workers-ai", "@cf/unknown/model"), ("together", "x/y")):
        entry = entry_from_record(finished(provider, model, usage), 0.0, prices)
        assert entry.cost_usd is None and entry.cost_source is None


def test_without_usage_the_settlement_estimate_is_recorded_and_flagged() -> None:
    prices = PriceTable.load(SHIPPED_PRICES)
    cut = entry_from_record(finished("workers-ai", LLAMA, None, streamed=41), 0.0, prices)
    assert cut.estimated
    assert (cut.prompt_tokens, cut.completion_tokens, cut.total_tokens) == (40, 11, 51)
    assert cut.cost_usd is not None and cut.cost_source == "price_table"
    failed = entry_from_record(finished("workers-ai", LLAMA, None), 0.0, prices)
    assert failed.estimated and (failed.prompt_tokens, failed.completion_tokens) == (0, 0)


def test_the_record_time_is_when_the_request_arrived() -> None:
    record = finished("workers-ai", LLAMA, None)
    entry = entry_from_record(record, 1_765_000_000.25, PriceTable())
    assert entry.created_at.timestamp() == pytest.approx(1_765_000_000.0)
    assert entry.created_at.utcoffset() is not None


def test_the_shipped_table_loads_and_covers_the_default_model() -> None:
    prices = PriceTable.load(SHIPPED_PRICES)
    assert prices.price("workers-ai", LLAMA) is not None
    assert UsageSettings.from_env({}).prices.prices == prices.prices


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[azure]\n", "unknown provider [azure]"),
        ('[together]\n"m" = { input = -1, output = 1 }\n', "input must be a finite number"),
        ('[together]\n"m" = { input = 1 }\n', "must be { input = <USD>, output = <USD> }"),
        ('[together]\n"m" = { input = "1", output = 1 }\n', "input must be a number"),
        ("[together\n", "not valid TOML"),
    ],
)
def test_a_bad_price_file_is_refused_naming_it(tmp_path: Path, text: str, message: str) -> None:
    table = tmp_path / "prices.toml"
    table.write_text(text)
    with pytest.raises(ConfigError) as caught:
        UsageSettings.from_env({"USAGE_PRICES_FILE": str(table)})
    assert "USAGE_PRICES_FILE" in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        ({"USAGE_DATABASE_URL": "mysql://x"}, "USAGE_DATABASE_URL"),
        ({"USAGE_DATABASE_URL": "sqlite:///"}, "USAGE_DATABASE_URL"),
        ({"USAGE_PRICES_FILE": "/nonexistent/prices.toml"}, "USAGE_PRICES_FILE"),
        ({"USAGE_QUEUE_MAX": "0"}, "USAGE_QUEUE_MAX"),
        ({"USAGE_BATCH_SIZE": "x"}, "USAGE_BATCH_SIZE"),
        ({"USAGE_FLUSH_SECONDS": "-1"}, "USAGE_FLUSH_SECONDS"),
    ],
)
def test_bad_settings_name_their_variable(environ: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        UsageSettings.from_env(environ)
    assert name in str(caught.value)


def test_a_postgres_url_never_shows_in_the_settings_repr() -> None:
    settings = UsageSettings.from_env({"USAGE_DATABASE_URL": "postgresql://u:hunter2@db/x"})
    assert "hunter2" not in repr(settings)
    assert UsageSettings.from_env({}).database_url == "sqlite:///data/usage.db"
