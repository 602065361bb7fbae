"""`llmobs-tui check`, `init` and the SLO table of `report`, on stores written through the real
normalizer and writer with timestamps relative to now (the commands evaluate at the real clock)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from llmobs_tui.cli import main
from llmobs_tui.cli.common import EXIT_CHECK_FAILED
from llmobs_tui.config import EXAMPLE_CONFIG, load_config
from receiver.normalize import IngestOptions, Normalizer
from receiver.prices import PriceTable
from store.connection import WriterLock, open_writer
from store.writer import SpanWriter
from tests.otlp_factory import STATUS_ERROR, make_span, trace_request

NS = 10**9


def write_calls(db_path: Path, calls: list[tuple[float, bool]], feature: str = "checkout") -> None:
    """One trace per call: (seconds before now, failed with a 429?)."""
    normalizer = Normalizer(PriceTable.load(), IngestOptions())
    lock = WriterLock(db_path)
    lock.acquire()
    db = open_writer(db_path)
    try:
        writer = SpanWriter(db)
        now_ns = time.time_ns()
        spans = []
        for number, (ago_s, failed) in enumerate(calls, start=1):
            start = now_ns - int(ago_s * NS)
            spans.append(make_span(number, 1, None, f"POST /{feature}", {"app.llm.feature": feature},
                                   start_ns=start, end_ns=start + NS))
            attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                     "gen_ai.request.model": "gpt-4o-mini"}
            if failed:
                attrs.update({"error.type": "RateLimitError", "http.response.status_code": 429})
            else:
                attrs.update({"gen_ai.usage.input_tokens": 500, "gen_ai.usage.output_tokens": 50})
            spans.append(make_span(number, 2, 1, "chat gpt-4o-mini", attrs, start_ns=start, end_ns=start + NS // 2,
                                   status_code=STATUS_ERROR if failed else 0))
        rows, resources, scopes, rejections = normalizer.decode_traces(trace_request(spans), now_ns)
        assert rejections.count == 0
        writer.write(rows, [], resources, scopes)
    finally:
        db.close()
        lock.release()


def config_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "llmobs.toml"
    path.write_text(body, encoding="utf-8")
    return path


AVAILABILITY = """
[[slo]]
name = "checkout availability"
kind = "availability"
objective = "99%"
feature = "checkout"

[alerts.error_spike]
rate_limit = "90%"   # this test is about the SLO, not the spike rule
"""


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_exits_0_when_healthy(tmp_path, capsys):
    db = tmp_path / "s.db"
    write_calls(db, [(30 + i * 60, False) for i in range(60)])
    code, out, _ = run(capsys, "check", "--db", str(db), "--config", str(config_file(tmp_path, AVAILABILITY)))
    assert code == 0, out
    assert "OK: 0 alert(s)" in out
    assert "| checkout availability |" in out and "100.00%" in out


def test_check_exits_2_on_a_fast_burn_and_names_an_example_trace(tmp_path, capsys):
    db = tmp_path / "s.db"
    # An hour of traffic, the last ten minutes failing half the time: 50× the budget of a 99% SLO.
    calls = [(600 + i * 60, False) for i in range(50)] + [(i * 10 + 5, i % 2 == 0) for i in range(60)]
    write_calls(db, calls)
    code, out, _ = run(capsys, "check", "--db", str(db), "--config", str(config_file(tmp_path, AVAILABILITY)),
                       "--format", "json")
    assert code == 2
    result = json.loads(out)
    assert result["status"] == "page" and result["exit_code"] == 2
    (alert,) = result["alerts"]
    assert alert["rule"] == "slo_burn" and alert["severity"] == "page"
    assert alert["window"] == "1h & 5m" and alert["scope"] == "feature=checkout"
    assert alert["value"] >= 14.4 and alert["threshold"] == 14.4
    assert len(alert["example_trace_id"]) == 32
    (slo,) = result["slos"]
    assert slo["events"] == 110 and slo["burn_rate"]["1h"] == pytest.approx(30 / 110 / 0.01)


def test_check_exits_1_on_a_slow_burn(tmp_path, capsys):
    db = tmp_path / "s.db"
    # Two days at 3% failures against a 99% objective: a 3× burn, too slow to page, enough for a ticket.
    calls = [(300 + i * 1200, i % 33 == 0) for i in range(144)]
    write_calls(db, calls)
    code, out, _ = run(capsys, "check", "--db", str(db), "--config", str(config_file(tmp_path, AVAILABILITY)))
    assert code == 1, out
    assert "TICKET" in out and "3d & 6h" in out


def test_check_cannot_evaluate_exits_3_with_a_reason(tmp_path, capsys):
    code, _, err = run(capsys, "check", "--db", str(tmp_path / "missing.db"))
    assert code == EXIT_CHECK_FAILED and "no database" in err
    bad = config_file(tmp_path, '[[slo]]\nname = "x"\nkind = "availability"\nobjective = 1.5\n')
    code, _, err = run(capsys, "check", "--db", str(tmp_path / "missing.db"), "--config", str(bad))
    assert code == EXIT_CHECK_FAILED
    assert f"{bad}:4:" in err and "objective must be between" in err


def test_init_writes_the_example_and_will_not_overwrite(tmp_path, capsys):
    target = tmp_path / "llmobs.toml"
    code, out, _ = run(capsys, "init", str(target))
    assert code == 0 and "wrote" in out
    assert target.read_text() == EXAMPLE_CONFIG.read_text()
    assert [s.kind for s in load_config(target).slos] == ["availability", "ttft"]
    target.write_text("# mine\n")
    code, _, err = run(capsys, "init", str(target))
    assert code == 2 and "--force" in err
    assert target.read_text() == "# mine\n"
    assert run(capsys, "init", str(target), "--force")[0] == 0


def test_report_gains_the_slo_table(tmp_path, capsys):
    db = tmp_path / "s.db"
    write_calls(db, [(60 + i * 60, i % 10 == 0) for i in range(30)])
    config = str(config_file(tmp_path, AVAILABILITY))
    code, out, _ = run(capsys, "report", "--db", str(db), "--config", config)
    assert code == 0
    assert "## SLOs" in out
    row = next(line for line in out.splitlines() if line.startswith("| checkout availability"))
    assert "90.00%" in row and "10.0×" in row  # 3 of 30 failed: 10× the 1% budget
    code, out, _ = run(capsys, "report", "--db", str(db), "--config", config, "--format", "json")
    slo = json.loads(out)["slos"][0]
    assert slo["current"] == pytest.approx(0.9) and slo["events"] == 30


@pytest.mark.parametrize("argv", [
    ["--db", "/x.db", "--config", "c.toml", "--grpc-port", "0", "demo"],
    ["demo", "--db", "/x.db", "--config", "c.toml", "--grpc-port", "0"],
    ["--db", "/x.db", "--config", "c.toml", "--grpc-port", "0", "serve"],
])
def test_flags_before_or_after_the_subcommand_mean_the_same(argv):
    from llmobs_tui.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (args.db, args.config, args.grpc_port, args.http_port) == ("/x.db", "c.toml", 0, 4318)


def test_a_bad_config_stops_the_demo_before_it_starts(tmp_path, capsys):
    bad = config_file(tmp_path, '[[slo]]\nkind = "latency"\nobjective = "99%"\n')
    code, _, err = run(capsys, "--config", str(bad), "demo", "--db", str(tmp_path / "d.db"))
    assert code == 2 and f"{bad}:1:" in err and "needs a threshold" in err
    assert not (tmp_path / "d.db").exists()
