"""The few calls the ClickHouse store makes, over two transports.

`HttpClient` talks to a ClickHouse server through clickhouse-connect (HTTP or HTTPS); `ChdbClient` runs
the same SQL on chdb, the ClickHouse engine in-process (tests, benchmarks, a local mode). Both bind
every value as a server-side query parameter (`{name:Type}` in the SQL): a span name, an attribute or
a prompt is data and never becomes SQL text. Identifiers (table and column names) cannot be bound in an
INSERT's column list, so they are checked against a strict pattern instead.

Rows come back as tuples. String columns come back as `str`, except the ones a query names in
`bytes_columns` (zstd content, which is not text); FixedString columns (trace and span ids) as `bytes`.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from store.clickhouse.url import ClickHouseUrl

# clickhouse-connect logs every failed attempt at WARNING (and urllib3 every retry) before it raises; the
# store turns what it raises into one line of its own (a command's error, serve's once-per-outage log
# line), so their copies would be a traceback-like burst on a terminal and one more log line a second
# for as long as ClickHouse is down.
for _noisy in ("clickhouse_connect", "urllib3.connectionpool"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

if TYPE_CHECKING:
    import pyarrow  # type: ignore[import-untyped]

Params = Mapping[str, Any]

# A name, or a Nested column's subcolumn (`latencyMap.bucket`), which is one identifier in ClickHouse.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?")
_ERROR_CODE = re.compile(r"Code: (\d+)\.")


class ClickHouseError(RuntimeError):
    """A statement ClickHouse (or chdb) refused. `code` is ClickHouse's error code (0 when unknown)."""

    def __init__(self, message: str, code: int = 0) -> None:
        # The server's text can quote values from the data (a span name, an attribute): whoever shows it
        # (a command's error line, serve's log) gets it with control characters and escape sequences
        # replaced, lines kept.
        super().__init__("".join(c if c.isprintable() or c == "\n" else "?" for c in message))
        self.code = code


def _as_error(exc: BaseException) -> ClickHouseError:
    text = str(exc)
    found = _ERROR_CODE.search(text)
    return ClickHouseError(text, int(found.group(1)) if found else 0)


_SETTING_VALUE = re.compile(r"[A-Za-z0-9_.:-]{0,200}")


def checked_settings(settings: Params | None) -> dict[str, str]:
    """Query settings as text, after checking that names are identifiers and values plain words (an
    INSERT's SETTINGS clause cannot bind parameters, so nothing that needs escaping may reach it)."""
    checked: dict[str, str] = {}
    for name, value in (settings or {}).items():
        text = str(int(value)) if isinstance(value, bool | int) else str(value)
        if not _IDENTIFIER.fullmatch(name) or "." in name or not _SETTING_VALUE.fullmatch(text):
            raise ValueError(f"not a plain setting: {name!r} = {value!r}")
        checked[name] = text
    return checked


def identifier(name: str) -> str:
    """`name` quoted as a ClickHouse identifier, after checking it needs no escaping at all."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return f"`{name}`"


class ClickHouseClient(Protocol):
    """What the store needs from a ClickHouse connection."""

    @property
    def database(self) -> str: ...

    def use_database(self) -> None:
        """Address `database` from now on (once it exists: schema.migrate creates it)."""

    def command(self, sql: str, parameters: Params | None = None) -> None:
        """Run a statement that returns no rows (DDL, OPTIMIZE, ALTER … DELETE)."""

    def query(
        self, sql: str, parameters: Params | None = None, *, bytes_columns: Collection[str] = ()
    ) -> list[tuple[Any, ...]]:
        """Run a SELECT; all its rows."""

    def insert(self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str],
               settings: Params | None = None) -> int:
        """Insert `rows` (values in `column_names` order) into `table` in one INSERT; returns the row count
        (not the server's written_rows, which counts what a materialized view writes from them too: m011).
        Returns only after the server has confirmed the insert. `settings`: query settings of this INSERT
        (e.g. insert_deduplication_token), names and values plain words (checked_settings)."""

    def close(self) -> None: ...


# --- parameters in ClickHouse's escaped text format -------------------------------------------------------
# A server-side parameter's value is parsed as the named type in the TSV "Escaped" format: backslash,
# tab, newline and NUL must be escaped, and bytes that are not text are sent as \xHH.
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0", "\b": "\\b", "\f": "\\f", "'": "\\'"}
_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r\0\b\f']")


def _escape_text(value: str) -> str:
    return _NEEDS_ESCAPE.sub(lambda m: _ESCAPES[m.group()], value)


def _number(value: int | float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return repr(value) if isinstance(value, float) else str(int(value))


def _literal(value: Any) -> str:
    """A value inside an Array/Tuple/Map parameter: there the elements are SQL literals."""
    if value is None:
        return "NULL"
    if isinstance(value, bool | int | float):
        return _number(value)
    if isinstance(value, str):
        return f"'{_escape_text(value)}'"
    if isinstance(value, bytes | bytearray):
        return "'" + "".join(f"\\x{b:02x}" for b in value) + "'"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, tuple):  # a Tuple(...): an Array of tuples sent as lists is refused (CANNOT_PARSE_INPUT)
        return "(" + ", ".join(_literal(v) for v in value) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    raise TypeError(f"cannot bind a {type(value).__name__} as a ClickHouse parameter")


def escape_parameter(value: Any) -> str:
    """The text a `{name:Type}` parameter is sent as (param_name= over HTTP, params= to chdb)."""
    if value is None:
        return "\\N"
    if isinstance(value, bool | int | float):
        return _number(value)
    if isinstance(value, str):
        return _escape_text(value)
    if isinstance(value, bytes | bytearray):
        return "".join(f"\\x{b:02x}" for b in value)
    return _literal(value)


# ClickHouse reads a query's parameters from the URL or, as clickhouse-connect sends them once they pass
# 4 KB, from form fields, each capped at http_max_field_value_size (128 KiB by default). A 16-byte id is
# sent as '\xNN' sixteen times, about 68 characters with its separator, so one list of ~1,900 ids is refused.
# A read by a list of ids takes them IDS_PER_QUERY at a time: ≈ 34 KB of ids, 55 KB of (trace, span) pairs.
IDS_PER_QUERY = 500


T = TypeVar("T")


def batches(values: Sequence[T], size: int = IDS_PER_QUERY) -> Iterator[list[T]]:
    """`values` in lists of at most `size`, in order (none for no values)."""
    for start in range(0, len(values), size):
        yield list(values[start:start + size])


TEXT_BATCH_BYTES = 64 * 1024  # half the server's cap on a form field


def text_batches(values: Sequence[str]) -> Iterator[list[str]]:
    """Strings in lists of at most IDS_PER_QUERY that each fit a form field (128 KiB on the server): a text id
    (a response id) is kept up to 256 characters, so 500 of them can be 512 KB. Each counted at twice its UTF-8
    length (every byte escaped, at worst) and its quotes and separator."""
    batch: list[str] = []
    size = 0
    for value in values:
        cost = 2 * len(value.encode()) + 4
        if batch and (len(batch) >= IDS_PER_QUERY or size + cost > TEXT_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(value)
        size += cost
    if batch:
        yield batch


def among(column: str, value_type: str, parts: Sequence[Sequence[Any]],
          name: str = "ids") -> tuple[str, dict[str, Any]]:
    """`column` in any of `parts` (from batches or text_batches) as one condition, each part a parameter of its
    own (a form field holds 128 KiB): a query that reads the same rows whatever the ids (a time window read
    whole) reads them once, not once a part. Returns (condition, parameters)."""
    condition = " OR ".join(f"{identifier(column)} IN {{{name}{i}:Array({value_type})}}" for i in range(len(parts)))
    return f"({condition or '0'})", {f"{name}{i}": list(part) for i, part in enumerate(parts)}


# --- over HTTP: clickhouse-connect ---------------------------------------------------------------------


class HttpClient:
    """A ClickHouse server over HTTP(S), through clickhouse-connect (the `clickhouse` extra)."""

    def __init__(self, url: ClickHouseUrl, *, ca_cert: str | None = None, connect_timeout: float = 10.0,
                 send_receive_timeout: float = 300.0):
        """`ca_cert`: a PEM bundle to trust for clickhouse+https:// (a private CA); default: the URL's
        (LLMOBS_CLICKHOUSE_CA_CERT, --store-ca-cert), else the system's."""
        ca_cert = ca_cert or url.ca_cert
        try:
            import clickhouse_connect
        except ImportError:
            raise ClickHouseError(
                "the ClickHouse store needs clickhouse-connect: pip install 'llmobs-tui[clickhouse]'"
            ) from None
        self._url = url
        self._database = url.database
        try:
            # Connected to the user's default database first: the store's database may not exist yet
            # (schema.migrate creates it), and clickhouse-connect checks the one it is given.
            self._client = clickhouse_connect.get_client(
                interface=url.interface,
                host=url.host,
                port=url.port,
                username=url.user,
                password=url.password,
                connect_timeout=connect_timeout,
                send_receive_timeout=send_receive_timeout,
                ca_cert=ca_cert if url.secure else None,
                # No session: each call stands alone, so any replica behind a load balancer can answer it
                # and two threads never meet in one session (ClickHouse refuses concurrent queries there).
                autogenerate_session_id=False,
            )
        except Exception as exc:
            raise _as_error(exc) from None

    @property
    def database(self) -> str:
        return self._database

    def use_database(self) -> None:
        """Address the store's database from now on (after it exists)."""
        self._client.database = self._database

    def command(self, sql: str, parameters: Params | None = None) -> None:
        try:
            self._client.command(sql, parameters=dict(parameters) if parameters else None)
        except Exception as exc:
            raise _as_error(exc) from None

    def query(
        self, sql: str, parameters: Params | None = None, *, bytes_columns: Collection[str] = ()
    ) -> list[tuple[Any, ...]]:
        try:
            result = self._client.query(
                sql,
                parameters=dict(parameters) if parameters else None,
                column_formats={name: "bytes" for name in bytes_columns} or None,
            )
        except Exception as exc:
            raise _as_error(exc) from None
        return [tuple(row) for row in result.result_rows]

    def insert(self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str],
               settings: Params | None = None) -> int:
        identifier(table)
        for name in column_names:
            identifier(name)
        checked = checked_settings(settings)
        if not rows:
            return 0
        try:
            self._client.insert(table, list(rows), column_names=list(column_names), settings=checked or None)
        except Exception as exc:
            raise _as_error(exc) from None
        return len(rows)

    def close(self) -> None:
        self._client.close()


# --- in-process: chdb -----------------------------------------------------------------------------------


def _arrow_type(ch_type: str) -> pyarrow.DataType:
    """The Arrow type that chdb reads into the ClickHouse column type `ch_type` (the types the schema uses)."""
    import pyarrow as pa

    for wrapper in ("Nullable(", "LowCardinality("):
        if ch_type.startswith(wrapper):
            return _arrow_type(ch_type[len(wrapper):-1])
    if ch_type.startswith("SimpleAggregateFunction("):  # stored, read and written as its value's type
        return _arrow_type(_split_pair(ch_type[len("SimpleAggregateFunction("):-1])[1])
    if ch_type.startswith("Tuple("):  # of two (the schema's): an Arrow struct, by position
        first, second = _split_pair(ch_type[len("Tuple("):-1])
        return pa.struct([pa.field("1", _arrow_type(first)), pa.field("2", _arrow_type(second))])
    simple = {
        "Int8": pa.int8(), "Int16": pa.int16(), "Int32": pa.int32(), "Int64": pa.int64(),
        "UInt8": pa.uint8(), "UInt16": pa.uint16(), "UInt32": pa.uint32(), "UInt64": pa.uint64(),
        "Float32": pa.float32(), "Float64": pa.float64(), "Bool": pa.bool_(), "String": pa.binary(),
    }
    if ch_type in simple:
        return simple[ch_type]
    if ch_type.startswith("FixedString("):
        return pa.binary(int(ch_type[len("FixedString("):-1]))
    if ch_type.startswith("Map("):
        key, value = _split_pair(ch_type[len("Map("):-1])
        return pa.map_(_arrow_type(key), _arrow_type(value))
    if ch_type.startswith("Array("):
        return pa.list_(_arrow_type(ch_type[len("Array("):-1]))
    raise ClickHouseError(f"chdb insert: column type {ch_type} is not supported by ChdbClient")


def _split_pair(args: str) -> tuple[str, str]:
    depth = 0
    for i, ch in enumerate(args):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            return args[:i].strip(), args[i + 1:].strip()
    raise ClickHouseError(f"cannot split type arguments {args!r}")


def _arrow_values(values: list[Any], arrow_type: pyarrow.DataType) -> list[Any]:
    import pyarrow as pa

    if pa.types.is_map(arrow_type):
        return [None if v is None else list(v.items()) if isinstance(v, Mapping) else v for v in values]
    if pa.types.is_struct(arrow_type):
        names = [arrow_type.field(i).name for i in range(arrow_type.num_fields)]
        return [None if v is None else dict(zip(names, v)) for v in values]
    return values


def _python_values(values: list[Any], arrow_type: pyarrow.DataType, text: bool) -> list[Any]:
    """Arrow's Python values as clickhouse-connect returns them: String as str (when `text`), Map as dict."""
    import pyarrow as pa

    if pa.types.is_binary(arrow_type) and text:
        return [None if v is None else v.decode("utf-8", "replace") for v in values]
    if pa.types.is_map(arrow_type):
        keys = _python_values
        return [
            None if v is None else dict(zip(
                keys([k for k, _ in v], arrow_type.key_type, text), keys([x for _, x in v], arrow_type.item_type, text)
            ))
            for v in values
        ]
    if pa.types.is_list(arrow_type):
        return [None if v is None else _python_values(v, arrow_type.value_type, text) for v in values]
    if pa.types.is_struct(arrow_type):  # a Tuple (sumMap's result): a Python tuple, as clickhouse-connect gives
        fields = [arrow_type.field(i) for i in range(arrow_type.num_fields)]
        converted = [
            _python_values([None if v is None else v[f.name] for v in values], f.type, text) for f in fields
        ]
        return [None if v is None else tuple(col[i] for col in converted) for i, v in enumerate(values)]
    return values


class ChdbClient:
    """The ClickHouse engine in this process (chdb). chdb runs one engine per process, on one data path:
    every ChdbClient of a process must name the same `path` (':memory:' for a throwaway engine)."""

    def __init__(self, path: str, database: str) -> None:
        import chdb

        identifier(database)
        self._database = database
        self._lock = threading.Lock()
        self._column_types: dict[str, dict[str, str]] = {}
        try:
            self._conn = chdb.connect(path)
            # String columns as Arrow binary: content (zstd) is not UTF-8; text is decoded per column below.
            self._conn.query("SET output_format_arrow_string_as_string = 0")
        except Exception as exc:
            raise _as_error(exc) from None

    @property
    def database(self) -> str:
        return self._database

    def use_database(self) -> None:
        with self._lock:
            self._run(f"USE {identifier(self._database)}", None, "CSV")

    def _run(self, sql: str, parameters: Params | None, fmt: str) -> Any:
        params = {k: escape_parameter(v) for k, v in parameters.items()} if parameters else None
        try:
            return self._conn.query(sql, fmt, params=params)
        except Exception as exc:
            raise _as_error(exc) from None

    def command(self, sql: str, parameters: Params | None = None) -> None:
        with self._lock:
            self._run(sql, parameters, "CSV")

    def query(
        self, sql: str, parameters: Params | None = None, *, bytes_columns: Collection[str] = ()
    ) -> list[tuple[Any, ...]]:
        import pyarrow.ipc as ipc  # type: ignore[import-untyped]

        with self._lock:
            result = self._run(sql, parameters, "ArrowStream")
        data = result.bytes()
        if not data:
            return []
        table = ipc.open_stream(data).read_all()
        columns = [
            _python_values(column.to_pylist(), column.type, name not in bytes_columns)
            for name, column in zip(table.column_names, table.columns)
        ]
        return list(zip(*columns)) if columns else []

    def insert(self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str],
               settings: Params | None = None) -> int:
        import pyarrow as pa
        import pyarrow.ipc as ipc

        quoted = identifier(table)
        names = [identifier(name) for name in column_names]
        checked = checked_settings(settings)
        # An INSERT's SETTINGS clause takes no parameters: checked_settings let only plain words through.
        clause = (" SETTINGS " + ", ".join(f"{k} = '{v}'" for k, v in checked.items())) if checked else ""
        if not rows:
            return 0
        types = self._types_of(table)
        missing = [name for name in column_names if name not in types]
        if missing:
            raise ClickHouseError(f"table {table} has no column(s) {', '.join(missing)}", 16)
        arrays = []
        for i, name in enumerate(column_names):
            arrow_type = _arrow_type(types[name])
            try:
                arrays.append(pa.array(_arrow_values([row[i] for row in rows], arrow_type), arrow_type))
            except (pa.ArrowException, TypeError, ValueError) as exc:
                raise ClickHouseError(f"column {name} ({types[name]}): {exc}", 53) from None
        batch = pa.RecordBatch.from_arrays(arrays, names=list(column_names))
        sink = pa.BufferOutputStream()
        with ipc.new_stream(sink, batch.schema) as stream:
            stream.write_batch(batch)
        with self._lock:
            try:
                statement = f"INSERT INTO {quoted} ({', '.join(names)}){clause}"
                inserter = self._conn.send_insert(statement, "ArrowStream")
                try:
                    inserter.append(sink.getvalue().to_pybytes())
                    inserter.finish()
                except BaseException:
                    inserter.cancel()
                    raise
            except ClickHouseError:
                raise
            except Exception as exc:
                raise _as_error(exc) from None
        return len(rows)

    def _types_of(self, table: str) -> dict[str, str]:
        known = self._column_types.get(table)
        if known is None:
            rows = self.query(
                "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String}",
                {"db": self._database, "t": table},
            )
            if not rows:
                raise ClickHouseError(f"no table {self._database}.{table}", 60)
            known = self._column_types[table] = {name: ch_type for name, ch_type in rows}
        return known

    def forget_column_types(self) -> None:
        """After a migration changed a table: its column types are read again on the next insert."""
        self._column_types.clear()

    def close(self) -> None:
        self._conn.close()
