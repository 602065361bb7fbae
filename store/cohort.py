"""The cohorts "why slow?" compares a call or a trace with, as (sql, params) builders and parsers.

A call's cohort is every billed call of the same model on the same feature over the window. Its
latency, TTFT and TPOT come from the rollups' histograms (one row per minute or hour and dimension
set, merged over the other dimensions: service, tenant, prompt), so a day's cohort costs a few
hundred rows, not a scan of spans. Input and output tokens are not in the rollups separately (their
histogram holds input + output per call), so they are read from the cohort's billed spans, along
with TTFT, which is what lets "why slow?" ask how long calls of a similar input size waited for their
first token. That read walks `spans_by_start` back from the window's end and stops after
SPAN_SCAN_LIMIT spans: a busy 7-day window then costs what its newest hours cost.

A trace's cohort is the traces with the same root name and feature over the window, read from the
`traces` summary rows (duration, tokens and calls are columns there) through `traces_by_start`, newest
first and at most TRACE_SCAN_LIMIT of them. There are no trace histograms in the rollups (they are per
call), and the summaries make percentiles exact.

The window is widened to whole minutes, exactly as the rollups cover it, so the histograms and the
spans read describe the same calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from store import histogram
from store.dashboards import Query
from store.queries import range_rows, rollup_ranges

NS = 1_000_000_000
# Spans read for a call cohort's token figures, newest first: ~8 h of a busy store (1M spans a week),
# ample for token percentiles, and ~50 ms however wide the window (bench/tui.py why_slow_call_*).
SPAN_SCAN_LIMIT = 50_000
# Traces read for a trace cohort, newest first: a day of a busy store (~25k traces), ~50 ms.
TRACE_SCAN_LIMIT = 30_000
# The model a call is filed under in the rollups: its request model, else its response model
# (store/writer.py SpanState.model), so that a cohort matches the histograms it is read from.
_SPAN_MODEL = "coalesce(nullif(s.request_model, ''), s.response_model, '')"


def window_bounds(start_s: float, end_s: float) -> tuple[int, int]:
    """[first, end) in seconds: the window widened to the rollup buckets that cover it."""
    ranges = rollup_ranges(int(start_s), int(end_s))
    return min(r[1] for r in ranges), max(r[2] for r in ranges)


# --- a call's cohort -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallSample:
    """One cohort call read from `spans` (failed API calls left out, as the latency histograms do)."""

    input_tokens: int | None
    output_tokens: int | None
    ttft_ns: int | None
    duration_ns: int | None


@dataclass(slots=True)
class CallCohort:
    model: str
    feature: str | None
    first_s: int
    end_s: int
    calls: int = 0  # billed calls in the rollups, failed ones included
    latency: dict[int, int] = field(default_factory=dict)  # histogram buckets (µs)
    ttft: dict[int, int] = field(default_factory=dict)
    tpot: dict[int, int] = field(default_factory=dict)
    samples: list[CallSample] = field(default_factory=list)
    # True when the span scan stopped at SPAN_SCAN_LIMIT: token figures describe the newest calls.
    samples_capped: bool = False


def call_cohort_queries(model: str, feature: str | None, start_s: float, end_s: float,
                        scan_limit: int = SPAN_SCAN_LIMIT) -> dict[str, Query]:
    first_s, last_s = window_bounds(start_s, end_s)
    ranges = rollup_ranges(int(start_s), int(end_s))
    window_sql, window_params = range_rows(ranges)
    return {
        # dims stores '' for "no feature" (store/writer.py), spans store NULL.
        "rollups": Query(
            "SELECT r.calls, r.hist_latency, r.hist_ttft, r.hist_tpot FROM rollups r "
            f"JOIN dims d ON d.id = r.dims_id WHERE {window_sql} AND d.model = ? AND d.feature = ?",
            (*window_params, model, feature or "")),
        # The inner query bounds the scan (newest spans first on spans_by_start), the outer one keeps
        # the cohort's calls; failed API calls are left out, as the latency histograms leave them out.
        "spans": Query(
            "SELECT s.input_tokens, s.output_tokens, s.ttft_ns, s.duration_ns FROM ("
            "SELECT input_tokens, output_tokens, ttft_ns, duration_ns, billed, error_class, feature, request_model, "
            "response_model FROM spans WHERE start_ns >= ? AND start_ns < ? ORDER BY start_ns DESC LIMIT ?) s "
            f"WHERE s.billed = 1 AND s.error_class IS NOT 'api' AND coalesce(s.feature, '') = ? AND {_SPAN_MODEL} = ?",
            (first_s * NS, last_s * NS, scan_limit, feature or "", model)),
        # Whether the scan reached the window's start: counted on the index alone.
        "scanned": Query("SELECT count(*) FROM (SELECT 1 FROM spans WHERE start_ns >= ? AND start_ns < ? LIMIT ?)",
                         (first_s * NS, last_s * NS, scan_limit + 1)),
    }


def parse_call_cohort(model: str, feature: str | None, start_s: float, end_s: float,
                      rows: dict[str, list[tuple]], scan_limit: int = SPAN_SCAN_LIMIT) -> CallCohort:
    first_s, last_s = window_bounds(start_s, end_s)
    cohort = CallCohort(model, feature, first_s, last_s)
    for calls, latency, ttft, tpot in rows["rollups"]:
        cohort.calls += calls
        histogram.decode_into(latency, cohort.latency)
        histogram.decode_into(ttft, cohort.ttft)
        histogram.decode_into(tpot, cohort.tpot)
    cohort.samples = [CallSample(*row) for row in rows["spans"]]
    cohort.samples_capped = bool(rows["scanned"]) and rows["scanned"][0][0] > scan_limit
    return cohort


# --- a trace's cohort ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TraceSample:
    trace_id: bytes
    duration_ns: int
    input_tokens: int
    output_tokens: int
    llm_calls: int


@dataclass(slots=True)
class TraceCohort:
    root_name: str | None
    feature: str | None
    first_s: int
    end_s: int
    subject: TraceSample | None  # the trace itself (None: not in the store)
    samples: list[TraceSample] = field(default_factory=list)
    capped: bool = False  # True when TRACE_SCAN_LIMIT cut the read: the samples are the newest traces


_TRACE_COLUMNS = "trace_id, duration_ns, input_tokens, output_tokens, llm_calls"


def trace_cohort_queries(trace_id: bytes, start_s: float, end_s: float,
                         scan_limit: int = TRACE_SCAN_LIMIT) -> dict[str, Query]:
    first_s, last_s = window_bounds(start_s, end_s)
    return {
        "subject": Query(f"SELECT {_TRACE_COLUMNS}, root_name, feature FROM traces WHERE trace_id = ?", (trace_id,)),
        # As for calls: the inner query bounds the scan, newest first on traces_by_start. `IS` so that
        # a trace whose root never arrived (root_name NULL) compares with its like.
        "cohort": Query(
            f"SELECT {_TRACE_COLUMNS} FROM (SELECT {_TRACE_COLUMNS}, root_name, feature FROM traces "
            "WHERE start_ns >= ? AND start_ns < ? ORDER BY start_ns DESC LIMIT ?) "
            "WHERE root_name IS (SELECT root_name FROM traces WHERE trace_id = ?) "
            "AND coalesce(feature, '') = coalesce((SELECT feature FROM traces WHERE trace_id = ?), '')",
            (first_s * NS, last_s * NS, scan_limit, trace_id, trace_id)),
        "scanned": Query("SELECT count(*) FROM (SELECT 1 FROM traces WHERE start_ns >= ? AND start_ns < ? LIMIT ?)",
                         (first_s * NS, last_s * NS, scan_limit + 1)),
    }


def parse_trace_cohort(start_s: float, end_s: float, rows: dict[str, list[tuple]],
                       scan_limit: int = TRACE_SCAN_LIMIT) -> TraceCohort:
    first_s, last_s = window_bounds(start_s, end_s)
    subject_rows = rows["subject"]
    if not subject_rows:
        return TraceCohort(None, None, first_s, last_s, None)
    *subject, root_name, feature = subject_rows[0]
    cohort = TraceCohort(root_name, feature, first_s, last_s, TraceSample(*subject))
    cohort.samples = [TraceSample(*row) for row in rows["cohort"]]
    cohort.capped = bool(rows["scanned"]) and rows["scanned"][0][0] > scan_limit
    return cohort


def typical_trace_ids(cohort: TraceCohort, count: int = 5) -> list[bytes]:
    """The cohort traces whose durations are nearest its median (the subject left out): what a
    normal trace of this kind spends its time on, to set the subject's critical path against."""
    subject_id = cohort.subject.trace_id if cohort.subject else None
    others = [s for s in cohort.samples if s.trace_id != subject_id]
    if not others:
        return []
    durations = sorted(s.duration_ns for s in others)
    median = durations[(len(durations) - 1) // 2]
    others.sort(key=lambda s: (abs(s.duration_ns - median), s.trace_id))
    return [s.trace_id for s in others[:count]]

