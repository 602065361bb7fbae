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
from store.clickhouse.schema import HOUR_NS

# The first turn that names a user, in (start, trace id) order as SQLite sorts them (trace ids bytewise): the
# pair as one UInt256, the start's sign bit flipped so that its order holds for every Int64, the trace id read
# big-endian. argMin over the tuple itself compared it field by field through the generic path: 1,054 → 450 ms
# for the 50,400 conversations of 12.5M summaries (100M spans), the same users.
_FIRST_USER = ("argMinIf(user_id, bitShiftLeft(toUInt256(bitXor(reinterpretAsUInt64(start_ns), 9223372036854775808)), "
               "128) + reinterpretAsUInt128(reverse(trace_id)), user_id IS NOT NULL)")

# store.sessions.CONVERSATION_COLUMNS without updated_ns, in that order. The p95 is the nearest rank
# (store.sessions.nearest_rank: the ceil(0.95 n)-th smallest duration); the user is the first turn's in
# (start, trace id) order that names one; a failed turn has an error or an error span.
# quantileExact(level) takes the element at floor(level · n) (0-based), one past the nearest rank where 0.95 n is
# a whole number: a level 1e-9 below 0.95 takes ceil(0.95 n) - 1 for every n below 5·10^7 turns (checked in
# double arithmetic for n up to 3M). Sorting each conversation's durations instead cost 1.84 s against 1.49 for
# all 50,400 conversations of 12.5M summaries, the same p95s.
_CONVERSATION_SELECT = f"""
SELECT conversation_id,
       {_FIRST_USER},
       count(), min(start_ns), max(end_ns), sum(llm_calls), sum(input_tokens), sum(output_tokens),
       sum(cost_nusd), sum(unpriced_calls), sum(errors_api + errors_validation + errors_guardrail),
       countIf(errors_api + errors_validation + errors_guardrail + error_spans > 0),
       quantileExact(0.949999999)(duration_ns)
FROM trace_summaries FINAL
WHERE conversation_id IS NOT NULL{{where}}
GROUP BY conversation_id{{having}}
ORDER BY conversation_id
"""

# The conversations with a turn that ended since {since:Int64}: every stored row of their traces, not only the
# newest (no FINAL: the end's minmax index skips what ended before; a row an older version left ends no later
# than the newest, so only the HAVING below can tell a conversation it names wrongly, and it does).
_SEEN = ("(SELECT conversation_id FROM trace_summaries WHERE end_ns >= {since:Int64} "
         "AND conversation_id IS NOT NULL)")
# The hour before which none of those conversations' traces starts: the earliest start of any row of theirs
# (the bloom filter on the conversation skips the rest; no FINAL: a trace's start only moves earlier, so its
# newest row starts at or after any older one's minimum). Whole hours are the sort key's first part, so
# FINAL still folds every row of each (hour, trace) key it reads: a start bound would cut keys in two.
_FIRST_HOUR = (f"(SELECT intDiv(min(start_ns), {HOUR_NS}) FROM trace_summaries "
               f"WHERE conversation_id IN {_SEEN})")


def conversation_rows(client: ClickHouseClient, conversation_ids: Sequence[str] | None = None, *,
                      seen_since_ns: int | None = None) -> list[tuple[Any, ...]]:
    """The rows store.sessions.refresh would write for these conversations (all when None), less updated_ns.
    `seen_since_ns`: only the conversations with a turn that ended since then (their last_ns is at or after
    it), found by the summaries' end (end_minmax), then read whole from the hour of their first turn on."""
    where = having = ""
    params: dict[str, Any] = {}
    if seen_since_ns is not None:
        # FINAL reads only the hours from the first of these conversations' turns: a day's conversations
        # read a day of summaries, not the retention's.
        where += f" AND conversation_id IN {_SEEN} AND intDiv(start_ns, {HOUR_NS}) >= {_FIRST_HOUR}"
        having = " HAVING max(end_ns) >= {since:Int64}"
        params["since"] = seen_since_ns
    if conversation_ids is not None:
        if not conversation_ids:
            return []
        where += " AND conversation_id IN {ids:Array(String)}"
        params["ids"] = list(conversation_ids)
    rows = client.query(_CONVERSATION_SELECT.format(where=where, having=having), params)
    return [(row[0], row[1], *(int(v) for v in row[2:])) for row in rows]


# Per conversation, what a user's row sums (store.sessions.refresh_users): _CONVERSATION_SELECT without the
# p95 and the failed turns, which sorted every conversation's durations for nothing (users by cost at 100M spans:
# see bench.clickhouse_tui's "sessions by user").
_USER_SELECT = f"""
SELECT user, count(), sum(turns), sum(calls), sum(input), sum(output), sum(cost), sum(unpriced), sum(errors),
       min(first), max(last)
FROM (SELECT {_FIRST_USER} AS user, count() AS turns,
             min(start_ns) AS first, max(end_ns) AS last, sum(llm_calls) AS calls, sum(input_tokens) AS input,
             sum(output_tokens) AS output, sum(cost_nusd) AS cost, sum(unpriced_calls) AS unpriced,
             sum(errors_api + errors_validation + errors_guardrail) AS errors
      FROM trace_summaries FINAL
      WHERE conversation_id IS NOT NULL
      GROUP BY conversation_id)
WHERE user IS NOT NULL
GROUP BY user{{having}}
ORDER BY user
"""


def user_rows(client: ClickHouseClient, *, seen_since_ns: int | None = None) -> list[tuple[Any, ...]]:
    """The rows store.sessions.refresh_users would write: per user, the sums over their conversations
    (a conversation counts for the user it is attributed to, as above), over the whole retention.
    `seen_since_ns`: only the users with a turn that ended since then."""
    having, params = "", {}
    if seen_since_ns is not None:
        having, params = " HAVING max(last) >= {since:Int64}", {"since": seen_since_ns}
    rows = client.query(_USER_SELECT.format(having=having), params)
    return [(row[0], *(int(v) for v in row[1:])) for row in rows]
