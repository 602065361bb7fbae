"""The ClickHouse store's schema: append-only, numbered migrations, like store/migrations.py for SQLite.

What differs from the SQLite layout, and why:
- No autoincrement ids: N `serve` replicas write one database, so nothing can hand out ids. A span is
  (trace_id, span_id); resources and scopes are referenced by their 16-byte digest; rollups carry their
  dimension strings in the key instead of an interned dims_id.
- No UPDATE: a span the writer corrects (billing-once, root inheritance, reprice) is inserted again with
  a higher `version`; `spans` is a ReplacingMergeTree(version, is_deleted) that keeps the last version,
  and a retried export (the same span again) collapses the same way. `forget` inserts the span with
  is_deleted = 1. Merges happen whenever ClickHouse likes, so every read of spans, logs and summaries
  uses FINAL (or argMax … GROUP BY the key): correctness never depends on a merge having run.
- Rollup corrections are signed delta rows (−old contribution, +new), as the SQLite writer applies them.
  `rollups` is a SummingMergeTree: counters are summed per key, and each histogram is a Nested column
  whose name ends in `Map` (bucket, count), the one form SummingMergeTree sums key by key. A plain
  Map(UInt16, Int64) column is NOT summed (measured on ClickHouse 26.9 via chdb: a merge keeps one row's
  map and drops the other's). Reads still fold with sum()/sumMap() … GROUP BY.
- Content (`raw`) is the plain protobuf (not zstd'd by the writer) compressed by ClickHouse's ZSTD codec
  per column block, where repeated system prompts across spans compress together.
- Retention is a TTL (`set_retention` changes it); fine (10 s) rollups keep 2 hours, as in SQLite.

Two processes migrating at once: ClickHouse has no transactions, so a step is guarded by a lock that is
itself DDL. `CREATE TABLE schema_migration_lock` (no IF NOT EXISTS) succeeds for exactly one caller in an
Atomic database; the others get TABLE_ALREADY_EXISTS and wait until it is dropped, then re-read the
applied versions, so each step is applied once. A lock left by a crashed process is taken over once it is
older than `stale_after_s` (its age from system.tables). Every step is also written idempotently
(IF NOT EXISTS), so a step interrupted half-way is finished by the next run, not failed.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from store.clickhouse.client import ClickHouseClient, ClickHouseError, identifier

log = logging.getLogger("llmobs.clickhouse")

DEFAULT_RETENTION_DAYS = 7
FINE_ROLLUP_KEEP_HOURS = 2  # 10 s rollups, as store/retention.py's FINE_ROLLUP_KEEP_S
LOCK_TABLE = "schema_migration_lock"
_TABLE_ALREADY_EXISTS = 57


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer llmobs-tui than this one."""


class MigrationLocked(RuntimeError):
    """Another process held the migration lock for longer than we were willing to wait."""


# The seconds-since-epoch DateTime that partitions, TTLs and skip indexes work on, from an ns column.
def _seconds(column: str) -> str:
    return f"toDateTime(intDiv({column}, 1000000000))"


# --- spans --------------------------------------------------------------------------------------------------
# Column for column the SQLite spans table (store/models.py SPAN_COLUMNS) less its rowid, plus the
# replacing version. LowCardinality for the columns that take few distinct values (grouped on).
SPANS_COLUMNS = """
    trace_id FixedString(16),
    span_id FixedString(8),
    parent_span_id Nullable(FixedString(8)),
    name String,
    kind LowCardinality(String),
    otel_kind UInt8,
    start_ns Int64,
    end_ns Int64,
    duration_ns Nullable(Int64),
    status UInt8,
    status_message Nullable(String),
    service LowCardinality(Nullable(String)),
    resource_digest Nullable(FixedString(16)),
    scope_digest Nullable(FixedString(16)),
    provider LowCardinality(Nullable(String)),
    operation LowCardinality(Nullable(String)),
    request_model LowCardinality(Nullable(String)),
    response_model LowCardinality(Nullable(String)),
    input_tokens Nullable(Int64),
    output_tokens Nullable(Int64),
    cache_read_tokens Nullable(Int64),
    cache_write_tokens Nullable(Int64),
    reasoning_tokens Nullable(Int64),
    ttft_ns Nullable(Int64),
    streaming Nullable(UInt8),
    finish_reason LowCardinality(Nullable(String)),
    own_error_class LowCardinality(Nullable(String)),
    error_subclass LowCardinality(Nullable(String)),
    error_type Nullable(String),
    validation_marker UInt8,
    error_class LowCardinality(Nullable(String)),
    own_feature LowCardinality(Nullable(String)),
    own_tenant LowCardinality(Nullable(String)),
    feature LowCardinality(Nullable(String)),
    tenant LowCardinality(Nullable(String)),
    prompt_id LowCardinality(Nullable(String)),
    prompt_version LowCardinality(Nullable(String)),
    conversation_id Nullable(String),
    user_id Nullable(String),
    cost_nusd Nullable(Int64),
    price_id LowCardinality(Nullable(String)),
    billed UInt8,
    flags UInt32,
    raw String CODEC(ZSTD(3)),
    response_id Nullable(String),
    call_layer UInt8 DEFAULT 1,
    tool_name LowCardinality(Nullable(String)),
    duplicate_of Nullable(String),
    price_tier Nullable(Int32),
    own_variant LowCardinality(Nullable(String)),
    variant LowCardinality(Nullable(String)),
    version UInt64,
    is_deleted UInt8 DEFAULT 0
"""


@dataclass(frozen=True, slots=True)
class SpansLayout:
    """How `spans` is partitioned, sorted and indexed: the choice bench/clickhouse_insert.py measures."""

    name: str
    partition_by: str
    order_by: str
    indexes: tuple[str, ...] = ()

    def ddl(self, table: str = "spans", retention_days: int = DEFAULT_RETENTION_DAYS) -> str:
        indexes = "".join(f",\n    INDEX {index}" for index in self.indexes)
        return (
            f"CREATE TABLE IF NOT EXISTS {identifier(table)} ({SPANS_COLUMNS}{indexes}\n)"
            f" ENGINE = ReplacingMergeTree(version, is_deleted)"
            f" PARTITION BY {self.partition_by} ORDER BY {self.order_by}"
            f" TTL {_seconds('start_ns')} + INTERVAL {int(retention_days)} DAY"
            # FINAL on a day-partitioned table merges within each partition only (a span never moves
            # between days: its start is part of the partition key and never changes).
            f" SETTINGS index_granularity = 8192"
        )


_DAY = f"toYYYYMMDD({_seconds('start_ns')})"
LAYOUTS = {
    # Sorted by trace: a trace's spans sit together in every part, found by the primary index; a time
    # range is pruned to its days by partition and to granules by a minmax index on start_ns.
    "by_trace": SpansLayout(
        "by_trace", _DAY, "(trace_id, span_id)", ("start_minmax start_ns TYPE minmax GRANULARITY 1",)
    ),
    # Sorted by hour then trace (SigNoz's and ClickStack's shape): a time range reads contiguous
    # granules; a trace lookup by id alone needs a bloom filter over every granule of the retention.
    "by_hour": SpansLayout(
        "by_hour",
        _DAY,
        "(intDiv(start_ns, 3600000000000), trace_id, span_id)",
        ("trace_bloom trace_id TYPE bloom_filter(0.001) GRANULARITY 1",),
    ),
}
# Measured by bench/clickhouse_insert.py on chdb 26.9, 1M spans over 7 days (≈1.4 KB stored per span), median
# of 7, CPU ms: by_hour  trace lookup 18.8, 1 h scan 7.5, 24 h scan 16.0;
#               by_trace trace lookup 171,  1 h scan 132, 24 h scan 135.
# by_trace loses even its own query: a lookup reads one granule of `raw` per day partition (≈10 MB of
# content each, adaptive granularity), and its minmax index cannot prune a granule that holds a whole day.
# The bloom filter's cost grows with retention; the trace view, which knows the trace's start from
# trace_summaries, also bounds start_ns, and then the sort key prunes to the trace's hour.
SPANS_LAYOUT = LAYOUTS["by_hour"]

# --- the other tables ---------------------------------------------------------------------------------------

_LOGS = f"""
CREATE TABLE IF NOT EXISTS logs (
    trace_id FixedString(16),            -- zero bytes: a record outside any trace
    span_id FixedString(8),
    time_ns Int64,
    record_digest FixedString(16),       -- of the record as stored: a retried export collapses into one row
    event_name LowCardinality(Nullable(String)),
    severity Nullable(Int32),
    resource_digest Nullable(FixedString(16)),
    scope_digest Nullable(FixedString(16)),
    finish_reason LowCardinality(Nullable(String)),
    eval_name LowCardinality(Nullable(String)),
    eval_score Nullable(Float64),
    raw String CODEC(ZSTD(3)),
    version UInt64,
    is_deleted UInt8 DEFAULT 0,
    INDEX time_minmax time_ns TYPE minmax GRANULARITY 1
) ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY toYYYYMMDD({_seconds('time_ns')})
ORDER BY (trace_id, span_id, time_ns, record_digest)
TTL {_seconds('time_ns')} + INTERVAL {DEFAULT_RETENTION_DAYS} DAY
"""

# One row per trace, re-inserted with a higher updated_ns whenever a span changes it. m001 keyed it by trace
# id only; m004 sorts it by the hour of the trace's start (TRACE_SUMMARIES_ORDER, below).
_TRACE_SUMMARIES = f"""
CREATE TABLE IF NOT EXISTS trace_summaries (
    trace_id FixedString(16),
    root_span_id Nullable(FixedString(8)),
    root_name Nullable(String),
    root_known UInt8,
    service LowCardinality(Nullable(String)),
    start_ns Int64,
    end_ns Int64,
    duration_ns Int64,
    spans Int64,
    llm_calls Int64,
    input_tokens Int64,
    output_tokens Int64,
    cache_read_tokens Int64,
    cache_write_tokens Int64,
    reasoning_tokens Int64,
    cost_nusd Int64,
    unpriced_calls Int64,
    errors_api Int64,
    errors_validation Int64,
    errors_guardrail Int64,
    error_spans Int64,
    feature LowCardinality(Nullable(String)),
    tenant LowCardinality(Nullable(String)),
    models Nullable(String),
    conversation_id Nullable(String),
    user_id Nullable(String),
    updated_ns Int64,
    is_deleted UInt8 DEFAULT 0,
    INDEX start_minmax start_ns TYPE minmax GRANULARITY 1,
    INDEX cost_minmax cost_nusd TYPE minmax GRANULARITY 1,
    INDEX duration_minmax duration_ns TYPE minmax GRANULARITY 1
) ENGINE = ReplacingMergeTree(updated_ns, is_deleted)
ORDER BY trace_id
TTL {_seconds('end_ns')} + INTERVAL {DEFAULT_RETENTION_DAYS} DAY
"""

_CONVERSATIONS = """
CREATE TABLE IF NOT EXISTS conversations (
    conversation_id String,
    user_id Nullable(String),
    turns Int64,
    first_ns Int64,
    last_ns Int64,
    llm_calls Int64,
    input_tokens Int64,
    output_tokens Int64,
    cost_nusd Int64,
    unpriced_calls Int64,
    errors Int64,
    failed_turns Int64,
    p95_ns Int64,
    updated_ns Int64,
    is_deleted UInt8 DEFAULT 0
) ENGINE = ReplacingMergeTree(updated_ns, is_deleted)
ORDER BY conversation_id
"""

_USERS = """
CREATE TABLE IF NOT EXISTS users (
    user_id String,
    conversations Int64,
    turns Int64,
    llm_calls Int64,
    input_tokens Int64,
    output_tokens Int64,
    cost_nusd Int64,
    unpriced_calls Int64,
    errors Int64,
    first_ns Int64,
    last_ns Int64,
    updated_ns Int64,
    is_deleted UInt8 DEFAULT 0
) ENGINE = ReplacingMergeTree(updated_ns, is_deleted)
ORDER BY user_id
"""

# Rollup counters, as SQLite's rollups (store/migrations.py m001, m002, m007), all signed: a correction
# is a row of deltas.
ROLLUP_COUNTERS = (
    "calls", "errors_api", "err_rate_limit", "err_provider", "err_client", "err_timeout", "err_network",
    "err_other", "errors_validation", "errors_guardrail", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "reasoning_tokens", "cost_nusd", "unpriced_calls", "streaming_calls", "duration_ns",
    "decode_tokens", "decode_ns", "refusals",
)
# SQLite's hist_<name> blobs (store/histogram.py buckets): here Nested <name>Map (bucket, count).
ROLLUP_HISTOGRAMS = ("latency", "ttft", "tpot", "cost", "tokens", "input_tokens", "output_tokens")
ROLLUP_DIMENSIONS = (
    "service", "provider", "model", "operation", "feature", "tenant", "prompt_id", "prompt_version", "variant",
)


def histogram_column(name: str) -> str:
    """The Nested column of histogram `name` (its two arrays are `<column>.bucket` and `<column>.count`)."""
    return f"{name}Map"


_ROLLUPS = f"""
CREATE TABLE IF NOT EXISTS rollups (
    res UInt32,                          -- bucket width in seconds: 10, 60 or 3600
    bucket Int64,                        -- bucket start, seconds since the epoch
    {"".join(f"{dim} LowCardinality(String),{chr(10)}    " for dim in ROLLUP_DIMENSIONS)}{
    "".join(f"{counter} Int64,{chr(10)}    " for counter in ROLLUP_COUNTERS)}{
    f",{chr(10)}    ".join(f"{histogram_column(h)} Nested(bucket UInt16, count Int64)" for h in ROLLUP_HISTOGRAMS)}
) ENGINE = SummingMergeTree
PARTITION BY (res, toYYYYMM(toDateTime(bucket)))
ORDER BY (res, bucket, {", ".join(ROLLUP_DIMENSIONS)})
TTL toDateTime(bucket) + INTERVAL {FINE_ROLLUP_KEEP_HOURS} HOUR WHERE res = 10,
    toDateTime(bucket) + INTERVAL {DEFAULT_RETENTION_DAYS} DAY
"""

_INTERNED = """
CREATE TABLE IF NOT EXISTS {table} (
    digest FixedString(16),
    {extra}
    blob String CODEC(ZSTD(3))
) ENGINE = ReplacingMergeTree
ORDER BY digest
"""

_META = """
CREATE TABLE IF NOT EXISTS meta (
    key String,
    value String,
    updated_ns Int64
) ENGINE = ReplacingMergeTree(updated_ns)
ORDER BY key
"""

# --- migrations -----------------------------------------------------------------------------------------------

Migration = Callable[[ClickHouseClient], None]
MIGRATIONS: list[Migration] = []
migration = MIGRATIONS.append


@migration
def m001_initial(client: ClickHouseClient) -> None:
    for ddl in (
        SPANS_LAYOUT.ddl(),
        _LOGS,
        _TRACE_SUMMARIES,
        _CONVERSATIONS,
        _USERS,
        _ROLLUPS,
        _INTERNED.format(table="resources", extra="service Nullable(String),"),
        _INTERNED.format(table="scopes", extra="name String, version String,"),
        _META,
    ):
        client.command(ddl)


# How many recent insert tokens a table remembers (ClickHouse's default for a non-replicated MergeTree is 0:
# none). Rollup deltas are not idempotent: a batch the sink shipped, whose confirmation it then lost (a
# crash between ClickHouse's answer and the outbox delete), is shipped again with the same
# insert_deduplication_token, and ClickHouse drops it. Measured on chdb 26.9: the second insert with a
# token answers as written but adds nothing; a new token with the same rows is stored. Without a token the
# block's content hash is the key instead, so two equal delta blocks would be taken for one: every insert
# into rollups must carry its token (store/clickhouse/sink.py does). The other tables need no window: a
# re-shipped span, log or summary row collapses by its ReplacingMergeTree key and version.
DEDUPLICATION_WINDOW = 10_000


@migration
def m002_insert_deduplication(client: ClickHouseClient) -> None:
    client.command(f"ALTER TABLE rollups MODIFY SETTING non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}")
    # The SQLite traces table's A/B variant (m007), carried like feature and tenant.
    client.command("ALTER TABLE trace_summaries ADD COLUMN IF NOT EXISTS variant LowCardinality(Nullable(String))")


@migration
def m003_conversations_and_users_computed_when_read(client: ClickHouseClient) -> None:
    """A row per conversation and per user cannot be written by N replicas: each holds only the turns the
    router sent it, and the last replica to write would win (store/clickhouse/sessions.py computes them
    from trace_summaries instead). Nothing released ever wrote these tables."""
    client.command("DROP TABLE IF EXISTS conversations")
    client.command("DROP TABLE IF EXISTS users")


# trace_summaries sorted by the hour the trace started in, in day partitions (m004). Sorted by trace id (m001),
# a time window pruned nothing: the trace list of the last 24 h merged every summary of the retention (FINAL
# filters on a column outside the sort key only after merging). Measured on chdb 26.9 with 12.5M traces
# over 7 days, two versions each, the 24 h list by cost, median of 5: 1,253 ms by trace id, 160 ms by hour;
# looking up 500 traces by id (trace_sync, once per batch) 14 → 31 ms.
# The price: a trace's start moves earlier when a span that started before it arrives late (a root
# exported after its children), and a ReplacingMergeTree collapses rows only with equal sort keys in one
# partition. So when a trace's start moves to another hour, the writer ships a deletion row for the old
# hour's key with the new row's version (store/clickhouse/sink.py, batch_rows), and every deletion of a
# trace (forget) is written at the start the stored row has.
TRACE_SUMMARIES_ORDER = (f"PARTITION BY {_DAY} "
                         "ORDER BY (intDiv(start_ns, 3600000000000), trace_id)")
HOUR_NS = 3_600_000_000_000


def start_hour(start_ns: int) -> int:
    """The hour part of a trace summary's sort key (intDiv(start_ns, 3600e9) in ClickHouse)."""
    return start_ns // HOUR_NS


@migration
def m004_trace_summaries_by_start_hour(client: ClickHouseClient) -> None:
    """Copy trace_summaries (live rows, FINAL) into the hour-sorted layout and swap the two. Idempotent: a
    copy interrupted half-way is done again (equal rows collapse), and a finished swap is not repeated.
    Replicas are upgraded together: an older one still running writes its rows by trace id."""
    layout = [row[0] for row in client.query(
        "SELECT sorting_key FROM system.tables WHERE database = {db:String} AND name = 'trace_summaries'",
        {"db": client.database})]
    if layout and layout[0].startswith("intDiv("):
        client.command("DROP TABLE IF EXISTS trace_summaries_by_trace")
        return
    days = retention_days(client)
    # The end's minmax index: the runaway rule reads the traces that ended since its window's start (with
    # the rows sorted by start, a granule's ends lie close together). Bloom filters on the conversation and
    # the user: a conversation's turns, the Sessions screen's conversations and `forget` read by them.
    ddl = (_TRACE_SUMMARIES.replace("EXISTS trace_summaries", "EXISTS trace_summaries_by_hour")
           .replace("ORDER BY trace_id", TRACE_SUMMARIES_ORDER)
           .replace("INDEX duration_minmax",
                    "INDEX end_minmax end_ns TYPE minmax GRANULARITY 1,\n    "
                    "INDEX conversation_bloom conversation_id TYPE bloom_filter(0.01) GRANULARITY 1,\n    "
                    "INDEX user_bloom user_id TYPE bloom_filter(0.01) GRANULARITY 1,\n    INDEX duration_minmax")
           .replace(f"INTERVAL {DEFAULT_RETENTION_DAYS} DAY", f"INTERVAL {days} DAY"))
    client.command(ddl)
    client.command("ALTER TABLE trace_summaries_by_hour ADD COLUMN IF NOT EXISTS variant "
                   "LowCardinality(Nullable(String))")
    client.command("INSERT INTO trace_summaries_by_hour SELECT * FROM trace_summaries FINAL")
    client.command("RENAME TABLE trace_summaries TO trace_summaries_by_trace, "
                   "trace_summaries_by_hour TO trace_summaries")
    client.command("DROP TABLE IF EXISTS trace_summaries_by_trace")


# Change markers (SQLite's `changes`, m007): each replica ships the first time it saw each value of a changing
# thing; a value's first time is the earliest any replica saw it (min over the rows of its key), and what it
# changed from is computed when read (store/clickhouse/dashboards.py, change_rows), since no replica saw the
# others' values. `seq` is the working store's row id: ties in time keep the order one writer saw them in.
# A row is re-shipped with a higher version when forget drops its example trace.
_CHANGES = """
CREATE TABLE IF NOT EXISTS changes (
    kind LowCardinality(String),
    scope String,
    after String,
    time_ns Int64,
    before Nullable(String),
    trace_id Nullable(FixedString(16)),
    seq Int64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (kind, scope, after, time_ns)
"""


@migration
def m005_change_markers(client: ClickHouseClient) -> None:
    client.command(_CHANGES)


# Tool calls (SQLite's `tool_calls`, m010): one row per call, keyed by its outermost tool span, so that
# the Breakdown by tool and `report --by tool` read calls instead of walking every tool span of the window.
# A replica recomputes a trace's calls from all its stored tool spans whenever a batch brings it one, and
# ships a row for each of them: the call it is, or a deletion row when it is part of its parent's call
# (store/clickhouse/sink.py). A call's key never moves: a span's start does not change.
_TOOL_CALLS = f"""
CREATE TABLE IF NOT EXISTS tool_calls (
    trace_id FixedString(16),
    span_id FixedString(8),
    start_ns Int64,
    tool Nullable(String),
    duration_ns Nullable(Int64),
    failed UInt8,
    version UInt64,
    is_deleted UInt8 DEFAULT 0
) ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY {_DAY}
ORDER BY (intDiv(start_ns, 3600000000000), trace_id, span_id)
TTL {_seconds('start_ns')} + INTERVAL {{days}} DAY
"""


@migration
def m006_tool_calls(client: ClickHouseClient) -> None:
    client.command(_TOOL_CALLS.format(days=retention_days(client)))


# The trace list by cost (the `$` sort, `traces --sort cost`) reads a second copy of the live summaries sorted
# by (UTC day of the start, cost): the most expensive traces of a day are the tail of its range in every
# part, so a cost threshold on the sort key leaves a few granules to FINAL instead of the window's every
# summary (store/clickhouse/dashboards.py, trace_list). Measured on chdb 26.9 with 100M spans (1.8M traces a
# day, merges stopped), the 24 h list's 500 most expensive, median of 7: 102.6 ms from trace_summaries,
# 5.8 (the threshold) + 11.8 ms from this table. The price is a second insert of every summary.
# A cost is in the sort key, so a summary whose cost or start day changes leaves its old row behind: every
# writer of summaries (the sink, forget, reprice) writes a deletion row at each key the trace's rows had
# that its new row does not replace, as m004's hour moves do (store/clickhouse/rows.py, by_cost_rows).
# A column added to trace_summaries must be added here too: the two tables' columns are the same.
DAY_NS = 86_400_000_000_000
BY_COST_TABLE = "trace_summaries_by_cost"
_BY_COST_LAYOUT = (f"ENGINE = ReplacingMergeTree(updated_ns, is_deleted) PARTITION BY intDiv(start_ns, {DAY_NS}) "
                   f"ORDER BY (intDiv(start_ns, {DAY_NS}), cost_nusd, trace_id)")


def by_cost_key(start_ns: int, cost_nusd: int) -> tuple[int, int]:
    """The part of a summary's key in trace_summaries_by_cost that a trace's rows can differ in."""
    return start_ns // DAY_NS, cost_nusd


@migration
def m007_trace_summaries_by_cost(client: ClickHouseClient) -> None:
    """Create the by-cost copy and fill it with the live summaries. Interrupted and run again, the copy's
    rows collapse with the ones already there (same key, same version)."""
    client.command(f"CREATE TABLE IF NOT EXISTS {BY_COST_TABLE} AS trace_summaries {_BY_COST_LAYOUT} "
                   f"TTL {_seconds('end_ns')} + INTERVAL {retention_days(client)} DAY")
    client.command(f"INSERT INTO {BY_COST_TABLE} SELECT * FROM trace_summaries FINAL")


# Tool spans per tool name and bucket (SQLite's tool_rollups, m007 there): what Trends by tool and the
# Breakdown by tool's charts read. A tool span's contribution is added once, when a replica stores it, and
# taken out when it is forgotten, so the rows are signed deltas summed like `rollups` (SummingMergeTree;
# reads fold with sum()/sumMap() … GROUP BY all the same), and a batch shipped twice must be dropped the second
# time by its insert token (m002's window).
_TOOL_ROLLUPS = f"""
CREATE TABLE IF NOT EXISTS tool_rollups (
    res UInt32,                          -- bucket width in seconds: 60 or 3600
    bucket Int64,                        -- bucket start, seconds since the epoch
    tool String,                         -- the span's tool name ('' when it names none)
    calls Int64,
    errors Int64,
    duration_ns Int64,
    {histogram_column("latency")} Nested(bucket UInt16, count Int64)
) ENGINE = SummingMergeTree
PARTITION BY (res, toYYYYMM(toDateTime(bucket)))
ORDER BY (res, bucket, tool)
TTL toDateTime(bucket) + INTERVAL {{days}} DAY
SETTINGS non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}
"""


@migration
def m008_tool_rollups(client: ClickHouseClient) -> None:
    """Create tool_rollups and fill it from the tool spans the database holds, so that a tool span
    forgotten later is taken out of rows that counted it. Filled once: an empty table only (the rows come
    in one insert, so an interrupted run left none)."""
    client.command(_TOOL_ROLLUPS.format(days=retention_days(client)))
    if not client.query("SELECT count() FROM tool_rollups")[0][0]:
        fill_tool_rollups(client)


def fill_tool_rollups(client: ClickHouseClient) -> None:
    """Add every stored tool span's contribution to tool_rollups, in one insert (m008; the bench's fill)."""
    from store import histogram

    # store.writer's SpanWriter.tool_contribution in SQL, the latency's bucket as store.histogram.bucket_of
    # computes it (the same float operations; a duration on a bucket's edge to the last bit could differ).
    rows = client.query(
        "SELECT res, intDiv(intDiv(start_ns, 1000000000), res) * res AS bucket, coalesce(tool_name, '') AS tool, "
        "count(), countIf(status = 2 OR own_error_class IS NOT NULL), sum(coalesce(duration_ns, 0)), "
        "sumMapIf([toUInt16(if(duration_ns / 1000 <= 1, 0, least(ceil(log(duration_ns / 1000) / {g:Float64}), "
        "{top:UInt16})))], [toInt64(1)], duration_ns IS NOT NULL) "
        "FROM spans FINAL ARRAY JOIN [60, 3600] AS res WHERE kind = 'tool' GROUP BY res, bucket, tool",
        {"g": histogram.LOG_GAMMA, "top": histogram.MAX_BUCKET})
    if rows:
        client.insert("tool_rollups", [[*row[:6], list(row[6][0]), list(row[6][1])] for row in rows],
                      ["res", "bucket", "tool", "calls", "errors", "duration_ns",
                       f"{histogram_column('latency')}.bucket", f"{histogram_column('latency')}.count"])


# OTLP metric points (SQLite's metric_points and metric_series, m011 there): per series and bucket, what each
# replica's MetricWriter added in a transaction (store/metrics.py turns cumulative points into deltas before).
# A series is its digest (store.metrics.series_digest: name, unit, kind, service, attributes), not the
# working store's id, and carries its identity on every row, so no table of series is needed. The rows
# fold as MetricWriter merges a bucket: counts and sums added, min and max, the newest sample by its time (a
# (last_ns, last) tuple's max), histograms bucket by bucket. An AggregatingMergeTree of
# SimpleAggregateFunction columns does that on a merge (a SummingMergeTree cannot take a min); reads fold
# the same way … GROUP BY, whatever has been merged. 10 s buckets keep 2 hours, as in SQLite.
_METRIC_POINTS = f"""
CREATE TABLE IF NOT EXISTS metric_points (
    res UInt32,                          -- bucket width in seconds: 10, 60 or 3600
    bucket Int64,                        -- bucket start, seconds since the epoch
    name LowCardinality(String),
    series FixedString(16),
    unit SimpleAggregateFunction(any, LowCardinality(String)),
    kind SimpleAggregateFunction(any, LowCardinality(String)),
    service SimpleAggregateFunction(any, LowCardinality(String)),
    attrs_json SimpleAggregateFunction(any, String),
    n SimpleAggregateFunction(sum, Int64),
    total SimpleAggregateFunction(sum, Float64),
    min SimpleAggregateFunction(min, Nullable(Float64)),
    max SimpleAggregateFunction(max, Nullable(Float64)),
    last SimpleAggregateFunction(max, Tuple(Int64, Nullable(Float64))),
    hist SimpleAggregateFunction(sumMap, Tuple(Array(UInt16), Array(Int64)))
) ENGINE = AggregatingMergeTree
PARTITION BY (res, toYYYYMM(toDateTime(bucket)))
ORDER BY (res, bucket, name, series)
TTL toDateTime(bucket) + INTERVAL {FINE_ROLLUP_KEEP_HOURS} HOUR WHERE res = 10,
    toDateTime(bucket) + INTERVAL {{days}} DAY
SETTINGS non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}
"""

# The points the series caps dropped (SQLite's meta `metric_points_dropped`), a row per shipped batch that
# dropped any: the Metrics screen shows their sum.
_METRIC_POINTS_DROPPED = f"""
CREATE TABLE IF NOT EXISTS metric_points_dropped (
    time_ns Int64,
    points Int64
) ENGINE = MergeTree
ORDER BY time_ns
SETTINGS non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}
"""


@migration
def m009_metric_points(client: ClickHouseClient) -> None:
    """OTLP metrics on ClickHouse: what the replicas' metric writers ship (nothing to fill: before this
    migration no replica shipped any; `copy_store` copies a working store's)."""
    client.command(_METRIC_POINTS.format(days=retention_days(client)))
    client.command(_METRIC_POINTS_DROPPED)


# `text:` search on ClickHouse (store/clickhouse/search.py): each span's and log record's words, as the SQLite
# content index's tokenizer makes them (store/fts5_words.py), computed by the shipper from the stored content.
# No skip index. Measured on chdb 26.9 over a day of bench.clickhouse_tui's 10M-span store (1.43M spans, 85
# words a chat span, 116 MB of words), reading every row: a `text` index of whole words took 68 MB (59 %) and
# 30 % more insert time, and it can only serve a search's whole words, while a search's last word is a prefix
# (a rare whole word 240 -> 160 ms, an absent one 226 -> 7 ms; a one-word search, the common kind, not at
# all); a `text` index of 4-grams serves LIKE on any word, at 195 MB (169 %) for 273 -> 210 ms on a rare one.
SEARCH_WORDS = "search_words String DEFAULT '' CODEC(ZSTD(3))"


@migration
def m010_search_words(client: ClickHouseClient) -> None:
    """Spans and logs stored before this migration have no words (''): a `text:` search does not find them.
    Their content is protobuf, which ClickHouse cannot read: `copy` from a working store, or wait for the
    retention to replace them."""
    for table in ("spans", "logs"):
        client.command(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {SEARCH_WORDS}")


# Billing-once across replicas (store/clickhouse/twin_calls.py): the calls (billable spans with a provider
# response id) that are the root of their trace, sorted by response id, which every replica looks each batch's
# calls up in, and again in the two minutes after. Two spans of one call in two traces happen only when an
# instrumentation lost the context, and the span that lost it is a root: so roots alone are kept, and in an
# app whose calls run under its own spans the table holds next to nothing. The spans themselves are sorted
# by hour and trace: a lookup there reads the response id of every span in its hours (measured at 5M spans an
# hour, bench/clickhouse_twins.py: 300 calls 300-360 ms; a projection sorted by response id read 120 ms, and
# the planner often preferred the hours). Filled by ClickHouse from every insert into `spans` (deletion rows
# too), so neither the shipper nor `copy` writes it.
ROOT_CALLS_TABLE = "root_calls"
_ROOT_CALLS = f"""
CREATE TABLE IF NOT EXISTS {ROOT_CALLS_TABLE} (
    response_id String,
    call_layer UInt8,
    trace_id FixedString(16),
    span_id FixedString(8),
    start_ns Int64,
    end_ns Int64,
    version UInt64,
    is_deleted UInt8
) ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY {_DAY}
ORDER BY (response_id, trace_id, span_id)
TTL {_seconds('start_ns')} + INTERVAL {{days}} DAY
SETTINGS index_granularity = 1024
"""
# `spans.response_id`: the bare name in WHERE would be the alias, assumeNotNull(…), never NULL.
_ROOT_CALLS_SELECT = (
    "SELECT assumeNotNull(response_id) AS response_id, call_layer, trace_id, span_id, start_ns, end_ns, version, "
    "is_deleted FROM spans WHERE spans.parent_span_id IS NULL AND spans.response_id IS NOT NULL "
    "AND kind IN ('llm', 'embedding')")


@migration
def m011_root_calls(client: ClickHouseClient) -> None:
    """The spans stored before this migration are read into it for the last two days (a twin arrives minutes
    after its call, not days). Run twice (interrupted before it was recorded), or given a span the view
    copied too, a row is there twice: the same key and version, which the table collapses and the lookup
    reads as one."""
    client.command(_ROOT_CALLS.format(days=retention_days(client)))
    client.command(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {ROOT_CALLS_TABLE}_from_spans TO {ROOT_CALLS_TABLE} "
                   f"AS {_ROOT_CALLS_SELECT}")
    since = time.time_ns() - 2 * 86_400 * 1_000_000_000
    client.command(f"INSERT INTO {ROOT_CALLS_TABLE} {_ROOT_CALLS_SELECT} AND start_ns >= {int(since)}")


_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied_ns Int64,
    applied_by String
) ENGINE = MergeTree
ORDER BY version
"""


def applied_versions(client: ClickHouseClient) -> set[int]:
    return {int(row[0]) for row in client.query("SELECT DISTINCT version FROM schema_migrations")}


def migrate(
    client: ClickHouseClient,
    *,
    wait_s: float = 120.0,
    stale_after_s: float = 600.0,
    poll_s: float = 0.2,
    holder: str | None = None,
) -> list[int]:
    """Create the database and bring it to the newest schema; the versions applied by this call.

    Safe to call from any number of processes at once (see the module docstring)."""
    client.command("CREATE DATABASE IF NOT EXISTS {db:Identifier}", {"db": client.database})
    client.use_database()
    client.command(_MIGRATIONS_TABLE)
    target = len(MIGRATIONS)
    done = applied_versions(client)
    _refuse_newer(done, target)
    if done >= set(range(1, target + 1)):
        return []
    who = holder or f"{socket.gethostname()}:{os.getpid()}"
    _acquire(client, who, wait_s, stale_after_s, poll_s)
    applied: list[int] = []
    try:
        done = applied_versions(client)  # whoever held the lock before us may have applied them
        _refuse_newer(done, target)
        for version, step in enumerate(MIGRATIONS, start=1):
            if version in done:
                continue
            step(client)
            client.insert(
                "schema_migrations",
                [(version, step.__name__, time.time_ns(), who)],
                ["version", "name", "applied_ns", "applied_by"],
            )
            applied.append(version)
    finally:
        client.command(f"DROP TABLE IF EXISTS {LOCK_TABLE}")
    return applied


def _refuse_newer(done: set[int], target: int) -> None:
    if done and max(done) > target:
        raise SchemaTooNew(
            f"the ClickHouse store is at schema version {max(done)}, newer than this llmobs-tui knows "
            f"({target}): upgrade llmobs-tui"
        )


def _acquire(client: ClickHouseClient, holder: str, wait_s: float, stale_after_s: float, poll_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            # Exactly one concurrent CREATE TABLE (without IF NOT EXISTS) of a name succeeds.
            client.command(f"CREATE TABLE {LOCK_TABLE} (holder String) ENGINE = Memory")
            client.insert(LOCK_TABLE, [(holder,)], ["holder"])
            return
        except ClickHouseError as exc:
            if exc.code != _TABLE_ALREADY_EXISTS:
                raise
        age = client.query(
            "SELECT now() - metadata_modification_time FROM system.tables"
            " WHERE database = {db:String} AND name = {t:String}",
            {"db": client.database, "t": LOCK_TABLE},
        )
        if age and int(age[0][0]) > stale_after_s:
            # Left by a process that died mid-migration: every step is idempotent, so finishing is safe.
            client.command(f"DROP TABLE IF EXISTS {LOCK_TABLE}")
            continue
        if time.monotonic() > deadline:
            raise MigrationLocked(
                f"another process has been migrating the ClickHouse store for over {wait_s:.0f} s "
                f"(table {client.database}.{LOCK_TABLE}); if none is running, drop that table"
            )
        time.sleep(poll_s)


def set_retention(client: ClickHouseClient, days: int) -> None:
    """Keep spans, logs, trace summaries and rollups `days` days (serve's --retention); fine rollups 2 h."""
    days = int(days)
    if days < 1:
        raise ValueError("retention must be at least one day on the ClickHouse store")
    # TTL clauses take no query parameters: `days` is an int checked above, never text from outside.
    client.command(f"ALTER TABLE spans MODIFY TTL {_seconds('start_ns')} + INTERVAL {days} DAY")
    client.command(f"ALTER TABLE logs MODIFY TTL {_seconds('time_ns')} + INTERVAL {days} DAY")
    client.command(f"ALTER TABLE trace_summaries MODIFY TTL {_seconds('end_ns')} + INTERVAL {days} DAY")
    # A database not migrated this far yet gets these tables with this retention (m006–m009 read it).
    fine = f"toDateTime(bucket) + INTERVAL {FINE_ROLLUP_KEEP_HOURS} HOUR WHERE res = 10, toDateTime(bucket)"
    for table, ttl in (("tool_calls", _seconds("start_ns")), (BY_COST_TABLE, _seconds("end_ns")),
                       (ROOT_CALLS_TABLE, _seconds("start_ns")),
                       ("tool_rollups", "toDateTime(bucket)"), ("metric_points", fine)):
        if client.query("SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}",
                        {"db": client.database, "t": table})[0][0]:
            client.command(f"ALTER TABLE {table} MODIFY TTL {ttl} + INTERVAL {days} DAY")
    client.command(f"ALTER TABLE rollups MODIFY TTL {fine} + INTERVAL {days} DAY")


RETENTION_KEY = "retention_days"


def retention_days(client: ClickHouseClient) -> int:
    """The days this database keeps (what `serve --retention` last set; the default before any)."""
    rows = client.query("SELECT argMax(value, updated_ns) FROM meta WHERE key = {k:String}", {"k": RETENTION_KEY})
    return int(rows[0][0]) if rows and rows[0][0] else DEFAULT_RETENTION_DAYS


def ensure_retention(client: ClickHouseClient, days: int) -> bool:
    """`serve --retention` on the ClickHouse store: change the TTLs only when the database keeps another
    number of days than `days` (recorded in `meta`), because a TTL change rewrites the TTL information of
    every existing part. Returns True when it changed them. N replicas started with the same flag agree;
    with different ones, the last to start wins, and says so in its log."""
    rows = client.query("SELECT argMax(value, updated_ns) FROM meta WHERE key = {k:String}", {"k": RETENTION_KEY})
    current = rows[0][0] if rows and rows[0][0] else str(DEFAULT_RETENTION_DAYS)
    if current == str(int(days)):
        return False
    set_retention(client, days)
    client.insert("meta", [[RETENTION_KEY, str(int(days)), time.time_ns()]], ["key", "value", "updated_ns"])
    log.warning("ClickHouse store %s: retention changed from %s to %d days", client.database, current, days)
    return True
