"""Redaction covers every string OTLP can carry, not a list of content keys (issue 10, item 4).

The main test plants an e-mail, a phone number, a card number, two API keys and an IPv4 and an IPv6
address in every place a string can live (span name, status message, attribute keys and values at
depth 3 inside kvlists and arrays, bytes values, keys the normalizer does not know as content, event
names and attributes, link attributes and trace state, resource and scope attributes, log bodies and
attributes), sends them to a real receiver over gRPC, and greps the SQLite file (every zstd blob
decompressed too, since compression would hide a plain grep) and `llmobs-tui export` of the trace.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import zstandard
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from llmobs_tui import cli
from llmobs_tui.config import ConfigError, load_config
from receiver.normalize import IngestOptions, Normalizer
from receiver.prices import PriceTable
from receiver.redact import Redactor, redact_text, without_assertions
from tests.otlp_factory import MS, T0, kv, log_record, logs_request, make_span, trace_request

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"

EMAIL = "jane.doe@example.com"
PHONE = "+1 (415) 555-0134"
CARD = "4111 1111 1111 1111"
OPENAI_KEY = "sk-proj-Abcdefghijklmnop1234567890"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
IPV4 = "203.0.113.42"
IPV6 = "2001:db8::8a2e:370:7334"
PII = (f"mail {EMAIL}, call {PHONE}, card {CARD}, key {OPENAI_KEY}, aws {AWS_KEY}, "
       f"from {IPV4} and {IPV6}.")
# What must not appear anywhere: each secret, and fragments that would betray a partial redaction.
NEEDLES = (EMAIL, "jane.doe", "example.com", PHONE, "555-0134", CARD, "4111 1111", OPENAI_KEY, "Abcdefghijklmnop",
           AWS_KEY, "IOSFODNN7", IPV4, "203.0.113", IPV6, "8a2e:370")
MARKERS = ("[REDACTED:email]", "[REDACTED:phone]", "[REDACTED:card]", "[REDACTED:secret]", "[REDACTED:ip]")
REDACTED_PII = ("mail [REDACTED:email], call [REDACTED:phone], card [REDACTED:card], key [REDACTED:secret], "
                "aws [REDACTED:secret], from [REDACTED:ip] and [REDACTED:ip].")
TRACE = 0x5EC2E7
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def nested(depth: int, leaf, kind: str):
    for level in range(depth, 0, -1):
        leaf = {f"level{level}": leaf} if kind == "kvlist" else [f"level{level}", leaf]
    return leaf


def planted_traces(now: int):
    """A root and an LLM child, with the PII in every place a span, event, link, resource or scope
    keeps a string."""
    root = make_span(TRACE, 1, None, f"POST /support {PII}", {"http.route": "/support"}, start_ns=now,
                     end_ns=now + 900 * MS, kind=2, status_code=2, status_message=f"failed for {PII}")
    llm = make_span(TRACE, 2, 1, f"chat gpt-4o for {EMAIL}", {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30,
        # known content: redacted before this change already
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": PII}]}]),
        # keys the normalizer does not know as content (the leaks)
        "pydantic_ai.all_messages": json.dumps([{"parts": [{"part_kind": "user-prompt", "content": PII}]}]),
        "inputs": [PII, "second input"],
        "ai.value": PII,
        "ai.values": [PII, PII],
        "embedding.embeddings.0.embedding.text": PII,
        # depth 3 inside a kvlist and inside an array, and a bytes value
        "app.nested.kvlist": nested(3, PII, "kvlist"),
        "app.nested.array": nested(3, PII, "array"),
        "app.raw.bytes": PII.encode(),
        # a dimension column copied from an attribute, and a key that is itself an e-mail
        "user.id": EMAIL,
        f"app.owner.{EMAIL}": "key carries the e-mail",
    }, start_ns=now + 10 * MS, end_ns=now + 800 * MS, events=[
        (f"user {EMAIL} asked", now + 20 * MS, {"detail": PII, "deep": nested(3, PII, "kvlist")}),
        ("gen_ai.content.prompt", now + 21 * MS, {"gen_ai.prompt": PII}),
    ])
    link = llm.links.add(trace_id=(TRACE + 1).to_bytes(16, "big"), span_id=(9).to_bytes(8, "big"))
    link.trace_state = f"acme={IPV4}"
    link.attributes.extend([kv("link.note", PII), kv("link.deep", nested(3, PII, "array"))])
    request = trace_request([root, llm], service="support-bot",
                            resource_attrs={"deployment.owner": PII, "host.ip": IPV4, "host.ipv6": IPV6,
                                            "app.resource.deep": nested(3, PII, "kvlist")})
    scope = request.resource_spans[0].scope_spans[0].scope
    scope.attributes.extend([kv("scope.note", PII)])
    return request


def planted_logs(now: int):
    records = [
        log_record(TRACE, 2, "app.audit", f"user said: {PII}", {"log.note": PII, "log.deep": nested(3, PII, "array")},
                   time_ns=now + 30 * MS),
        log_record(TRACE, 2, "gen_ai.user.message", nested(3, PII, "kvlist"), {"gen_ai.system": "openai"},
                   time_ns=now + 31 * MS),
        log_record(TRACE, 2, "", {"outer": [{"inner": PII}], "owner": EMAIL}, {"client.address": IPV4},
                   time_ns=now + 32 * MS),
    ]
    records[0].severity_text = f"INFO {EMAIL}"
    return logs_request(records, service="support-bot", resource_attrs={"deployment.owner": PII})


def everything_stored(db_path: Path) -> bytes:
    """The store file's bytes (WAL checkpointed into it), followed by every value of every table,
    zstd blobs decompressed."""
    db = sqlite3.connect(db_path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        parts = []
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, bytes):
                        parts.append(value)
                        if value.startswith(ZSTD_MAGIC):
                            parts.append(zstandard.ZstdDecompressor().decompress(value, max_output_size=1 << 26))
                    elif isinstance(value, str):
                        parts.append(value.encode())
    finally:
        db.close()
    files = [p.read_bytes() for p in db_path.parent.glob(db_path.name + "*")]
    return b"\n".join([*files, *parts])


def export_json(db_path: Path, capsys) -> str:
    capsys.readouterr()
    assert cli.main(["export", f"{TRACE:032x}", "--db", str(db_path)]) == 0
    return capsys.readouterr().out


async def send_to_backend(db_path: Path, redact: bool) -> None:
    import time

    from llmobs_tui.backend import Backend, BackendConfig
    from receiver.pipeline import PipelineConfig

    backend = Backend(BackendConfig(PipelineConfig(db_path=str(db_path), decoders=1, retention_s=None,
                                                   redact=redact), grpc_port=0, http_port=0))
    await backend.start()
    try:
        now = time.time_ns() - 10**9
        async with grpc.aio.insecure_channel(backend.grpc_address) as channel:
            raw = await channel.unary_unary(TRACE_METHOD)(planted_traces(now).SerializeToString(), timeout=30)
            assert ExportTraceServiceResponse.FromString(raw).partial_success.rejected_spans == 0
            raw = await channel.unary_unary(LOGS_METHOD)(planted_logs(now).SerializeToString(), timeout=30)
            assert ExportLogsServiceResponse.FromString(raw).partial_success.rejected_log_records == 0
    finally:
        await backend.aclose()


@pytest.mark.anyio
async def test_every_string_is_redacted_in_the_store_file_and_the_export(tmp_path, capsys):
    db_path = tmp_path / "store.db"
    await send_to_backend(db_path, redact=True)
    stored = everything_stored(db_path)
    exported = export_json(db_path, capsys)
    for needle in NEEDLES:
        assert needle.encode() not in stored, f"{needle!r} is in the store"
        assert needle not in exported, f"{needle!r} is in the export"
    for marker in MARKERS:
        assert marker.encode() in stored and marker in exported

    # Each place was kept, redacted (not lost): read them back from the export.
    body = json.loads(exported)
    resource_spans = body["resourceSpans"][0]
    resource = {a["key"]: a["value"] for a in resource_spans["resource"]["attributes"]}
    assert resource["deployment.owner"] == {"stringValue": REDACTED_PII}
    assert resource["host.ip"] == resource["host.ipv6"] == {"stringValue": "[REDACTED:ip]"}
    scope = resource_spans["scopeSpans"][0]["scope"]
    assert scope["attributes"] == [{"key": "scope.note", "value": {"stringValue": REDACTED_PII}}]
    spans = {s["spanId"][-2:]: s for s in resource_spans["scopeSpans"][0]["spans"]}
    assert spans["01"]["name"] == f"POST /support {REDACTED_PII}"
    assert spans["01"]["status"]["message"] == f"failed for {REDACTED_PII}"
    llm = spans["02"]
    assert llm["name"] == "chat gpt-4o for [REDACTED:email]"
    attrs = {a["key"]: a["value"] for a in llm["attributes"]}
    assert attrs["ai.value"] == attrs["embedding.embeddings.0.embedding.text"] == {"stringValue": REDACTED_PII}
    assert REDACTED_PII in json.dumps(attrs["pydantic_ai.all_messages"])
    assert attrs["[REDACTED:email]"] == {"stringValue": "key carries the e-mail"}  # the e-mail took the dots
    assert attrs["user.id"] == {"stringValue": "[REDACTED:email]"}
    kvlist = attrs["app.nested.kvlist"]["kvlistValue"]["values"][0]["value"]["kvlistValue"]["values"][0]["value"]
    assert kvlist["kvlistValue"]["values"][0]["value"] == {"stringValue": REDACTED_PII}
    assert attrs["app.nested.array"]["arrayValue"]["values"][1]["arrayValue"]["values"][1]["arrayValue"][
        "values"][1] == {"stringValue": REDACTED_PII}
    assert [e["name"] for e in llm["events"]] == ["user [REDACTED:email] asked", "gen_ai.content.prompt"]
    assert llm["links"][0]["traceState"] == "acme=[REDACTED:ip]"
    assert llm["links"][0]["attributes"][0]["value"] == {"stringValue": REDACTED_PII}

    # The columns copied from those strings: span names, status message, the user id (searchable).
    db = sqlite3.connect(db_path)
    try:
        assert sorted(db.execute("SELECT name, status_message, user_id FROM spans")) == [
            ("POST /support " + REDACTED_PII, "failed for " + REDACTED_PII, None),
            ("chat gpt-4o for [REDACTED:email]", None, "[REDACTED:email]")]
        assert db.execute("SELECT count(*) FROM logs").fetchone() == (3,)
    finally:
        db.close()


@pytest.mark.anyio
async def test_without_redaction_the_same_grep_finds_every_secret(tmp_path, capsys):
    """The counter-test: the planting and the grep do find the secrets when redaction is off."""
    db_path = tmp_path / "store.db"
    await send_to_backend(db_path, redact=False)
    stored = everything_stored(db_path)
    exported = export_json(db_path, capsys)
    for needle in NEEDLES:
        assert needle.encode() in stored, needle
        assert needle in exported, needle
    assert b"[REDACTED:" not in stored


# --- llmobs.toml [redaction] through the real CLI ------------------------------------------------

CONFIG = """\
[redaction]
patterns = [
  '\\bEMP-[0-9]{6}\\b',
  "(?i)project\\\\s+falcon",
]
drop_keys = ["app.customer.ssn", "http.request.header.*"]
"""


def serve(db: Path, config: Path, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmobs_tui", "serve", "--db", str(db), "--grpc-port", "0", "--http-port", "0",
         "--decoders", "1", "--config", str(config), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return proc


def run_serve_with(tmp_path: Path, name: str, *extra: str) -> bytes:
    import re
    import time

    config = tmp_path / "llmobs.toml"
    config.write_text(CONFIG)
    db = tmp_path / f"{name}.db"
    proc = serve(db, config, *extra)
    try:
        line = proc.stdout.readline()
        match = re.search(r"OTLP/gRPC on (127\.0\.0\.1:\d+)", line)
        assert match, f"serve did not start: {line}{proc.stdout.read() if proc.poll() is not None else ''}"
        now = time.time_ns() - 10**9
        span = make_span(TRACE, 1, None, "chat gpt-4o", {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
            "app.note": f"employee EMP-123456 on Project  Falcon, mail {EMAIL}",
            "app.customer.ssn": "078-05-1120 kept out entirely",
            "http.request.header.authorization": "Basic dXNlcjpodW50ZXIy",
            "http.request.method": "POST"}, start_ns=now, end_ns=now + 100 * MS,
            events=[("note", now + MS, {"http.request.header.cookie": "session=c00k1e", "kept": "yes"})])
        request = trace_request([span], resource_attrs={"http.request.header.x-api-user": "alice"})
        logs = logs_request([log_record(TRACE, 1, "app.audit", "EMP-654321 logged in",
                                        {"app.customer.ssn": "078-05-1120 kept out entirely"}, time_ns=now)])
        with grpc.insecure_channel(match.group(1)) as channel:
            channel.unary_unary(TRACE_METHOD)(request.SerializeToString(), timeout=30)
            channel.unary_unary(LOGS_METHOD)(logs.SerializeToString(), timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return everything_stored(db)


@pytest.mark.slow
def test_config_patterns_and_drop_keys_through_serve(tmp_path):
    stored = run_serve_with(tmp_path, "redacted")
    for gone in (b"EMP-123456", b"EMP-654321", b"Falcon", EMAIL.encode(), b"078-05-1120", b"app.customer.ssn",
                 b"dXNlcjpodW50ZXIy", b"http.request.header", b"c00k1e", b"alice"):
        assert gone not in stored, gone
    assert b"employee [REDACTED:custom] on [REDACTED:custom], mail [REDACTED:email]" in stored
    assert b"[REDACTED:custom] logged in" in stored
    assert b"http.request.method" in stored and b"kept" in stored  # only the named keys went


@pytest.mark.slow
def test_no_redact_keeps_patterns_but_still_drops_keys(tmp_path):
    stored = run_serve_with(tmp_path, "plain", "--no-redact")
    for kept in (b"EMP-123456", b"EMP-654321", b"Project  Falcon", EMAIL.encode()):
        assert kept in stored, kept
    assert b"[REDACTED:" not in stored
    for gone in (b"078-05-1120", b"app.customer.ssn", b"dXNlcjpodW50ZXIy", b"c00k1e", b"alice"):
        assert gone not in stored, gone


# --- the configuration file ------------------------------------------------------------------------


def test_config_reads_patterns_and_drop_keys(tmp_path):
    path = tmp_path / "llmobs.toml"
    path.write_text(CONFIG)
    config = load_config(path)
    assert config.redact_patterns == (r"\bEMP-[0-9]{6}\b", r"(?i)project\s+falcon")
    assert config.drop_keys == ("app.customer.ssn", "http.request.header.*")


@pytest.mark.parametrize(("text", "line", "message"), [
    ("[redaction]\npatterns = [\n  'ok-[0-9]+',\n  'bad(',\n]\n", 4, "not a valid RE2 pattern"),
    ("# c\n[redaction]\npatterns = ['(?<=x)y']\n", 3, "not a valid RE2 pattern"),  # lookbehind: not RE2
    ("[redaction]\npatterns = ['a*']\n", 2, "matches the empty string"),
    ("[redaction]\npatterns = 'x'\n", 2, "must be a list"),
    ("[redaction]\n\ndrop_keys = ['a.*.b']\n", 3, "one final *"),
    ("[redaction]\ndrop_keys = ['*']\n", 2, "one final *"),
    ("[redaction]\nkeys = []\n", 2, "unknown"),
])
def test_bad_redaction_config_fails_with_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "llmobs.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert str(excinfo.value).startswith(f"{path}:{line}: ") and message in str(excinfo.value)


def test_example_config_documents_redaction_and_loads_uncommented(tmp_path):
    from llmobs_tui.config import EXAMPLE_CONFIG

    text = EXAMPLE_CONFIG.read_text()
    assert "# [redaction]" in text
    path = tmp_path / "llmobs.toml"
    path.write_text(text.replace("# [redaction]\n# patterns", "[redaction]\npatterns").replace(
        "# drop_keys = [", "drop_keys = ["))
    config = load_config(path)
    assert config.redact_patterns and config.drop_keys


# --- the normalizer: drop_keys everywhere, dimension columns ---------------------------------------


def test_drop_keys_leave_every_place_and_are_never_read():
    norm = Normalizer(PriceTable.load(), IngestOptions(drop_keys=("user.id", "secret.*")))
    span = make_span(1, 2, None, "chat", {"gen_ai.operation.name": "chat", "user.id": "u-42", "secret.a": "x",
                                          "secret.b": {"k": "v"}, "gen_ai.input.messages": "hello", "kept": 1},
                     events=[("e", T0, {"secret.c": "y", "e.kept": "z"})])
    span.links.add(trace_id=(1).to_bytes(16, "big"), span_id=(3).to_bytes(8, "big")).attributes.extend(
        [kv("secret.d", "w"), kv("l.kept", "v")])
    request = trace_request([span], resource_attrs={"secret.r": "r"})
    request.resource_spans[0].scope_spans[0].scope.attributes.extend([kv("secret.s", "s"), kv("s.kept", "s")])
    rows, resources, scopes, _ = norm.decode_traces(request, T0 + 10**9)
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from store.models import SPAN_COLUMNS

    row = dict(zip(SPAN_COLUMNS, rows[0]))
    stored = Span.FromString(zstandard.ZstdDecompressor().decompress(row["raw"]))
    assert [a.key for a in stored.attributes] == ["gen_ai.operation.name", "gen_ai.input.messages", "kept"]
    assert [a.key for a in stored.events[0].attributes] == ["e.kept"]
    assert [a.key for a in stored.links[0].attributes] == ["l.kept"]
    assert row["user_id"] is None  # dropped before it was read
    assert all(b"secret." not in blob for *_service, blob in resources.values())
    assert all(b"secret." not in blob and b"s.kept" in blob for *_names, blob in scopes.values())

    records = logs_request([log_record(1, 2, "x", "body", {"secret.l": "l", "l.kept": "k"})])
    log_rows, *_ = norm.decode_logs(records, T0 + 10**9)
    assert b"secret.l" not in zstandard.ZstdDecompressor().decompress(log_rows[0][-1])


# --- the patterns ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("10.0.0.1", "[REDACTED:ip]"),
    ("from 192.168.1.100:8080", "from [REDACTED:ip]:8080"),
    ("::1", "[REDACTED:ip]"),
    ("[::1]:443", "[[REDACTED:ip]]:443"),
    ("fe80::1%eth0 up", "[REDACTED:ip] up"),
    ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", "[REDACTED:ip]"),
    ("::ffff:192.0.2.1", "[REDACTED:ip]"),
    # not addresses
    ("version 1.2.3", "version 1.2.3"),
    ("1.2.3.4.5", "1.2.3.4.5"),
    ("v1.2.3.4", "v1.2.3.4"),
    ("300.1.1.1", "300.1.1.1"),
    ("at 10:30:00", "at 10:30:00"),
    ("2024-01-15 10:30:00", "2024-01-15 10:30:00"),
    ("2024-01-15T10:30:00Z", "2024-01-15T10:30:00Z"),
    ("mac 00:1a:2b:3c:4d:5e", "mac 00:1a:2b:3c:4d:5e"),
    ("std::vector<int> and Foo::Bar", "std::vector<int> and Foo::Bar"),
    ("dead::beef", "dead::beef"),
    # identifiers that hold digit runs are not phones or cards
    ("chatcmpl-4111111111111111", "chatcmpl-4111111111111111"),
    ("550e8400-e29b-41d4-a716-446655440000", "550e8400-e29b-41d4-a716-446655440000"),
    ("resp_4155550134", "resp_4155550134"),
    ("1700000000123", "1700000000123"),
    # the rest still is
    ("card 4111-1111-1111-1111.", "card [REDACTED:card]."),
    ("tel 415.555.0134", "tel [REDACTED:phone]"),
    ("ssn 123-45-6789", "ssn [REDACTED:ssn]"),
    ("api_key=abcdefgh12345678", "api_key=[REDACTED:secret]"),
])
def test_patterns(text, expected):
    assert redact_text(text) == expected


def test_custom_patterns_come_first_and_unchanged_text_is_the_same_object():
    redactor = Redactor([r"\bEMP-[0-9]{6}\b"])
    assert redactor.redact("EMP-123456 / jane@example.org") == "[REDACTED:custom] / [REDACTED:email]"
    text = "nothing to see here"
    assert redactor.redact(text) is text


def test_without_assertions_keeps_literals_and_classes():
    assert without_assertions(r"^\bfoo$") == "(?:)(?:)foo(?:)"
    assert without_assertions(r"[$^\]]\Q$^\E[[:alpha:]$]") == r"[$^\]]\Q$^\E[[:alpha:]$]"
    assert without_assertions(r"a\b{2}") == "a(?:){2}"
    assert without_assertions("[unclosed") is None


def test_the_prefilter_never_misses_what_the_walk_would_redact():
    """may_match(serialized span) and candidates(strings) are supersets of "this string changes":
    random PII, in random places, next to random framing bytes (a length byte that is a letter must
    not hide a `\\b`) and random neighbours, ASCII or not."""
    rng = random.Random(1234)
    samples = [EMAIL, PHONE, CARD, OPENAI_KEY, AWS_KEY, IPV4, IPV6, "::1", "fe80::1%eth0", "123-45-6789",
               "Bearer abcdefghijklmnopqrstuvwxyz", "ghp_" + "a" * 36, "EMP-123456", "password: hunter2hunter2"]
    redactors = [Redactor(), Redactor([r"^EMP-[0-9]{6}$", r"\bEMP-[0-9]{6}\b"])]
    misses = 0
    for _ in range(400):
        secret = rng.choice(samples)
        filler = "".join(rng.choice("abcdefXYZé0123456789 .-_:@") for _ in range(rng.randint(0, 70)))
        value = rng.choice([secret, filler + secret, secret + filler, filler[:5] + secret + filler[5:]])
        span = make_span(1, 2, None, "n", {"k" * rng.randint(1, 70): value})
        data = span.SerializeToString()
        texts = [rng.choice(["plain", "x" * 40, filler, "é" * 3]) for _ in range(rng.randint(0, 5))]
        position = rng.randint(0, len(texts))
        texts.insert(position, value)
        for redactor in redactors:
            if redactor.redact(value) != value:
                misses += not redactor.may_match(data)
                misses += position not in redactor.candidates(texts)
    assert misses == 0


def test_ids_and_timestamps_survive_redaction():
    norm = Normalizer(PriceTable.load(), IngestOptions())
    span = make_span(7, 1, None, "chat", {"gen_ai.response.id": "chatcmpl-4111111111111111",
                                          "session.id": "550e8400-e29b-41d4-a716-446655440000",
                                          "app.when": "2024-01-15 10:30:00", "app.mail": EMAIL})
    rows, *_ = norm.decode_traces(trace_request([span]), T0 + 10**9)
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from store.models import SPAN_COLUMNS

    row = dict(zip(SPAN_COLUMNS, rows[0]))
    stored = {a.key: a.value.string_value for a in
              Span.FromString(zstandard.ZstdDecompressor().decompress(row["raw"])).attributes}
    assert stored == {"gen_ai.response.id": "chatcmpl-4111111111111111",
                      "session.id": "550e8400-e29b-41d4-a716-446655440000",
                      "app.when": "2024-01-15 10:30:00", "app.mail": "[REDACTED:email]"}
    assert row["conversation_id"] == "550e8400-e29b-41d4-a716-446655440000"
