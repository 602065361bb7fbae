"""The argument parser: every command's flags, defaults and help text in one place. It only parses;
`llmobs_tui.settings.Settings.from_args` turns what it returns into checked, resolved settings (the
environment, the demo's own store, the bind and TLS checks), so no default here reads the
environment or the disk."""

from __future__ import annotations

import argparse
from typing import TypeVar

from llmobs_tui import __version__
from llmobs_tui.cli import args as types
from llmobs_tui.settings import default_db_path

T = TypeVar("T")

# The JSON of `traces` and `show`, as their --help documents it (tests/test_headless.py holds the
# output to it): stable keys, ids as hex, times ISO-8601 UTC and *_ns, durations *_ms and *_ns, cost USD.
TRACES_JSON_HELP = """\
JSON (--format json): ids as hex, times ISO-8601 UTC and *_ns, durations *_ms and *_ns, cost in USD
of the priced calls (unpriced_calls counts the others); totals count billed calls once.
  {"window": {"seconds", "from", "to"}, "filter", "sort", "descending", "limit",
   "text_index_lag": null | {"spans", "logs"} (with text:, content not searchable yet),
   "traces": [{"trace_id", "start", "start_ns", "root", "service", "duration_ms", "duration_ns",
               "spans", "llm_calls", "input_tokens", "output_tokens", "cost_usd", "unpriced_calls",
               "errors": {"api", "validation", "guardrail", "spans"}, "failed", "feature", "tenant",
               "models", "match": null | {"span_id", "snippet", "matched"} (with text:)}]}"""
SHOW_JSON_HELP = """\
JSON (--format json): ids as hex, times ISO-8601 UTC and *_ns, durations *_ms and *_ns, cost in USD
(null: unpriced or not billed); spans in tree order (parent first, siblings by start).
  {"trace_id", "root", "service", "start", "start_ns", "duration_ms", "duration_ns", "span_count",
   "llm_calls", "input_tokens", "output_tokens", "cost_usd", "unpriced_calls", "failed_spans",
   "critical_path": {"duration_ms", "duration_ns",
                     "top": [{"span_id" (null: no span running), "name", "kind", "ms", "ns", "share"}]},
   "spans": [{"span_id", "parent_span_id", "depth", "name", "kind", "start", "start_ns", "end_ns",
              "offset_ms", "duration_ms", "duration_ns", "self_ms", "self_ns", "critical_path",
              "critical_ms", "critical_ns", "service", "provider", "operation", "model",
              "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
              "reasoning_tokens", "ttft_ms", "billed", "unpriced", "cost_usd", "status",
              "otel_status", "error": null | {"class", "subclass", "type", "message"}}]}"""


def _add_db(parser: argparse.ArgumentParser, shared: bool = False, env: bool = True) -> None:
    """`env`: the command reads $LLMOBS_DB (demo and attach keep stores of their own)."""
    where = f"$LLMOBS_DB, or {default_db_path()}" if env else default_db_path()
    parser.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS if shared else None,
                        help=f"the SQLite store (default: {where})")
    if env:
        parser.add_argument("--store", metavar="URL", default=argparse.SUPPRESS if shared else None,
                            help="a ClickHouse store instead of SQLite: clickhouse://USER@HOST:8123/DB or "
                                 "clickhouse+https://USER@HOST:8443/DB (password from "
                                 "$LLMOBS_CLICKHOUSE_PASSWORD)")
        parser.add_argument("--store-ca-cert", metavar="FILE", default=argparse.SUPPRESS if shared else None,
                            help="with clickhouse+https://: a PEM bundle of the CA to trust instead of the system's "
                                 "(default: $LLMOBS_CLICKHOUSE_CA_CERT)")


def _add_export_dir(parser: argparse.ArgumentParser, shared: bool = False) -> None:
    parser.add_argument("--export-dir", metavar="DIR", default=argparse.SUPPRESS if shared else None,
                        help="where Ctrl-S in the TUI writes a trace (default: exports/ in the data directory, "
                             f"{default_db_path().parent})")


def _add_ingest(parser: argparse.ArgumentParser, shared: bool = False) -> None:
    """The receiver and store flags. `shared`: a subcommand repeating the top-level flags, whose
    defaults must not overwrite a value given before the subcommand (`llmobs-tui --db X demo`)."""

    def default(value: T) -> T | str:
        return argparse.SUPPRESS if shared else value

    group = parser.add_argument_group("receiver")
    group.add_argument("--host", default=default("127.0.0.1"),
                       help="interface to listen on (default 127.0.0.1: this machine only)")
    group.add_argument("--grpc-port", type=types.port, default=default(4317),
                       help="OTLP/gRPC port (default 4317; 0: any free port)")
    group.add_argument("--http-port", type=types.port, default=default(4318),
                       help="OTLP/HTTP port (default 4318; 0: any free port)")
    group.add_argument("--prices", metavar="FILE", default=default(None),
                       help="a TOML price file adding to or overriding the shipped table")
    group.add_argument("--config", metavar="FILE", default=default(None),
                       help="config file (default: ./llmobs.toml if present)")
    group.add_argument("--variant-key", action="append", metavar="KEY", default=default(None),
                       help="an attribute naming the experiment variant a call ran in (repeatable, first present "
                            "wins, span before resource; replaces [dimensions] variant and the defaults)")
    # None: not given; Settings falls back to $LLMOBS_TOKEN.
    group.add_argument("--token", metavar="SECRET", default=default(None),
                       help="require `Authorization: Bearer SECRET` from senders (default: $LLMOBS_TOKEN); "
                            "needed to listen on anything but loopback")
    group.add_argument("--tls-cert", metavar="PEM", default=default(None),
                       help="serve OTLP over TLS with this certificate chain (with --tls-key)")
    group.add_argument("--tls-key", metavar="PEM", default=default(None), help="the certificate's private key")
    group.add_argument("--forward", metavar="ENDPOINT", type=types.forward_endpoint, default=default(None),
                       help="also send every stored batch, unchanged, to this OTLP endpoint (your Collector, "
                            "Jaeger, Tempo): http://host:4318 or grpc://host:4317. A slow or down upstream never "
                            "blocks local ingest; what cannot be sent is counted")
    group.add_argument("--no-redact", action="store_true", default=default(False),
                       help="store prompts and completions as sent (default: redact e-mails, phones, cards, keys)")
    group.add_argument("--no-content", action="store_true", default=default(False),
                       help="store no prompts or completions at all (same as --content none)")
    group.add_argument("--content", choices=("all", "none", "tiered"), default=default(None),
                       help="which spans keep their prompts and completions: all (default), none, or tiered: "
                            "errors, guardrail and validation failures, the slowest and costliest calls, burning "
                            "SLO scopes, and a share of traces sampled whole by trace id ([content] in "
                            "llmobs.toml tunes it); every span keeps its timings, tokens, cost and status")
    group.add_argument("--no-search-index", action="store_true", default=default(False),
                       help="do not index stored content for `text:` search (saves the indexer's CPU and "
                            "disk; searches then find nothing new)")
    group.add_argument("--max-attr-size", type=types.size, default=default(256 * 1024), metavar="SIZE",
                       help="truncate longer attribute values, with a visible marker (default 256KB)")
    group.add_argument("--decoders", type=types.positive_int, default=default(0), metavar="N",
                       help="decoder processes (default: one per core)")
    store = parser.add_argument_group("store")
    store.add_argument("--retention", type=types.duration, default=default(7 * 86400), metavar="AGE",
                       help="evict traces older than this (default 7d)")
    store.add_argument("--max-db-size", type=types.db_size, default=default(None), metavar="SIZE",
                       help="keep the store's files (database, WAL, reserve) under this size, evicting the "
                            "oldest traces (e.g. 2GB; at least 4MB); the disk needs this much free")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmobs-tui",
        description="htop for LLM applications: receive OpenTelemetry GenAI traces and watch latency, "
                    "errors, tokens and cost.",
    )
    parser.add_argument("--version", action="version", version=f"llmobs-tui {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--demo", action="store_true", help="the live TUI on a built-in demo feed (same as `demo`)")
    parser.add_argument("--read-only", action="store_true",
                        help="only watch the store (another process, e.g. `serve`, receives and writes)")
    _add_db(parser)
    _add_ingest(parser)
    _add_export_dir(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="the live TUI on a built-in demo feed sent through the real OTel SDK")
    _add_db(demo, shared=True, env=False)
    _add_ingest(demo, shared=True)
    _add_export_dir(demo, shared=True)

    serve = sub.add_parser("serve", help="run the receiver and store without a UI")
    _add_db(serve, shared=True)
    _add_ingest(serve, shared=True)
    serve.add_argument("--query-port", type=types.port, default=None, metavar="PORT",
                       help="also serve backfill and live tail for `llmobs-tui attach` on this port (0: any free)")
    serve.add_argument("--metrics-port", type=types.port, default=None, metavar="PORT",
                       help="also serve Prometheus GET /metrics on this port (it is always on the OTLP/HTTP port "
                            "too; same interface and token; 0: any free)")
    serve.add_argument("--stats-every", type=types.duration, default=60.0, metavar="DURATION",
                       help="print a stats line this often (default 1m)")

    report = sub.add_parser("report", help="calls, errors, tokens, cost and latency per group")
    _add_db(report, shared=True)
    report.add_argument("--window", type=types.duration, default=86400, metavar="DURATION",
                        help="how far back from now (default 24h)")
    report.add_argument("--by", default="model", metavar="DIMS",
                        help="comma-separated: model, feature, tenant, prompt, provider, service, operation, variant "
                             "(default: model); or tool (calls, errors, p50/p95 duration per tool; with "
                             "service, feature or tenant); or user (traces, conversations, tokens, cost and "
                             "errors per user, alone)")
    report.add_argument("--format", choices=("md", "json"), default="md")
    report.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="SLOs for the SLO table (default: ./llmobs.toml if present)")

    check = sub.add_parser("check", help="evaluate SLOs and alert rules once; exit 0 ok, 1 ticket, 2 page "
                                         "(3: could not evaluate)")
    _add_db(check, shared=True)
    check.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="config file (default: ./llmobs.toml if present)")
    check.add_argument("--format", choices=("text", "json"), default="text")

    attach = sub.add_parser("attach", help="the TUI on a remote `serve --query-port` (e.g. through kubectl "
                                           "port-forward): backfill, then follow live")
    attach.add_argument("target", metavar="HOST:PORT", help="the remote query port")
    _add_db(attach, shared=True, env=False)
    _add_export_dir(attach, shared=True)
    attach.add_argument("--window", type=types.duration, default=3600, metavar="DURATION",
                        help="how much history to backfill on first attach (default 1h)")
    attach.add_argument("--token", metavar="SECRET", default=argparse.SUPPRESS,
                        help="the remote's token (default: $LLMOBS_TOKEN)")
    attach.add_argument("--ca", metavar="PEM", help="trust this certificate (or CA) for a TLS query port")

    init = sub.add_parser("init", help="write a commented example config (SLOs, budgets, thresholds)")
    init.add_argument("path", nargs="?", default="llmobs.toml", help="where to write it (default: ./llmobs.toml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")

    export = sub.add_parser("export", help="print one trace as OTLP/JSON (POST it to /v1/traces to send it again)")
    _add_db(export, shared=True)
    export.add_argument("trace_id", metavar="TRACE_ID", help="32 hex characters")
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")

    traces = sub.add_parser(
        "traces", help="list traces from the store, filtered with the TUI's `/` language (for scripts and agents)",
        description="List traces from the store, one row per trace, newest (or largest) first. Read-only:\n"
                    "runs beside a `serve` or a TUI that writes the store.",
        epilog=TRACES_JSON_HELP + "\n\nexamples:\n"
               "  llmobs-tui traces --filter 'model=~gpt-4o status=error' --window 24h\n"
               "  llmobs-tui traces --sort cost --limit 5 --format json | jq -r '.traces[].trace_id'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_db(traces, shared=True)
    traces.add_argument("--filter", metavar="EXPR", default="",
                        help="terms ANDed, as `/` in the TUI: model=~gpt-4o status=error ttft>1s cost>$0.01 "
                             "feature=checkout (default: every trace)")
    traces.add_argument("--window", type=types.duration, default=3600, metavar="DURATION",
                        help="traces that started this far back from now (default 1h)")
    traces.add_argument("--sort", type=types.trace_sort, default="start", metavar="KEY",
                        help="start, duration, cost, tokens, calls, errors, root or service (default start)")
    traces.add_argument("--asc", action="store_true",
                        help="smallest (or oldest) first (default: largest or newest first)")
    traces.add_argument("--limit", type=types.row_limit, default=50, metavar="N", help="at most N rows (default 50)")
    traces.add_argument("--format", choices=("table", "json"), default="table",
                        help="table (default; cleaned text, colour on a terminal) or json (below)")

    show = sub.add_parser(
        "show", help="print one trace's span tree with durations, self time, critical path, tokens and cost",
        description="Print one trace as a tree: per span its kind, name, duration, self time, critical-path\n"
                    "mark (*), model, tokens in/out, cost and status; above it, the trace's totals and the\n"
                    "top 3 contributors to its duration.",
        epilog=SHOW_JSON_HELP + "\n\nexample:\n"
               "  llmobs-tui show 4bf92f35 --format json | jq '.spans[] | select(.critical_path) | .name'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_db(show, shared=True)
    show.add_argument("trace_id", metavar="TRACE_ID", help="a trace id, or enough of its start to name one trace")
    show.add_argument("--format", choices=("tree", "json"), default="tree",
                      help="tree (default; cleaned text, colour on a terminal) or json (below)")

    prices = sub.add_parser("prices", help="list the price table in effect")
    prices.add_argument("--prices", metavar="FILE", default=argparse.SUPPRESS,
                        help="a TOML price file adding to or overriding the shipped table")
    prices.add_argument("--format", choices=("md", "json"), default="md")

    reprice = sub.add_parser("reprice", help="re-price stored calls with the current price table")
    _add_db(reprice, shared=True)
    reprice.add_argument("--prices", metavar="FILE", default=argparse.SUPPRESS,
                         help="a TOML price file adding to or overriding the shipped table")

    forget = sub.add_parser("forget", help="delete every trace of a user, conversation or tenant (deletion on "
                                           "request); rollups and summaries move by exact deltas")
    _add_db(forget, shared=True)
    whom = forget.add_mutually_exclusive_group(required=True)
    whom.add_argument("--user", metavar="ID", type=types.nonempty, help="every trace whose spans name this user id")
    whom.add_argument("--conversation", metavar="ID", type=types.nonempty, help="every turn of this conversation")
    whom.add_argument("--tenant", metavar="ID", type=types.nonempty, help="every trace of this tenant")
    return parser
