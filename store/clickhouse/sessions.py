"""Conversations and users on the ClickHouse store: computed when read, from the trace summaries.

The SQLite store keeps a row per conversation and per user, recomputed by the writer from the traces it
holds (store/sessions.py). With N replicas no writer holds them all: a trace-id router sends a
conversation's turns (traces) to different replicas, so a row one replica wrote would hold its share of
the turns only, and the last replica to write would win. A conversation's p95 turn duration and its user
(the first named one in start order) cannot be folded from such shares either. So nothing ships these
rows; they are the same function of a conversation's turns as store.sessions.summarize, evaluated by
ClickHouse over `trace_summaries`, where every replica's traces are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from store.clickhouse.client import ClickHouseClient

# store.sessions.CONVERSATION_COLUMNS without updated_ns, in that order. The p95 is the nearest rank
# (store.sessions.nearest_rank: the ceil(0.95 n)-th smallest duration); the user is the first turn's in
# (start, trace id) order that names one; a failed turn has an error or an error span.
_CONVERSATION_SELECT = """
SELECT conversation_id,
       argMinIf(user_id, (start_ns, trace_id), user_id IS NOT NULL),
       count(), min(start_ns), max(end_ns), sum(llm_calls), sum(input_tokens), sum(output_tokens),
       sum(cost_nusd), sum(unpriced_calls), sum(errors_api + errors_validation + errors_guardrail),
       countIf(errors_api + errors_validation + errors_guardrail + error_spans > 0),
       arraySort(groupArray(duration_ns))[toUInt64(greatest(1, ceil(0.95 * count())))]
FROM trace_summaries FINAL
WHERE conversation_id IS NOT NULL{where}
GROUP BY conversation_id
ORDER BY conversation_id
"""


def conversation_rows(client: ClickHouseClient, conversation_ids: Sequence[str] | None = None, *,
                      seen_since_ns: int | None = None) -> list[tuple[Any, ...]]:
    """The rows store.sessions.refresh would write for these conversations (all when None), less updated_ns.
    `seen_since_ns`: only the conversations with a turn that ended since then (their last_ns is at or after
    it), found by the summaries' end (end_minmax) and then read whole by their id (conversation_bloom)."""
    where = ""
    params: dict[str, Any] = {}
    if seen_since_ns is not None:
        where += (" AND conversation_id IN (SELECT DISTINCT conversation_id FROM trace_summaries FINAL "
                  "WHERE end_ns >= {since:Int64} AND conversation_id IS NOT NULL)")
        params["since"] = seen_since_ns
    if conversation_ids is not None:
        if not conversation_ids:
            return []
        where += " AND conversation_id IN {ids:Array(String)}"
        params["ids"] = list(conversation_ids)
    rows = client.query(_CONVERSATION_SELECT.format(where=where), params)
    return [(row[0], row[1], *(int(v) for v in row[2:])) for row in rows]


def user_rows(client: ClickHouseClient) -> list[tuple[Any, ...]]:
    """The rows store.sessions.refresh_users would write: per user, the sums over their conversations
    (a conversation counts for the user it is attributed to, as above)."""
    rows = client.query(
        f"SELECT c.2, count(), sum(c.3), sum(c.6), sum(c.7), sum(c.8), sum(c.9), sum(c.10), sum(c.11), "
        f"min(c.4), max(c.5) FROM (SELECT tuple(*) AS c FROM ({_CONVERSATION_SELECT.format(where='')})) "
        "WHERE c.2 IS NOT NULL GROUP BY c.2 ORDER BY c.2")
    return [(row[0], *(int(v) for v in row[1:])) for row in rows]
