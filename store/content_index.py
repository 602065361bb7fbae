"""Full-text search over stored content: what goes into the `content_index` FTS5 table (m005), the
indexer the writer process runs off the ack path, and the queries the read side runs over it.

What is indexed is what the store keeps, after redaction: the messages of a span (system prompt,
inputs, outputs, tool calls and their arguments and results, reasoning), a tool span's arguments
and result, a retrieval's query and documents, and the content of log records joined to a trace.
Nothing is indexed that a user could not already read on the Trace screen.

Rows and rowids. A span's row has rowid = spans.id; a log record's row has rowid = -logs.id. Log
records are indexed as rows of their own instead of re-indexing their span when they arrive: a log
row is written once and never changes, so each is indexed exactly once whatever the arrival order
(a log before its span, after it, or for a span that never comes), with no re-index churn on spans
whose events trickle in. The price is that content emitted twice (span attributes and log events in
OTel's SPAN_AND_EVENT mode) is indexed twice; a search still lands on the same span. The rowid
scheme lets eviction find a trace's rows by rowid (through the spans and logs indexes on
trace_id) instead of keeping an index on trace_id.

The text once (m012). The FTS5 table is contentless: it keeps postings and nothing else, and the
text each row was indexed with is kept once, zstd-compressed, in `content_text` (same rowid, with
the row's trace and span ids, which a search reads there). A normal FTS5 table kept a second,
uncompressed copy of every text: 4,748 → 1,626 bytes of index per heavy span (4 KB of content),
1,777 → 573 per agent span (bench/search_index.py). The stored text serves two readers. Snippets:
the ≤500 rows a trace list shows are indexed again in a scratch in-memory table (make_snippets), so
snippet() gives exactly what it gave before. Deletes: SQLite 3.40 has no contentless_delete, and
FTS5 forgets a contentless row only when given the exact text it indexed (a wrong text corrupts
the index without an error), so every delete path (retention, forget, a re-met row after a
watermark clamp) goes through forget_rows, which gives FTS5 back the text from content_text.
Extraction reads only the attributes and events store.content reads (CONTENT_KEYS) and takes a
short way through the two commonest message shapes (_fast_message_pieces); the text is the same.

Words, not trigrams. The index holds word tokens (unicode61, case folded, accents kept); text in
scripts written without spaces (Chinese, Japanese, Korean, Thai, Lao, Khmer, Myanmar) is split per
character by an invisible separator, so a search finds any run of such characters. A search is
the user's words in order, the last one possibly cut short (`refun` finds "refunds"); it cannot
start inside a word ("efund"). Trigram tokens found any substring, but cost a posting per character:
with 4 KB of content per span, 223 µs of CPU and 10.7 KB of index per span against 33 µs and 4.7 KB
with words (measured on the same 40,000 spans, 64-row transactions), and indexing cost more than
storing the span (bench.ingest --workload heavy: 356 µs per span).

Off the ack path. Even so, indexing is a real share of a span's cost (issue 15: 108 → 82 µs of
CPU per heavy span, 66 → 44 per agent span, bench/search_index.py): done inside the commit it
would slow every ack. So the writer acknowledges first, and ContentIndexer works through spans and
logs above a watermark kept in `meta`, in small transactions: whenever the inbox is idle, and under
sustained load for a bounded share of the writer's commit time (so the index never starves and acks
wait at most one small transaction). A store created before m005 is caught up from 0 the same way.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import zstandard

from store import span_walk
from store.content import (
    CONTENT_EVENTS,
    CONTENT_KEY_PREFIXES,
    CONTENT_KEYS,
    MAX_MESSAGES,
    MAX_PARTS,
    LogEvent,
    Message,
    SpanEvent,
    messages_from_span,
    tool_io,
)
from store.meta import get_meta, set_meta
from store.otlp_values import any_value
from store.queries import decompress

log = logging.getLogger(__name__)

SPANS_WATERMARK = "content_index.spans"  # the highest spans.id indexed (every id below it too)
LOGS_WATERMARK = "content_index.logs"  # the same for logs.id
# Why the writer serving this store does not index ('' while it does): read by the search, which
# would otherwise report a lag that never shrinks.
INDEXING_OFF = "content_index.off"

# Why cap: indexing costs CPU and disk in proportion to the text (words, detail=full: ~8 µs and ~1.2 KB
# per 1,000 characters, on top of reading the text back), and one span can carry a whole retrieved
# document set (100 KB+).
# Uncapped, one such span costs as much as fifty ordinary ones and the index grows faster than the
# spans it describes. Each piece (a message part, an argument, a result) keeps its first
# PIECE_CHARS, so a long system prompt or document cannot crowd out the user's question or the
# completion that follow it; the span keeps its first SPAN_CHARS in all. Text past the cap is
# still stored and shown on the Trace screen, only not searchable.
PIECE_CHARS = 2_000
SPAN_CHARS = 8_000
# Snippet markers: private-use characters, removed from the indexed text so that the stored
# content can never forge a highlight.
MARK_START = "\ue000"
MARK_END = "\ue001"
# Put between the characters of a script written without spaces, in the index and in a query, so
# that each character is a token (unicode61 would take a whole run as one word); never shown.
CHAR_SEPARATOR = "\ue002"
_MARKS = str.maketrans({MARK_START: " ", MARK_END: " ", CHAR_SEPARATOR: " "})
_UNSPACED_SCRIPT = re.compile(
    "([\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f])(?=[\u0e00-\u0eff\u1000-\u109f"
    "\u1780-\u17ff\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
    "\uf900-\ufaff\uff66-\uff9f])")
_WORD = re.compile(r"\w")

TOKENIZER = f"unicode61 remove_diacritics 0 separators '{CHAR_SEPARATOR}'"
# m008's table (a normal FTS5 table keeping its own copy of the text), replaced by m012's: kept
# because m008 creates it on its way up.
CREATE_INDEX = f"""
    CREATE VIRTUAL TABLE content_index USING fts5(
        trace_id UNINDEXED,
        span_id UNINDEXED,
        body,
        tokenize = "{TOKENIZER}"
    )"""
# The index since m012: FTS5 keeps postings alone (contentless), and the text it indexed is kept
# once, zstd-compressed, in content_text under the same rowid, with the row's trace and span. A
# normal FTS5 table stored the text a second time, uncompressed: ~4 KB of a heavy span's 6.9 KB, and
# ~9 µs of its indexing. The text is still needed twice: to build snippets (text_matches_query and
# parse_text_matches) and to delete a row, since SQLite 3.40's contentless tables forget a row only
# when given the exact text they indexed (a wrong one corrupts the index without an error): every
# delete goes through forget_rows, which reads it back from content_text. The per-row token counts
# (%_docsize, ~20 bytes a row) stay: without them FTS5 refuses a scan of the table, even count(*).
CREATE_TABLES = (
    f"""CREATE VIRTUAL TABLE content_index USING fts5(
        body,
        content = '',
        tokenize = "{TOKENIZER}"
    )""",
    """CREATE TABLE content_text (
        id INTEGER PRIMARY KEY,           -- the index row's rowid: spans.id, or -logs.id
        trace_id BLOB NOT NULL,           -- first: a search reads it without the text
        span_id BLOB,                     -- NULL: a log record without a span id
        body BLOB NOT NULL                -- the indexed text, UTF-8, zstd (TEXT_LEVEL)
    )""",
)
# Level 1: on 4 KB of English prose, 47 % of the size at 17 µs, against 62 % at 13 µs for level -1
# (the spans' own level): ~600 bytes a span kept for 4 µs.
TEXT_LEVEL = 1
_TEXT_COMPRESSOR = zstandard.ZstdCompressor(level=TEXT_LEVEL)


def strip_marks(text: str) -> str:
    """The text without the characters the index reserves (snippet marks, the character separator)."""
    return text.translate(_MARKS)


def split_unspaced(text: str) -> str:
    """A separator between adjacent characters of the scripts written without spaces."""
    if text.isascii():  # most content: one C pass instead of the regex's per-character Python-level match
        return text
    return _UNSPACED_SCRIPT.sub("\\1" + CHAR_SEPARATOR, text)

_WHITESPACE = re.compile(r"\s+")
_RETRIEVAL_KEYS = ("gen_ai.retrieval.query.text", "retrieval.query")
_DOCUMENT_PREFIX = "retrieval.documents."
_DOCUMENT_SUFFIX = ".document.content"  # OpenInference retrieval.documents.N.document.content
# The attributes span_text reads: a stored span is read back with these converted and no others.
_INDEXED_KEYS = CONTENT_KEYS | frozenset(_RETRIEVAL_KEYS)
_INDEXED_PREFIXES = (*CONTENT_KEY_PREFIXES, _DOCUMENT_PREFIX)
# Whether span_text reads a key, by key (span_walk.KNOWN or 0): the same few dozen keys come in every
# span, and one dict lookup costs a third of the two tests (~1.5 µs a span). Bounded: keys are senders' data.
_KEY_WANTED: dict[str, int] = {}
_KEY_CACHE_SIZE = 4096


def _key_wanted(key: str) -> int:
    wanted = span_walk.KNOWN if key in _INDEXED_KEYS or key.startswith(_INDEXED_PREFIXES) else 0
    if len(_KEY_WANTED) < _KEY_CACHE_SIZE:
        _KEY_WANTED[key] = wanted
    return wanted


# --- the searchable text ---------------------------------------------------------------------------


def text_of(value: Any) -> str:
    """A stored value as the text a search looks at (JSON for structures); the in-trace search too."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        return str(value)


def _message_pieces(messages: Iterable[Message]) -> Iterator[Any]:
    for message in messages:
        for part in message.parts:
            if part.type in ("text", "reasoning"):
                yield part.text
            elif part.type == "tool_call":
                yield part.name
                yield part.arguments
            elif part.type == "tool_call_response":
                yield part.response


def _join(pieces: Iterable[Any]) -> str:
    """Pieces joined by newlines, each capped, duplicates dropped, the whole capped (see SPAN_CHARS)."""
    seen: set[str] = set()
    out: list[str] = []
    size = 0
    for piece in pieces:
        text = text_of(piece).strip()[:PIECE_CHARS]
        if not text or text in seen:
            continue
        seen.add(text)
        out.append(text)
        size += len(text) + 1
        if size >= SPAN_CHARS:
            break
    text = "\n".join(out)[:SPAN_CHARS]
    if not text.isascii():  # the marks are not ASCII; translate() costs ~3 µs per KB even when none is there
        text = split_unspaced(text.translate(_MARKS))
    return text


# The two shapes nearly every instrumented span arrives in, read without building Message objects
# (about a third of the extraction): OTel ≥1.37 `gen_ai.input.messages`/`gen_ai.output.messages`
# with text parts, and ≤1.27 `gen_ai.content.prompt`/`.completion` span events of OpenAI-style
# {role, content} messages. Taken only when nothing else that messages_from_span reads is present and
# every message is plain text, so the pieces are exactly the ones it would give; anything else (a
# tool message, a tool call, a system instruction, another source, a malformed value) goes the
# general way. tests/test_search_index_extraction.py compares the two on both sides of each rule.
_FAST_ATTRIBUTES = frozenset({"gen_ai.input.messages", "gen_ai.output.messages"})
_FAST_EVENTS = {"gen_ai.content.prompt": "gen_ai.prompt", "gen_ai.content.completion": "gen_ai.completion"}
_PLAIN_MESSAGE_KEYS = frozenset({"role", "content", "parts", "finish_reason", "name"})


def _plain_message_texts(value: Any, out: list[Any]) -> int:
    """Append the texts of a list of plain-text messages (JSON or structured) to `out`; returns how
    many messages, or -1 when the value is anything else."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return -1
    if not isinstance(value, list) or len(value) > MAX_MESSAGES:
        return -1
    for message in value:
        # No tool_call_id or id: a tool message's text stays text (store.content._as_tool_response);
        # no type or tool_calls: a message, not an item of another kind. The role changes no text.
        if not isinstance(message, dict) or not message.keys() <= _PLAIN_MESSAGE_KEYS:
            return -1
        if "parts" in message:
            parts = message["parts"]
            if not isinstance(parts, list) or len(parts) > MAX_PARTS:
                return -1
            for part in parts:
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("content"), str):
                    return -1
                out.append(part["content"])
        elif isinstance(message.get("content"), str):
            out.append(message["content"])
        else:
            return -1
    return len(value)


def _fast_message_pieces(attributes: Mapping[str, Any], events: Sequence[SpanEvent]) -> list[Any] | None:
    """The message pieces of a span in one of the common shapes, or None (see _FAST_ATTRIBUTES)."""
    pieces: list[Any] = []
    if attributes:
        if events or attributes.keys() != _FAST_ATTRIBUTES:
            return None
        inputs = _plain_message_texts(attributes["gen_ai.input.messages"], pieces)
        outputs = _plain_message_texts(attributes["gen_ai.output.messages"], pieces)
        # No more messages than messages_from_span keeps (an empty one still counts there).
        return pieces if inputs >= 0 and outputs >= 0 and inputs + outputs <= MAX_MESSAGES else None
    if not events:
        return pieces
    completions: list[Any] = []
    messages = 0
    for event in events:
        key = _FAST_EVENTS.get(event.name)
        if key is None or key not in event.attributes:
            return None
        count = _plain_message_texts(event.attributes[key], pieces if key == "gen_ai.prompt" else completions)
        if count < 0:
            return None
        messages += count
    pieces += completions
    return pieces if messages <= MAX_MESSAGES else None


def span_text(kind: str, attributes: Mapping[str, Any], events: Sequence[SpanEvent]) -> str:
    """The searchable text of a span from its attributes and span events (its log records are
    indexed as rows of their own: see the module's docstring)."""
    pieces = _fast_message_pieces(attributes, events)
    if pieces is None:
        pieces = list(_message_pieces(messages_from_span(attributes, events)))
    if kind == "tool":
        pieces.extend(tool_io(attributes, events))
    for key in _RETRIEVAL_KEYS:
        if key in attributes:
            pieces.append(attributes[key])
    pieces.extend(value for key, value in attributes.items()
                  if key.startswith(_DOCUMENT_PREFIX) and key.endswith(_DOCUMENT_SUFFIX))
    return _join(pieces)


def log_text(event: LogEvent) -> str:
    """The searchable text of one log record: its messages when it is a gen_ai event in any of the
    shapes store.content reads, else its body when that is a string (an application's log line)."""
    messages = messages_from_span({}, (), (event,))
    if messages:
        return _join(_message_pieces(messages))
    return _join([event.body] if isinstance(event.body, str) else [])


def searchable_span_text(raw: bytes | None, kind: str) -> str:
    """The searchable text of a stored span (spans.raw: zstd protobuf)."""
    if not raw:
        return ""
    try:
        data = decompress(raw)
    except Exception:  # a damaged blob must not stop the indexer: index nothing for it
        return ""
    return span_bytes_text(data, kind)


def span_bytes_text(data: bytes, kind: str) -> str:
    """The searchable text of a span's protobuf bytes (ClickHouse's spans.raw, not compressed)."""
    content = None
    if span_walk.COMPILED:
        try:
            content = _walked_content(data)
        except span_walk.Unsupported:
            pass  # bytes the compiled walk does not read: upb's objects decide, below
        except Exception:
            return ""
    if content is None:
        try:
            content = _parsed_content(data)
        except Exception:
            return ""
    return span_text(kind, *content)


def _parsed_content(data: bytes) -> tuple[dict[str, Any], list[SpanEvent]]:
    """span_text's input from a stored span's bytes, through upb's objects."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    proto = Span.FromString(data)
    # Only what span_text reads is converted: most of a span's ~25 attributes are model names,
    # token counts and ids, and converting them all cost more than reading the messages.
    attributes = {}
    for kv in proto.attributes:
        key = kv.key
        wanted = _KEY_WANTED.get(key)
        if wanted is None:
            wanted = _key_wanted(key)
        if wanted:
            attributes[key] = any_value(kv.value)
    return attributes, _content_events(proto)


def _content_events(proto: Any) -> list[SpanEvent]:
    return [SpanEvent(e.name, e.time_unix_nano, {kv.key: any_value(kv.value) for kv in e.attributes})
            for e in proto.events if e.name in CONTENT_EVENTS]


class _WalkedSpan:
    """A stored span read through the compiled walk: parsed by upb only when an attribute read is an
    array, a map or bytes (most content is text)."""

    __slots__ = ("data", "parsed")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.parsed: Any = None

    def proto(self) -> Any:
        from opentelemetry.proto.trace.v1.trace_pb2 import Span

        if self.parsed is None:
            self.parsed = Span.FromString(self.data)
        return self.parsed

    def value(self, index: int) -> Any:
        return any_value(self.proto().attributes[index].value)

    def event_value(self, event_index: int, index: int) -> Any:
        return any_value(self.proto().events[event_index].attributes[index].value)


def _walked_content(data: bytes) -> tuple[dict[str, Any], list[SpanEvent]]:
    """span_text's input from a stored span's bytes; raises span_walk.Unsupported for bytes the walk
    does not read, and what upb raises for a damaged span."""
    span = _WalkedSpan(data)
    attributes: dict[str, Any] = {}
    span_walk.walk_values(data, _KEY_WANTED, _key_wanted, attributes, span.value)
    events = [SpanEvent(*event) for event in span_walk.content_events(data, CONTENT_EVENTS, span.event_value)]
    return attributes, events


def searchable_log_text(raw: bytes | None, event_name: str | None) -> str:
    """The searchable text of a stored log record (logs.raw: zstd protobuf)."""
    if not raw:
        return ""
    try:
        data = decompress(raw)
    except Exception:
        return ""
    return log_bytes_text(data, event_name)


def log_bytes_text(data: bytes, event_name: str | None) -> str:
    """The searchable text of a log record's protobuf bytes (ClickHouse's logs.raw, not compressed)."""
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

    try:
        record = LogRecord.FromString(data)
    except Exception:
        return ""
    attributes = {kv.key: any_value(kv.value) for kv in record.attributes}
    name = event_name or record.event_name or text_of(attributes.get("event.name"))
    return log_text(LogEvent(name, record.time_unix_nano, attributes, any_value(record.body)))


# --- the indexer (writer process) --------------------------------------------------------------------


@dataclass(slots=True)
class IndexerStats:
    spans: int = 0  # spans read past the watermark (indexed, or without text)
    logs: int = 0
    rows: int = 0  # rows written to the index
    seconds: float = 0.0  # wall time in steps (the writer's thread: CPU-bound work)
    cpu_seconds: float = 0.0  # process CPU time in steps
    transactions: int = 0


class ContentIndexer:
    """Indexes spans and log records above the watermarks, in transactions of at most `chunk`
    rows, until a deadline. Runs on the writer's connection and thread (one writer per store)."""

    def __init__(self, db: sqlite3.Connection, *, chunk: int = 64, load_share: float = 0.15) -> None:
        self.db = db
        self.chunk = chunk
        # Under sustained load the indexer gets this share of the time the writer spends committing.
        self.load_share = load_share
        self.stats = IndexerStats()
        self._credit = 0.0
        self._caught_up = False
        self._paused_until = 0.0
        clamp_watermarks(db)  # spans.id restarts below an old watermark once the newest spans are gone

    @property
    def has_work(self) -> bool:
        """Rows may be waiting: not caught up at the last step, or committed since; False while paused."""
        return not self._caught_up and time.monotonic() >= self._paused_until

    def pause(self, seconds: float) -> None:
        """Stop trying for a while (after an error: a full disk, a locked file), instead of retrying in a loop."""
        self._paused_until = time.monotonic() + seconds

    def notify_commit(self, commit_seconds: float) -> None:
        """A batch was committed: there is new work, and the indexer earns its share of that time."""
        self._caught_up = False
        self._credit = min(0.25, self._credit + commit_seconds * self.load_share)

    def step_under_load(self) -> int:
        """Index for the time earned so far (notify_commit); returns the rows read."""
        if not self.has_work or self._credit < 0.002:
            return 0
        started = time.perf_counter()
        done = self.run(deadline_s=self._credit)
        self._credit -= time.perf_counter() - started
        return done

    def run(self, deadline_s: float, stop: Callable[[], bool] | None = None) -> int:
        """Index until caught up, `deadline_s` has passed, or `stop()` says so (checked between
        transactions). Returns the spans and logs read."""
        started = time.perf_counter()
        cpu_started = time.process_time()
        done = 0
        try:
            while True:
                read = self._one_transaction()
                done += read
                if read == 0:
                    self._caught_up = True
                    break
                if time.perf_counter() - started >= deadline_s or (stop is not None and stop()):
                    break
        finally:
            self.stats.seconds += time.perf_counter() - started
            self.stats.cpu_seconds += time.process_time() - cpu_started
        return done

    def _one_transaction(self) -> int:
        db = self.db
        span_mark = int(get_meta(db, SPANS_WATERMARK) or 0)
        log_mark = int(get_meta(db, LOGS_WATERMARK) or 0)
        # Read and extract outside the transaction: only this thread writes the store, so nothing
        # changes in between, and the write lock is held for the inserts alone.
        spans = db.execute("SELECT id, trace_id, span_id, kind, raw FROM spans WHERE id > ? ORDER BY id LIMIT ?",
                           (span_mark, self.chunk)).fetchall()
        logs = db.execute("SELECT id, trace_id, span_id, event_name, raw FROM logs WHERE id > ? ORDER BY id LIMIT ?",
                          (log_mark, self.chunk)).fetchall()
        if not spans and not logs:
            return 0
        rows: list[tuple[int, bytes, bytes | None, str]] = []
        for span_row_id, trace_id, span_id, kind, raw in spans:
            text = searchable_span_text(raw, kind)
            if text:
                rows.append((span_row_id, trace_id, span_id, text))
        for log_row_id, trace_id, span_id, event_name, raw in logs:
            if trace_id is None:
                continue  # not reachable from the trace list: nothing would show the match
            text = searchable_log_text(raw, event_name)
            if text:
                rows.append((-log_row_id, trace_id, span_id, text))
        stored = [(rowid, trace_id, span_id, _TEXT_COMPRESSOR.compress(text.encode()))
                  for rowid, trace_id, span_id, text in rows]
        db.execute("BEGIN IMMEDIATE")
        try:
            # A watermark clamped after an eviction may meet ids indexed before: what this pass finds
            # for them replaces what is there (given back to FTS5 first, see forget_rows).
            stale = []
            if spans:
                stale += db.execute("SELECT id, body FROM content_text WHERE id > ? AND id <= ?",
                                    (span_mark, spans[-1][0])).fetchall()
            if logs:
                stale += db.execute("SELECT id, body FROM content_text WHERE id >= ? AND id < ?",
                                    (-logs[-1][0], -log_mark)).fetchall()
            if stale:
                forget_rows(db, stale)
            db.executemany("INSERT INTO content_text (id, trace_id, span_id, body) VALUES (?, ?, ?, ?)", stored)
            db.executemany("INSERT INTO content_index (rowid, body) VALUES (?, ?)",
                           [(rowid, text) for rowid, _trace_id, _span_id, text in rows])
            if spans:
                set_meta(db, SPANS_WATERMARK, str(spans[-1][0]))
            if logs:
                set_meta(db, LOGS_WATERMARK, str(logs[-1][0]))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.stats.spans += len(spans)
        self.stats.logs += len(logs)
        self.stats.rows += len(rows)
        self.stats.transactions += 1
        return len(spans) + len(logs)


def clamp_watermarks(db: sqlite3.Connection) -> None:
    """Lower a watermark past the newest row still stored. SQLite gives a new log row max(id) + 1, and
    the writer starts spans at max(id) + 1: once the newest rows are deleted, their ids come back, and
    a watermark above them would skip the new rows. Runs inside the deleting transaction."""
    for key, table in ((SPANS_WATERMARK, "spans"), (LOGS_WATERMARK, "logs")):
        db.execute(f"UPDATE meta SET value = (SELECT coalesce(max(id), 0) FROM {table}) "
                   f"WHERE key = ? AND CAST(value AS INTEGER) > (SELECT coalesce(max(id), 0) FROM {table})", (key,))


def forget_rows(db: sqlite3.Connection, rows: Sequence[tuple[int, bytes]]) -> int:
    """Take these (rowid, stored text) rows out of the index and content_text; call inside a
    transaction. FTS5 is given each row's own text back (a contentless table cannot find it), so
    this is the only right way to delete from the index: a DELETE on content_text alone would leave
    postings no search could tell from live ones."""
    given_back = []
    for rowid, body in rows:
        try:
            given_back.append((rowid, decompress(body).decode()))
        except Exception:  # a damaged text must not stop retention: its postings stay, matching no row
            log.warning("content_text row %d is damaged: its index postings are left behind", rowid)
    db.executemany("INSERT INTO content_index (content_index, rowid, body) VALUES ('delete', ?, ?)", given_back)
    db.executemany("DELETE FROM content_text WHERE id = ?", [(rowid,) for rowid, _body in rows])
    return len(rows)


def delete_traces(db: sqlite3.Connection, trace_ids: Sequence[bytes]) -> int:
    """Delete the index rows of these traces; call in the evicting transaction BEFORE their spans
    and logs are deleted (the rows are found by rowid through them). Returns the rows deleted."""
    marks = ", ".join("?" * len(trace_ids))
    rows = db.execute("SELECT id, body FROM content_text WHERE id IN "
                      f"(SELECT id FROM spans WHERE trace_id IN ({marks}))", trace_ids).fetchall()
    rows += db.execute("SELECT id, body FROM content_text WHERE id IN "
                       f"(SELECT -id FROM logs WHERE trace_id IN ({marks}))", trace_ids).fetchall()
    deleted = forget_rows(db, rows)
    if deleted:
        reclaim_deleted(db, deleted)
    return deleted


# Pages of merge work per deleted row. An FTS5 delete only adds a tombstone to a new segment: the
# evicted text's postings stay until a merge meets them, so without merging, a store evicting at its
# size limit grows its index for ever (measured here: +7 MB per 1,280 rows evicted, without bound).
# A merge across levels ('merge' with a negative N) of about two pages per deleted row held the
# index at a steady size in the same experiment, for ~40 µs per page; 'optimize' rewrites the whole
# index into the WAL (2 ms of CPU per MB, bench.search_index: 1.3 s for 400k heavy spans' 620 MB), which
# an eviction at a size limit cannot afford each time; forget runs it once (purge_deleted).
MERGE_PAGES_PER_DELETED_ROW = 2
MERGE_PAGES_MAX = 2000


def reclaim_deleted(db: sqlite3.Connection, deleted_rows: int) -> None:
    """Bounded merge work after deleting index rows, so their space comes back (see above)."""
    # At most MERGE_PAGES_MAX per eviction chunk: one transaction's WAL growth stays bounded.
    pages = min(MERGE_PAGES_MAX, max(64, deleted_rows * MERGE_PAGES_PER_DELETED_ROW))
    db.execute("INSERT INTO content_index (content_index, rank) VALUES ('merge', ?)", (-pages,))


def purge_deleted(db: sqlite3.Connection) -> None:
    """Merge the whole index into one segment, which drops every deleted row's postings and tombstones.
    A delete leaves the row's terms in the older segments until a merge meets them (reclaim_deleted's
    bounded merges get there in time): after `forget`, the forgotten user's words would still be read
    off the file. It rewrites the whole index (bench.search_index: 2 ms of CPU per MB of index, and a WAL of
    up to the postings' size: 63 MB for an index of 156 MB), so only forget runs it."""
    db.execute("INSERT INTO content_index (content_index) VALUES ('optimize')")


def delete_traceless_logs(db: sqlite3.Connection, before_ns: int) -> int:
    """Delete the index rows of the trace-less logs older than `before_ns` (retention deletes those
    logs next). The indexer skips trace-less logs today; this keeps eviction right if it ever does not."""
    rows = db.execute("SELECT id, body FROM content_text WHERE id IN "
                      "(SELECT -id FROM logs WHERE trace_id IS NULL AND time_ns < ?)", (before_ns,)).fetchall()
    return forget_rows(db, rows)


# --- the read side -------------------------------------------------------------------------------------


def searchable(user_text: str) -> bool:
    """Whether a search has a word to look up: text of punctuation alone has none."""
    return _WORD.search(user_text) is not None


def phrase_query(user_text: str) -> str:
    """The FTS5 query for a user's search text: one phrase, quotes doubled, so the text is always
    literal (an `OR`, `NEAR(`, `*`, `^` or quote in it is a separator, never obeyed). Its words
    match in order, case-insensitively; the last may be the start of a word (the trailing `*`)."""
    text = split_unspaced(strip_marks(user_text))
    return '"' + text.replace('"', '""') + '" *'


@dataclass(frozen=True, slots=True)
class TextMatch:
    trace_id: bytes
    span_id: bytes | None  # None: a log record without a span id
    snippet: str  # MARK_START/MARK_END around each match (see snippet_parts)


SNIPPET_TOKENS = 24  # words (or characters of an unspaced script) of context around the match
# A search reads at most this many matches, newest first (FTS5 walks rowids in descending order
# without sorting). A phrase rarer than that is found everywhere; a common word fills the trace
# list from its newest matches, in constant time whatever the store's size: reading every match of
# a word found in every LLM span is ~0.5 s per million spans (measured: bench/tui.py). The Traces
# screen says when a search was cut (match_count_query).
MATCH_SCAN_LIMIT = 10_000
# The traces whose content matches (store.filters: a negation must see them all)...
ALL_MATCHES = ("SELECT trace_id FROM content_text WHERE id IN "
               "(SELECT rowid FROM content_index WHERE content_index MATCH ?)")
# ... and those of the newest MATCH_SCAN_LIMIT matching rows.
NEWEST_MATCHES = ("SELECT trace_id FROM content_text WHERE id IN (SELECT rowid FROM content_index WHERE "
                  f"content_index MATCH ? ORDER BY rowid DESC LIMIT {MATCH_SCAN_LIMIT})")
_OLDEST_SCANNED = ("(SELECT min(rowid) FROM (SELECT rowid FROM content_index WHERE content_index MATCH ? "
                   f"ORDER BY rowid DESC LIMIT {MATCH_SCAN_LIMIT}))")


# A row's place in parse_text_matches' order as one number: spans (rowid > 0) by id, then log
# records (rowid < 0) by id, so that SQL can pick each trace's first row with min().
_LOG_RANK_BASE = 1 << 62


def text_matches_query(match: str, trace_ids: Sequence[bytes]) -> tuple[str, tuple]:
    """For each of these traces (the ≤500 the list shows), its first matching row (see
    parse_text_matches) among the matches the list's filter read (the newest MATCH_SCAN_LIMIT: FTS5
    takes the rowid bound, so the walk stops there): (rowid, trace_id, span_id, stored text, match).
    The snippet is made from the text by parse_text_matches; the match rides along in each row so
    that the rows alone are enough to make it."""
    marks = ", ".join("?" * len(trace_ids))
    sql = (f"WITH matched AS (SELECT trace_id, min(CASE WHEN id > 0 THEN id ELSE {_LOG_RANK_BASE} - id END) "
           f"AS rank FROM content_text WHERE id IN (SELECT rowid FROM content_index WHERE content_index MATCH ? AND "
           f"rowid >= {_OLDEST_SCANNED}) AND trace_id IN ({marks}) GROUP BY trace_id) "
           f"SELECT c.id, c.trace_id, c.span_id, c.body, ? FROM matched m JOIN content_text c "
           f"ON c.id = CASE WHEN m.rank < {_LOG_RANK_BASE} THEN m.rank ELSE {_LOG_RANK_BASE} - m.rank END")
    return sql, (match, match, *trace_ids, match)


def match_count_query(match: str) -> tuple[str, tuple]:
    """How many rows match, counted up to one past MATCH_SCAN_LIMIT: more means the search was cut."""
    return (f"SELECT count(*) FROM (SELECT 1 FROM content_index WHERE content_index MATCH ? "
            f"LIMIT {MATCH_SCAN_LIMIT + 1})", (match,))


@dataclass(frozen=True, slots=True)
class SearchResult:
    matches: dict[bytes, TextMatch]  # by trace id
    lag_spans: int  # spans not indexed yet
    cut: bool  # more than MATCH_SCAN_LIMIT rows match: the newest were searched
    off_reason: str = ""  # the writer does not index (INDEXING_OFF): what is searchable stays as it is


def parse_text_matches(rows: Iterable[Sequence[Any]]) -> dict[bytes, TextMatch]:
    """One match per trace: the first span (in store order) whose content matched, a span's own
    content before a log record's; rows as text_matches_query gives them."""
    best: dict[bytes, tuple[tuple[int, int], int, bytes | None, bytes]] = {}
    rows = list(rows)
    if not rows:
        return {}
    match = rows[0][4]  # the same in every row
    for rowid, trace_id, span_id, body, _match in rows:
        rank = (0, rowid) if rowid > 0 else (1, -rowid)
        trace_id = bytes(trace_id)
        known = best.get(trace_id)
        if known is None or rank < known[0]:
            best[trace_id] = (rank, rowid, bytes(span_id) if span_id else None, body)
    snippets = make_snippets(match, {rowid: decompress(body).decode() for _rank, rowid, _span, body in best.values()})
    return {trace_id: TextMatch(trace_id, span_id, snippets.get(rowid, "").replace(CHAR_SEPARATOR, ""))
            for trace_id, (_rank, rowid, span_id, _body) in best.items()}


def make_snippets(match: str, texts: Mapping[int, str]) -> dict[int, str]:
    """FTS5's own snippets of these indexed texts for the query `match`, by rowid. The index keeps
    no text (CREATE_TABLES), so the few rows a list shows are indexed again in a scratch in-memory
    table with the same tokenizer: the same snippet() over the same text gives the same snippet a
    normal table gave (30–70 µs a row)."""
    scratch = sqlite3.connect(":memory:")
    try:
        scratch.execute(f"CREATE VIRTUAL TABLE scratch USING fts5(body, tokenize = \"{TOKENIZER}\")")
        scratch.executemany("INSERT INTO scratch (rowid, body) VALUES (?, ?)", texts.items())
        return dict(scratch.execute("SELECT rowid, snippet(scratch, 0, ?, ?, '…', ?) FROM scratch "
                                    "WHERE scratch MATCH ?", (MARK_START, MARK_END, SNIPPET_TOKENS, match)))
    finally:
        scratch.close()


def snippet_parts(snippet: str) -> list[tuple[str, bool]]:
    """A snippet as (text, matched) pieces, whitespace runs (newlines too) folded to one space."""
    parts: list[tuple[str, bool]] = []
    for i, chunk in enumerate(snippet.split(MARK_START)):
        matched, _, rest = chunk.partition(MARK_END) if i else ("", "", chunk)
        for text, is_match in ((matched, True), (rest, False)):
            folded = _WHITESPACE.sub(" ", text)
            if folded:
                parts.append((folded, is_match))
    return parts


def lag_query() -> tuple[str, tuple]:
    """Spans and log records not yet indexed: the newest id minus the watermark. Ids are dense (the
    writer numbers spans in order; SQLite numbers logs), so this is the count without counting, in
    O(log n) on a store of any size and lag."""
    return ("SELECT max(0, coalesce((SELECT max(id) FROM spans), 0) - coalesce((SELECT CAST(value AS INTEGER) "
            "FROM meta WHERE key = ?), 0)), max(0, coalesce((SELECT max(id) FROM logs), 0) - "
            "coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?), 0))", (SPANS_WATERMARK, LOGS_WATERMARK))


def record_indexing(db: sqlite3.Connection, off_reason: str) -> None:
    """The writer says, at start, whether it indexes ('') or why not."""
    with db:
        set_meta(db, INDEXING_OFF, off_reason)


def indexing_off_query() -> tuple[str, tuple]:
    return "SELECT coalesce((SELECT value FROM meta WHERE key = ?), '')", (INDEXING_OFF,)


def index_lag(db: sqlite3.Connection) -> tuple[int, int]:
    """(spans, logs) not yet indexed."""
    sql, params = lag_query()
    spans, logs = db.execute(sql, params).fetchone()
    return spans or 0, logs or 0
