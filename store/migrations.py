"""Append-only, numbered schema migrations. Never edit a released migration: add the next one.

Each migration runs in one transaction together with the `PRAGMA user_version` bump, so a crash
mid-migration leaves the previous schema intact.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from store.sessions import backfill as backfill_conversations

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []
migration = MIGRATIONS.append


@migration
def m001_initial(db: sqlite3.Connection) -> None:
    db.executescript(
        """
        -- A resource (service.name and the rest) is stored once and referenced by its id.
        CREATE TABLE resources (
            id INTEGER PRIMARY KEY,
            digest BLOB NOT NULL UNIQUE,
            service TEXT,
            blob BLOB NOT NULL                -- opentelemetry.proto.resource.v1.Resource
        );
        CREATE TABLE scopes (
            id INTEGER PRIMARY KEY,
            digest BLOB NOT NULL UNIQUE,
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            blob BLOB NOT NULL                -- opentelemetry.proto.common.v1.InstrumentationScope
        );

        -- One row per span. Typed columns for what is filtered, grouped or sorted; the full span
        -- (attributes, events, links: content already redacted) is kept in `raw` so that a rule
        -- fixed later can be re-applied and the trace exported unchanged.
        CREATE TABLE spans (
            id INTEGER PRIMARY KEY,           -- assigned by the writer, in commit order
            trace_id BLOB NOT NULL,
            span_id BLOB NOT NULL,
            parent_span_id BLOB,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,               -- llm|embedding|tool|retriever|agent|chain|guardrail|span
            otel_kind INTEGER NOT NULL,
            start_ns INTEGER NOT NULL,
            end_ns INTEGER NOT NULL,
            duration_ns INTEGER,              -- NULL when end < start
            status INTEGER NOT NULL,          -- OTel status code: 0 unset, 1 ok, 2 error
            status_message TEXT,
            service TEXT,
            resource_id INTEGER,
            scope_id INTEGER,
            provider TEXT,
            operation TEXT,
            request_model TEXT,
            response_model TEXT,
            input_tokens INTEGER,             -- includes cache read and cache write
            output_tokens INTEGER,            -- includes reasoning
            cache_read_tokens INTEGER,
            cache_write_tokens INTEGER,
            reasoning_tokens INTEGER,
            ttft_ns INTEGER,
            streaming INTEGER,
            finish_reason TEXT,               -- normalized: stop|length|tool_call|content_filter|error|…
            own_error_class TEXT,             -- from this span's own attributes
            error_subclass TEXT,              -- api: rate_limit|provider|client|timeout|network|other
            error_type TEXT,
            validation_marker INTEGER NOT NULL DEFAULT 0, -- a failed validation step of its parent call
            error_class TEXT,                 -- effective: api|validation|guardrail (children included)
            own_feature TEXT,
            own_tenant TEXT,
            feature TEXT,                     -- effective: own, else the trace root's
            tenant TEXT,
            prompt_id TEXT,
            prompt_version TEXT,
            conversation_id TEXT,
            user_id TEXT,
            cost_nusd INTEGER,                -- priced cost in nano-USD; NULL when unpriced
            price_id TEXT,                    -- the price-table row that priced it
            billed INTEGER NOT NULL DEFAULT 0, -- 1: this span is the billed LLM call
            flags INTEGER NOT NULL DEFAULT 0,
            raw BLOB                          -- zstd(opentelemetry.proto.trace.v1.Span)
        );
        CREATE UNIQUE INDEX spans_by_trace ON spans (trace_id, span_id);
        CREATE INDEX spans_by_start ON spans (start_ns);

        -- One summary row per trace, kept current by the writer, so lists sort without scanning.
        CREATE TABLE traces (
            trace_id BLOB PRIMARY KEY,
            root_span_id BLOB,
            root_name TEXT,
            root_known INTEGER NOT NULL,      -- 0 while the parentless span has not arrived
            service TEXT,
            start_ns INTEGER NOT NULL,
            end_ns INTEGER NOT NULL,
            duration_ns INTEGER NOT NULL,
            spans INTEGER NOT NULL,
            llm_calls INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cache_read_tokens INTEGER NOT NULL,
            cache_write_tokens INTEGER NOT NULL,
            reasoning_tokens INTEGER NOT NULL,
            cost_nusd INTEGER NOT NULL,
            unpriced_calls INTEGER NOT NULL,
            errors_api INTEGER NOT NULL,
            errors_validation INTEGER NOT NULL,
            errors_guardrail INTEGER NOT NULL,
            error_spans INTEGER NOT NULL,
            feature TEXT,
            tenant TEXT,
            models TEXT,
            updated_ns INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX traces_by_start ON traces (start_ns);
        -- "Most expensive / slowest first" walks these instead of sorting every trace in a window.
        -- start_ns in the key lets the window test run on the index, without a table lookup per entry.
        CREATE INDEX traces_by_cost ON traces (cost_nusd, start_ns);
        CREATE INDEX traces_by_duration ON traces (duration_ns, start_ns);

        -- Log records (gen_ai events), joined to spans by (trace_id, span_id) at read time.
        CREATE TABLE logs (
            id INTEGER PRIMARY KEY,
            trace_id BLOB,
            span_id BLOB,
            time_ns INTEGER NOT NULL,
            event_name TEXT,
            severity INTEGER,
            resource_id INTEGER,
            scope_id INTEGER,
            finish_reason TEXT,
            raw BLOB                          -- zstd(opentelemetry.proto.logs.v1.LogRecord)
        );
        CREATE INDEX logs_by_span ON logs (trace_id, span_id);
        CREATE INDEX logs_by_time ON logs (time_ns);

        -- Rollup dimensions, interned. '' stands for "none" so that UNIQUE works (NULLs are distinct).
        CREATE TABLE dims (
            id INTEGER PRIMARY KEY,
            service TEXT NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            operation TEXT NOT NULL,
            feature TEXT NOT NULL,
            tenant TEXT NOT NULL,
            prompt_id TEXT NOT NULL,
            prompt_version TEXT NOT NULL,
            UNIQUE (service, provider, model, operation, feature, tenant, prompt_id, prompt_version)
        );

        -- Per-minute and per-hour rollups of billed calls, per dimension set and (dims_id 0) in total. Counters are additive so that a late
        -- correction (a child arriving after its parent) is applied as a delta. Histograms are
        -- log-bucketed (store/histogram.py) for percentiles with bounded relative error.
        CREATE TABLE rollups (
            res INTEGER NOT NULL,             -- bucket width in seconds: 60 or 3600
            bucket INTEGER NOT NULL,          -- bucket start, seconds since the epoch
            dims_id INTEGER NOT NULL,
            calls INTEGER NOT NULL,
            errors_api INTEGER NOT NULL,
            err_rate_limit INTEGER NOT NULL,
            err_provider INTEGER NOT NULL,
            err_client INTEGER NOT NULL,
            err_timeout INTEGER NOT NULL,
            err_network INTEGER NOT NULL,
            err_other INTEGER NOT NULL,
            errors_validation INTEGER NOT NULL,
            errors_guardrail INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cache_read_tokens INTEGER NOT NULL,
            cache_write_tokens INTEGER NOT NULL,
            reasoning_tokens INTEGER NOT NULL,
            cost_nusd INTEGER NOT NULL,
            unpriced_calls INTEGER NOT NULL,
            streaming_calls INTEGER NOT NULL,
            duration_ns INTEGER NOT NULL,     -- sum: average concurrency = duration / window
            decode_tokens INTEGER NOT NULL,   -- output tokens of calls with a TTFT
            decode_ns INTEGER NOT NULL,       -- their (total − TTFT)
            hist_latency BLOB,
            hist_ttft BLOB,
            hist_tpot BLOB,
            PRIMARY KEY (res, bucket, dims_id)
        ) WITHOUT ROWID;

        -- Facts about the store itself (price-table digest, first start, …).
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
        """  # noqa: E501 (a released migration's text is never edited, its comments included)
    )
    pin_planner_statistics(db)


@migration
def m002_alerting(db: sqlite3.Connection) -> None:
    """What the alert rules read: per-call cost and token histograms in the rollups (cost-per-call
    SLOs, token budgets) and evaluation scores on log records (quality SLOs). Rollups written
    before this migration have neither histogram: those SLOs count only calls stored since."""
    db.executescript(
        """
        ALTER TABLE rollups ADD COLUMN hist_cost BLOB;     -- cost per priced call (µUSD)
        ALTER TABLE rollups ADD COLUMN hist_tokens BLOB;   -- tokens (input + output) per call
        ALTER TABLE logs ADD COLUMN eval_name TEXT;        -- gen_ai.evaluation.result: what was judged
        ALTER TABLE logs ADD COLUMN eval_score REAL;       -- and its score
        CREATE INDEX logs_evaluations ON logs (eval_name, time_ns) WHERE eval_score IS NOT NULL;
        """
    )
    pin_planner_statistics(db)


@migration
def m003_one_call_once(db: sqlite3.Connection) -> None:
    """What finds two spans of one provider call that are not ancestor and descendant (an SDK's own
    span beside an instrumentation's, a framework span whose SDK span hangs elsewhere): the provider's
    response id and the layer a span was emitted at; the effective `duplicate_of` the writer sets; and
    the tool name, for tool calls (function tools and MCP) broken down per tool."""
    db.executescript(
        """
        ALTER TABLE spans ADD COLUMN response_id TEXT;    -- gen_ai.response.id and its aliases
        -- 0: the provider SDK's own span, 1: an instrumentation of an SDK, 2: a framework's span
        ALTER TABLE spans ADD COLUMN call_layer INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE spans ADD COLUMN tool_name TEXT;
        ALTER TABLE spans ADD COLUMN duplicate_of BLOB;   -- effective: the billed span of the same call
        -- Two spans of one call can even be in two traces (an instrumentation that never makes its
        -- span current, with no app span around the call): found by response id across the store.
        CREATE INDEX spans_by_response ON spans (response_id, call_layer, start_ns) WHERE response_id IS NOT NULL;
        -- The breakdown by tool reads a window's tool spans: 24 h of 1M spans in 0.63 s, not 1.8 s.
        CREATE INDEX spans_tool_by_start ON spans (start_ns) WHERE kind = 'tool';
        """
    )
    pin_planner_statistics(db)


@migration
def m004_price_rows(db: sqlite3.Connection) -> None:
    """What priced a span, kept by the store so the read side needs no price table: the rows of the
    table in effect (recorded by the writer at start and by `reprice`; a row dropped from the table
    stays, `in_table = 0`, for the spans it priced) and, per span, the tier that applied. Spans
    priced before this migration have no tier: the read side derives it from the row."""
    db.executescript(
        """
        CREATE TABLE price_rows (
            id TEXT PRIMARY KEY,              -- spans.price_id
            provider TEXT NOT NULL,
            kind TEXT NOT NULL,               -- chat|embedding
            models TEXT NOT NULL,             -- the names and pattern it matches, for display
            input REAL NOT NULL,              -- USD per 1M tokens, defaults applied
            cache_read REAL NOT NULL,
            cache_write REAL NOT NULL,
            output REAL NOT NULL,
            reasoning REAL NOT NULL,
            long_context_threshold INTEGER,   -- input tokens above which the long_* prices apply
            long_input REAL,
            long_cache_read REAL,
            long_cache_write REAL,
            long_output REAL,                 -- reasoning tokens above the threshold cost this too
            checked TEXT NOT NULL,
            source TEXT NOT NULL,
            in_table INTEGER NOT NULL,        -- 0: not in the price table last recorded
            recorded_ns INTEGER NOT NULL
        ) WITHOUT ROWID;
        -- 0: base prices, 1: long-context prices; NULL when unpriced (or priced before this column)
        ALTER TABLE spans ADD COLUMN price_tier INTEGER;
        """
    )
    pin_planner_statistics(db)


@migration
def m005_content_index(db: sqlite3.Connection) -> None:
    """Full-text search over stored content (prompts, completions, tool arguments and results), as
    stored: after redaction. Trigram tokens, so a search finds any substring of three or more
    characters in any script, case-insensitively. Filled off the ack path by the writer process
    (store/content_index.py), which records how far it got in `meta`; rows go with their trace.
    rowid: spans.id for a span's content, -logs.id for a log record's. The ids come before the body:
    a search reads each match's trace_id, and past a long body that would mean its overflow pages.
    detail=full (the default) because trigram phrases need token positions."""
    db.executescript(
        """
        CREATE VIRTUAL TABLE content_index USING fts5(
            trace_id UNINDEXED,
            span_id UNINDEXED,
            body,                             -- the searchable text, messages in order
            tokenize = 'trigram'
        );
        """
    )


@migration
def m006_conversations(db: sqlite3.Connection) -> None:
    """Sessions: each trace's conversation and user (the first span carrying one, in start order),
    and one summary row per conversation kept current by the writer (store/sessions.py), so the
    Sessions screen lists 100k conversations without grouping spans."""
    db.executescript(
        """
        ALTER TABLE traces ADD COLUMN conversation_id TEXT;
        ALTER TABLE traces ADD COLUMN user_id TEXT;
        CREATE INDEX traces_by_conversation ON traces (conversation_id, start_ns) WHERE conversation_id IS NOT NULL;

        -- One row per conversation, the sum of its traces (turns); figures over the whole conversation.
        CREATE TABLE conversations (
            conversation_id TEXT PRIMARY KEY,
            user_id TEXT,                     -- the user of its first turn that names one
            turns INTEGER NOT NULL,           -- traces
            first_ns INTEGER NOT NULL,        -- start of the first turn
            last_ns INTEGER NOT NULL,         -- end of the last turn: "last seen", the window test
            llm_calls INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cost_nusd INTEGER NOT NULL,
            unpriced_calls INTEGER NOT NULL,
            errors INTEGER NOT NULL,          -- api + validation + guardrail errors of its calls
            failed_turns INTEGER NOT NULL,    -- turns with an error or a failed span
            p95_ns INTEGER NOT NULL,          -- turn duration, nearest rank (exact)
            updated_ns INTEGER NOT NULL
        ) WITHOUT ROWID;
        -- The Sessions screen's sorts walk these and stop at the list's length; last_ns in each key
        -- lets the window test run on the index (as traces_by_cost does).
        CREATE INDEX conversations_by_last ON conversations (last_ns);
        CREATE INDEX conversations_by_cost ON conversations (cost_nusd, last_ns);
        CREATE INDEX conversations_by_tokens ON conversations ((input_tokens + output_tokens), last_ns);
        CREATE INDEX conversations_by_turns ON conversations (turns, last_ns);
        CREATE INDEX conversations_by_errors ON conversations (errors, last_ns);
        CREATE INDEX conversations_by_p95 ON conversations (p95_ns, last_ns);
        CREATE INDEX conversations_by_user ON conversations (user_id) WHERE user_id IS NOT NULL;

        -- One row per user of those conversations, the sum of their rows: the by-user grouping (top
        -- users by cost) reads one row per user instead of grouping every conversation.
        CREATE TABLE users (
            user_id TEXT PRIMARY KEY,
            conversations INTEGER NOT NULL,
            turns INTEGER NOT NULL,
            llm_calls INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cost_nusd INTEGER NOT NULL,
            unpriced_calls INTEGER NOT NULL,
            errors INTEGER NOT NULL,
            first_ns INTEGER NOT NULL,
            last_ns INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX users_by_last ON users (last_ns);
        CREATE INDEX users_by_cost ON users (cost_nusd, last_ns);
        CREATE INDEX users_by_tokens ON users ((input_tokens + output_tokens), last_ns);
        """
    )
    # A store written before the writer kept them: each trace's conversation and user from its
    # spans, then every conversation's row.
    backfill_conversations(db)
    pin_planner_statistics(db)


@migration
def m007_trends_and_changes(db: sqlite3.Connection) -> None:
    """What the charts, Trends, the drift panel and change markers read, all kept by the writer:
    - dims gains `variant` (the configured experiment-variant attribute), a dimension like feature.
      SQLite cannot change a UNIQUE constraint, so dims is rebuilt with its ids kept (rollups
      refer to them) and the key becomes an explicit index.
    - rollups gain per-call input and output token-length histograms (drift against a baseline) and
      a refusal counter (finish reason content_filter/refusal, or a refusal in the output).
    - tool_rollups: tool spans per tool name (they are not billed calls, so not in rollups).
    - changes: the first time each value of a changing thing was seen (a prompt version, the model
      a requested model was served as, a service.version, an error class, a price table); drawn as
      markers on every chart. A row with no `before` is a baseline (the first value ever seen),
      except for error classes and prices, whose first occurrence is itself the change."""
    db.executescript(
        """
        CREATE TABLE dims_v7 (
            id INTEGER PRIMARY KEY,
            service TEXT NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            operation TEXT NOT NULL,
            feature TEXT NOT NULL,
            tenant TEXT NOT NULL,
            prompt_id TEXT NOT NULL,
            prompt_version TEXT NOT NULL,
            variant TEXT NOT NULL DEFAULT ''
        );
        INSERT INTO dims_v7 (id, service, provider, model, operation, feature, tenant, prompt_id, prompt_version)
            SELECT id, service, provider, model, operation, feature, tenant, prompt_id, prompt_version FROM dims;
        DROP TABLE dims;
        ALTER TABLE dims_v7 RENAME TO dims;
        CREATE UNIQUE INDEX dims_key ON dims (service, provider, model, operation, feature, tenant, prompt_id,
                                              prompt_version, variant);

        ALTER TABLE traces ADD COLUMN variant TEXT;              -- as traces.feature: the trace's variant
        ALTER TABLE spans ADD COLUMN own_variant TEXT;           -- as spans.own_feature: the span's own variant
        ALTER TABLE spans ADD COLUMN variant TEXT;               -- as spans.feature: inherited from the root

        ALTER TABLE rollups ADD COLUMN refusals INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE rollups ADD COLUMN hist_input_tokens BLOB;   -- input tokens per call (cached included)
        ALTER TABLE rollups ADD COLUMN hist_output_tokens BLOB;  -- output tokens per call (reasoning included)

        CREATE TABLE tool_rollups (
            res INTEGER NOT NULL,             -- 60 or 3600, as rollups
            bucket INTEGER NOT NULL,
            tool TEXT NOT NULL,               -- spans.tool_name ('' when a tool span names none)
            calls INTEGER NOT NULL,
            errors INTEGER NOT NULL,          -- spans with status error
            duration_ns INTEGER NOT NULL,
            hist_latency BLOB,
            PRIMARY KEY (res, bucket, tool)
        ) WITHOUT ROWID;

        CREATE TABLE changes (
            id INTEGER PRIMARY KEY,
            time_ns INTEGER NOT NULL,         -- the start of the first span that showed it
            kind TEXT NOT NULL,               -- prompt_version | served_model | service_version | error_class | prices
            scope TEXT NOT NULL,              -- the prompt id, requested model, service; '' when global
            before TEXT,                      -- the value seen before it; NULL: a baseline (see above)
            after TEXT NOT NULL,
            trace_id BLOB                     -- a trace that showed it
        );
        CREATE UNIQUE INDEX changes_key ON changes (kind, scope, after);
        CREATE INDEX changes_by_time ON changes (time_ns);
        """
    )
    pin_planner_statistics(db)


@migration
def m008_word_search_index(db: sqlite3.Connection) -> None:
    """The content index moves from trigram to word tokens (unicode61, accents kept, scripts written
    without spaces split per character: store/content_index.py). Trigram tokens cost one posting
    per character: indexing took more CPU than storing the span (356 µs per span with 4 KB of
    content, bench.ingest --workload heavy) and 10.7 KB of index per span; words cost about a
    seventh of that and half the space. The index is rebuilt from the stored spans and logs, off
    the ack path, by the writer's indexer: its watermarks restart at 0."""
    from store.content_index import CREATE_INDEX, LOGS_WATERMARK, SPANS_WATERMARK

    db.execute("DROP TABLE IF EXISTS content_index")
    db.execute(CREATE_INDEX)
    db.execute("DELETE FROM meta WHERE key IN (?, ?)", (SPANS_WATERMARK, LOGS_WATERMARK))


@migration
def m009_conversation_durations(db: sqlite3.Connection) -> None:
    """A conversation's turn durations in order, for its exact p95 without reading its turns: the
    writer updates a long conversation's row by deltas (store/sessions.py) and reads the p95 as one
    index step from the top. Before, every batch re-read all turns of each conversation it touched,
    so a conversation thousands of turns long slowed the writer without bound."""
    db.execute("CREATE INDEX traces_by_conversation_duration ON traces (conversation_id, duration_ns) "
               "WHERE conversation_id IS NOT NULL")
    pin_planner_statistics(db)


@migration
def m010_tool_calls(db: sqlite3.Connection) -> None:
    """Tool calls kept by the writer (store/tool_rollups.py): one row per call and, per hour and
    tool, the calls, failures and durations. The Breakdown by tool walked the window's tool spans
    (~2 s of CPU for 24 h at 3M spans a week); it now reads about 24 rows per tool. Backfilled from
    the stored tool spans, so an old store shows the same numbers."""
    from store import tool_rollups

    for statement in tool_rollups.CREATE_TABLES:
        db.execute(statement)
    tool_rollups.backfill(db)


@migration
def m011_metrics(db: sqlite3.Connection) -> None:
    """OTLP metrics (store/metrics.py): bounded series, the previous point of each cumulative stream,
    and per-series points in 10 s / 1 min / 1 h buckets with the span rollups' retention."""
    from store import metrics

    for statement in metrics.CREATE_TABLES:
        db.execute(statement)


@migration
def m012_contentless_search_index(db: sqlite3.Connection) -> None:
    """The content index keeps its postings alone, and the text it indexed once, zstd-compressed, in
    content_text (store/content_index.py, CREATE_TABLES): the old FTS5 table kept a second,
    uncompressed copy of every text. Rebuilt like m008's: the old table is dropped here (a
    contentless table cannot be filled from it without re-tokenizing every row, which would hold
    the migration's transaction for minutes on a large store) and the writer's indexer works
    through the stored spans and logs again from watermark 0, off the ack path; until it is through,
    a search finds only what it has re-indexed and says how many spans are left. Measured on 40,448
    heavy spans: the drop 0.9 s here, the re-index 81 µs of writer CPU per span; at 3M spans that is
    about a minute here (heavy; less with less content) and 2-4 minutes of background CPU."""
    from store.content_index import CREATE_TABLES, LOGS_WATERMARK, SPANS_WATERMARK

    db.execute("DROP TABLE IF EXISTS content_index")
    for statement in CREATE_TABLES:
        db.execute(statement)
    db.execute("DELETE FROM meta WHERE key IN (?, ?)", (SPANS_WATERMARK, LOGS_WATERMARK))


@migration
def m013_clickhouse_outbox(db: sqlite3.Connection) -> None:
    """`serve --store clickhouse://…`: what each writer transaction changed, waiting to be shipped to
    ClickHouse (store/clickhouse/sink.py). Written in the same transaction as the change it describes, so
    a rollback leaves none and a crash loses none; deleted once ClickHouse confirmed the batch. `token`
    is the batch's insert_deduplication_token (unique across replicas and restarts: a re-shipped batch is
    dropped by ClickHouse); `version` its wall-clock ns, the ReplacingMergeTree version of its span rows.
    Empty unless a ClickHouse store is configured."""
    db.execute(
        """
        CREATE TABLE IF NOT EXISTS clickhouse_outbox (
            batch INTEGER PRIMARY KEY AUTOINCREMENT,
            token TEXT NOT NULL,
            version INTEGER NOT NULL,
            payload BLOB NOT NULL             -- JSON: ids and keys of what changed, and the rollup deltas
        )
        """
    )


@migration
def m014_rollup_sums_index(db: sqlite3.Connection) -> None:
    """The Overview's top features and models sum cost and calls over every dimension set's rollup rows
    in the window. A rollup row carries its histograms (about 800 bytes an hour row, 5.8 KB a total
    row), so over 7 days that read ~13 MB of rows for two integers each: 23 ms on week.db, against
    4 ms from this index (dashboards.overview_queries, "top"). The writer keeps it up to date on each
    rollup row it writes: about one per 3–5 spans."""
    db.execute("CREATE INDEX IF NOT EXISTS rollups_sums ON rollups (res, bucket, dims_id, cost_nusd, calls)")
    # Its planner statistics with the rest: without them SQLite may read the alert rules' per-dimension
    # sums through it (an index without statistics once cost an evaluation 70 s on a 3M-span store).
    pin_planner_statistics(db)


@migration
def m015_clickhouse_rechecks(db: sqlite3.Connection) -> None:
    """`serve --store clickhouse://…` with replicas: what a replica still had to do about calls billed twice
    across traces when it stopped (store/clickhouse/trace_sync.py, save and restore): the calls to look up again
    in ClickHouse, by their row in spans, and the version it last wrote each recent trace at (whether it is that
    trace's last writer). Written at a clean stop, read back and cleared at the next start. And the last two
    minutes of its writes, one row per writer transaction in that transaction, from which a replica that was
    killed rebuilds the same (pruned as they age)."""
    db.execute(
        """
        CREATE TABLE IF NOT EXISTS clickhouse_rechecks (
            span_row INTEGER PRIMARY KEY,     -- spans.id of the call
            version INTEGER NOT NULL,         -- the version its write gave its trace
            step INTEGER NOT NULL,            -- which of twin_calls.RECHECK_AFTER_S is next
            due_ns INTEGER NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE IF NOT EXISTS clickhouse_written (
            trace_id BLOB PRIMARY KEY,
            version INTEGER NOT NULL,
            ord INTEGER NOT NULL              -- least recently written first
        )
        """
    )
    db.execute(
        """
        CREATE TABLE IF NOT EXISTS clickhouse_recent_writes (
            version INTEGER NOT NULL,         -- the version the write gave its traces
            traces BLOB NOT NULL,             -- their ids, 16 bytes each
            calls BLOB NOT NULL               -- the spans.id of its calls to look up again, 8 bytes each
        )
        """
    )
    db.execute("CREATE INDEX IF NOT EXISTS clickhouse_recent_writes_by_version ON clickhouse_recent_writes (version)")


# Query-planner statistics for a store of about a million spans, pinned instead of measured.
# ANALYZE on a young store records "spans: 2 rows", after which the planner full-scans `spans` for
# a trace lookup for as long as those stats live, millions of rows later (seen in a test here);
# without any stats it misjudges GROUP BY queries (perf-notes §3). Fixed, representative numbers
# keep every plan on its index at any size. Format: rows, then rows per distinct index prefix.
PLANNER_STATISTICS = (
    ("spans", "spans_by_trace", "1000000 8 1"),
    ("spans", "spans_by_start", "1000000 1"),
    ("spans", "spans_by_response", "300000 1 1 1"),
    ("spans", "spans_tool_by_start", "50000 1"),
    ("traces", "traces", "125000 1"),
    ("traces", "traces_by_start", "125000 1"),
    ("traces", "traces_by_cost", "125000 5 1"),
    ("traces", "traces_by_duration", "125000 2 1"),
    ("traces", "traces_by_conversation", "60000 3 1"),
    ("traces", "traces_by_conversation_duration", "60000 3 1"),
    ("conversations", "conversations", "40000 1"),
    ("conversations", "conversations_by_last", "40000 1"),
    ("conversations", "conversations_by_cost", "40000 4 1"),
    ("conversations", "conversations_by_tokens", "40000 4 1"),
    ("conversations", "conversations_by_turns", "40000 400 1"),
    ("conversations", "conversations_by_errors", "40000 20000 1"),
    ("conversations", "conversations_by_p95", "40000 2 1"),
    ("conversations", "conversations_by_user", "30000 3"),
    ("users", "users", "10000 1"),
    ("users", "users_by_last", "10000 1"),
    ("users", "users_by_cost", "10000 2 1"),
    ("users", "users_by_tokens", "10000 2 1"),
    ("logs", "logs_by_span", "200000 8 2"),
    ("logs", "logs_by_time", "200000 1"),
    ("logs", "logs_evaluations", "2000 200 1"),
    ("rollups", "rollups", "100000 50000 20 1"),
    ("rollups", "rollups_sums", "100000 50000 20 1 1 1"),
    ("dims", "dims_key", "500 100 50 20 20 5 2 1 1 1"),
    ("tool_rollups", "tool_rollups", "20000 10000 20 1"),
    ("changes", "changes_key", "200 40 2 1"),
    ("changes", "changes_by_time", "200 1"),
    ("resources", "sqlite_autoindex_resources_1", "20 1"),
    ("scopes", "sqlite_autoindex_scopes_1", "20 1"),
)


def pin_planner_statistics(db: sqlite3.Connection) -> None:
    db.execute("ANALYZE sqlite_schema")  # creates sqlite_stat1 if it does not exist
    db.execute("DELETE FROM sqlite_stat1")
    for table, index, stat in PLANNER_STATISTICS:
        db.execute("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)", (table, index, stat))


def schema_version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


class SchemaTooNew(RuntimeError):
    pass


def migrate(db: sqlite3.Connection) -> int:
    """Bring the schema up to date; returns the number of migrations applied."""
    current = schema_version(db)
    if current > len(MIGRATIONS):
        raise SchemaTooNew(
            f"the database has schema version {current}, newer than this llmobs-tui knows "
            f"({len(MIGRATIONS)}); upgrade llmobs-tui to open it"
        )
    applied = 0
    for version, step in enumerate(MIGRATIONS[current:], start=current + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            # executescript() would COMMIT first; run the statements inside our transaction instead.
            # The steps use only execute(), executemany() and executescript(), which _NoCommit provides.
            step(cast(sqlite3.Connection, _NoCommit(db)))
            db.execute(f"PRAGMA user_version = {version}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        applied += 1
    return applied


class _NoCommit:
    """Lets a migration use executescript() without committing the surrounding transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def executescript(self, script: str) -> None:
        for statement in _split_statements(script):
            self._db.execute(statement)

    def execute(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        return self._db.executemany(sql, rows)  # a backfill writes many rows (m006)


def _split_statements(script: str) -> list[str]:
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        stripped = line.strip()
        if not buffer and (not stripped or stripped.startswith("--")):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
