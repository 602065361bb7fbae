"""One typed, frozen `Settings` per invocation, built once from the command line and the
environment (flags win; then `LLMOBS_TOKEN` / `LLMOBS_DB`; then the defaults), with the files it
names (`llmobs.toml`, the price file) loaded and the listening side checked.

Everything a command needs is resolved here, once: the store's path (the demo's own store and its
free ports included), the bind guard (a non-loopback `--host` needs a token) and the TLS pair. So the
commands, `Backend` and `run_tui` take values that are already right and never re-check them, and
every failure a user can cause at start comes out of `Settings.from_args` as one `SettingsError`
carrying the original one-line message.

Imports no Textual (the headless `serve` builds it too)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmobs_tui.config import DEMO_CONFIG, Config, ConfigError, load_config

if TYPE_CHECKING:  # loaded lazily: `--help` and `--version` stay fast
    from llmobs_tui.backend import BackendConfig
    from receiver.content_tiers import ContentPolicy
    from receiver.pipeline import PipelineConfig
    from receiver.prices import PriceTable
    from receiver.tls import TlsFiles
    from store.clickhouse.url import ClickHouseUrl

TOKEN_ENV = "LLMOBS_TOKEN"
DB_ENV = "LLMOBS_DB"
DEFAULT_GRPC_PORT = 4317
DEFAULT_HTTP_PORT = 4318

# What each command reads besides the flags: the config file, the price table, the listening side.
_NEEDS_CONFIG = frozenset({"tui", "demo", "serve", "report", "check", "attach"})
_NEEDS_PRICES = frozenset({"tui", "demo", "serve", "attach", "prices", "reprice"})
_LISTENS = frozenset({"tui", "demo", "serve"})
# Commands on "the" store, where $LLMOBS_DB applies; demo and attach keep stores of their own.
_USES_MAIN_STORE = frozenset({"tui", "serve", "report", "check", "export", "reprice", "traces", "show", "forget"})


# The commands that can run on a ClickHouse store (`--store`); the others refuse the flag at start
# instead of quietly using the SQLite file.
CLICKHOUSE_COMMANDS: frozenset[str] = frozenset({"report", "traces", "show", "export", "serve", "forget", "check",
                                                 "reprice", "tui"})


WORKING_STORE_RETENTION_S = 86400.0


def clickhouse_retention_days(retention_s: float | None) -> int:
    """ClickHouse's TTLs count whole days: --retention rounded up to days (no --retention: the default 7)."""
    if not retention_s:
        return 7
    return max(1, math.ceil(retention_s / 86400))


class SettingsError(ValueError):
    """A flag, variable or file that cannot be used; the message is the one line to print."""


def default_db_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("llmobs-tui", appauthor=False)) / "llmobs.db"


@dataclass(frozen=True)
class Settings:
    """The resolved settings of one `llmobs-tui` invocation (see the module docstring). Build it with
    `from_args`, which runs the checks; a direct construction (tests) takes the values as given."""

    command: str
    """tui, demo, serve, attach, report, check, export, traces, show, prices, reprice or init."""

    # --- the store ---------------------------------------------------------------------------
    db_path: Path = field(default_factory=default_db_path)
    """The SQLite store: `--db`, else `$LLMOBS_DB`, else llmobs.db in the user data directory (demo:
    demo.db beside it; attach: attach-HOST-PORT.db, a local cache of the remote)."""
    store_url: ClickHouseUrl | None = None
    """`--store clickhouse://…`: a ClickHouse store instead of the SQLite one (default None: SQLite at
    db_path). Only the commands in CLICKHOUSE_COMMANDS take it; the others refuse it at start."""
    read_only: bool = False
    """`--read-only`: only watch the store another process writes (default off)."""
    retention_s: float | None = 7 * 86400
    """`--retention`: evict traces older than this many seconds (default 7 days)."""
    max_db_bytes: int | None = None
    """`--max-db-size`: keep the store's files under this many bytes (default: no limit)."""
    export_dir: Path | None = None
    """`--export-dir`: where Ctrl-S in the TUI writes a trace (default None: the app's exports/ dir)."""

    # --- files -------------------------------------------------------------------------------
    config_file: str | None = None
    """`--config`: the config file (default None: ./llmobs.toml when present)."""
    config: Config = field(default_factory=Config)
    """The loaded config (dimensions, redaction, SLOs, alerts); defaults when the command reads none."""
    rules: Config = field(default_factory=Config)
    """The SLOs and alert rules the TUI evaluates: `config`, except the demo's built-in rules for
    `demo` without `--config` (its made-up features need them)."""
    prices_file: str | None = None
    """`--prices`: a TOML price file adding to or overriding the shipped table (default None)."""
    prices: PriceTable | None = None
    """The loaded price table, for the commands that price (None for the others)."""

    # --- the receivers (checked: a non-loopback host has a usable token; TLS is both files or none)
    host: str = "127.0.0.1"
    """`--host`: the interface to listen on (default loopback only)."""
    grpc_port: int = DEFAULT_GRPC_PORT
    """`--grpc-port`: OTLP/gRPC (default 4317; 0 any free port; the demo takes a free one unless set)."""
    http_port: int = DEFAULT_HTTP_PORT
    """`--http-port`: OTLP/HTTP (default 4318; 0 any free port; the demo takes a free one unless set)."""
    token: str | None = None
    """`--token`, else `$LLMOBS_TOKEN`: the bearer token senders must present (attach: the remote's)."""
    tls: TlsFiles | None = None
    """`--tls-cert` and `--tls-key`, loaded and checked as a pair (default None: plain text)."""
    forward: str | None = None
    """`--forward`: an upstream OTLP endpoint that gets a copy of every stored batch (default None)."""
    query_port: int | None = None
    """`serve --query-port`: the backfill/tail service for `attach` (default None: off)."""
    metrics_port: int | None = None
    """`serve --metrics-port`: Prometheus GET /metrics on a port of its own (default None: only on the HTTP port)."""

    # --- ingest ------------------------------------------------------------------------------
    decoders: int = 0
    """`--decoders`: decoder processes (default 0: one per core)."""
    redact: bool = True
    """Not `--no-redact`: redact e-mails, phones, cards and keys in stored content (default on)."""
    keep_content: bool = True
    """Not `--no-content` / `--content none`: store prompts and completions at all (default on)."""
    content: ContentPolicy | None = None
    """`--content` with llmobs.toml's [content] table: which spans keep content (default None: all)."""
    content_index: bool = True
    """Not `--no-search-index`: index stored content for `text:` search, off the ack path (default on)."""
    max_attr_bytes: int = 256 * 1024
    """`--max-attr-size`: longer attribute values are truncated with a marker (default 256KB)."""

    # --- the command's own options -----------------------------------------------------------
    verbose: bool = False
    """`-v`: log more (default off)."""
    stats_every_s: float = 60.0
    """`serve --stats-every`: how often serve prints its stats line (default 1m)."""
    window_s: float = 86400
    """`report --window` (default 24h), `attach --window` or `traces --window` (default 1h), in seconds."""
    by: str = "model"
    """`report --by`: the comma-separated grouping, as given (default model)."""
    output_format: str = "md"
    """`--format` of report and prices (md, json), check (text, json), traces (table, json) or show
    (tree, json)."""
    trace_id: str = ""
    """`export TRACE_ID` or `show TRACE_ID` (show: a prefix will do), as given (checked by the command)."""
    filter_text: str = ""
    """`traces --filter`: the `/` filter language, as given (parsed by the command; default: every trace)."""
    sort: str = "start"
    """`traces --sort`: a store.dashboards.TRACE_SORTS key (default start)."""
    ascending: bool = False
    """`traces --asc`: smallest (or oldest) first (default: largest or newest first)."""
    limit: int = 50
    """`traces --limit`: at most this many rows (default 50)."""
    output: str | None = None
    """`export -o`: the file to write (default None: standard output)."""
    init_path: str = "llmobs.toml"
    """`init PATH`: where to write the example config (default ./llmobs.toml)."""
    force: bool = False
    """`init --force`: overwrite an existing file (default off)."""
    attach_target: str = ""
    """`attach HOST:PORT`, as given (checked by the command)."""
    ca_file: str | None = None
    """`attach --ca`: a certificate (or CA) to trust for a TLS query port (default None)."""
    forget: tuple[str, str] | None = None
    """`forget --user/--conversation/--tenant ID`: what to delete, as (kind, id) (checked by the parser)."""

    @property
    def demo(self) -> bool:
        return self.command == "demo"

    def pipeline_config(self) -> PipelineConfig:
        """The ingest pipeline's settings (decoders, writer, retention)."""
        from receiver.pipeline import PipelineConfig

        return PipelineConfig(
            db_path=str(self.db_path),
            decoders=self.decoders,
            prices_file=self.prices_file,
            redact=self.redact,
            keep_content=self.keep_content,
            content=self.content,
            burn_source=self._burn_source(),
            content_index=self.content_index,
            max_attr_bytes=self.max_attr_bytes,
            dimension_keys=dict(self.config.dimension_keys),
            redact_patterns=self.config.redact_patterns,
            drop_keys=self.config.drop_keys,
            retention_s=self._working_retention_s(),
            max_db_bytes=self.max_db_bytes,
            clickhouse=({"url": self.store_url, "retention_days": clickhouse_retention_days(self.retention_s)}
                        if self.store_url is not None else None),
        )

    def _working_retention_s(self) -> float | None:
        """With a ClickHouse store, --retention is ClickHouse's TTL; the replica's SQLite working store
        keeps a day at most: enough for the writer's rules to find a trace's earlier spans (a straggler,
        a twin), without a second copy of everything on every replica."""
        if self.store_url is None:
            return self.retention_s
        return min(self.retention_s or WORKING_STORE_RETENTION_S, WORKING_STORE_RETENTION_S)

    def _burn_source(self) -> Any:
        """The SLO burn check a tiered content policy with on_burn asks (None: nothing to ask)."""
        content = self.content
        if content is None or content.mode != "tiered" or not content.on_burn or not self.rules.slos:
            return None
        from llmobs_tui.alerting.notify import BurnWatch

        return BurnWatch(self.db_path, self.rules)

    def backend_config(self) -> BackendConfig:
        """The embedded or headless backend's settings; the bind and TLS were checked when these
        settings were built."""
        from llmobs_tui.backend import BackendConfig

        return BackendConfig(pipeline=self.pipeline_config(), host=self.host, grpc_port=self.grpc_port,
                             http_port=self.http_port, forward=self.forward, token=self.token, tls=self.tls,
                             query_port=self.query_port)

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
        """Resolve parsed flags against `environ` (default: os.environ) and the defaults; load and
        check the files and the listening side the command uses. Raises SettingsError."""
        from receiver.auth import InsecureBind, check_bind
        from receiver.prices import PriceFileError, PriceTable
        from receiver.tls import TlsError, TlsFiles

        env = os.environ if environ is None else environ
        command = args.command or ("demo" if args.demo else "tui")
        given = vars(args)  # a subcommand's SUPPRESSed flags are absent when not given

        grpc_port: int = given.get("grpc_port", DEFAULT_GRPC_PORT)
        http_port: int = given.get("http_port", DEFAULT_HTTP_PORT)
        if given.get("db"):
            db_path = Path(given["db"]).expanduser()
        elif command == "demo":
            # The demo's made-up traffic must not mix with a real store.
            db_path = default_db_path().with_name("demo.db")
            if grpc_port == DEFAULT_GRPC_PORT and http_port == DEFAULT_HTTP_PORT:
                # Free ports: a collector already on 4317/4318 must not stop the demo from starting.
                grpc_port = http_port = 0
        elif command == "attach":
            safe_target = "".join(c if c.isalnum() else "-" for c in args.target)
            db_path = default_db_path().with_name(f"attach-{safe_target}.db")
        elif command in _USES_MAIN_STORE and env.get(DB_ENV):
            db_path = Path(env[DB_ENV]).expanduser()
        else:
            db_path = default_db_path()
        store_url = _store_url(command, given, env)
        if store_url is not None and command == "serve":
            # serve's replica-local working store (trace cache, billing-once, the outbox to ClickHouse):
            # one per ClickHouse store, so two stores never share an outbox.
            safe = "-".join("".join(c if c.isalnum() else "_" for c in part)
                            for part in (store_url.host, str(store_url.port), store_url.database))
            db_path = default_db_path().with_name(f"clickhouse-{safe}.db")
        token: str | None = given.get("token")
        if token is None:
            token = env.get(TOKEN_ENV) or None
        config_file: str | None = given.get("config")
        prices_file: str | None = given.get("prices")
        host: str = given.get("host", "127.0.0.1")

        config = rules = Config()
        prices = None
        tls = None
        try:
            if command in _NEEDS_PRICES:
                # The user's price file fails here, at start, with its line.
                prices = PriceTable.load(prices_file)
            if command in _NEEDS_CONFIG:
                config = load_config(config_file)
                # The demo's made-up features need the demo's rules, unless the user names a config.
                rules = load_config(DEMO_CONFIG) if command == "demo" and not config_file else config
            if command in _LISTENS:
                check_bind(host, token)
                tls = TlsFiles.load(given.get("tls_cert"), given.get("tls_key"))
        except (ConfigError, PriceFileError, InsecureBind, TlsError) as exc:
            raise SettingsError(str(exc)) from exc
        variant_keys = [key for key in given.get("variant_key") or () if key]
        if variant_keys:
            # --variant-key wins over the config file's [dimensions] variant (it reaches the decoders
            # through dimension_keys, like every dimension).
            config.dimension_keys["variant"] = tuple(variant_keys)

        content = _content_policy(given.get("content"), given.get("no_content", False), config.content)
        export_dir = given.get("export_dir")
        return cls(
            command=command,
            db_path=db_path,
            store_url=store_url,
            read_only=given.get("read_only", False),
            retention_s=given.get("retention", 7 * 86400),
            max_db_bytes=given.get("max_db_size"),
            export_dir=Path(export_dir) if export_dir else None,
            config_file=config_file,
            config=config,
            rules=rules,
            prices_file=prices_file,
            prices=prices,
            host=host,
            grpc_port=grpc_port,
            http_port=http_port,
            token=token,
            tls=tls,
            forward=given.get("forward"),
            query_port=given.get("query_port"),
            metrics_port=given.get("metrics_port"),
            decoders=given.get("decoders", 0),
            redact=not given.get("no_redact", False),
            keep_content=content is None or content.mode != "none",
            content=content,
            content_index=not given.get("no_search_index", False),
            max_attr_bytes=given.get("max_attr_size", 256 * 1024),
            verbose=given.get("verbose", False),
            stats_every_s=given.get("stats_every", 60.0),
            window_s=given.get("window", 3600 if command == "attach" else 86400),
            by=given.get("by", "model"),
            output_format=given.get("format", "md"),
            trace_id=given.get("trace_id", ""),
            filter_text=given.get("filter", ""),
            sort=given.get("sort", "start"),
            ascending=given.get("asc", False),
            limit=given.get("limit", 50),
            output=given.get("output"),
            init_path=given.get("path", "llmobs.toml"),
            force=given.get("force", False),
            attach_target=given.get("target", ""),
            ca_file=given.get("ca"),
            forget=next(((kind, given[kind]) for kind in ("user", "conversation", "tenant") if given.get(kind)), None),
        )


def _content_policy(flag: str | None, no_content: bool, table: ContentPolicy | None) -> ContentPolicy | None:
    """`--content` wins over [content] mode; `--no-content` is `--content none`. None: keep all content."""
    from dataclasses import replace

    from receiver.content_tiers import ContentPolicy

    if no_content and flag not in (None, "none"):
        raise SettingsError(f"--no-content and --content {flag} contradict each other (--no-content is --content none)")
    mode = "none" if no_content else flag
    if mode is None:
        return table if table is not None and table.mode != "all" else None
    if mode == "all":
        return None
    return replace(table or ContentPolicy(), mode=mode)


def _store_url(command: str, given: Mapping[str, Any], env: Mapping[str, str]) -> ClickHouseUrl | None:
    from store.clickhouse.url import CA_CERT_ENV, StoreUrlError, parse_store_url

    text = given.get("store")
    if not text:
        if given.get("store_ca_cert"):
            raise SettingsError("--store-ca-cert is for a ClickHouse store: give --store clickhouse+https://…")
        return None
    if given.get("db"):
        raise SettingsError("--db and --store name two stores: give one")
    if command not in CLICKHOUSE_COMMANDS:
        raise SettingsError(f"--store: `{command}` does not run on a ClickHouse store yet; "
                            f"it does for: {', '.join(sorted(CLICKHOUSE_COMMANDS)) or 'no command'}")
    if given.get("store_ca_cert"):
        env = {**env, CA_CERT_ENV: str(given["store_ca_cert"])}
    try:
        return parse_store_url(text, env)
    except StoreUrlError as exc:
        raise SettingsError(f"--store: {exc}") from exc
