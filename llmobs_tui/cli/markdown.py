"""The Markdown tables that `report` and `check` print: LLM calls per group, tool calls per tool,
and the SLO table. Pure formatting of the JSON-shaped results the store's queries return, so the
same result prints as `--format json` or as one of these."""

from __future__ import annotations

from typing import Any


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def format_slo_table_md(slos: list[dict[str, Any]]) -> str:
    lines = ["## SLOs", "",
             "| SLO | objective | scope | events | current | budget left | burn 1h | burn 6h | burn 3d |",
             "|---|---|---|--:|--:|--:|--:|--:|--:|"]
    for slo in slos:
        burns = slo["burn_rate"]
        cells = [slo["name"], slo["describe"], slo["scope"], f"{slo['events']:,}", _pct(slo["current"]),
                 _pct(slo["budget_left"], 0),
                 *("–" if burns.get(w) is None else f"{burns[w]:.1f}×" for w in ("1h", "6h", "3d"))]
        lines.append(md_row(cells))
    lines.append("")
    lines.append("Burn rate: how many times faster than the objective allows the error budget is being spent "
                 "(1× spends it exactly over the SLO window).")
    return "\n".join(lines)


def md_row(cells: list[str]) -> str:
    """A Markdown table row; a `|` inside a cell (a model or feature name) is escaped."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v / 1000:.2f}s" if v >= 1000 else f"{v:.0f}ms"


def _table_head(result: dict[str, Any], title: str, keys: list[str], figures: list[str]) -> list[str]:
    """The title with the window, then the table's header rows (keys left-aligned, figures right),
    or a line saying the window has none."""
    window = result["window"]
    lines = [f"# {title[:1].upper()}{title[1:]} {window['start']} → {window['end']}", ""]
    if not result["groups"]:
        return [*lines, f"No {title} in this window."]
    headers = [*keys, *figures]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---" if i < len(keys) else "--:" for i in range(len(headers))) + "|")
    return lines


def format_report_md(result: dict[str, Any]) -> str:
    # usd_figure: sub-cent costs in significant digits, not 0.0000
    from llmobs_tui.format import plural, usd_figure

    by = result["by"]
    groups = result["groups"]
    lines = _table_head(result, "LLM calls", by, ["calls", "api err", "valid. err", "guard. err", "input", "output",
                                                  "cache read", "cache write", "reasoning", "cost $", "unpriced",
                                                  "cache hit", "TTFT p50/p95", "latency p50/p95"])
    if not groups:
        return "\n".join(lines)
    for g in groups:
        key = []
        for name in by:
            if name == "prompt":
                pid, ver = g["key"].get("prompt_id"), g["key"].get("prompt_version")
                key.append(f"{pid or '–'}@{ver}" if ver else (pid or "–"))
            else:
                key.append(str(g["key"].get(name) or "–"))
        tokens = g["tokens"]
        rate = g["cache_hit_rate"]
        cells = [
            *key,
            _fmt_int(g["calls"]),
            _fmt_int(g["errors"]["api"]),
            _fmt_int(g["errors"]["validation"]),
            _fmt_int(g["errors"]["guardrail"]),
            _fmt_int(tokens["input"]),
            _fmt_int(tokens["output"]),
            _fmt_int(tokens["cache_read"]),
            _fmt_int(tokens["cache_write"]),
            _fmt_int(tokens["reasoning"]),
            usd_figure(g["cost_usd"]),
            _fmt_int(g["unpriced_calls"]),
            "–" if rate is None else f"{rate:.1%}",
            f"{_fmt_ms(g['ttft_ms']['p50'])} / {_fmt_ms(g['ttft_ms']['p95'])}",
            f"{_fmt_ms(g['latency_ms']['p50'])} / {_fmt_ms(g['latency_ms']['p95'])}",
        ]
        lines.append(md_row(cells))
    total_cost = sum(g["cost_usd"] for g in groups)
    total_calls = sum(g["calls"] for g in groups)
    unpriced = sum(g["unpriced_calls"] for g in groups)
    lines.append("")
    lines.append(f"{plural(total_calls, 'call')}, ${usd_figure(total_cost)}"
                 + (f", {unpriced:,} unpriced (no price row, or no usage reported: not counted as $0)"
                    if unpriced else ""))
    return "\n".join(lines)


def format_tool_report_md(result: dict[str, Any]) -> str:
    by = result["by"]
    groups = result["groups"]
    lines = _table_head(result, "tool calls", by, ["calls", "errors", "error %", "p50", "p95"])
    if not groups:
        return "\n".join(lines)
    for g in groups:
        rate = g["error_rate"]
        cells = [str(g["key"].get(name) or "–") for name in by] + [
            _fmt_int(g["calls"]),
            _fmt_int(g["errors"]),
            "–" if rate is None else f"{rate:.1%}",
            _fmt_ms(g["duration_ms"]["p50"]),
            _fmt_ms(g["duration_ms"]["p95"]),
        ]
        lines.append(md_row(cells))
    calls = sum(g["calls"] for g in groups)
    errors = sum(g["errors"] for g in groups)
    lines.append("")
    lines.append(f"{calls:,} tool calls, {errors:,} failed")
    return "\n".join(lines)


def format_user_report_md(result: dict[str, Any]) -> str:
    """`report --by user`: one row per user, the most expensive first."""
    from llmobs_tui.format import usd_figure

    groups = result["groups"]
    lines = _table_head(result, "users", ["user"], ["traces", "conversations", "calls", "input", "output",
                                                    "cost $", "unpriced", "api err", "valid. err", "guard. err",
                                                    "failed traces"])
    if not groups:
        return "\n".join(lines)
    for g in groups:
        lines.append(md_row([
            str(g["user"]), _fmt_int(g["traces"]), _fmt_int(g["conversations"]), _fmt_int(g["calls"]),
            _fmt_int(g["tokens"]["input"]), _fmt_int(g["tokens"]["output"]), usd_figure(g["cost_usd"]),
            _fmt_int(g["unpriced_calls"]), _fmt_int(g["errors"]["api"]), _fmt_int(g["errors"]["validation"]),
            _fmt_int(g["errors"]["guardrail"]), _fmt_int(g["failed_traces"]),
        ]))
    lines.append("")
    lines.append(f"{len(groups):,} users, ${usd_figure(sum(g['cost_usd'] for g in groups))}")
    return "\n".join(lines)
