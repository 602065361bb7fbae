"""The `llmobs-tui` command line.

    llmobs-tui serve     receiver + store, no UI (a sidecar, a cluster, CI)
    llmobs-tui report    calls, errors, tokens, cost and latency per group, from the store
    llmobs-tui export    one trace as OTLP/JSON that can be sent again
    llmobs-tui prices    the price table in effect
    llmobs-tui reprice   apply a changed price table to stored history
    llmobs-tui check     evaluate the SLOs and alert rules once: exit 0 ok, 1 ticket, 2 page
    llmobs-tui init      write a commented llmobs.toml (SLOs, budgets, alert thresholds)

Every failure a user can cause (a bad flag, a busy port, a corrupt or locked database, a bad price
or config file) ends with one line saying what and how to fix it, and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmobs_tui import __version__
from llmobs_tui.config import (
    DEMO_CONFIG,
    EXAMPLE_CONFIG,
    ConfigError,
    format_duration,
    load_config,
    parse_duration,
    parse_size,
)

if TYPE_CHECKING:  # the store is imported lazily: `--help` and `--version` stay fast
    from store.connection import Connection

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
# `check` gives 1 and 2 their alerting meaning (ticket, page); it cannot evaluate → this instead.
EXIT_CHECK_FAILED = 3


def default_db_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("llmobs-tui", appauthor=False)) / "llmobs.db"


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from exc
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0–65535; 0 picks a free port)")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _db_size(text: str) -> int:
    from store.disk_budget import MIN_LIMIT

    size = _size(text)
    if size < MIN_LIMIT:
        raise argparse.ArgumentTypeError(f"{text}: the store needs at least {MIN_LIMIT >> 20}MB")
    return size


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must not be negative")
    return value


def _forward_endpoint(text: str) -> str:
    from receiver.forward import Endpoint, ForwardEndpointError

    try:
        Endpoint.parse(text)
    except ForwardEndpointError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _add_db(parser: argparse.ArgumentParser, shared: bool = False) -> None:
    parser.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS if shared else None,
                        help=f"the SQLite store (default: {default_db_path()})")


def _add_export_dir(parser: argparse.ArgumentParser, shared: bool = False) -> None:
    parser.add_argument("--export-dir", metavar="DIR", default=argparse.SUPPRESS if shared else None,
                        help="where Ctrl-S in the TUI writes a trace (default: exports/ in the data directory, "
                             f"{default_db_path().parent})")


def _add_ingest(parser: argparse.ArgumentParser, shared: bool = False) -> None:
    """The receiver and store flags. `shared`: a subcommand repeating the top-level flags, whose
    defaults must not overwrite a value given before the subcommand (`llmobs-tui --db X demo`)."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if shared else value

    group = parser.add_argument_group("receiver")
    group.add_argument("--host", default=default("127.0.0.1"),
                       help="interface to listen on (default 127.0.0.1: this machine only)")
    group.add_argument("--grpc-port", type=_port, default=default(4317),
                       help="OTLP/gRPC port (default 4317; 0: any free port)")
    group.add_argument("--http-port", type=_port, default=default(4318),
                       help="OTLP/HTTP port (default 4318; 0: any free port)")
    group.add_argument("--prices", metavar="FILE", default=default(None),
                       help="a TOML price file adding to or overriding the shipped table")
    group.add_argument("--config", metavar="FILE", default=default(None),
                       help="config file (default: ./llmobs.toml if present)")
    group.add_argument("--token", metavar="SECRET", default=default(os.environ.get("LLMOBS_TOKEN") or None),
                       help="require `Authorization: Bearer SECRET` from senders (default: $LLMOBS_TOKEN); "
                            "needed to listen on anything but loopback")
    group.add_argument("--tls-cert", metavar="PEM", default=default(None),
                       help="serve OTLP over TLS with this certificate chain (with --tls-key)")
    group.add_argument("--tls-key", metavar="PEM", default=default(None), help="the certificate's private key")
    group.add_argument("--forward", metavar="ENDPOINT", type=_forward_endpoint, default=default(None),
                       help="also send every stored batch, unchanged, to this OTLP endpoint (your Collector, "
                            "Jaeger, Tempo): http://host:4318 or grpc://host:4317. A slow or down upstream never "
                            "blocks local ingest; what cannot be sent is counted")
    group.add_argument("--no-redact", action="store_true", default=default(False),
                       help="store prompts and completions as sent (default: redact e-mails, phones, cards, keys)")
    group.add_argument("--no-content", action="store_true", default=default(False),
                       help="store no prompts or completions at all")
    group.add_argument("--max-attr-size", type=_size, default=default(256 * 1024), metavar="SIZE",
                       help="truncate longer attribute values, with a visible marker (default 256KB)")
    group.add_argument("--decoders", type=_positive_int, default=default(0), metavar="N",
                       help="decoder processes (default: one per core)")
    store = parser.add_argument_group("store")
    store.add_argument("--retention", type=_duration, default=default(7 * 86400), metavar="AGE",
                       help="evict traces older than this (default 7d)")
    store.add_argument("--max-db-size", type=_db_size, default=default(None), metavar="SIZE",
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
    _add_db(demo, shared=True)
    _add_ingest(demo, shared=True)
    _add_export_dir(demo, shared=True)

    serve = sub.add_parser("serve", help="run the receiver and store without a UI")
    _add_db(serve, shared=True)
    _add_ingest(serve, shared=True)
    serve.add_argument("--query-port", type=_port, default=None, metavar="PORT",
                       help="also serve backfill and live tail for `llmobs-tui attach` on this port (0: any free)")
    serve.add_argument("--stats-every", type=_duration, default=60.0, metavar="DURATION",
                       help="print a stats line this often (default 1m)")

    report = sub.add_parser("report", help="calls, errors, tokens, cost and latency per group")
    _add_db(report, shared=True)
    report.add_argument("--window", type=_duration, default=86400, metavar="DURATION",
                        help="how far back from now (default 24h)")
    report.add_argument("--by", default="model", metavar="DIMS",
                        help="comma-separated: model, feature, tenant, prompt, provider, service, operation "
                             "(default: model); or tool (calls, errors, p50/p95 duration per tool; with "
                             "service, feature or tenant)")
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
    _add_db(attach, shared=True)
    _add_export_dir(attach, shared=True)
    attach.add_argument("--window", type=_duration, default=3600, metavar="DURATION",
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

    prices = sub.add_parser("prices", help="list the price table in effect")
    prices.add_argument("--prices", metavar="FILE", default=argparse.SUPPRESS,
                        help="a TOML price file adding to or overriding the shipped table")
    prices.add_argument("--format", choices=("md", "json"), default="md")

    reprice = sub.add_parser("reprice", help="re-price stored calls with the current price table")
    _add_db(reprice, shared=True)
    reprice.add_argument("--prices", metavar="FILE", default=argparse.SUPPRESS,
                         help="a TOML price file adding to or overriding the shipped table")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    command = args.command
    if command is None:
        command = "demo" if args.demo else "tui"
    handler = {
        "tui": cmd_tui,
        "demo": cmd_tui,
        "serve": cmd_serve,
        "report": cmd_report,
        "export": cmd_export,
        "prices": cmd_prices,
        "reprice": cmd_reprice,
        "check": cmd_check,
        "init": cmd_init,
        "attach": cmd_attach,
    }[command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `llmobs-tui report | head` closing the pipe early is not an error.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return EXIT_OK


def fail(message: str, code: int = EXIT_ERROR) -> int:
    print(f"llmobs-tui: {message}", file=sys.stderr)
    return code


def db_path_of(args: argparse.Namespace) -> Path:
    return Path(args.db).expanduser() if getattr(args, "db", None) else default_db_path()


def cmd_tui(args: argparse.Namespace) -> int:
    """The live monitor: receiver + store + TUI in one process tree, or read-only on a store that
    another process writes, or (demo) with a built-in traffic generator."""
    from llmobs_tui.run import run_tui
    from receiver.auth import InsecureBind
    from receiver.pipeline import PipelineFailed
    from receiver.prices import PriceFileError, PriceTable
    from receiver.tls import TlsError
    from store.connection import StoreError, StoreLocked, WriterLock

    demo = args.command == "demo" or args.demo
    if demo and not getattr(args, "db", None):
        # The demo's made-up traffic must not mix with a real store.
        args.db = str(default_db_path().with_name("demo.db"))
        if args.grpc_port == 4317 and args.http_port == 4318:
            # Free ports: a collector already on 4317/4318 must not stop the demo from starting.
            args.grpc_port = args.http_port = 0
    path = db_path_of(args)
    try:
        prices = PriceTable.load(args.prices)
        config = pipeline_config(args)
        listening = backend_config(args, config)
        # The demo's made-up features need the demo's rules, unless the user names a config.
        rules = load_config(DEMO_CONFIG) if demo and not args.config else load_config(args.config)
    except (ConfigError, PriceFileError, InsecureBind, TlsError) as exc:
        return fail(str(exc), EXIT_USAGE)
    embedded = None
    read_only_reason = None
    if args.read_only:
        read_only_reason = f"read-only {path}"
    else:
        probe = WriterLock(path)
        try:
            probe.acquire()  # makes the store's directory (0700) on a machine that never ran us
            probe.release()
            embedded = listening
        except StoreLocked as exc:
            if demo:
                return fail(locked_advice(str(exc), "demo"))
            read_only_reason = "read-only: another llmobs-tui process writes this store"
            del exc
        except StoreError as exc:
            return fail(str(exc))
        except OSError as exc:
            return fail(f"cannot use {path}: {exc}")
    if embedded is None and not path.exists():
        return fail(f"no database at {path}")
    import asyncio

    try:
        return asyncio.run(run_tui(path, backend_config=embedded, demo=demo, prices=prices,
                                   read_only_reason=read_only_reason, rules=rules,
                                   export_dir=getattr(args, "export_dir", None)))
    except PipelineFailed as exc:
        return fail(str(exc))
    except StoreError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(str(exc))


# --- serve ---------------------------------------------------------------------------------------


def pipeline_config(args: argparse.Namespace) -> Any:
    from receiver.pipeline import PipelineConfig
    from receiver.prices import PriceFileError, PriceTable

    config = load_config(args.config)
    if args.prices:
        # Validate the user's price file now, in this process, so a typo fails at start with its line.
        PriceTable.load(args.prices)
    del PriceFileError
    return PipelineConfig(
        db_path=str(db_path_of(args)),
        decoders=args.decoders,
        prices_file=args.prices,
        redact=not args.no_redact,
        keep_content=not args.no_content,
        max_attr_bytes=args.max_attr_size,
        dimension_keys=config.dimension_keys,
        redact_patterns=config.redact_patterns,
        drop_keys=config.drop_keys,
        retention_s=args.retention,
        max_db_bytes=args.max_db_size,
    )


def backend_config(args: argparse.Namespace, pipeline: Any) -> Any:
    """The receivers' settings from the flags, checked: an unguarded non-loopback bind or unusable
    TLS files fail here, before anything starts."""
    from llmobs_tui.backend import BackendConfig
    from receiver.auth import check_bind
    from receiver.tls import TlsFiles

    check_bind(args.host, args.token)
    TlsFiles.load(args.tls_cert, args.tls_key)
    return BackendConfig(pipeline=pipeline, host=args.host, grpc_port=args.grpc_port, http_port=args.http_port,
                         forward=args.forward, token=args.token, tls_cert=args.tls_cert, tls_key=args.tls_key,
                         query_port=getattr(args, "query_port", None))


def cmd_serve(args: argparse.Namespace) -> int:
    from llmobs_tui.backend import Backend
    from receiver.auth import InsecureBind
    from receiver.pipeline import PipelineFailed
    from receiver.prices import PriceFileError
    from receiver.tls import TlsError

    try:
        backend = Backend(backend_config(args, pipeline_config(args)))
    except (ConfigError, PriceFileError, InsecureBind, TlsError) as exc:
        return fail(str(exc), EXIT_USAGE)
    config = backend.config.pipeline

    async def run() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await backend.start()
        except PipelineFailed as exc:
            return fail(locked_advice(str(exc), "serve"))
        except OSError as exc:
            return fail(str(exc))
        print(f"llmobs-tui serve: {backend.describe()}; store {config.db_path}; "
              f"retention {format_duration(config.retention_s or 0)}"
              + (f", max {config.max_db_bytes / 1e9:g} GB" if config.max_db_bytes else "")
              + (", PII redacted" if config.redact else "")
              + (", no content stored" if not config.keep_content else "")
              + ". Ctrl-C to stop.", flush=True)
        stats = StatsPrinter(backend)
        stats_task = asyncio.create_task(stats.run(args.stats_every, stop))
        gave_up = asyncio.create_task(backend.pipeline.failed.wait())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({gave_up, stopped}, return_when=asyncio.FIRST_COMPLETED)
        failure = backend.pipeline.fatal_error if gave_up.done() else None
        gave_up.cancel()
        stopped.cancel()
        if failure is not None:
            # Answering UNAVAILABLE forever behind a healthy-looking stats line helps nobody: exit
            # non-zero so that systemd, Kubernetes or a shell loop restarts the whole process.
            print(f"llmobs-tui serve: giving up: {failure}; stopping so a supervisor can restart it", flush=True)
        else:
            print("llmobs-tui serve: stopping: finishing in-flight requests and committing…", flush=True)
        stats_task.cancel()
        await backend.aclose()
        writer = backend.pipeline.stats.writer
        print(serve_summary(backend.pipeline.stats.accepted, writer), flush=True)
        if failure is not None:
            return fail(failure)
        return EXIT_OK

    return asyncio.run(run())


def serve_summary(accepted: int, writer: dict[str, Any]) -> str:
    """serve's last line. The gap between accepted and committed is duplicates (an exporter's retry
    of a batch already stored: kept once, by design), so it says so instead of reading like loss.
    bench/__init__.py parses "N … accepted this run, M spans committed"."""
    duplicates = writer.get("duplicates", 0)
    logs = writer.get("logs", 0)
    return (f"llmobs-tui serve: stopped; {accepted} spans and log records accepted this run, "
            f"{writer.get('spans', 0)} spans committed"
            + (f", {logs} log records committed" if logs else "")
            + (f", {duplicates} duplicate span{'s' if duplicates != 1 else ''} already stored (a retry sends "
               f"a batch again; kept once, none lost)" if duplicates else ", no duplicates")
            + ".")


def locked_advice(message: str, command: str) -> str:
    """The store's "another process is writing" message, with the advice that fits `command`."""
    match = re.match(r"(another llmobs-tui process.*? is writing .*?)\. Open it read-only", message, re.S)
    if not match:
        return message
    advice = {
        "serve": "stop that process first, or give this one another --db",
        "demo": "stop it first, or give the demo another --db",
        "reprice": "stop `serve` first (or the TUI that writes it): reprice rewrites the store",
    }.get(command, "stop that process first, or pass another --db")
    return f"{match.group(1)}: {advice}."


class StatsPrinter:
    """One line a minute: spans/s, queue, rejected, db size."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self._last_spans = 0
        self._last_time = time.monotonic()

    def line(self) -> str:
        stats = self.backend.pipeline.stats
        writer = stats.writer
        now = time.monotonic()
        spans = writer.get("spans", 0) + writer.get("logs", 0)
        rate = (spans - self._last_spans) / max(1e-6, now - self._last_time)
        self._last_spans, self._last_time = spans, now
        rejected_requests = stats.invalid_requests
        parts = [
            time.strftime("%H:%M:%S"),
            f"{rate:,.1f} spans/s",
            f"queue {stats.inflight_requests} req ({stats.inflight_bytes / 2**20:.1f} MiB)",
            f"rejected {stats.rejected} spans, {rejected_requests} requests, {stats.overloaded} overloaded"
            + (f", {self.backend.auth.refused} unauthenticated" if self.backend.auth.enabled else "")
            + (f", {self.backend.http.tls_handshakes_failed} TLS handshakes failed (HTTP)"
               if self.backend.tls is not None and self.backend.http is not None else ""),
            f"db {writer.get('db_bytes', 0) / 2**20:,.1f} MiB",
            f"{writer.get('duplicates', 0)} duplicate spans ({writer.get('conflicting_duplicates', 0)} with other "
            f"content, kept first)",
        ]
        forward = self.backend.forward
        if forward is not None:
            f = forward.stats
            parts.append(f"forwarded {f.forwarded} batches, {f.queued} queued, {f.dropped} dropped, {f.failed} refused")
            if f.queued and f.last_error:
                parts.append(f"upstream: {f.last_error}")
        if writer.get("last_error"):
            parts.append(f"last error: {writer['last_error']}")
        return " | ".join(parts)

    async def run(self, every: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=every)
            except asyncio.TimeoutError:
                print(self.line(), flush=True)


# --- report / export / prices / reprice ----------------------------------------------------------


def _open_reader(args: argparse.Namespace) -> Connection:
    from store.connection import open_reader

    return open_reader(db_path_of(args))


def cmd_report(args: argparse.Namespace) -> int:
    from store.connection import DatabaseError, StoreError
    from store.queries import GROUP_COLUMNS, TOOL_GROUP_COLUMNS, report, tool_report

    by = [part.strip() for part in args.by.split(",") if part.strip()]
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
                        f"{', '.join(GROUP_COLUMNS)}, tool", EXIT_USAGE)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    try:
        db = _open_reader(args)
        now_s = time.time()
        result = tool_report(db, args.window, by, now_s=now_s) if tools else report(db, args.window, by, now_s=now_s)
        if config.slos:
            result["slos"] = [row.as_json() for row in _slo_rows(db_path_of(args), config, now_s)]
    except StoreError as exc:
        return fail(str(exc))
    except DatabaseError as exc:
        from store.connection import describe_error

        return fail(describe_error(db_path_of(args), exc))
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        print(format_tool_report_md(result) if tools else format_report_md(result))
        if config.slos:
            print()
            print(format_slo_table_md(result["slos"]))
    return EXIT_OK


def _slo_rows(db_path: Path, config: Any, now_s: float) -> list[Any]:
    from llmobs_tui.alerting.engine import AlertEngine

    engine = AlertEngine(db_path, config)
    try:
        return engine.slo_table(now_s)
    finally:
        engine.close()


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
        lines.append(_md_row(cells))
    lines.append("")
    lines.append("Burn rate: how many times faster than the objective allows the error budget is being spent "
                 "(1× spends it exactly over the SLO window).")
    return "\n".join(lines)


# --- check / init --------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    """One evaluation of every rule, for cron or CI: the exit code is the verdict."""
    from llmobs_tui.alerting.engine import AlertEngine, exit_code
    from store.connection import DatabaseError, StoreError, describe_error

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return fail(str(exc), EXIT_CHECK_FAILED)
    path = db_path_of(args)
    engine = AlertEngine(path, config)
    now_s = time.time()
    try:
        findings = engine.evaluate(now_s)
        slos = engine.slo_rows
    except StoreError as exc:
        return fail(str(exc), EXIT_CHECK_FAILED)
    except DatabaseError as exc:
        return fail(describe_error(path, exc), EXIT_CHECK_FAILED)
    finally:
        engine.close()
    code = exit_code(findings)
    verdict = {0: "ok", 1: "ticket", 2: "page"}[code]
    if args.format == "json":
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


def cmd_attach(args: argparse.Namespace) -> int:
    """The TUI on a remote `serve`: a child process pulls into a local cache store, the TUI reads it."""
    from llmobs_tui.attach import AttachFeed, AttachPlan
    from llmobs_tui.run import run_tui
    from receiver.prices import PriceTable
    from store.connection import StoreError, WriterLock, open_writer

    host, _, port = args.target.rpartition(":")
    if not host or not port.isdigit():
        return fail(f"{args.target!r}: expected HOST:PORT of a `serve --query-port`", EXIT_USAGE)
    if args.ca and not Path(args.ca).is_file():
        return fail(f"--ca {args.ca}: no such file", EXIT_USAGE)
    safe_target = "".join(c if c.isalnum() else "-" for c in args.target)
    path = Path(args.db).expanduser() if args.db else default_db_path().with_name(f"attach-{safe_target}.db")
    try:
        rules = load_config(args.config)
        lock = WriterLock(path)
        lock.acquire()  # the cache store is ours alone; create it now so the TUI can open it at once
        open_writer(path).close()
        lock.release()
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    except (StoreError, OSError) as exc:
        return fail(str(exc))
    feed = AttachFeed(AttachPlan(args.target, str(path), window_s=args.window, token=args.token, ca_file=args.ca))
    feed.start()
    try:
        return asyncio.run(run_tui(path, backend_config=None, demo=False, prices=PriceTable.load(),
                                   read_only_reason=f"attaching to {args.target}", rules=rules,
                                   status=feed.status, export_dir=getattr(args, "export_dir", None)))
    except StoreError as exc:
        return fail(str(exc))
    finally:
        feed.stop()


def cmd_init(args: argparse.Namespace) -> int:
    target = Path(args.path)
    if target.exists() and not args.force:
        return fail(f"{target} exists; pass --force to overwrite it", EXIT_USAGE)
    try:
        target.write_text(EXAMPLE_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    except OSError as exc:
        return fail(f"cannot write {target}: {exc.strerror or exc}")
    print(f"wrote {target}: edit the SLOs and budgets, then `llmobs-tui check --config {target}` "
          f"(./llmobs.toml is read by default)")
    return EXIT_OK


def _md_row(cells: list[str]) -> str:
    """A Markdown table row; a `|` inside a cell (a model or feature name) is escaped."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v / 1000:.2f}s" if v >= 1000 else f"{v:.0f}ms"


def format_report_md(result: dict[str, Any]) -> str:
    from llmobs_tui.format import plural, usd_figure  # sub-cent costs in significant digits, not 0.0000

    window = result["window"]
    by = result["by"]
    lines = [f"# LLM calls {window['start']} → {window['end']}", ""]
    groups = result["groups"]
    if not groups:
        lines.append("No LLM calls in this window.")
        return "\n".join(lines)
    key_headers = [b for b in by]
    headers = key_headers + ["calls", "api err", "valid. err", "guard. err", "input", "output", "cache read",
                             "cache write", "reasoning", "cost $", "unpriced", "cache hit", "TTFT p50/p95",
                             "latency p50/p95"]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---" if i < len(key_headers) else "--:" for i in range(len(headers))) + "|")
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
        cells = key + [
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
        lines.append(_md_row(cells))
    total_cost = sum(g["cost_usd"] for g in groups)
    total_calls = sum(g["calls"] for g in groups)
    unpriced = sum(g["unpriced_calls"] for g in groups)
    lines.append("")
    lines.append(f"{plural(total_calls, 'call')}, ${usd_figure(total_cost)}" + (f", {unpriced:,} unpriced (no price row, or no usage reported: not counted as $0)"
                                                               if unpriced else ""))
    return "\n".join(lines)


def format_tool_report_md(result: dict[str, Any]) -> str:
    window = result["window"]
    by = result["by"]
    lines = [f"# Tool calls {window['start']} → {window['end']}", ""]
    groups = result["groups"]
    if not groups:
        lines.append("No tool calls in this window.")
        return "\n".join(lines)
    headers = list(by) + ["calls", "errors", "error %", "p50", "p95"]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---" if i < len(by) else "--:" for i in range(len(headers))) + "|")
    for g in groups:
        rate = g["error_rate"]
        cells = [str(g["key"].get(name) or "–") for name in by] + [
            _fmt_int(g["calls"]),
            _fmt_int(g["errors"]),
            "–" if rate is None else f"{rate:.1%}",
            _fmt_ms(g["duration_ms"]["p50"]),
            _fmt_ms(g["duration_ms"]["p95"]),
        ]
        lines.append(_md_row(cells))
    calls = sum(g["calls"] for g in groups)
    errors = sum(g["errors"] for g in groups)
    lines.append("")
    lines.append(f"{calls:,} tool calls, {errors:,} failed")
    return "\n".join(lines)


def cmd_export(args: argparse.Namespace) -> int:
    from receiver.otlp import message_to_otlp_json
    from store.connection import StoreError
    from store.queries import export_trace, parse_trace_id

    try:
        trace_id = parse_trace_id(args.trace_id)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    try:
        db = _open_reader(args)
        request = export_trace(db, trace_id)
    except StoreError as exc:
        return fail(str(exc))
    if request is None:
        return fail(f"no trace {trace_id.hex()} in {db_path_of(args)}")
    text = json.dumps(message_to_otlp_json(request), indent=2)
    if args.output:
        try:
            Path(args.output).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            return fail(f"cannot write {args.output}: {exc}")
    else:
        print(text)
    return EXIT_OK


def cmd_prices(args: argparse.Namespace) -> int:
    from receiver.prices import PriceFileError, PriceTable

    try:
        table = PriceTable.load(args.prices)
    except PriceFileError as exc:
        return fail(str(exc), EXIT_USAGE)
    rows = sorted(table.rows, key=lambda r: (r.provider, r.id))
    if args.format == "json":
        print(json.dumps({"digest": table.digest, "rows": [
            {"id": r.id, "provider": r.provider, "kind": r.kind, "names": list(r.names),
             "pattern": r.pattern.pattern if r.pattern else None, "input": r.input, "output": r.output,
             "cache_read": r.cache_read, "cache_write": r.cache_write, "reasoning": r.reasoning,
             "long_context_threshold": r.long_context_threshold, "long_input": r.long_input,
             "long_output": r.long_output, "checked": r.checked, "source": r.source} for r in rows]}, indent=2))
        return EXIT_OK
    print("USD per 1M tokens. Input includes cached tokens; output includes reasoning.\n")
    print("| provider | id | models | kind | input | output | cache read | cache write | reasoning | checked |")
    print("|---|---|---|---|--:|--:|--:|--:|--:|---|")
    for r in rows:
        models = ", ".join(r.names) + (f" /{r.pattern.pattern}/" if r.pattern else "")
        long = f" (>{r.long_context_threshold:,}: {r.long_input:g}/{r.long_output:g})" if r.long_context_threshold else ""
        print(f"| {r.provider} | {r.id} | {models} | {r.kind} | {r.input:g}{long} | {r.output:g} | "
              f"{r.cache_read:g} | {r.cache_write:g} | {r.reasoning:g} | {r.checked} |")
    print(f"\n{len(rows)} rows; table digest {table.digest}")
    return EXIT_OK


def cmd_reprice(args: argparse.Namespace) -> int:
    from receiver.prices import PriceFileError, PriceTable
    from store.connection import StoreError, StoreLocked, WriterLock, open_writer
    from store.meta import set_prices_digest
    from store.writer import SpanWriter

    try:
        table = PriceTable.load(args.prices)
    except PriceFileError as exc:
        return fail(str(exc), EXIT_USAGE)
    path = db_path_of(args)
    if not path.exists():
        return fail(f"no database at {path}")
    lock = WriterLock(path)
    try:
        lock.acquire()
    except StoreError as exc:
        return fail(locked_advice(str(exc), "reprice") if isinstance(exc, StoreLocked) else str(exc))
    try:
        db = open_writer(path)
        writer = SpanWriter(db)

        def price(provider: str | None, response_model: str | None, request_model: str | None,
                  tokens: tuple) -> tuple[str | None, int | None]:
            row = table.lookup(provider, response_model) if response_model else None
            if row is None and request_model:
                row = table.lookup(provider, request_model)
            if row is None:
                return None, None
            if all(t is None for t in tokens):
                return row.id, None
            inp, out, cache_read, cache_write, reasoning = (t or 0 for t in tokens)
            return row.id, table.cost_nusd(row, inp, out, cache_read, cache_write, reasoning)

        scanned, changed = writer.reprice(price)
        set_prices_digest(db, table.digest)
        db.close()
    except StoreError as exc:
        return fail(str(exc))
    finally:
        lock.release()
    print(f"repriced {changed:,} of {scanned:,} stored LLM calls with price table {table.digest}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
