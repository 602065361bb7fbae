"""The command line: report, export, prices, reprice, and a clear message for every bad flag."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmobs_tui.cli import main
from receiver.normalize import IngestOptions, Normalizer
from receiver.prices import PriceTable
from store.connection import WriterLock, open_writer
from store.writer import SpanWriter
from tests.otlp_factory import make_span, trace_request

NS = 10**9


def seed(db_path: Path, now_ns: int) -> list[int]:
    """Three traces over two models and features, committed through the real writer."""
    normalizer = Normalizer(PriceTable.load(), IngestOptions())
    lock = WriterLock(db_path)
    lock.acquire()
    db = open_writer(db_path)
    writer = SpanWriter(db)
    t = now_ns - 600 * NS
    spans = []
    for trace, (feature, model, inp, out, cached, ttft) in enumerate([
            ("checkout", "gpt-4o", 1000, 100, 400, 0.25),
            ("checkout", "gpt-4o", 3000, 300, 0, 0.75),
            ("search", "claude-sonnet-4-5", 2360, 85, 2048, None)], start=1):
        spans.append(make_span(trace, 1, None, f"POST /{feature}", {"app.llm.feature": feature},
                               start_ns=t, end_ns=t + 2 * NS))
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                 "gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": out,
                 "gen_ai.usage.cache_read.input_tokens": cached}
        if ttft is not None:
            attrs["gen_ai.response.time_to_first_chunk"] = ttft
        spans.append(make_span(trace, 2, 1, f"chat {model}", attrs, start_ns=t, end_ns=t + NS))
    rows, resources, scopes, _ = normalizer.decode_traces(trace_request(spans), received_ns=now_ns)
    writer.write(rows, [], resources, scopes)
    db.close()
    lock.release()
    return [1, 2, 3]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_report_json_has_the_documented_shape_and_exact_numbers(tmp_path, capsys):
    db = tmp_path / "r.db"
    seed(db, time.time_ns())
    code, out, _ = run_cli(capsys, "report", "--db", str(db), "--by", "model,feature", "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert set(report) >= {"window", "groups"}
    groups = {(g["key"]["model"], g["key"]["feature"]): g for g in report["groups"]}
    gpt = groups[("gpt-4o", "checkout")]
    assert gpt["calls"] == 2
    assert gpt["errors"]["api"] == 0 and gpt["errors"]["validation"] == 0 and gpt["errors"]["guardrail"] == 0
    assert gpt["tokens"] == {"input": 4000, "output": 400, "cache_read": 400, "cache_write": 0, "reasoning": 0}
    # (600×2.5 + 400×1.25 + 100×10) + (3000×2.5 + 300×10) per 1M = 0.003 + 0.0105
    assert gpt["cost_usd"] == pytest.approx(0.0135, abs=1e-9)
    assert gpt["unpriced_calls"] == 0
    assert gpt["cache_hit_rate"] == pytest.approx(0.1)
    assert gpt["ttft_ms"]["p50"] == pytest.approx(250, rel=0.021)
    assert gpt["ttft_ms"]["p95"] == pytest.approx(750, rel=0.021)
    assert gpt["latency_ms"]["p50"] == pytest.approx(1000, rel=0.021)
    claude = groups[("claude-sonnet-4-5", "search")]
    # (312×3 + 2048×0.3 + 85×15) per 1M = 0.0028254
    assert claude["cost_usd"] == pytest.approx(0.0028254, abs=1e-9)
    assert claude["ttft_ms"] == {"p50": None, "p95": None}


def test_report_markdown_and_grouping_by_prompt(tmp_path, capsys):
    db = tmp_path / "r.db"
    seed(db, time.time_ns())
    code, out, _ = run_cli(capsys, "report", "--db", str(db))
    assert code == 0
    assert "| gpt-4o |" in out and "| claude-sonnet-4-5 |" in out
    assert "3 calls, $0.0163" in out
    code, out, _ = run_cli(capsys, "report", "--db", str(db), "--by", "prompt,tenant,provider", "--format", "json")
    assert code == 0 and len(json.loads(out)["groups"]) == 2  # openai and anthropic


def test_report_window_excludes_older_calls(tmp_path, capsys):
    db = tmp_path / "r.db"
    seed(db, time.time_ns() - 3 * 86400 * NS)
    _code, out, _ = run_cli(capsys, "report", "--db", str(db), "--window", "24h", "--format", "json")
    assert json.loads(out)["groups"] == []
    _code, out, _ = run_cli(capsys, "report", "--db", str(db), "--window", "7d", "--format", "json")
    assert sum(g["calls"] for g in json.loads(out)["groups"]) == 3


def test_export_is_otlp_json_that_can_be_sent_again(tmp_path, capsys):
    from llmobs_tui.backend import Backend, BackendConfig
    from receiver.pipeline import PipelineConfig
    from store.connection import open_reader

    db = tmp_path / "src.db"
    seed(db, time.time_ns())
    trace_hex = f"{1:032x}"
    out_file = tmp_path / "trace.json"
    code, _, _ = run_cli(capsys, "export", trace_hex, "--db", str(db), "-o", str(out_file))
    assert code == 0
    exported = json.loads(out_file.read_text())
    spans = exported["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert {s["traceId"] for s in spans} == {trace_hex} and len(spans) == 2

    async def resend() -> None:
        import aiohttp

        backend = Backend(BackendConfig(PipelineConfig(db_path=str(tmp_path / "dst.db"), decoders=1, retention_s=None),
                                        grpc_port=0, http_port=0))
        await backend.start()
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(backend.http_address + "/v1/traces", data=out_file.read_bytes(),
                                        headers={"Content-Type": "application/json"}) as response:
                    assert response.status == 200
        finally:
            await backend.aclose()

    asyncio.run(resend())
    src, dst = open_reader(db), open_reader(tmp_path / "dst.db")
    query = "SELECT span_id, name, kind, input_tokens, cost_nusd, feature, raw FROM spans WHERE trace_id = ? ORDER BY span_id"
    tid = (1).to_bytes(16, "big")
    assert dst.execute(query, (tid,)).fetchall() == src.execute(query, (tid,)).fetchall()


def test_export_of_an_unknown_or_bad_trace_id(tmp_path, capsys):
    db = tmp_path / "r.db"
    seed(db, time.time_ns())
    code, _, err = run_cli(capsys, "export", "ff" * 16, "--db", str(db))
    assert code == 1 and "no trace" in err
    code, _, err = run_cli(capsys, "export", "xyz", "--db", str(db))
    assert code == 2 and "32 hex characters" in err


def test_prices_lists_the_table(capsys):
    code, out, _ = run_cli(capsys, "prices")
    assert code == 0 and "openai/gpt-4o " in out and "anthropic/claude-sonnet-4-5" in out
    code, out, _ = run_cli(capsys, "prices", "--format", "json")
    rows = {r["id"]: r for r in json.loads(out)["rows"]}
    assert rows["openai/gpt-4o"]["input"] == 2.5 and rows["openai/gpt-4o"]["checked"]


def test_reprice_applies_a_changed_table_to_history(tmp_path, capsys):
    db = tmp_path / "r.db"
    seed(db, time.time_ns())
    prices = tmp_path / "prices.toml"
    prices.write_text('[[price]]\nid = "openai/gpt-4o"\nprovider = "openai"\nnames = ["gpt-4o"]\n'
                      'kind = "chat"\ninput = 5.0\noutput = 20.0\ncache_read = 2.5\n'
                      'checked = "2026-11-22"\nsource = "test"\n')
    code, out, _ = run_cli(capsys, "reprice", "--db", str(db), "--prices", str(prices))
    assert code == 0 and "repriced 2 of 3" in out
    code, out, _ = run_cli(capsys, "report", "--db", str(db), "--format", "json")
    gpt = next(g for g in json.loads(out)["groups"] if g["key"]["model"] == "gpt-4o")
    assert gpt["cost_usd"] == pytest.approx(0.027, abs=1e-9)  # every price doubled


def test_reprice_refuses_while_serve_writes(tmp_path, capsys):
    db = tmp_path / "r.db"
    seed(db, time.time_ns())
    lock = WriterLock(db)
    lock.acquire()
    try:
        code, _, err = run_cli(capsys, "reprice", "--db", str(db))
        assert code == 1 and "stop `serve` first" in err
    finally:
        lock.release()


@pytest.mark.parametrize("argv,message", [
    (["serve", "--retention", "soon"], "is not a duration"),
    (["serve", "--grpc-port", "70000"], "is not a port number"),
    (["serve", "--max-db-size", "12 parsecs"], "is not a size"),
    (["serve", "--max-db-size", "10KB"], "at least 1 MB"),
    (["report", "--window=-1h"], "is not a duration"),
    (["report", "--format", "xml"], "invalid choice"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_flags_are_refused_with_a_reason(argv, message):
    result = subprocess.run([sys.executable, "-m", "llmobs_tui", *argv], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr


def test_bad_dimension_and_missing_store(tmp_path, capsys):
    code, _, err = run_cli(capsys, "report", "--by", "colour", "--db", str(tmp_path / "x.db"))
    assert code == 2 and "unknown dimension" in err
    code, _, err = run_cli(capsys, "report", "--db", str(tmp_path / "missing.db"))
    assert code == 1 and "no database" in err


def test_bad_price_and_config_files_fail_at_start_with_the_line(tmp_path, capsys):
    prices = tmp_path / "bad.toml"
    prices.write_text('[[price]]\nid = "x/y"\nprovider = "x"\nnames = ["y"]\nkind = "chat"\ninput = -1\noutput = 1\n')
    code, _, err = run_cli(capsys, "serve", "--db", str(tmp_path / "s.db"), "--prices", str(prices))
    assert code == 2 and "bad.toml" in err
    config = tmp_path / "llmobs.toml"
    config.write_text("[dimensions]\nfeature = [\"app.feature\"\ntenant = 3\n")
    code, _, err = run_cli(capsys, "serve", "--db", str(tmp_path / "s.db"), "--config", str(config))
    assert code == 2 and "llmobs.toml" in err and "line" in err
    config.write_text("[dimensions]\ncolour = [\"x\"]\n")
    code, _, err = run_cli(capsys, "serve", "--db", str(tmp_path / "s.db"), "--config", str(config))
    assert code == 2 and "unknown dimension" in err


def test_custom_dimension_keys_from_the_config_file(tmp_path):
    from llmobs_tui.config import load_config

    config = tmp_path / "llmobs.toml"
    config.write_text('[dimensions]\ntenant = ["customer.org"]\n')
    loaded = load_config(config)
    assert loaded.dimension_keys["tenant"] == ("customer.org",)
    assert "app.llm.feature" in loaded.dimension_keys["feature"]
