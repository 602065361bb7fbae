"""The Trends screen's pure logic: series labels, value formats, the drill filter for a series, and
the two-variant comparison (deltas in percent, which direction is worse, too-few-calls guard)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmobs_tui import format as fmt
from store.queries import GroupStats
from store.trends import Metric, Series

# The dimension → the `/` filter field(s) that select its traces (llmobs_tui/filtering.py).
FILTER_FIELDS = {"model": ("model",), "feature": ("feature",), "tenant": ("tenant",), "prompt": ("prompt", "version"),
                 "provider": ("provider",), "service": ("service",), "tool": ("tool",), "variant": ("variant",)}
NONE_LABEL = "(none)"  # `(no model)`: calls that carry no value of the dimension
OTHERS_LABEL = "others"
MIN_CALLS = 30  # below this, a variant's percentiles and rates are noise: the comparison says so
# Names that say "this is the baseline": compared against, when present.
BASELINE_NAMES = ("control", "baseline", "default", "a")


def series_label(by: str, series: Series) -> str:
    """Plain text (the caller wraps it in Text): `gpt-4o`, `support-bot@v8`, `(none)`, `others`."""
    if series.others:
        return OTHERS_LABEL
    if by == "prompt":
        pid, version = (*series.key, None, None)[:2]
        if pid is None and version is None:
            return f"(no {by})"
        return f"{pid or NONE_LABEL}@{version}" if version else str(pid)
    value = series.key[0] if series.key else None
    return f"(no {by})" if value is None else str(value)


def value_format(metric: Metric) -> Callable[[float | None], str]:
    unit = metric.unit
    if unit == "s":
        return fmt.seconds
    if unit == "ratio":
        return lambda v: fmt.percent(v)
    if unit == "$/h":
        return lambda v: "–" if v is None else f"${v:,.2f}/h" if v >= 0.995 else f"${v:.2g}/h"
    return lambda v: "–" if v is None else f"{v:,.3g}{unit}"


def _term(field: str, value: str) -> str:
    """`field=value`, quoted so that spaces, quotes and operators in the value stay part of it. A value
    the term grammar would misread whatever the quoting (a leading operator character or space: the
    parser reads `model==x` as `=` then `=x`) becomes an anchored, escaped regex instead."""
    if value[:1] in ("~", "=", "<", ">", "!") or value != value.lstrip():
        return f"{field}=~{shlex.quote('^' + re.escape(value) + '$')}"
    return f"{field}={shlex.quote(value)}"


def drill_filter(by: str, series: Series) -> str | None:
    """The `/` filter for a series' traces; None when it has no value to filter on (unset, others)."""
    if series.others:
        return None
    terms = [_term(f, v) for f, v in zip(FILTER_FIELDS[by], series.key) if v is not None]
    return " ".join(terms) or None


# --- the two-variant comparison --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ComparisonRow:
    label: str
    a: float | None
    b: float | None
    format: Callable[[float | None], str]
    worse_when_up: bool | None  # None: neither direction is worse (the number of calls)

    @property
    def delta(self) -> float | None:
        """(b − a) / a; None when a is missing or 0 (a rise from nothing has no percentage)."""
        if self.a is None or self.b is None or self.a == 0:
            return None
        return (self.b - self.a) / self.a


@dataclass(frozen=True, slots=True)
class VariantComparison:
    a: str
    b: str
    calls_a: int
    calls_b: int
    rows: tuple[ComparisonRow, ...]
    min_calls: int

    @property
    def too_few(self) -> bool:
        return min(self.calls_a, self.calls_b) < self.min_calls


def _variant(group: GroupStats) -> str | None:
    return group.key.get("variant")


def pick_pair(groups: Sequence[GroupStats], pinned: str | None = None) -> tuple[GroupStats, GroupStats] | None:
    """The two variants to compare: the pinned one (or one named like a baseline, or the most called)
    against the most called of the others. Calls without a variant are not a variant."""
    named = [g for g in groups if _variant(g) is not None and g["calls"] > 0]
    named.sort(key=lambda g: (-g["calls"], str(_variant(g))))
    if len(named) < 2:
        return None
    base = next((g for g in named if _variant(g) == pinned), None)
    if base is None:
        base = next((g for g in named if str(_variant(g)).lower() in BASELINE_NAMES), named[0])
    other = next(g for g in named if g is not base)
    return base, other


def _per_call(group: GroupStats, *names: str, scale: float = 1.0) -> float | None:
    calls = group["calls"]
    return sum(group[n] for n in names) * scale / calls if calls else None


def _pct(group: GroupStats, which: str, q: float) -> float | None:
    value = group.percentiles_ms(which, (q,))[0]
    return None if value is None else value / 1000


def compare_variants(groups: Sequence[GroupStats], pinned: str | None = None,
                     min_calls: int = MIN_CALLS) -> VariantComparison | None:
    pair = pick_pair(groups, pinned)
    if pair is None:
        return None
    a, b = pair
    seconds = fmt.seconds
    percent: Callable[[float | None], str] = lambda v: fmt.percent(v)  # noqa: E731
    rows = (
        ComparisonRow("calls", a["calls"], b["calls"], lambda v: "–" if v is None else f"{v:,.0f}", None),
        ComparisonRow("latency p50", _pct(a, "latency", 0.5), _pct(b, "latency", 0.5), seconds, True),
        ComparisonRow("latency p95", _pct(a, "latency", 0.95), _pct(b, "latency", 0.95), seconds, True),
        ComparisonRow("TTFT p95", _pct(a, "ttft", 0.95), _pct(b, "ttft", 0.95), seconds, True),
        ComparisonRow("error rate", _per_call(a, "errors_api", "errors_validation", "errors_guardrail"),
                      _per_call(b, "errors_api", "errors_validation", "errors_guardrail"), percent, True),
        ComparisonRow("refusal rate", _per_call(a, "refusals"), _per_call(b, "refusals"), percent, True),
        ComparisonRow("cost/call", _per_call(a, "cost_nusd", scale=1e-9), _per_call(b, "cost_nusd", scale=1e-9),
                      lambda v: "–" if v is None else f"${v:,.5f}", True),
        ComparisonRow("tokens/call", _per_call(a, "input_tokens", "output_tokens"),
                      _per_call(b, "input_tokens", "output_tokens"), lambda v: "–" if v is None else f"{v:,.0f}",
                      True),
    )
    return VariantComparison(str(_variant(a)), str(_variant(b)), a["calls"], b["calls"], rows, min_calls)
