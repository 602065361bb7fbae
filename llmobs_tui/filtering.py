"""The `/` filter language: `model=~gpt-4.* ttft>1s status=error feature=checkout`.

Terms are ANDed; a leading `!` inverts the whole filter. Operators: `=` `!=` `=~` (regex) `!~`
`>` `>=` `<` `<=`. Values take units: durations `300ms` `1.5s` `2m`, money `$0.02`, tokens `2k` `1M`.
Trace fields come from the trace summary; span fields (model, ttft, …) match when any span of the
trace matches. Everything compiles to parameterised SQL: user text never becomes SQL.

`text:"refund policy"` (or `text:refund`) searches stored content (prompts, completions, tool
arguments and results, after redaction) for that text, as a substring, case-insensitively; words
after it that are not `field op value` terms belong to it (`text:refund policy`). `text!=…`: no
content of the trace contains it. The text is always searched literally: it never becomes FTS syntax.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from store.content_index import phrase_query, searchable
from store.filters import SPAN_FIELDS, TRACE_FAILING, TRACE_FIELDS, any_span_clause, content_match_clause

NS = 1_000_000_000


class FilterError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class FieldSpec:
    kind: str  # "text" | "duration" | "money" | "count" | "status"
    trace_sql: str | None = None  # an expression over the traces table (alias t)
    span_sql: str | None = None  # an expression over the spans table (alias s)


# Each field's kind; its column comes from store.filters (the store owns the schema).
_KINDS = {
    "feature": "text", "tenant": "text", "service": "text", "root": "text", "status": "status",
    "duration": "duration", "cost": "money", "tokens": "count", "calls": "count", "spans": "count",
    "model": "text", "provider": "text", "name": "text", "kind": "text", "tool": "text", "error": "text",
    "prompt": "text", "version": "text", "user": "text", "conversation": "text", "ttft": "duration",
    "latency": "duration", "variant": "text",
}
FIELDS: dict[str, FieldSpec] = {
    name: FieldSpec(kind, trace_sql=TRACE_FIELDS.get(name), span_sql=SPAN_FIELDS.get(name))
    for name, kind in _KINDS.items()
}
ALIASES = {"svc": "service", "dur": "duration", "err": "error", "session": "conversation", "span": "name"}

SEARCH_FIELD = "text"  # `text:…`, full-text search over stored content
_SEARCH_TERM = re.compile(r"^text(?P<op>:|!=|=)(?P<value>.*)$", re.S)
_TERM = re.compile(r"^(?P<field>[a-z_]+)\s*(?P<op>=~|!~|!=|>=|<=|=|>|<)\s*(?P<value>.*)$", re.S)
_NUMBER = re.compile(r"^\$?(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[a-zµ]*)$", re.I)
_DURATION_UNITS = {"": NS, "s": NS, "sec": NS, "ms": 10**6, "us": 10**3, "µs": 10**3, "m": 60 * NS, "min": 60 * NS,
                   "h": 3600 * NS}
_COUNT_UNITS = {"": 1, "k": 10**3, "m": 10**6}


@dataclass(slots=True)
class Filter:
    """A compiled filter: SQL over `traces t`, its parameters, and whether regexp() is needed."""

    text: str = ""
    where: str = "1"
    params: list = field(default_factory=list)
    uses_regexp: bool = False
    # The FTS5 query of the positive `text:` terms (None without one, or when the filter is inverted):
    # what the trace list asks snippets for (store.content_index.text_matches_query).
    text_search: str | None = None
    # The field terms as (field, op, value), value as compared (status: "error"/"ok"; a `text:` search: the
    # text searched, op = or !=), and whether a leading `!` inverts them: what a store without this SQL
    # (ClickHouse) builds its own condition from.
    terms: list[tuple[str, str, Any]] = field(default_factory=list)
    inverted: bool = False

    @property
    def empty(self) -> bool:
        return not self.text.strip()

    @property
    def positive_searches(self) -> list[str]:
        """The texts of the positive `text:` terms (those a match is shown for)."""
        return [value for name, op, value in self.terms if name == SEARCH_FIELD and op == "="]


def _value(spec: FieldSpec, raw: str, name: str) -> object:
    if spec.kind == "text":
        return raw
    match = _NUMBER.match(raw.strip())
    if not match:
        raise FilterError(f"{name}: {raw!r} is not a number"
                          f"{' with a unit (300ms, 1.5s)' if spec.kind == 'duration' else ''}")
    number = float(match.group("num"))
    unit = match.group("unit").lower()
    if spec.kind == "duration":
        if unit not in _DURATION_UNITS:
            raise FilterError(f"{name}: unknown unit {unit!r} (use ms, s, m, h)")
        return int(number * _DURATION_UNITS[unit])
    if spec.kind == "money":
        if unit:
            raise FilterError(f"{name}: write money as $0.02 or 0.02")
        return round(number * 1e9)  # nano-USD, as stored
    if unit not in _COUNT_UNITS:
        raise FilterError(f"{name}: unknown unit {unit!r} (use k or M)")
    return int(number * _COUNT_UNITS[unit])


def parse(text: str) -> Filter:
    """Compile filter text; raises FilterError with a message meant for the user."""
    source = text.strip()
    invert = source.startswith("!")
    if invert:
        source = source[1:].strip()
    if not source:
        return Filter(text=text)
    try:
        terms = shlex.split(source)
    except ValueError as exc:
        raise FilterError(f"unbalanced quotes: {exc}") from exc
    clauses: list[str] = []
    params: list = []
    field_terms: list[tuple[str, str, Any]] = []
    uses_regexp = False
    searches = _search_terms(terms)
    positive_searches: list[str] = []
    for term in terms:
        if term in searches:
            phrase, negate, value = searches[term]
            clauses.append(content_match_clause(negate, newest_only=not invert))
            params.append(phrase)
            field_terms.append((SEARCH_FIELD, "!=" if negate else "=", value))
            if not negate:
                positive_searches.append(phrase)
            continue
        match = _TERM.match(term)
        if not match:
            raise FilterError(f"{term!r}: expected field op value, e.g. model=~gpt-4.* or ttft>1s")
        name = ALIASES.get(match.group("field"), match.group("field"))
        op = match.group("op")
        raw = match.group("value")
        spec = FIELDS.get(name)
        if spec is None:
            raise FilterError(f"unknown field {name!r}; fields: {', '.join(sorted([*FIELDS, SEARCH_FIELD]))}")
        if spec.kind == "status":
            if op not in ("=", "!=") or raw not in ("error", "ok"):
                raise FilterError("status takes = or != with error or ok")
            clauses.append(TRACE_FAILING if (raw == "error") == (op == "=") else f"NOT {TRACE_FAILING}")
            field_terms.append((name, op, raw))
            continue
        if op in ("=~", "!~"):
            if spec.kind != "text":
                raise FilterError(f"{name}: =~ and !~ apply to text fields")
            try:
                re.compile(raw)
            except re.error as exc:
                raise FilterError(f"{name}: bad regular expression: {exc}") from exc
            uses_regexp = True
        elif op in (">", ">=", "<", "<=") and spec.kind == "text":
            raise FilterError(f"{name}: {op} applies to numbers and durations")
        value = _value(spec, raw, name)
        field_terms.append((name, op, value))
        sql_op = {"=~": "REGEXP", "!~": "NOT REGEXP"}.get(op, op)
        if spec.trace_sql is not None:
            expression = spec.trace_sql
            if op in ("=~", "!~"):
                clauses.append(f"coalesce({expression}, '') {sql_op} ?")
            elif op == "!=":
                clauses.append(f"({expression} IS NULL OR {expression} != ?)")
            else:
                clauses.append(f"{expression} {sql_op} ?")
            params.append(value)
        else:
            expression = spec.span_sql
            if op in ("!=", "!~"):
                # "no span of the trace has model=x", not "some span has another model".
                positive = "=" if op == "!=" else "REGEXP"
                clauses.append(any_span_clause(expression, positive, negate=True))
            else:
                clauses.append(any_span_clause(expression, sql_op))
            params.append(value)
    where = " AND ".join(clauses) or "1"
    if invert:
        where = f"NOT ({where})"
    # Snippets come from the rows that match any of the searched texts (each may match another span).
    text_search = " OR ".join(positive_searches) if positive_searches and not invert else None
    return Filter(text=text, where=where, params=params, uses_regexp=uses_regexp, text_search=text_search,
                  terms=field_terms, inverted=invert)


def _search_terms(terms: list[str]) -> dict[str, tuple[str, bool, str]]:
    """Fold the words after a `text:` term that are not terms of their own into it (`text:refund
    policy` searches "refund policy"), in place in `terms`; returns each search term's FTS5 query
    (always one literal phrase), whether it is negated, and the text searched."""
    found: dict[str, tuple[str, bool, str]] = {}
    folded: list[str] = []
    search: list[str] | None = None  # the op, then the words of the search term being read
    for term in [*terms, None]:
        if term is not None and search is not None and _SEARCH_TERM.match(term) is None and _TERM.match(term) is None:
            search.append(term)
            continue
        if search is not None:
            op, words = search[0], search[1:]
            value = " ".join(words).strip()
            if not searchable(value):
                raise FilterError(f"text: search for a word (got {value!r}): the index looks up words, "
                                  "and punctuation alone is not one")
            key = f"text{op}{value}"
            found[key] = (phrase_query(value), op == "!=", value)
            folded.append(key)
            search = None
        if term is None:
            break
        match = _SEARCH_TERM.match(term)
        if match is not None:
            search = [match.group("op"), match.group("value")]
        else:
            folded.append(term)
    terms[:] = folded
    return found


def regexp(pattern: str, value: object) -> bool:
    """SQLite's REGEXP operator (user function): a search, case-insensitive, cached."""
    if value is None:
        return False
    compiled = _REGEX_CACHE.get(pattern)
    if compiled is None:
        compiled = re.compile(pattern, re.I)
        if len(_REGEX_CACHE) > 256:
            _REGEX_CACHE.clear()
        _REGEX_CACHE[pattern] = compiled
    return compiled.search(str(value)) is not None


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}

_PARTIAL_TERM = re.compile(r"^(?P<field>[a-z_]*)(?:(?P<op>=~|!~|!=|>=|<=|=|>|<)(?P<value>.*))?$", re.S)
_TEXT_OPS = ("=", "!=", "=~", "!~")


def complete(text: str, known: Mapping[str, Sequence[str]]) -> list[str]:
    """Completions of the term being typed (the last one), each the whole filter text: field names
    (`mo` → `model`), then values known to the store (`model=gpt` → `model=gpt-4o`, `model=gpt-4o-mini`),
    `known` mapping a field to its values. Matches are case-sensitive prefixes. Values that need it come
    quoted, as parse() reads them (so such a completion need not start with `text`)."""
    if not text or text[-1].isspace():
        return []
    head, _, term = text.rpartition(" ")
    head = f"{head} " if head else ""
    if not head and term.startswith("!"):  # the whole-filter inversion
        head, term = "!", term[1:]
    match = _PARTIAL_TERM.match(term)
    if match is None:
        return []
    name = match.group("field")
    op = match.group("op")
    if op is None:
        if not name:
            return []
        names = sorted({*FIELDS, *ALIASES, f"{SEARCH_FIELD}:"})
        return [f"{head}{n}" for n in names if n.startswith(name) and n != name]
    field_name = ALIASES.get(name, name)
    spec = FIELDS.get(field_name)
    if spec is None or op not in _TEXT_OPS:
        return []
    values = ("error", "ok") if spec.kind == "status" else known.get(field_name, ()) if spec.kind == "text" else ()
    typed = match.group("value")
    bare = typed.lstrip("'\"")
    out = []
    for value in values:
        if not value.startswith(bare) or value == bare:
            continue
        quoted = shlex.quote(value)
        candidate = f"{head}{name}{op}{quoted}"
        if candidate != text:
            out.append(candidate)
    return out
