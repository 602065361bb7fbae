"""A ClickHouse HTTP endpoint in front of chdb, so the real network client runs against the real engine.

No current ClickHouse server installs on this machine; chdb is the ClickHouse engine in-process. This
server speaks enough of ClickHouse's HTTP interface that clickhouse-connect works against it unchanged:
`GET /ping`; queries in the body, in `query=` or in a form (multipart or urlencoded: clickhouse-connect
sends query and parameters so when they would make the URL too long); INSERT data in the body in any input format the engine
reads (clickhouse-connect sends Native); `param_x=` server-side parameters passed to the engine as
parameters (never spliced into the SQL); `database`, `default_format` and the credentials as headers
(X-ClickHouse-User/-Key/-Database), HTTP basic auth or URL parameters; request bodies compressed with
gzip, deflate, zstd or lz4; any other URL parameter applied as a setting for that one query, restored
afterwards. Errors come back as ClickHouse sends them: the status its exceptionCodeToHTTPStatus maps the
error code to, `X-ClickHouse-Exception-Code`, and "Code: N. DB::Exception: … (NAME)" as the body.

It is a test server: one chdb connection, one query at a time (a lock), no sessions, no response
compression (clickhouse-connect reads plain responses whatever it asked for); HTTPS when given a
certificate.

    server = ChdbHttpServer(chdb_path, users={"llmobs": "secret"})
    server.start()          # 127.0.0.1, an ephemeral port: server.port
    ...
    server.stop()

Or stand-alone: `python -m tests.chdb_http_server --path DIR [--port 8123] [--user U --password P]`.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import gzip
import json
import re
import shutil
import ssl
import tempfile
import threading
import uuid
import zlib
from collections.abc import Mapping
from email import policy as email_policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb

# ClickHouse's src/Server/HTTP/exceptionCodeToHTTPStatus.cpp, by error name (codes are looked up in the
# engine itself with errorCodeToName, so no number is copied here).
_STATUS_BY_NAME = {
    "REQUIRED_PASSWORD": 401,
    **dict.fromkeys(("UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE"), 403),
    **dict.fromkeys(
        (
            "BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT", "CANNOT_PARSE_ESCAPE_SEQUENCE",
            "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE", "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER",
            "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "CANNOT_PARSE_IPV4", "CANNOT_PARSE_IPV6",
            "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN",
            "UNKNOWN_ELEMENT_IN_AST", "UNKNOWN_TYPE_OF_AST_NODE", "THERE_IS_NO_COLUMN", "TOO_DEEP_AST",
            "TOO_BIG_AST", "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH",
            "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
        ),
        400,
    ),
    **dict.fromkeys(
        (
            "UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE", "UNKNOWN_STORAGE",
            "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_DIRECTION_OF_SORTING", "UNKNOWN_AGGREGATE_FUNCTION",
            "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE", "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE",
        ),
        404,
    ),
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "SOCKET_TIMEOUT": 503,
    "CANNOT_OPEN_FILE": 503,
    "HTTP_LENGTH_REQUIRED": 411,
    "TIMEOUT_EXCEEDED": 408,
    "CANNOT_SCHEDULE_TASK": 503,
}

# URL parameters that belong to the HTTP protocol, not to the query's settings.
_PROTOCOL_PARAMS = frozenset(
    (
        "query", "database", "user", "password", "default_format", "session_id", "session_timeout",
        "session_check", "compress", "decompress", "query_id", "quota_key", "buffer_size", "wait_end_of_query",
        "role", "stacktrace", "with_stacktrace", "client_protocol_version", "enable_http_compression",
        "http_zlib_compression_level", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    )
)
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ERROR_CODE = re.compile(r"Code: (\d+)\.")
# The INSERT's data starts after its FORMAT clause (when the body holds both statement and data).
_INSERT = re.compile(r"\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*INSERT\b", re.IGNORECASE | re.DOTALL)
_FORMAT_CLAUSE = re.compile(rb"\bFORMAT\s+([A-Za-z][A-Za-z0-9]*)[ \t]*\r?\n?", re.IGNORECASE)
_SETTINGS_LITERAL_ESCAPES = {"\\": "\\\\", "'": "\\'"}


_engine_path: str | None = None


def engine_path() -> str:
    """The data directory of this process's chdb engine. chdb runs one engine per process, on one path:
    every test that uses chdb shares it (each in a database of its own), deleted at exit."""
    global _engine_path
    if _engine_path is None:
        _engine_path = tempfile.mkdtemp(prefix="llmobs-chdb-tests-")
        atexit.register(shutil.rmtree, _engine_path, True)
    return _engine_path


class _QueryError(Exception):
    def __init__(self, code: int, name: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.name = name


def _quote(value: str) -> str:
    return "'" + "".join(_SETTINGS_LITERAL_ESCAPES.get(ch, ch) for ch in value) + "'"


# ClickHouse's http_max_field_value_size default: the longest form field (the query, one parameter) it reads.
MAX_FIELD_VALUE_SIZE = 128 * 1024


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a form body (the query, `param_*`, settings). A file field (external data) is
    refused: this server does not implement external tables."""
    if content_type.startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(body.decode(), keep_blank_values=True))
    message = BytesParser(policy=email_policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields = {}
    for part in message.iter_parts():
        if part.get_filename() is not None:
            raise ValueError("external data (a file in the form) is not supported by this test server")
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if len(payload) > MAX_FIELD_VALUE_SIZE + 1:  # ClickHouse accepts one byte past its setting
            raise ValueError(f"Field value for field {name!r} exceeds http_max_field_value_size "
                             f"({MAX_FIELD_VALUE_SIZE} bytes)")
        fields[str(name)] = payload.decode(part.get_content_charset() or "utf-8")
    return fields


def _decode_body(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if not encoding or encoding == "identity":
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    if encoding == "lz4":
        import lz4.frame

        return bytes(lz4.frame.decompress(body))
    raise _QueryError(0, "UNKNOWN_FORMAT", f"Unknown Content-Encoding: {encoding}")


class ChdbHttpServer:
    """A ClickHouse HTTP front on the chdb engine at `path` (the one engine of this process)."""

    def __init__(self, path: str, users: Mapping[str, str] | None = None, host: str = "127.0.0.1", port: int = 0,
                 tls: tuple[str, str] | None = None):
        """`tls`: (certificate, key) PEM files: serve HTTPS, as ClickHouse's 8443 does."""
        self.users = dict(users) if users is not None else {"default": ""}
        self._conn = chdb.connect(path)
        self._lock = threading.Lock()
        self._codes: dict[str, int] = {
            name: int(code)
            for code, name in (
                line.split("\t")
                for line in self._conn.query(
                    "SELECT number, errorCodeToName(number) FROM numbers(1000) WHERE errorCodeToName(number) != ''",
                    "TSV",
                ).bytes().decode().splitlines()
            )
        }
        self.version = self._conn.query("SELECT version()", "TSV").bytes().decode().strip()
        self.queries: list[str] = []  # every statement run, for tests that check what the client sent
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> ChdbHttpServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="chdb-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._conn.close()

    # --- one request ---------------------------------------------------------------------------------------

    def error(self, name: str, message: str) -> _QueryError:
        code = self._codes.get(name, 0)
        return _QueryError(code, name, f"Code: {code}. DB::Exception: {message}. ({name}) (version {self.version})")

    def authenticate(self, user: str, password: str) -> None:
        if self.users.get(user) != password:
            raise self.error(
                "AUTHENTICATION_FAILED",
                f"{user}: Authentication failed: password is incorrect, or there is no user with such name",
            )

    def execute(self, database: str, query: str, data: bytes | None, params: dict[str, str],
                settings: dict[str, str], default_format: str) -> tuple[bytes, int]:
        """Run one statement; (output, rows written)."""
        with self._lock:
            self._run("USE " + self._identifier(database))
            restore: list[tuple[str, str]] = []
            try:
                for name, value in settings.items():
                    if not _SETTING_NAME.fullmatch(name):
                        raise self.error("UNKNOWN_SETTING", f"Setting {name} is neither a builtin setting nor started with the prefix 'SQL_'")
                    before = self._conn.query(
                        "SELECT value FROM system.settings WHERE name = {n:String}", "TSV", params={"n": name}
                    ).bytes()
                    self._run(f"SET {name} = {_quote(value)}")
                    restore.append((name, before.decode().rstrip("\n")))
                self.queries.append(query)
                if data is not None:
                    statement, fmt = self._split_insert(query, default_format)
                    inserter = self._conn.send_insert(statement, fmt)
                    try:
                        inserter.append(data)
                        result = inserter.finish()
                    except BaseException:
                        inserter.cancel()
                        raise
                    return b"", int(result.rows_written)
                return bytes(self._conn.query(query, default_format, params=params).bytes()), 0
            except _QueryError:
                raise
            except Exception as exc:
                raise self._as_query_error(exc) from None
            finally:
                for name, value in reversed(restore):
                    self._run(f"SET {name} = {_quote(value)}")

    def _split_insert(self, query: str, default_format: str) -> tuple[str, str]:
        """`INSERT INTO t (a, b) FORMAT Native` → ("INSERT INTO t (a, b)", "Native")."""
        found = list(_FORMAT_CLAUSE.finditer(query.encode()))
        if not found:
            return query, default_format
        last = found[-1]
        return query.encode()[: last.start()].decode(), last.group(1).decode()

    def _identifier(self, name: str) -> str:
        if not _SETTING_NAME.fullmatch(name):
            raise self.error("UNKNOWN_DATABASE", f"Database {name} does not exist")
        return f"`{name}`"

    def _run(self, sql: str) -> None:
        try:
            self._conn.query(sql, "TSV")
        except Exception as exc:
            raise self._as_query_error(exc) from None

    def _as_query_error(self, exc: BaseException) -> _QueryError:
        text = str(exc).removeprefix("Streaming insert append failed: ").removeprefix("Streaming insert finish failed: ")
        found = _ERROR_CODE.search(text)
        code = int(found.group(1)) if found else 0
        name = next((n for n, c in self._codes.items() if c == code), "UNKNOWN_EXCEPTION") if code else "UNKNOWN_EXCEPTION"
        if "(version" not in text:
            text = f"{text} (version {self.version})"
        return _QueryError(code, name, text)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "chdb-http-test"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._handle(b"")

            def do_POST(self) -> None:
                self._handle(self._read_body())

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, body: bytes) -> None:
                url = urlsplit(self.path)
                if url.path in ("/ping", "/ping/"):
                    self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
                    return
                if url.path != "/":
                    self._send(404, b"There is no handle " + url.path.encode() + b"\n", {})
                    return
                params = dict(parse_qsl(url.query, keep_blank_values=True))
                query_id = params.get("query_id") or str(uuid.uuid4())
                headers = {
                    "X-ClickHouse-Query-Id": query_id,
                    "X-ClickHouse-Timezone": "UTC",
                    "X-ClickHouse-Server-Display-Name": "chdb-http-test",
                }
                try:
                    user, password = self._credentials(params)
                    server.authenticate(user, password)
                    data = _decode_body(body, self.headers.get("Content-Encoding", ""))
                    content_type = self.headers.get("Content-Type", "")
                    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
                        # clickhouse-connect sends the query and its bound parameters as form fields once
                        # the parameters would make the URL longer than 4 KB, as ClickHouse accepts them.
                        params.update(_form_fields(content_type, data))
                        data = b""
                    database = self.headers.get("X-ClickHouse-Database") or params.get("database") or "default"
                    default_format = self.headers.get("X-ClickHouse-Format") or params.get("default_format") or "TabSeparated"
                    query = params.get("query", "")
                    insert_data: bytes | None = None
                    if query and _INSERT.match(query) and data:
                        insert_data = data
                    elif _INSERT.match(data[:4096].decode("utf-8", "replace")) and _FORMAT_CLAUSE.search(data):
                        # Statement and data in one body: the data starts after the FORMAT clause's line.
                        clause = _FORMAT_CLAUSE.search(data)
                        assert clause is not None
                        query = (query + " " if query else "") + data[: clause.end()].decode()
                        insert_data = data[clause.end():]
                    else:
                        query = f"{query}\n{data.decode()}" if query and data else (query or data.decode())
                    if not query.strip():
                        raise server.error("SYNTAX_ERROR", "Empty query")
                    bound = {k[len("param_"):]: v for k, v in params.items() if k.startswith("param_")}
                    settings = {
                        k: v for k, v in params.items() if k not in _PROTOCOL_PARAMS and not k.startswith("param_")
                    }
                    output, written = server.execute(database, query, insert_data, bound, settings, default_format)
                except _QueryError as exc:
                    headers["X-ClickHouse-Exception-Code"] = str(exc.code)
                    status = _STATUS_BY_NAME.get(exc.name, 500)
                    self._send(status, str(exc).encode() + b"\n", {**headers, "Content-Type": "text/plain; charset=UTF-8"})
                    return
                except Exception as exc:  # a malformed request: ClickHouse answers 400 with its reason
                    self._send(400, f"Code: 0. DB::Exception: {exc}\n".encode(), {**headers, "X-ClickHouse-Exception-Code": "0"})
                    return
                summary = {"read_rows": "0", "read_bytes": "0", "written_rows": str(written), "written_bytes": "0",
                           "total_rows_to_read": "0", "result_rows": "0", "result_bytes": str(len(output))}
                headers["X-ClickHouse-Summary"] = json.dumps(summary)
                headers["Content-Type"] = "application/octet-stream"
                self._send(200, output, headers)

            def _credentials(self, params: dict[str, str]) -> tuple[str, str]:
                user = self.headers.get("X-ClickHouse-User")
                password = self.headers.get("X-ClickHouse-Key")
                auth = self.headers.get("Authorization", "")
                if auth.lower().startswith("basic "):
                    decoded = base64.b64decode(auth[6:].strip()).decode()
                    basic_user, _, basic_password = decoded.partition(":")
                    user = user or basic_user
                    password = password if password is not None else basic_password
                user = user or params.get("user") or "default"
                if password is None:
                    password = params.get("password", "")
                return user, password

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True, help="chdb data directory")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--user", default="default")
    parser.add_argument("--password", default="")
    args = parser.parse_args()
    server = ChdbHttpServer(args.path, {args.user: args.password}, port=args.port)
    print(f"listening on 127.0.0.1:{server.port}", flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
