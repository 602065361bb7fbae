"""The commands that read the store and print: `report` (calls, errors, tokens, cost and latency per
group, with the SLO table), `check` (one evaluation of every SLO and alert rule, for cron or CI: the
exit code is the verdict) and `export` (one trace as OTLP/JSON that can be sent again). None of them
writes the store, so they run beside a `serve` or a TUI that does."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from llmobs_tui.cli.common import EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE, fail
from llmobs_tui.cli.markdown import format_report_md, format_slo_table_md, format_tool_report_md
from llmobs_tui.config import Config
from llmobs_tui.settings import Settings

if TYPE_CHECKING:
    from llmobs_tui.alerting.engine import SloRow

# The commands' "now", which windows count back from; tests pin it to compare two stores' reports.
clock: Callable[[], float] = time.time


def cmd_report(settings: Settings) -> int:
    from store.backends import open_store_reader
    from store.connection import DatabaseError, StoreError, describe_error
    from store.queries import GROUP_COLUMNS, TOOL_GROUP_COLUMNS

    by = [part.strip() for part in settings.by.split(",") if part.strip()]
    if "user" in by:
        return _report_by_user(settings, by)
    tools = "tool" in by
    if tools:
        # Tool calls are read from spans, which carry service, feature and tenant but no model.
        by = ["tool"] + [b for b in by if b != "tool"]
        unknown = [b for b in by if b not in TOOL_GROUP_COLUMNS]
        if unknown:
            return fail(f"--by tool,{','.join(unknown)}: tool calls group by {', '.join(TOOL_GROUP_COLUMNS)} "
                        "only", EXIT_USAGE)
    else:
        unknown = [b for b in by if b not in GROUP_COLUMNS]
        if unknown:
            return fail(f"--by {','.join(unknown)}: unknown dimension; choose from "
                        f"{', '.join(GROUP_COLUMNS)}, tool, user", EXIT_USAGE)
    config = settings.config
    path = settings.db_path
    try:
        reader = open_store_reader(path, settings.store_url)
        now_s = clock()
        window = settings.window_s
        try:
            result = reader.tool_report(window, by, now_s=now_s) if tools else reader.report(window, by, now_s=now_s)
        finally:
            reader.close()
        if config.slos:
            result["slos"] = [row.as_json() for row in _slo_rows(settings, config, now_s)]
    except StoreError as exc:
        return fail(str(exc))
    except DatabaseError as exc:
        return fail(describe_error(path, exc))
    if settings.output_format == "json":
        print(json.dumps(result, indent=2))
    else:
        print(format_tool_report_md(result) if tools else format_report_md(result))
        if "slos" in result:
            print()
            print(format_slo_table_md(result["slos"]))
    return EXIT_OK


def _report_by_user(settings: Settings, by: list[str]) -> int:
    """`report --by user`: users by cost over the window, from the traces table (user is no rollup
    dimension: too many values), with their conversations."""
    from llmobs_tui.cli.markdown import format_user_report_md
    from store.backends import open_store_reader
    from store.connection import DatabaseError, StoreError, describe_error

    if by != ["user"]:
        return fail(f"--by {','.join(by)}: --by user groups by user alone", EXIT_USAGE)
    config = settings.config
    try:
        reader = open_store_reader(settings.db_path, settings.store_url)
        now_s = clock()
        try:
            result = reader.user_report(settings.window_s, now_s=now_s)
        finally:
            reader.close()
        if config.slos:
            result["slos"] = [row.as_json() for row in _slo_rows(settings, config, now_s)]
    except StoreError as exc:
        return fail(str(exc))
    except DatabaseError as exc:
        return fail(describe_error(settings.db_path, exc))
    if settings.output_format == "json":
        print(json.dumps(result, indent=2))
    else:
        print(format_user_report_md(result))
        if "slos" in result:
            print()
            print(format_slo_table_md(result["slos"]))
    return EXIT_OK


def _slo_rows(settings: Settings, config: Config, now_s: float) -> list[SloRow]:
    from llmobs_tui.alerting.engine import AlertEngine
    from store.backends import describe_clickhouse_error
    from store.clickhouse.client import ClickHouseError
    from store.connection import StoreError

    engine = AlertEngine(settings.db_path, config, settings.store_url)
    try:
        return engine.slo_table(now_s)
    except ClickHouseError as exc:
        assert settings.store_url is not None
        raise StoreError(describe_clickhouse_error(settings.store_url, exc)) from None
    finally:
        engine.close()


def cmd_check(settings: Settings) -> int:
    """One evaluation of every rule, for cron or CI: the exit code is the verdict."""
    from llmobs_tui.alerting.engine import AlertEngine, exit_code
    from store.backends import describe_clickhouse_error
    from store.clickhouse.client import ClickHouseError
    from store.connection import DatabaseError, StoreError, describe_error

    config = settings.config
    path = settings.db_path
    engine = AlertEngine(path, config, settings.store_url)
    now_s = clock()
    try:
        findings = engine.evaluate(now_s)
        slos = engine.slo_rows
    except ClickHouseError as exc:
        assert settings.store_url is not None
        return fail(describe_clickhouse_error(settings.store_url, exc), EXIT_CHECK_FAILED)
    except StoreError as exc:
        return fail(str(exc), EXIT_CHECK_FAILED)
    except DatabaseError as exc:
        return fail(describe_error(path, exc), EXIT_CHECK_FAILED)
    finally:
        engine.close()
    code = exit_code(findings)
    verdict = {0: "ok", 1: "ticket", 2: "page"}[code]
    if settings.output_format == "json":
        print(json.dumps({"status": verdict, "exit_code": code, "evaluated_at": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_s)), "config": str(config.path) if config.path else None,
            "alerts": [f.as_json() for f in findings], "slos": [row.as_json() for row in slos]}, indent=2))
        return code
    source = config.path or "built-in defaults (no llmobs.toml)"
    print(f"llmobs-tui check: {verdict.upper()}: {len(findings)} alert(s); {len(config.slos)} SLO(s) from {source}")
    for f in findings:
        trace = f" · example trace {f.example_trace_id.hex()}" if f.example_trace_id else ""
        print(f"  [{f.severity.upper()}] {f.title}: {f.value_text} ({f.window}; {f.scope}){trace}")
        if f.detail:
            print(f"      {f.detail}")
    if slos:
        print()
        print(format_slo_table_md([row.as_json() for row in slos]))
    return code


def cmd_export(settings: Settings) -> int:
    from receiver.otlp import message_to_otlp_json
    from store.backends import open_store_reader
    from store.connection import StoreError
    from store.queries import parse_trace_id

    try:
        trace_id = parse_trace_id(settings.trace_id)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    try:
        reader = open_store_reader(settings.db_path, settings.store_url)
        try:
            request = reader.export_trace(trace_id)
        finally:
            reader.close()
    except StoreError as exc:
        return fail(str(exc))
    if request is None:
        return fail(f"no trace {trace_id.hex()} in {reader.name}")
    text = json.dumps(message_to_otlp_json(request), indent=2)
    if settings.output:
        try:
            Path(settings.output).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            return fail(f"cannot write {settings.output}: {exc}")
    else:
        print(text)
    return EXIT_OK
