"""Price table and per-call LLM cost (pure Python: stdlib, and the formula in store/pricing.py).

The shipped table lives next to this module in ``prices.toml`` (package data). A user table given
with ``--prices FILE`` has the same format; its rows replace shipped rows with the same ``id`` and
otherwise take precedence over shipped rows. See the header of ``prices.toml`` for the format.

Token semantics (one meaning everywhere): ``input_tokens`` INCLUDES cache reads and cache writes,
``output_tokens`` INCLUDES reasoning tokens. Costs are integer nano-USD, computed with integer
arithmetic (prices are turned into exact integers of 1e-15 USD per token at load time) and rounded
once, half-to-even, like ``round(cost_usd * 1e9)``.

Model matching is exact on names (after normalization, see :func:`normalize_model`) or a full
match of a user ``pattern`` regex, never a prefix match: ``gpt-4o-mini`` never prices as
``gpt-4o``. Lookups are memoized, so the per-span cost of a hit is one dict probe.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tomllib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from store import pricing
from store.pricing import PriceRecord

__all__ = [
    "CANONICAL_PROVIDERS",
    "PriceFileError",
    "PriceRow",
    "PriceTable",
    "canonical_provider",
    "model_candidates",
    "normalize_model",
]

CANONICAL_PROVIDERS = (
    "openai", "azure", "anthropic", "google", "aws.bedrock", "mistral", "cohere", "deepseek", "xai",
    "groq", "perplexity", "ibm.watsonx.ai", "moonshot",
)


class PriceFileError(ValueError):
    """A price file is unreadable or invalid; the message names the file, the row and the reason."""


# --------------------------------------------------------------------------------------------------
# Providers
# --------------------------------------------------------------------------------------------------

_PROVIDER_ALIASES = {
    "openai": "openai",
    "azure.ai.openai": "azure", "az.ai.openai": "azure", "azure.ai.inference": "azure",
    "az.ai.inference": "azure", "azure": "azure",
    "anthropic": "anthropic",
    "gcp.gemini": "google", "gcp.vertex_ai": "google", "gcp.gen_ai": "google", "gemini": "google",
    "vertex_ai": "google", "vertexai": "google", "google": "google", "google_genai": "google",
    "aws.bedrock": "aws.bedrock", "aws": "aws.bedrock", "bedrock": "aws.bedrock",
    "mistral_ai": "mistral", "mistralai": "mistral", "mistral": "mistral",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "x_ai": "xai", "xai": "xai",
    "groq": "groq",
    "perplexity": "perplexity",
    "ibm.watsonx.ai": "ibm.watsonx.ai",
    "moonshot_ai": "moonshot", "moonshot": "moonshot",
}


def canonical_provider(raw: str | None) -> str | None:
    """Map an OTel ``gen_ai.provider.name`` / ``gen_ai.system`` / OpenInference ``llm.provider`` or
    ``llm.system`` value to a canonical provider name (case-insensitive). Unknown values come back
    lower-cased; ``None`` and blank strings give ``None``."""
    if raw is None:
        return None
    key = str(raw).strip().lower()
    if not key:
        return None
    return _PROVIDER_ALIASES.get(key, key)


# --------------------------------------------------------------------------------------------------
# Model names
# --------------------------------------------------------------------------------------------------

# Routing prefixes put in front of a model id by SDKs, gateways and resource paths.
_ROUTE_PREFIX = re.compile(
    r"^(?:projects/[^/]+/locations/[^/]+/publishers/[^/]+/models"
    r"|publishers/[^/]+/models|accounts/[^/]+/models"
    r"|openai|anthropic|google|models|gemini|vertex_ai|vertexai|bedrock|azure|azure_ai"
    r"|mistral|mistralai|cohere|deepseek|deepseek-ai|xai|x-ai|groq|perplexity|meta-llama|qwen"
    r"|moonshotai|openrouter)/"
)
# Bedrock: optional region / inference-profile prefix, then a vendor prefix, stripped ONLY when a
# known vendor model family follows (so "us.something" or "amazon.foo" stay untouched).
_BEDROCK_PREFIX = re.compile(
    r"^(?:(?:us|eu|apac|global|jp|au|ca|us-gov)\.)?"
    r"(?:anthropic\.(?=claude)|amazon\.(?=nova|titan|rerank)|meta\.(?=llama)"
    r"|mistral\.(?=mistral|mixtral|ministral|magistral|devstral|pixtral|voxtral)"
    r"|cohere\.(?=command|embed|rerank)|ai21\.(?=jamba|j2))"
)
_COLON_VERSION = re.compile(r":\d+$")                       # Bedrock ":0"
_BEDROCK_VERSION = re.compile(r"-v\d+$")                    # Bedrock "-v1" (after ":0" is gone)
_SUFFIXES = (
    re.compile(r"@[\w.-]+$"),                               # Vertex "@20241022", "@001", "@latest"
    re.compile(r"-\d{4}-\d{2}-\d{2}$"),                     # OpenAI "-2024-08-06"
    re.compile(r"-20\d{6}$"),                               # Anthropic "-20250929"
    re.compile(r"-latest$"),
    re.compile(r"-preview-\d{2}-\d{2,4}$"),                 # Gemini "-preview-05-20", "-preview-09-2025"
    re.compile(r"-exp-\d{4}$"),                             # Gemini "-exp-0827"
    re.compile(r"(?<!embedding)(?<!ada)-00\d$"),            # revision "-001"/"-002" (not embeddings)
    re.compile(r"-(?:0[1-9]|1[0-2])-20\d{2}$"),             # Cohere "-08-2024"
    re.compile(r"-(?:2[3-9]|3\d)(?:0[1-9]|1[0-2])$"),       # Mistral YYMM "-2411", "-2512"
)


def _parse_model(name: str) -> tuple[str, tuple[str, ...], bool]:
    """Return (normalized name, candidate names most specific first, looks like a Bedrock id)."""
    s = str(name).strip().lower()
    if s.startswith("arn:"):                                # Bedrock model / inference-profile ARN
        s = s.rsplit("/", 1)[-1]
    while True:
        m = _ROUTE_PREFIX.match(s)
        if m is None or m.end() == len(s):
            break
        s = s[m.end():]
    candidates = [s]
    bedrock = False
    m = _BEDROCK_PREFIX.match(s)
    if m is not None and m.end() < len(s):
        bedrock = True
        s = s[m.end():]
        candidates.append(s)
    while True:
        stripped = _strip_suffix(_COLON_VERSION, s)
        if stripped is not None:
            bedrock = True
        elif bedrock and "embed" not in s:
            stripped = _strip_suffix(_BEDROCK_VERSION, s)
        if stripped is None:
            stripped = next((t for rx in _SUFFIXES if (t := _strip_suffix(rx, s)) is not None), None)
        if stripped is None:
            break
        s = stripped
        candidates.append(s)
    unique = tuple(dict.fromkeys(c for c in candidates if c))  # first occurrences, in order
    return s, unique, bedrock


def _strip_suffix(rx: re.Pattern[str], s: str) -> str | None:
    """`s` without the suffix `rx` finds there, or None when it finds none (or the whole name)."""
    m = rx.search(s)
    return s[:m.start()] if m is not None and m.start() > 0 else None


def normalize_model(name: str) -> str:
    """Canonical model name: lower-cased, routing / Bedrock region+vendor prefixes removed, and
    version suffixes (dates, ``-latest``, ``-v1:0``, ``@2024…``, ``-001``, ``-preview-05-20``…)
    removed repeatedly. ``gpt-4o-2024-08-06`` → ``gpt-4o``;
    ``us.anthropic.claude-sonnet-4-5-20250929-v1:0`` → ``claude-sonnet-4-5``."""
    return _parse_model(name)[0]


def model_candidates(name: str) -> tuple[str, ...]:
    """Names tried in order when matching: the raw id first, then each less specific form down to
    :func:`normalize_model`. Lets a row price a dated snapshot (``gpt-4o-2024-05-13``) differently
    from its family while everything else falls through to the family row."""
    return _parse_model(name)[1]


_VENDOR_OF = (
    (re.compile(r"^claude"), "anthropic"),
    (re.compile(r"^(?:gpt-|chatgpt|codex|o\d|text-embedding-(?:3|ada))"), "openai"),
    (re.compile(r"^(?:gemini|text-embedding-00|text-multilingual-embedding)"), "google"),
    (re.compile(r"^(?:mistral|ministral|magistral|codestral|devstral|pixtral|mixtral|open-mistral)"),
     "mistral"),
    (re.compile(r"^(?:command|embed-)"), "cohere"),
    (re.compile(r"^deepseek"), "deepseek"),
    (re.compile(r"^grok"), "xai"),
    (re.compile(r"^(?:nova|titan)"), "aws.bedrock"),
    (re.compile(r"^(?:kimi|moonshot)"), "moonshot"),
)


def _vendor_of(normalized: str) -> str | None:
    for rx, vendor in _VENDOR_OF:
        if rx.match(normalized):
            return vendor
    return None


# --------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One priced model family. Prices are USD per 1M tokens with defaults already applied."""

    id: str
    provider: str
    names: tuple[str, ...]
    pattern: re.Pattern | None
    kind: str
    input: float
    output: float
    cache_read: float
    cache_write: float
    reasoning: float
    long_context_threshold: int | None
    long_input: float | None
    long_output: float | None
    long_cache_read: float | None
    long_cache_write: float | None
    checked: str
    source: str


_PRICE_KEYS = ("input", "output", "cache_read", "cache_write", "reasoning",
               "long_input", "long_output", "long_cache_read", "long_cache_write")
_ALLOWED_KEYS = frozenset(("id", "provider", "names", "pattern", "kind", "long_context_threshold",
                           "checked", "source", *_PRICE_KEYS))
_KINDS = ("chat", "embedding")


def record_of(row: PriceRow) -> PriceRecord:
    """The row as the store keeps it (store.pricing): what priced a span, for the read side."""
    models = ", ".join(row.names) + (f" /{row.pattern.pattern}/" if row.pattern is not None else "")
    return PriceRecord(
        id=row.id, provider=row.provider, kind=row.kind, models=models.strip(), input=row.input,
        cache_read=row.cache_read, cache_write=row.cache_write, output=row.output, reasoning=row.reasoning,
        long_context_threshold=row.long_context_threshold, long_input=row.long_input,
        long_cache_read=row.long_cache_read, long_cache_write=row.long_cache_write, long_output=row.long_output,
        checked=row.checked, source=row.source,
    )


def _row_units(row: PriceRow) -> tuple[tuple[int, int, int, int, int], tuple[int, int, int, int, int]]:
    """Per-token prices (1e-15 USD) of the base tier and the long-context tier (store.pricing.TIER_*)."""
    record = record_of(row)
    return record.units(pricing.TIER_BASE), record.units(pricing.TIER_LONG_CONTEXT)


_UNIT_CACHE: dict[int, tuple[PriceRow, Any]] = {}


def _fail(path: str, index: int | None, rid: Any, reason: str) -> PriceFileError:
    if index is None:
        return PriceFileError(f"{path}: {reason}")
    where = f"price[{index}]" + (f" (id={rid!r})" if isinstance(rid, str) and rid else "")
    return PriceFileError(f"{path}: {where}: {reason}")


def _number(value: Any, key: str, fail: Callable[[str], PriceFileError]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(f"{key} must be a number (USD per 1M tokens), got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise fail(f"{key} must be finite, got {value!r}")
    if value < 0:
        raise fail(f"{key} must not be negative, got {value!r}")
    return value


def _parse_rows(data: Any, path: str, default_source: str) -> list[PriceRow]:
    if not isinstance(data, dict):
        raise _fail(path, None, None, "top level must be a table")
    unknown = sorted(set(data) - {"price"})
    if unknown:
        raise _fail(path, None, None, f"unknown top-level key(s) {unknown}; expected [[price]] tables only")
    items = data.get("price", [])
    if not isinstance(items, list):
        raise _fail(path, None, None, "'price' must be an array of tables ([[price]])")
    rows: list[PriceRow] = []
    seen_ids: set[str] = set()
    for index, item in enumerate(items):
        rid = item.get("id") if isinstance(item, dict) else None

        def fail(reason: str, _i: int = index, _r: Any = rid) -> PriceFileError:
            return _fail(path, _i, _r, reason)

        if not isinstance(item, dict):
            raise fail("each [[price]] entry must be a table")
        unknown = sorted(set(item) - _ALLOWED_KEYS)
        if unknown:
            raise fail(f"unknown key(s) {unknown}; allowed: {sorted(_ALLOWED_KEYS)}")
        if not isinstance(rid, str) or not rid.strip():
            raise fail("missing or empty 'id'")
        rid = rid.strip()
        if rid in seen_ids:
            raise fail("duplicate id in this file")
        seen_ids.add(rid)
        provider = canonical_provider(item.get("provider")) if isinstance(item.get("provider"), str) else None
        if not provider:
            raise fail("missing or empty 'provider'")
        names_raw = item.get("names", [])
        if not isinstance(names_raw, list) or not all(isinstance(n, str) and n.strip() for n in names_raw):
            raise fail("'names' must be a list of non-empty strings")
        names = tuple(dict.fromkeys(n.strip().lower() for n in names_raw))
        pattern = None
        if "pattern" in item:
            if not isinstance(item["pattern"], str) or not item["pattern"]:
                raise fail("'pattern' must be a non-empty string")
            try:
                pattern = re.compile(item["pattern"], re.IGNORECASE)
            except re.error as exc:
                raise fail(f"bad regex in 'pattern' {item['pattern']!r}: {exc}") from None
        if not names and pattern is None:
            raise fail("needs 'names' (a non-empty list) or 'pattern'")
        kind = item.get("kind", "chat")
        if kind not in _KINDS:
            raise fail(f"'kind' must be one of {list(_KINDS)}, got {kind!r}")
        for key in ("input", "output"):
            if key not in item:
                raise fail(f"missing '{key}'")
        prices = {k: _number(item[k], k, fail) for k in _PRICE_KEYS if k in item}
        threshold = item.get("long_context_threshold")
        long_keys = [k for k in prices if k.startswith("long_")]
        if threshold is None:
            if long_keys:
                raise fail(f"{long_keys} given without 'long_context_threshold'")
        else:
            if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold <= 0:
                raise fail(f"'long_context_threshold' must be a positive integer, got {threshold!r}")
            if "long_input" not in prices:
                raise fail("'long_context_threshold' needs at least 'long_input'")
        for key in ("checked", "source"):
            if key in item and not isinstance(item[key], str):
                raise fail(f"'{key}' must be a string")
        inp, out = prices["input"], prices["output"]
        cache_read = prices.get("cache_read", inp)
        cache_write = prices.get("cache_write", inp)
        long_input = long_output = long_cache_read = long_cache_write = None
        if threshold is not None:
            long_input = prices["long_input"]
            long_output = prices.get("long_output", out)
            # A long_* price defaults like its base price: to the explicit base cache price when one
            # is given, else to long_input (a cache token with no own price is an input token).
            long_cache_read = prices.get("long_cache_read", cache_read if "cache_read" in prices else long_input)
            long_cache_write = prices.get("long_cache_write",
                                          cache_write if "cache_write" in prices else long_input)
        rows.append(PriceRow(
            id=rid, provider=provider, names=names, pattern=pattern, kind=kind,
            input=inp, output=out, cache_read=cache_read, cache_write=cache_write,
            reasoning=prices.get("reasoning", out),
            long_context_threshold=threshold, long_input=long_input, long_output=long_output,
            long_cache_read=long_cache_read, long_cache_write=long_cache_write,
            checked=item.get("checked", ""), source=item.get("source", default_source),
        ))
    return rows


def _load_text(text: str, path: str, default_source: str) -> list[PriceRow]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(path, None, None, f"TOML syntax error: {exc}") from None
    return _parse_rows(data, path, default_source)


# --------------------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------------------


class _Tier:
    """Rows of one precedence level (user or shipped), indexed by name."""

    __slots__ = ("rows", "by_name", "patterns")

    def __init__(self, rows: Iterable[PriceRow]) -> None:
        self.rows = tuple(rows)
        self.by_name: dict[str, list[PriceRow]] = {}
        self.patterns: list[PriceRow] = []
        for row in self.rows:
            for name in row.names:
                self.by_name.setdefault(name, []).append(row)
            if row.pattern is not None:
                self.patterns.append(row)

    def match(self, candidates: tuple[str, ...], subjects: tuple[str, ...], provider: str | None,
              prefer: str | None) -> PriceRow | None:
        for cand in candidates:
            rows = self.by_name.get(cand)
            if rows:
                found = self._pick(rows, provider, prefer)
                if found is not None:
                    return found
        hits = [r for r in self.patterns if r.pattern is not None and any(r.pattern.fullmatch(s) for s in subjects)]
        return self._pick(hits, provider, prefer) if hits else None

    @staticmethod
    def _pick(rows: list[PriceRow], provider: str | None, prefer: str | None) -> PriceRow | None:
        if provider is not None:
            for row in rows:
                if row.provider == provider:
                    return row
            return None
        if prefer is not None:
            for row in rows:
                if row.provider == prefer:
                    return row
        return rows[0]


_MISS = object()


class PriceTable:
    """The effective price table: user rows (highest precedence) then shipped rows."""

    LOOKUP_CACHE_SIZE = 8192

    def __init__(self, rows: Iterable[PriceRow], user_rows: Iterable[PriceRow] = ()) -> None:
        user = list(user_rows)
        user_ids = {r.id for r in user}
        shipped = [r for r in rows if r.id not in user_ids]
        self._user = _Tier(user)
        self._shipped = _Tier(shipped)
        self.rows: tuple[PriceRow, ...] = self._user.rows + self._shipped.rows
        self.digest: str = _digest(self.rows)
        self._cache: OrderedDict[tuple[Any, Any], Any] = OrderedDict()

    @classmethod
    def load(cls, user_file: str | os.PathLike | None = None) -> PriceTable:
        """The shipped table, overlaid with ``user_file`` when given.

        Raises :class:`PriceFileError` for an unreadable or invalid file."""
        shipped_res = resources.files(__package__ or "receiver").joinpath("prices.toml")
        shipped = _load_text(shipped_res.read_text(encoding="utf-8"), "receiver/prices.toml",
                             "receiver/prices.toml")
        user: list[PriceRow] = []
        if user_file is not None:
            path = os.fspath(user_file)
            try:
                with open(path, "rb") as fh:
                    raw = fh.read()
            except OSError as exc:
                raise PriceFileError(f"{path}: cannot read price file: {exc.strerror or exc}") from None
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PriceFileError(f"{path}: not UTF-8: {exc}") from None
            user = _load_text(text, path, f"user file {path}")
        return cls(shipped, user)

    def __len__(self) -> int:
        return len(self.rows)

    def lookup(self, provider: str | None, model: str | None) -> PriceRow | None:
        """The row pricing ``model`` as served by ``provider`` (raw attribute values), or ``None``
        when no row matches (the caller marks the call unpriced, never $0)."""
        key = (provider, model)
        cache = self._cache
        hit = cache.get(key, _MISS)
        if hit is not _MISS:
            try:
                cache.move_to_end(key)
            except KeyError:                     # evicted concurrently; the value is still right
                pass
            return hit
        row = self._lookup_uncached(provider, model)
        cache[key] = row
        if len(cache) > self.LOOKUP_CACHE_SIZE:
            try:
                cache.popitem(last=False)
            except KeyError:
                pass
        return row

    def _lookup_uncached(self, provider: str | None, model: str | None) -> PriceRow | None:
        if not model or not str(model).strip():
            return None
        normalized, candidates, bedrock = _parse_model(str(model))
        subjects = (normalized, candidates[0]) if candidates[0] != normalized else (normalized,)
        canon = canonical_provider(provider)
        if canon is None and bedrock:
            canon = "aws.bedrock"
        if canon is not None:
            for tier in (self._user, self._shipped):
                row = tier.match(candidates, subjects, canon, None)
                if row is not None:
                    return row
        prefer = "aws.bedrock" if bedrock else _vendor_of(normalized)
        for tier in (self._user, self._shipped):
            row = tier.match(candidates, subjects, None, prefer)
            if row is not None:
                return row
        return None

    @staticmethod
    def cost_nusd(row: PriceRow, input_tokens: int, output_tokens: int, cache_read: int,
                  cache_write: int, reasoning: int) -> int:
        """Cost of one call in integer nano-USD.

        ``input_tokens`` includes ``cache_read`` and ``cache_write``; ``output_tokens`` includes
        ``reasoning``. When ``input_tokens`` exceeds the row's long-context threshold the whole
        call uses the long_* prices (reasoning tokens then cost ``long_output``)."""
        entry = _UNIT_CACHE.get(id(row))
        if entry is None or entry[0] is not row:
            entry = (row, _row_units(row))
            if len(_UNIT_CACHE) > 65536:
                _UNIT_CACHE.clear()
            _UNIT_CACHE[id(row)] = entry
        tier = pricing.tier_of(row.long_context_threshold, input_tokens)
        return pricing.cost_nusd(entry[1][tier], input_tokens, output_tokens, cache_read, cache_write, reasoning)

    @staticmethod
    def tier(row: PriceRow, input_tokens: int | None) -> int:
        """Which of the row's prices apply to a call (store.pricing.TIER_*)."""
        return pricing.tier_of(row.long_context_threshold, input_tokens)

    def records(self) -> list[PriceRecord]:
        """The table as the store records it (store.pricing.record_price_rows)."""
        return [record_of(row) for row in self.rows]

    def price_call(self, provider: str | None, response_model: str | None, request_model: str | None,
                   tokens: tuple) -> tuple[str | None, int | None, int | None]:
        """(price_id, cost_nusd, tier) of a stored call, as SpanWriter.reprice asks for it: the row
        of its response model, else of its request model; no usage at all leaves the cost unknown."""
        row = self.lookup(provider, response_model) if response_model else None
        if row is None and request_model:
            row = self.lookup(provider, request_model)
        if row is None:
            return None, None, None
        inp, out, cache_read, cache_write, reasoning = tokens
        if all(t is None for t in tokens):
            return row.id, None, self.tier(row, None)
        return (row.id, self.cost_nusd(row, inp or 0, out or 0, cache_read or 0, cache_write or 0, reasoning or 0),
                self.tier(row, inp))


def _digest(rows: tuple[PriceRow, ...]) -> str:
    payload = [
        {
            "id": r.id, "provider": r.provider, "names": list(r.names),
            "pattern": r.pattern.pattern if r.pattern is not None else None, "kind": r.kind,
            "input": r.input, "output": r.output, "cache_read": r.cache_read,
            "cache_write": r.cache_write, "reasoning": r.reasoning,
            "long_context_threshold": r.long_context_threshold, "long_input": r.long_input,
            "long_output": r.long_output, "long_cache_read": r.long_cache_read,
            "long_cache_write": r.long_cache_write,
        }
        for r in rows
    ]
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]
