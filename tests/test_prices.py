"""Price table and pricing: worked cost examples, name matching, user overrides, file validation."""

from __future__ import annotations

import math
import re
import time
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from receiver.prices import (
    CANONICAL_PROVIDERS,
    PriceFileError,
    PriceRow,
    PriceTable,
    canonical_provider,
    model_candidates,
    normalize_model,
)


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


def usd(nusd: int) -> float:
    return nusd / 1e9


# --------------------------------------------------------------------------------------------------
# Worked cost examples (prices per 1M tokens; 1 nano-USD = 1e-9 USD)
# --------------------------------------------------------------------------------------------------


def test_anthropic_sonnet_45_with_cache_read_and_write(table: PriceTable) -> None:
    row = table.lookup("anthropic", "claude-sonnet-4-5-20250929")
    assert row is not None and row.id == "anthropic/claude-sonnet-4-5"
    assert (row.input, row.output, row.cache_read, row.cache_write) == (3.0, 15.0, 0.30, 3.75)
    # input 2360 = 12 uncached + 2048 cache read + 300 cache write; output 85
    #   12 x $3       =    36
    # 2048 x $0.30    =   614.4
    #  300 x $3.75    =  1125
    #   85 x $15      =  1275
    #                  = 3050.4 per 1M  ->  $0.0030504  ->  3_050_400 nUSD
    cost = table.cost_nusd(row, 2360, 85, 2048, 300, 0)
    assert cost == 3_050_400
    assert round(usd(cost), 2) == 0.00
    assert math.isclose(usd(cost), 0.0030504)


def test_openai_gpt4o_with_cached_tokens(table: PriceTable) -> None:
    row = table.lookup("openai", "gpt-4o-2024-08-06")
    assert row is not None and row.id == "openai/gpt-4o"
    assert row.cache_write == row.input == 2.50            # OpenAI: no cache-write surcharge
    # input 10_000 incl. 8_192 cached; output 500
    #  1_808 x $2.50 =  4_520
    #  8_192 x $1.25 = 10_240
    #    500 x $10   =  5_000
    #                = 19_760 per 1M -> $0.01976
    cost = table.cost_nusd(row, 10_000, 500, 8_192, 0, 0)
    assert cost == 19_760_000
    assert round(usd(cost), 2) == 0.02


def test_o3_mini_with_reasoning(table: PriceTable) -> None:
    row = table.lookup("openai", "o3-mini-2025-01-31")
    assert row is not None and row.id == "openai/o3-mini"
    # input 1_200; output 3_000 incl. 2_500 reasoning (reasoning priced as output: $4.40)
    #  1_200 x $1.10 =  1_320
    #    500 x $4.40 =  2_200
    #  2_500 x $4.40 = 11_000
    #                = 14_520 per 1M -> $0.01452
    cost = table.cost_nusd(row, 1_200, 3_000, 0, 0, 2_500)
    assert cost == 14_520_000
    assert round(usd(cost), 2) == 0.01


def test_reasoning_price_when_it_differs_from_output() -> None:
    row = _row(input=1.0, output=2.0, reasoning=8.0)
    # 1_000 in x $1 = 1_000; 600 plain out x $2 = 1_200; 400 reasoning x $8 = 3_200 -> 5_400 per 1M
    assert PriceTable.cost_nusd(row, 1_000, 1_000, 0, 0, 400) == 5_400_000


def test_embedding_cost(table: PriceTable) -> None:
    row = table.lookup("openai", "text-embedding-3-small")
    assert row is not None and row.kind == "embedding"
    # 12_345 x $0.02 = 246.9 per 1M -> $0.0002469
    assert table.cost_nusd(row, 12_345, 0, 0, 0, 0) == 246_900
    big = table.lookup("openai", "text-embedding-3-large")
    # 1_000_000 x $0.13 -> $0.13 exactly
    assert table.cost_nusd(big, 1_000_000, 0, 0, 0, 0) == 130_000_000


def test_gemini_25_pro_long_context_tier(table: PriceTable) -> None:
    row = table.lookup("gcp.gemini", "gemini-2.5-pro")
    assert row is not None and row.long_context_threshold == 200_000
    # 250_000 input (> 200k, so the whole call uses the long tier) incl. 100_000 cache read;
    # output 2_000 incl. 1_500 reasoning
    #  150_000 x $2.50 = 375_000
    #  100_000 x $0.25 =  25_000
    #      500 x $15   =   7_500
    #    1_500 x $15   =  22_500
    #                  = 430_000 per 1M -> $0.43
    cost = table.cost_nusd(row, 250_000, 2_000, 100_000, 0, 1_500)
    assert cost == 430_000_000
    assert round(usd(cost), 2) == 0.43
    # exactly 200_000 is not "above": base tier
    #  100_000 x $1.25 + 100_000 x $0.125 + 2_000 x $10 = 125_000 + 12_500 + 20_000 = 157_500 -> $0.1575
    assert table.cost_nusd(row, 200_000, 2_000, 100_000, 0, 1_500) == 157_500_000


def test_claude_sonnet_45_long_context_tier(table: PriceTable) -> None:
    row = table.lookup("anthropic", "claude-sonnet-4-5")
    # 300_000 input incl. 200_000 cache read + 50_000 cache write; output 1_000 (long tier)
    #  50_000 x $6    = 300_000
    # 200_000 x $0.60 = 120_000
    #  50_000 x $7.50 = 375_000
    #   1_000 x $22.5 =  22_500
    #                 = 817_500 per 1M -> $0.8175
    assert table.cost_nusd(row, 300_000, 1_000, 200_000, 50_000, 0) == 817_500_000


def test_haiku_55_prompt_size_bands(table: PriceTable) -> None:
    row = table.lookup("anthropic", "claude-haiku-5-5")
    assert row is not None and row.long_context_threshold == 100_000
    # 50_000 in (incl. 40_000 cache read) + 1_000 out, low band:
    # 10_000 x $0.10 + 40_000 x $0.01 + 1_000 x $0.50 = 1_000 + 400 + 500 = 1_900 -> $0.0019
    assert table.cost_nusd(row, 50_000, 1_000, 40_000, 0, 0) == 1_900_000
    # 150_000 in (incl. 100_000 cache read) + 1_000 out, high band:
    # 50_000 x $0.50 + 100_000 x $0.05 + 1_000 x $2.50 = 25_000 + 5_000 + 2_500 = 32_500 -> $0.0325
    assert table.cost_nusd(row, 150_000, 1_000, 100_000, 0, 0) == 32_500_000


def test_cost_is_exact_and_rounds_once_half_even() -> None:
    # $0.01875 / 1M = 18.75 nUSD per token: 4 tokens = 75 exactly, no float noise
    row = _row(input=0.01875, output=0.0)
    assert PriceTable.cost_nusd(row, 4, 0, 0, 0, 0) == 75
    # $0.0375 / 1M = 37.5 nUSD per token, rounded once at the end, half to even like round()
    half = _row(input=0.0375, output=0.0)
    assert PriceTable.cost_nusd(half, 1, 0, 0, 0, 0) == round(37.5) == 38
    assert PriceTable.cost_nusd(half, 3, 0, 0, 0, 0) == round(112.5) == 112
    assert PriceTable.cost_nusd(half, 2, 0, 0, 0, 0) == 75
    # large realistic call stays exact: 10M tokens at $0.075 -> $0.75
    assert PriceTable.cost_nusd(_row(input=0.075, output=0.3), 10_000_000, 0, 0, 0, 0) == 750_000_000


def test_inconsistent_token_counts_never_go_negative(table: PriceTable) -> None:
    row = table.lookup("openai", "gpt-4o")
    # cache_read larger than input: uncached clamps to 0; reasoning larger than output: plain clamps to 0
    # 500 x $1.25 + 10 x $10 (reasoning priced as output) = 625 + 100 = 725 -> 725_000 nUSD
    assert table.cost_nusd(row, 100, 5, 500, 0, 10) == 725_000
    assert table.cost_nusd(row, 0, 0, 0, 0, 0) == 0
    assert table.cost_nusd(row, -5, -5, -1, -1, -1) == 0


# --------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------

NORMALIZE_CASES = [
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
    ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
    ("anthropic.claude-3-5-sonnet-20240620-v1:0", "claude-3-5-sonnet"),
    ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
    ("models/gemini-2.5-flash", "gemini-2.5-flash"),
    ("gemini-1.5-pro-002", "gemini-1.5-pro"),
    ("o3-mini-2025-01-31", "o3-mini"),
    ("  OpenAI/GPT-4o  ", "gpt-4o"),
    ("anthropic/claude-3-5-sonnet@20241022", "claude-3-5-sonnet"),
    ("publishers/google/models/gemini-2.0-flash-001", "gemini-2.0-flash"),
    ("accounts/fireworks/models/llama-v3p1-8b-instruct", "llama-v3p1-8b-instruct"),
    ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
    ("gemini-1.5-pro-exp-0827", "gemini-1.5-pro"),
    ("amazon.nova-pro-v1:0", "nova-pro"),
    ("eu.amazon.nova-lite-v1:0", "nova-lite"),
    ("meta.llama3-3-70b-instruct-v1:0", "llama3-3-70b-instruct"),
    ("cohere.command-r-plus-v1:0", "command-r-plus"),
    ("amazon.titan-embed-text-v2:0", "titan-embed-text-v2"),
    ("text-embedding-ada-002", "text-embedding-ada-002"),
    ("text-embedding-004", "text-embedding-004"),
    ("gemini-embedding-001", "gemini-embedding-001"),
    ("command-r-08-2024", "command-r"),
    ("mistral-large-2411", "mistral-large"),
    ("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku"),
    # a region prefix is only stripped when a known vendor id follows
    ("us.something-else", "us.something-else"),
    ("amazon.unknown-model", "amazon.unknown-model"),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALIZE_CASES)
def test_normalize_model(raw: str, expected: str) -> None:
    assert normalize_model(raw) == expected


@pytest.mark.parametrize(("provider", "model", "expected_id"), [
    ("openai", "gpt-4o-2024-08-06", "openai/gpt-4o"),
    ("openai", "gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5-20250929", "anthropic/claude-sonnet-4-5"),
    ("anthropic", "claude-3-5-sonnet-20241022", "anthropic/claude-3-5-sonnet"),
    ("anthropic", "claude-3-5-sonnet-latest", "anthropic/claude-3-5-sonnet"),
    ("aws.bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", "aws.bedrock/claude-3-5-sonnet"),
    ("aws.bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "aws.bedrock/claude-sonnet-4-5"),
    ("gcp.gemini", "models/gemini-2.5-flash", "google/gemini-2.5-flash"),
    ("gcp.vertex_ai", "gemini-2.5-pro", "google/gemini-2.5-pro"),
    ("openai", "o3-mini-2025-01-31", "openai/o3-mini"),
    ("anthropic", "claude-sonnet-4.5", "anthropic/claude-sonnet-4-5"),
    ("anthropic", "claude-opus-4-1-20250805", "anthropic/claude-opus-4-1"),
    ("anthropic", "claude-haiku-4-5-20251001", "anthropic/claude-haiku-4-5"),
    (None, "amazon.nova-pro-v1:0", "aws.bedrock/nova-pro"),
    ("aws.bedrock", "amazon.titan-embed-text-v2:0", "aws.bedrock/titan-embed-text-v2"),
    ("aws.bedrock", "amazon.titan-embed-text-v1", "aws.bedrock/titan-embed-text-v1"),
    ("aws.bedrock", "us.anthropic.claude-opus-4-6-v1", "aws.bedrock/claude-opus-4-6-regional"),
    ("aws.bedrock", "global.anthropic.claude-opus-4-6-v1", "aws.bedrock/claude-opus-4-6"),
    ("mistral_ai", "mistral-large-latest", "mistral/mistral-large-3"),
    ("mistral", "mistral-large-2411", "mistral/mistral-large-2411"),
    ("cohere", "command-a-03-2025", "cohere/command-a"),
    ("x_ai", "grok-4-0709", "xai/grok-4"),
    ("deepseek", "deepseek-reasoner", "deepseek/deepseek-reasoner"),
    ("openai", "gpt-4o-2024-05-13", "openai/gpt-4o-2024-05-13"),   # a snapshot with its own price
])
def test_dated_and_prefixed_names_match(table: PriceTable, provider, model, expected_id) -> None:
    row = table.lookup(provider, model)
    assert row is not None, (provider, model)
    assert row.id == expected_id


@pytest.mark.parametrize(("small", "big"), [
    ("gpt-4o-mini", "gpt-4o"),
    ("gpt-4o-mini-2024-07-18", "gpt-4o"),
    ("o3-mini", "o3"),
    ("o3-mini-2025-01-31", "o3"),
    ("gpt-4.1-nano", "gpt-4.1"),
    ("gpt-4.1-mini", "gpt-4.1"),
    ("gpt-5-nano", "gpt-5"),
    ("gpt-5-mini", "gpt-5"),
    ("o4-mini", "o3"),
    ("gemini-2.5-flash-lite", "gemini-2.5-flash"),
    ("grok-3-mini", "grok-3"),
])
def test_smaller_models_never_price_as_the_bigger_one(table: PriceTable, small: str, big: str) -> None:
    small_row = table.lookup("openai" if small.startswith(("gpt", "o")) else None, small)
    big_row = table.lookup("openai" if big.startswith(("gpt", "o")) else None, big)
    assert small_row is not None and big_row is not None
    assert small_row.id != big_row.id
    assert small_row.input < big_row.input


@pytest.mark.parametrize("model", [
    "gpt-4o-mini-realtime-preview",    # no prefix matching: a different product is not gpt-4o-mini
    "gpt-4o-audio-preview",
    "totally-unknown-model",
    "claude-sonnet",                   # family without version
    "o3-mini-high-custom",
    "",
    "   ",
])
def test_unknown_model_is_unpriced(table: PriceTable, model: str) -> None:
    assert table.lookup("openai", model) is None
    assert table.lookup(None, model) is None


def test_none_model_is_unpriced(table: PriceTable) -> None:
    assert table.lookup("openai", None) is None


def test_reseller_and_unknown_provider_fall_back_to_the_maker(table: PriceTable) -> None:
    assert table.lookup("az.ai.openai", "gpt-4o").id == "openai/gpt-4o"
    assert table.lookup("some-gateway", "claude-haiku-4-5").id == "anthropic/claude-haiku-4-5"
    assert table.lookup(None, "gemini-2.5-flash").id == "google/gemini-2.5-flash"
    # the provider's own row wins over the maker's when both exist
    assert table.lookup("aws.bedrock", "claude-3-haiku").id == "aws.bedrock/claude-3-haiku"
    assert table.lookup("anthropic", "claude-3-haiku").id == "anthropic/claude-3-haiku"
    # a Bedrock-style id with no provider prefers the Bedrock row over the maker's
    assert table.lookup(None, "cohere.command-r-v1:0").id == "aws.bedrock/command-r"
    assert table.lookup("cohere", "command-r").id == "cohere/command-r"


def test_model_candidates_most_specific_first() -> None:
    assert model_candidates("us.anthropic.claude-opus-4-6-v1") == (
        "us.anthropic.claude-opus-4-6-v1", "claude-opus-4-6-v1", "claude-opus-4-6")
    assert model_candidates("gpt-4o-2024-05-13") == ("gpt-4o-2024-05-13", "gpt-4o")


# --------------------------------------------------------------------------------------------------
# Providers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("openai", "openai"), ("OpenAI", "openai"),
    ("azure.ai.openai", "azure"), ("az.ai.openai", "azure"), ("azure.ai.inference", "azure"),
    ("az.ai.inference", "azure"), ("azure", "azure"), ("Azure", "azure"),
    ("anthropic", "anthropic"), ("Anthropic", "anthropic"),
    ("gcp.gemini", "google"), ("gcp.vertex_ai", "google"), ("gcp.gen_ai", "google"), ("gemini", "google"),
    ("vertex_ai", "google"), ("vertexai", "google"), ("google", "google"), ("google_genai", "google"),
    ("GCP.Vertex_AI", "google"),
    ("aws.bedrock", "aws.bedrock"), ("aws", "aws.bedrock"), ("bedrock", "aws.bedrock"), ("AWS.Bedrock", "aws.bedrock"),
    ("mistral_ai", "mistral"), ("mistralai", "mistral"), ("mistral", "mistral"), ("MistralAI", "mistral"),
    ("cohere", "cohere"), ("deepseek", "deepseek"),
    ("x_ai", "xai"), ("xai", "xai"), ("xAI", "xai"),
    ("groq", "groq"), ("perplexity", "perplexity"), ("ibm.watsonx.ai", "ibm.watsonx.ai"),
    ("moonshot_ai", "moonshot"),
    ("SomeNewVendor", "somenewvendor"), (" together_ai ", "together_ai"),
    (None, None), ("", None), ("   ", None),
])
def test_canonical_provider(raw, expected) -> None:
    assert canonical_provider(raw) == expected


# --------------------------------------------------------------------------------------------------
# Shipped table sanity
# --------------------------------------------------------------------------------------------------


def test_every_shipped_row_is_sourced_priced_and_unique(table: PriceTable) -> None:
    assert len(table.rows) >= 100
    ids = [r.id for r in table.rows]
    assert len(ids) == len(set(ids))
    date = re.compile(r"^\d{4}-\d{2}-\d{2}$")
    for r in table.rows:
        assert r.checked and date.match(r.checked), r.id
        assert r.source.strip(), r.id
        assert r.provider in CANONICAL_PROVIDERS, r.id
        assert r.id.startswith(r.provider + "/"), r.id
        assert r.kind in ("chat", "embedding"), r.id
        assert r.names, r.id
        for price in (r.input, r.output, r.cache_read, r.cache_write, r.reasoning):
            assert isinstance(price, float) and math.isfinite(price) and price >= 0, r.id
        if r.long_context_threshold is None:
            assert (r.long_input, r.long_output, r.long_cache_read, r.long_cache_write) == (None,) * 4, r.id
        else:
            for price in (r.long_input, r.long_output, r.long_cache_read, r.long_cache_write):
                assert price is not None and price >= 0, r.id
            assert r.long_input >= r.input, r.id
        if r.kind == "chat":
            assert r.input > 0 and r.output > 0, r.id
            assert r.cache_read <= r.input, r.id
        else:
            assert r.input > 0, r.id


def test_no_two_shipped_rows_of_a_provider_share_a_name(table: PriceTable) -> None:
    seen: dict[tuple[str, str], str] = {}
    for r in table.rows:
        for name in r.names:
            key = (r.provider, name)
            assert key not in seen, f"{name!r} in both {seen[key]} and {r.id}"
            seen[key] = r.id


def test_shipped_names_are_reachable(table: PriceTable) -> None:
    # every listed name resolves to its own row when asked with the row's provider
    for r in table.rows:
        for name in r.names:
            assert table.lookup(r.provider, name) is r, (r.id, name)


def test_shipped_file_is_plain_toml_with_only_price_tables() -> None:
    text = resources.files("receiver").joinpath("prices.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    assert set(data) == {"price"}
    assert text.startswith("#")


def test_digest_is_stable_and_changes_with_the_table(tmp_path: Path) -> None:
    a, b = PriceTable.load(), PriceTable.load()
    assert a.digest == b.digest and len(a.digest) == 16
    f = _write(tmp_path, """
        [[price]]
        id = "openai/gpt-4o"
        provider = "openai"
        names = ["gpt-4o"]
        input = 2.0
        output = 8.0
    """)
    assert PriceTable.load(f).digest != a.digest


# --------------------------------------------------------------------------------------------------
# User price files
# --------------------------------------------------------------------------------------------------


def _write(tmp_path: Path, body: str, name: str = "prices.toml") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(line.strip() for line in body.strip().splitlines()) + "\n", encoding="utf-8")
    return path


def test_user_file_replaces_by_id_and_adds_pattern_rows(tmp_path: Path) -> None:
    f = _write(tmp_path, """
        [[price]]
        id = "openai/gpt-4o"
        provider = "openai"
        names = ["gpt-4o"]
        input = 2.0
        output = 8.0

        [[price]]
        id = "mine/llama-finetunes"
        provider = "groq"
        pattern = "llama-3\\\\.3-70b-ft-.*"
        kind = "chat"
        input = 0.6
        output = 0.8
        checked = "2026-11-22"
        source = "contract"

        [[price]]
        id = "mine/mini-discount"
        provider = "openai"
        names = ["gpt-4o-mini"]
        input = 0.1
        output = 0.5
    """)
    t = PriceTable.load(f)
    shipped = PriceTable.load()
    assert len(t.rows) == len(shipped.rows) + 2                   # one replaced, two added
    gpt4o = t.lookup("openai", "gpt-4o-2024-08-06")
    assert gpt4o.id == "openai/gpt-4o" and (gpt4o.input, gpt4o.output) == (2.0, 8.0)
    assert gpt4o.cache_read == 2.0                                 # defaults: cache_read = input
    assert gpt4o.source == f"user file {f}" and gpt4o.checked == ""
    assert sum(1 for r in t.rows if r.id == "openai/gpt-4o") == 1
    # added row wins over the shipped row with the same name
    assert t.lookup("openai", "gpt-4o-mini").id == "mine/mini-discount"
    # pattern row: full match only, case-insensitive, against the normalized name
    ft = t.lookup("groq", "Llama-3.3-70B-FT-support-v2")
    assert ft is not None and ft.id == "mine/llama-finetunes" and ft.source == "contract"
    assert t.lookup("groq", "xllama-3.3-70b-ft-a") is None
    assert t.lookup("groq", "llama-3.3-70b-versatile").id == "groq/llama-3.3-70b-versatile"
    # 1_000 in x $0.6 + 1_000 out x $0.8 = 1_400 per 1M
    assert t.cost_nusd(ft, 1_000, 1_000, 0, 0, 0) == 1_400_000
    # the shipped table is unaffected
    assert shipped.lookup("openai", "gpt-4o").input == 2.5


def test_user_pattern_matches_full_bedrock_id(tmp_path: Path) -> None:
    f = _write(tmp_path, """
        [[price]]
        id = "mine/bedrock-eu-sonnet"
        provider = "aws.bedrock"
        pattern = "eu\\\\.anthropic\\\\.claude-sonnet-4-5-.*"
        input = 3.3
        output = 16.5
    """)
    t = PriceTable.load(f)
    assert t.lookup("aws.bedrock", "eu.anthropic.claude-sonnet-4-5-20250929-v1:0").id == "mine/bedrock-eu-sonnet"
    assert t.lookup("aws.bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0").id == "aws.bedrock/claude-sonnet-4-5"


def test_user_long_tier_defaults(tmp_path: Path) -> None:
    f = _write(tmp_path, """
        [[price]]
        id = "mine/a"
        provider = "openai"
        names = ["model-a"]
        input = 1.0
        output = 2.0
        cache_read = 0.1
        long_context_threshold = 1000
        long_input = 4.0
    """)
    row = PriceTable.load(f).lookup("openai", "model-a")
    assert row.long_output == 2.0            # long_output defaults to output
    assert row.long_cache_read == 0.1        # explicit base cache price carries over
    assert row.long_cache_write == 4.0       # no base cache-write price: a written token is an input token
    # 2_000 in (long) incl. 1_000 cache read: 1_000 x 4 + 1_000 x 0.1 = 4_100; 10 out x 2 = 20 -> 4_120
    assert PriceTable.cost_nusd(row, 2_000, 10, 1_000, 0, 0) == 4_120_000


_BASE = 'id = "mine/x"\nprovider = "openai"\nnames = ["x"]\n'


@pytest.mark.parametrize(("body", "needle"), [
    (_BASE + "input = 1.0\noutput = 2.0\ncolour = 'red'\n", "unknown key(s) ['colour']"),
    ("[meta]\nversion = 1\n", "unknown top-level key(s) ['meta']"),
    (_BASE + "input = -1.0\noutput = 2.0\n", "input must not be negative"),
    (_BASE + "input = 1.0\noutput = 'two'\n", "output must be a number"),
    (_BASE + "input = true\noutput = 2.0\n", "input must be a number"),
    (_BASE + "input = 1.0\noutput = 2.0\ncache_read = nan\n", "cache_read must be finite"),
    (_BASE + "input = 1.0\n", "missing 'output'"),
    ('id = "mine/x"\nprovider = "openai"\ninput = 1.0\noutput = 2.0\n', "needs 'names'"),
    ('id = "mine/x"\nprovider = "openai"\nnames = []\ninput = 1.0\noutput = 2.0\n', "needs 'names'"),
    ('id = "mine/x"\nprovider = "openai"\npattern = "gpt-(4o"\ninput = 1.0\noutput = 2.0\n', "bad regex"),
    ('provider = "openai"\nnames = ["x"]\ninput = 1.0\noutput = 2.0\n', "missing or empty 'id'"),
    ('id = "mine/x"\nnames = ["x"]\ninput = 1.0\noutput = 2.0\n', "missing or empty 'provider'"),
    (_BASE + "kind = 'image'\ninput = 1.0\noutput = 2.0\n", "'kind' must be one of"),
    (_BASE + "input = 1.0\noutput = 2.0\nlong_input = 2.0\n", "without 'long_context_threshold'"),
    (_BASE + "input = 1.0\noutput = 2.0\nlong_context_threshold = 100\n", "needs at least 'long_input'"),
    (_BASE + "input = 1.0\noutput = 2.0\nlong_context_threshold = -5\nlong_input = 2.0\n", "positive integer"),
    (_BASE + "names = ['y']\ninput = 1.0\noutput = 2.0\n", "TOML syntax error"),
])
def test_bad_user_file_raises_a_useful_error(tmp_path: Path, body: str, needle: str) -> None:
    text = body if body.startswith("[meta]") else "[[price]]\n" + body
    f = tmp_path / "bad.toml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(PriceFileError) as info:
        PriceTable.load(f)
    message = str(info.value)
    assert needle in message, message
    assert str(f) in message, message
    if "TOML syntax" not in needle and not body.startswith("[meta]"):
        assert "price[0]" in message, message


def test_bad_row_message_names_index_and_id(tmp_path: Path) -> None:
    f = _write(tmp_path, """
        [[price]]
        id = "mine/ok"
        provider = "openai"
        names = ["ok"]
        input = 1.0
        output = 2.0

        [[price]]
        id = "mine/broken"
        provider = "openai"
        names = ["broken"]
        input = 1.0
        output = -3
    """)
    with pytest.raises(PriceFileError, match=r"price\[1\] \(id='mine/broken'\): output must not be negative"):
        PriceTable.load(f)


def test_toml_syntax_error_reports_the_line(tmp_path: Path) -> None:
    f = tmp_path / "syntax.toml"
    f.write_text('[[price]]\nid = "mine/x"\nprovider = "openai"\nnames = ["x"\ninput = 1.0\n', encoding="utf-8")
    with pytest.raises(PriceFileError, match=r"syntax\.toml: TOML syntax error: .*line \d+"):
        PriceTable.load(f)


def test_duplicate_id_in_user_file(tmp_path: Path) -> None:
    row = 'id = "mine/x"\nprovider = "openai"\nnames = ["x"]\ninput = 1.0\noutput = 2.0\n'
    f = tmp_path / "dup.toml"
    f.write_text(f"[[price]]\n{row}\n[[price]]\n{row}", encoding="utf-8")
    with pytest.raises(PriceFileError, match=r"price\[1\] \(id='mine/x'\): duplicate id"):
        PriceTable.load(f)


def test_missing_user_file(tmp_path: Path) -> None:
    with pytest.raises(PriceFileError, match="cannot read price file"):
        PriceTable.load(tmp_path / "nope.toml")


def test_provider_aliases_in_user_file_are_canonicalized(tmp_path: Path) -> None:
    f = _write(tmp_path, """
        [[price]]
        id = "mine/gem"
        provider = "gcp.gemini"
        names = ["my-gemini"]
        input = 1.0
        output = 2.0
    """)
    row = PriceTable.load(f).lookup("vertex_ai", "my-gemini")
    assert row is not None and row.provider == "google"


# --------------------------------------------------------------------------------------------------
# Speed (reported, not asserted)
# --------------------------------------------------------------------------------------------------


def test_lookup_is_memoized_and_fast(table: PriceTable, capsys: pytest.CaptureFixture[str]) -> None:
    keys = [("openai", "gpt-4o-2024-08-06"), ("anthropic", "claude-sonnet-4-5-20250929"),
            ("aws.bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"), ("gcp.gemini", "gemini-2.5-pro"),
            ("openai", "no-such-model")]
    first = [table.lookup(p, m) for p, m in keys]
    assert [table.lookup(p, m) for p, m in keys] == first
    assert table.lookup(*keys[0]) is first[0]
    n = 50_000
    t0 = time.perf_counter()
    for _ in range(n // len(keys)):
        for p, m in keys:
            table.lookup(p, m)
    hit_us = (time.perf_counter() - t0) / n * 1e6
    row = first[1]
    t0 = time.perf_counter()
    for _ in range(n):
        table.cost_nusd(row, 2360, 85, 2048, 300, 0)
    cost_us = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for i in range(2_000):
        table._lookup_uncached("openai", f"gpt-4o-2024-08-{i:02d}")
    miss_us = (time.perf_counter() - t0) / 2_000 * 1e6
    with capsys.disabled():
        print(f"\n[prices] lookup hit {hit_us:.2f} us, uncached lookup {miss_us:.1f} us, cost_nusd {cost_us:.2f} us")


def _row(**prices: float) -> PriceRow:
    inp, out = prices["input"], prices["output"]
    return PriceRow(
        id="test/x", provider="openai", names=("x",), pattern=None, kind="chat", input=inp, output=out,
        cache_read=prices.get("cache_read", inp), cache_write=prices.get("cache_write", inp),
        reasoning=prices.get("reasoning", out), long_context_threshold=None, long_input=None,
        long_output=None, long_cache_read=None, long_cache_write=None, checked="2026-11-22", source="test",
    )
