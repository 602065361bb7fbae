"""The one door the read commands go through: the SQLite store at a path, or a ClickHouse store at a URL.

`open_store_reader(db_path, store_url)` returns a reader with the same methods on both backends, each
returning the same document the command prints (report, tool_report, user_report, export_trace; on
ClickHouse also trace_list, trace_ids_with_prefix and trace_spans, which `traces` and `show` run as their
own SQLite queries). `check` and the SLO table go through the alert engine, which picks its reads by
backend the same way (store/alerts.py or store/clickhouse/alerts.py).

What cannot be read becomes a StoreError whose message is the one line to print: a ClickHouse that is
unreachable, a wrong password and a database nobody has migrated each say so, without a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from store.connection import StoreError

if TYPE_CHECKING:
    from store.clickhouse.client import ClickHouseClient, ClickHouseError
    from store.clickhouse.url import ClickHouseUrl
    from store.content_index import SearchResult
    from store.dashboards import SpanRow, TraceRow

T = TypeVar("T")


class StoreReader(Protocol):
    @property
    def name(self) -> str:
        """How messages name the store: its path, or its URL without a password."""

    def report(self, window_s: float, by: Sequence[str], now_s: float | None = None) -> dict[str, Any]: ...

    def tool_report(self, window_s: float, by: Sequence[str], now_s: float | None = None) -> dict[str, Any]: ...

    def user_report(self, window_s: float, now_s: float | None = None) -> dict[str, Any]: ...

    def export_trace(self, trace_id: bytes) -> Any: ...

    def close(self) -> None: ...


class SqliteReader:
    """The SQLite store, read-only; `db` is the connection for the commands that run their own queries."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from store.connection import open_reader

        self.path = Path(path)
        self.db = open_reader(self.path)

    @property
    def name(self) -> str:
        return str(self.path)

    def report(self, window_s: float, by: Sequence[str], now_s: float | None = None) -> dict[str, Any]:
        from store.queries import report

        return report(self.db, window_s, by, now_s=now_s)

    def tool_report(self, window_s: float, by: Sequence[str], now_s: float | None = None) -> dict[str, Any]:
        from store.queries import tool_report

        return tool_report(self.db, window_s, by, now_s=now_s)

    def user_report(self, window_s: float, now_s: float | None = None) -> dict[str, Any]:
        from store.sessions import user_report

        return user_report(self.db, window_s, now_s=now_s)

    def export_trace(self, trace_id: bytes) -> Any:
        from store.queries import export_trace

        return export_trace(self.db, trace_id)

    def close(self) -> None:
        self.db.close()


class ClickHouseReader:
    """A ClickHouse store (store/clickhouse/), read through the same methods; every call's failure is a
    StoreError naming the store."""

    def __init__(self, url: ClickHouseUrl, client: ClickHouseClient | None = None) -> None:
        from store.clickhouse.client import ClickHouseError, HttpClient

        self.url = url
        try:
            self.client: ClickHouseClient = client if client is not None else HttpClient(url, connect_timeout=5.0)
            self.client.use_database()
            versions = self.client.query("SELECT max(version) FROM schema_migrations")
        except ClickHouseError as exc:
            raise StoreError(describe_clickhouse_error(url, exc)) from None
        if not versions or not versions[0][0]:
            raise StoreError(_not_migrated(url))
        # The store's schema: one older than this version's reads (its replicas run an older serve) lacks
        # what later migrations added, and a read of it says so (describe_clickhouse_error).
        self.schema_version = int(versions[0][0])

    @property
    def name(self) -> str:
        return self.url.display()

    def _run(self, read: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        from store.clickhouse.client import ClickHouseError

        try:
            return read(self.client, *args, **kwargs)
        except ClickHouseError as exc:
            raise StoreError(describe_clickhouse_error(self.url, exc, self.schema_version)) from None

    def report(self, window_s: float, by: Sequence[str], now_s: float | None = None) -> dict[str, Any]:
        from store.clickhouse import reports

        return self._run(reports.report, window_s, by, now_s=now_s)

    def tool_report(self, window_s: float, by: Sequence[str], now_s: float | None = None) -> dict[str, Any]:
        from store.clickhouse import reports

        return self._run(reports.tool_report, window_s, by, now_s=now_s)

    def user_report(self, window_s: float, now_s: float | None = None) -> dict[str, Any]:
        from store.clickhouse import reports

        return self._run(reports.user_report, window_s, now_s=now_s)

    def export_trace(self, trace_id: bytes) -> Any:
        from store.clickhouse import reports

        return self._run(reports.export_trace, trace_id)

    def trace_list(self, window_s: float, now_s: float, sort: str, descending: bool, limit: int,
                   terms: Sequence[tuple[str, str, Any]] = (), invert: bool = False) -> list[TraceRow]:
        """`terms`, `invert`: a `--filter` as llmobs_tui.filtering.parse reads it (Filter.terms, .inverted)."""
        from store.clickhouse import dashboards

        return self._run(dashboards.trace_list, window_s, now_s, terms, invert, sort, descending, limit)

    def text_matches(self, trace_ids: list[bytes], since_s: float, searches: Sequence[str], fts5_query: str
                     ) -> SearchResult:
        """Where each of these traces matched these positive `text:` searches (store/clickhouse/search.py)."""
        from store.clickhouse import search

        return self._run(search.text_matches, trace_ids, int(since_s * 1e9), searches, fts5_query)

    def trace_ids_with_prefix(self, prefix: str, limit: int) -> list[bytes]:
        from store.clickhouse import reports

        return self._run(reports.trace_ids_with_prefix, prefix, limit)

    def trace_spans(self, trace_id: bytes) -> list[SpanRow]:
        from store.clickhouse import reports

        return self._run(reports.trace_spans, trace_id)

    def close(self) -> None:
        self.client.close()


def open_store_reader(db_path: str | os.PathLike[str], store_url: ClickHouseUrl | None = None) -> StoreReader:
    """The ClickHouse store at `store_url` when one is given, else the SQLite store at `db_path`."""
    if store_url is not None:
        return ClickHouseReader(store_url)
    return SqliteReader(db_path)


# ClickHouse's error codes for the faults a user can fix (src/Common/ErrorCodes.cpp).
_UNKNOWN_TABLE, _UNKNOWN_DATABASE, _AUTHENTICATION_FAILED, _REQUIRED_PASSWORD = 60, 81, 516, 194
# A table or column a newer schema added: THERE_IS_NO_COLUMN, NO_SUCH_COLUMN_IN_TABLE, UNKNOWN_IDENTIFIER.
_MISSING_IN_SCHEMA = (_UNKNOWN_TABLE, 8, 16, 47)
_UNREACHABLE = ("connection refused", "max retries", "timed out", "name or service not known",
                "failed to establish", "nodename nor servname", "connection reset", "no route to host",
                "temporary failure in name resolution", "remote end closed", "ssl")


def _not_migrated(url: ClickHouseUrl) -> str:
    return (f"the ClickHouse store {url.display()} has no llmobs-tui schema yet: start "
            f"`llmobs-tui serve --store {url.display()}` once to create it, or check the database name")


def describe_clickhouse_error(url: ClickHouseUrl, exc: ClickHouseError, schema_version: int | None = None) -> str:
    """One line for a refused or failed ClickHouse call: what went wrong and what to do. `schema_version`: the
    store's, when known (a read that needs a newer one is told to migrate it)."""
    from store.clickhouse.schema import MIGRATIONS
    from store.clickhouse.url import PASSWORD_ENV

    text = str(exc)
    lower = text.lower()
    if exc.code in (_AUTHENTICATION_FAILED, _REQUIRED_PASSWORD) or "authentication failed" in lower:
        return (f"ClickHouse at {url.display()} refused user {url.user}: wrong user or password "
                f"(the password is read from {PASSWORD_ENV})")
    if schema_version is not None and schema_version < len(MIGRATIONS) and exc.code in _MISSING_IN_SCHEMA:
        return (f"the ClickHouse store {url.display()} has schema version {schema_version}, older than this "
                f"llmobs-tui's {len(MIGRATIONS)} (its `serve` replicas run an older version): this view needs the "
                f"newer one; run this version's `llmobs-tui serve --store {url.display()}`, which migrates it")
    if exc.code in (_UNKNOWN_DATABASE, _UNKNOWN_TABLE):
        return _not_migrated(url)
    if exc.code == 0 and any(word in lower for word in _UNREACHABLE):
        reason = next(word for word in _UNREACHABLE if word in lower)
        return f"cannot reach ClickHouse at {url.display()} ({reason}): is it running, and is the URL right?"
    first = " ".join(text.split())[:300]  # one line; ClickHouseError made its text printable
    return f"ClickHouse at {url.display()}: {first}"
