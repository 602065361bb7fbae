"""The reads of the alert engine (llmobs_tui.alerting) that rollups cannot answer: the example
call a finding links to, and the evaluation events of a quality SLO. Every one is a typed
function over the schema, so the engine spells no column (issue 12)."""

from __future__ import annotations

import sqlite3
from typing import Any

# (trace id, span id of the call to open the trace on, if known)
Example = tuple[bytes, bytes | None]


def _example(db: sqlite3.Connection, since_ns: int, condition: str, params: tuple = (), table: str = "spans",
             order: str = "start_ns DESC") -> Example | None:
    """(trace id, span id) of the most telling match: the span is the one the Alerts screen opens
    the trace on. From the traces table (a cost budget): the trace's costliest call."""
    if table == "traces":
        row = db.execute(
            f"SELECT trace_id FROM traces WHERE start_ns >= ? AND {condition} ORDER BY {order} LIMIT 1",
            (since_ns, *params)).fetchone()
        if row is None:
            return None
        span = db.execute("SELECT span_id FROM spans WHERE trace_id = ? AND billed = 1 "
                          "ORDER BY cost_nusd DESC LIMIT 1", (row[0],)).fetchone()
        return row[0], span[0] if span else None
    row = db.execute(
        f"SELECT trace_id, span_id FROM {table} WHERE start_ns >= ? AND {condition} ORDER BY {order} LIMIT 1",
        (since_ns, *params)).fetchone()
    return (row[0], row[1]) if row else None


def costliest_trace_example(db: sqlite3.Connection, since_ns: int, feature: str | None = None) -> Example | None:
    """The costliest trace since `since_ns` (of a feature, or of all), on its costliest call."""
    scope, params = ("", ()) if feature is None else (" AND feature = ?", (feature,))
    return _example(db, since_ns, "1" + scope, params, table="traces", order="cost_nusd DESC")


def over_token_budget_example(db: sqlite3.Connection, since_ns: int, feature: str, limit: int) -> Example | None:
    """The latest billed call of a feature over `limit` input + output tokens."""
    return _example(db, since_ns, "billed = 1 AND feature = ? AND "
                    "coalesce(input_tokens, 0) + coalesce(output_tokens, 0) > ?", (feature, limit))


def prompt_version_example(db: sqlite3.Connection, since_ns: int, feature: str, version: str) -> Example | None:
    """The costliest billed call of a feature's prompt version."""
    return _example(db, since_ns, "billed = 1 AND feature = ? AND prompt_version = ?", (feature, version),
                    order="cost_nusd DESC")


def feature_call_example(db: sqlite3.Connection, since_ns: int, feature: str) -> Example | None:
    """The latest billed call of a feature."""
    return _example(db, since_ns, "billed = 1 AND feature = ?", (feature,))


def error_example(db: sqlite3.Connection, since_ns: int, name: str, subclass: bool) -> Example | None:
    """The latest call failed with error class (or, `subclass`, error subclass) `name`: the failed
    billed call (the provider's 429 itself) before a wrapper span that inherited it."""
    column = "error_subclass" if subclass else "error_class"
    return _example(db, since_ns, f"{column} = ?", (name,), order="billed DESC, start_ns DESC")


def streaming_call_example(db: sqlite3.Connection, since_ns: int, model: str) -> Example | None:
    """The latest call of a model that streamed (has a time to first token)."""
    return _example(db, since_ns, "(request_model = ? OR response_model = ?) AND ttft_ns IS NOT NULL", (model, model))


def slow_first_token_example(db: sqlite3.Connection, since_ns: int, model: str, ttft_over_ns: int) -> Example | None:
    """The slowest-to-first-token call of a model over `ttft_over_ns`."""
    return _example(db, since_ns, "(request_model = ? OR response_model = ?) AND ttft_ns > ?",
                    (model, model, ttft_over_ns), order="ttft_ns DESC")


def quality_events(db: sqlite3.Connection, threshold: float, start_ns: int, end_ns: int, evaluation: str | None = None,
                   feature: str | None = None, model: str | None = None) -> tuple[int, int]:
    """(bad, total) evaluation events in [start_ns, end_ns): bad scores under `threshold`."""
    sql = ("SELECT count(*), coalesce(sum(l.eval_score < ?), 0) FROM logs l "
           "LEFT JOIN spans s ON s.trace_id = l.trace_id AND s.span_id = l.span_id "
           "WHERE l.eval_score IS NOT NULL AND l.time_ns >= ? AND l.time_ns < ?")
    params: list[Any] = [threshold, start_ns, end_ns]
    if evaluation:
        sql += " AND l.eval_name = ?"
        params.append(evaluation)
    if feature:
        sql += " AND s.feature = ?"
        params.append(feature)
    if model:
        sql += " AND coalesce(s.request_model, s.response_model) = ?"
        params.append(model)
    total, bad = db.execute(sql, params).fetchone()
    return bad, total


SLO_KINDS = ("availability", "validity", "ttft", "latency", "cost_per_call", "quality")


def slo_example(db: sqlite3.Connection, kind: str, threshold: float, since_ns: int, feature: str | None = None,
                model: str | None = None) -> Example | None:
    """The call that made an SLO's value: the slowest, the costliest, or the latest failed one;
    for a quality SLO (any kind not above) the latest evaluation under `threshold`."""
    scope = ""
    params: list[Any] = []
    if feature:
        scope += " AND feature = ?"
        params.append(feature)
    if model:
        scope += " AND (request_model = ? OR response_model = ?)"
        params += [model, model]
    condition = {
        "availability": "billed = 1 AND error_class = 'api'",
        "validity": "billed = 1 AND error_class = 'validation'",
        "ttft": "billed = 1 AND ttft_ns > ?",
        "latency": "billed = 1 AND duration_ns > ?",
        "cost_per_call": "billed = 1 AND cost_nusd > ?",
    }.get(kind)
    if condition is None:
        row = db.execute(
            "SELECT trace_id, span_id FROM logs WHERE eval_score < ? AND time_ns >= ? ORDER BY time_ns DESC LIMIT 1",
            (threshold, since_ns)).fetchone()
        return (row[0], row[1]) if row and row[0] else None
    if "?" in condition:
        params.insert(0, int(threshold * 1e9))  # seconds → ns; USD → nUSD
    order = {"ttft": "ttft_ns DESC", "latency": "duration_ns DESC",
             "cost_per_call": "cost_nusd DESC"}.get(kind, "start_ns DESC")
    return _example(db, since_ns, condition + scope, tuple(params), order=order)
