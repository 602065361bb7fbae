"""Price rows as the store keeps them, and the one cost formula (design §2 rule 4).

The receiver matches a call's model to a price row (receiver/prices.py) and prices it with
`cost_nusd()` here; the writer records the rows it priced with in `price_rows` (at start and on
`llmobs-tui reprice`) and, per span, the row id and the tier that applied (`price_tier`: base or
long-context prices). The span detail reads those back and shows the terms of the same formula, so
what it shows adds up to the stored cost, and a row changed since the span was priced is noticed.

Arithmetic is integer: a price in USD per 1M tokens becomes an exact integer of 1e-15 USD per token
(9 decimals kept), a term is tokens × that, and the sum is rounded once, half-to-even, to nano-USD.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

SCALE = 10**9  # price (USD / 1M tokens) × 1e9 == 1e-15 USD per token
FEMTO_PER_NANO = 10**6  # 1e-15 USD → nano-USD
FEMTO_PER_USD = 10**15

TIER_BASE = 0
TIER_LONG_CONTEXT = 1
TIER_NAMES = {TIER_BASE: "base", TIER_LONG_CONTEXT: "long context"}

# The five token buckets of the formula, in the order of every 5-tuple here.
TERMS = ("uncached input", "cache read", "cache write", "output", "reasoning")


def units(price: float) -> int:
    """Exact integer 1e-15 USD per token for a price in USD per 1M tokens (9 decimals kept).

    Goes through the shortest decimal repr of the float, so 0.075 is exactly 75_000_000."""
    return int((Decimal(repr(float(price))) * SCALE).to_integral_value(rounding=ROUND_HALF_EVEN))


def tier_of(long_context_threshold: int | None, input_tokens: int | None) -> int:
    """Long-context prices apply to the whole call when its input exceeds the row's threshold."""
    if long_context_threshold is not None and max(0, int(input_tokens or 0)) > long_context_threshold:
        return TIER_LONG_CONTEXT
    return TIER_BASE


def token_split(input_tokens: int | None, output_tokens: int | None, cache_read: int | None,
                cache_write: int | None, reasoning: int | None) -> tuple[int, int, int, int, int]:
    """(uncached input, cache read, cache write, output without reasoning, reasoning): input
    includes the cache tokens and output includes reasoning (design §2 rule 2)."""
    inp = max(0, int(input_tokens or 0))
    out = max(0, int(output_tokens or 0))
    cr = max(0, int(cache_read or 0))
    cw = max(0, int(cache_write or 0))
    rs = max(0, int(reasoning or 0))
    return max(0, inp - cr - cw), cr, cw, max(0, out - rs), rs


def cost_terms(price_units: tuple[int, int, int, int, int],
               split: tuple[int, int, int, int, int]) -> tuple[int, int, int, int, int]:
    """The formula's terms in 1e-15 USD: tokens of each bucket × its price (units())."""
    return (split[0] * price_units[0], split[1] * price_units[1], split[2] * price_units[2],
            split[3] * price_units[3], split[4] * price_units[4])


def round_nusd(femto_usd: int) -> int:
    """1e-15 USD to nano-USD, rounded once, half to even."""
    q, r = divmod(femto_usd, FEMTO_PER_NANO)
    if r * 2 > FEMTO_PER_NANO or (r * 2 == FEMTO_PER_NANO and q & 1):
        q += 1
    return q


def cost_nusd(price_units: tuple[int, int, int, int, int], input_tokens: int | None, output_tokens: int | None,
              cache_read: int | None, cache_write: int | None, reasoning: int | None) -> int:
    """Cost of one call in integer nano-USD at the given tier's prices (units())."""
    return round_nusd(sum(cost_terms(price_units, token_split(input_tokens, output_tokens, cache_read,
                                                              cache_write, reasoning))))


@dataclass(frozen=True, slots=True)
class PriceRecord:
    """One price row with its defaults applied, as stored in `price_rows`. USD per 1M tokens."""

    id: str
    provider: str
    kind: str
    models: str  # the names (and pattern) it matches, for display
    input: float
    cache_read: float
    cache_write: float
    output: float
    reasoning: float
    long_context_threshold: int | None = None
    long_input: float | None = None
    long_cache_read: float | None = None
    long_cache_write: float | None = None
    long_output: float | None = None
    checked: str = ""
    source: str = ""
    in_table: bool = True  # False: no longer in the price table last recorded

    def prices(self, tier: int) -> tuple[float, float, float, float, float]:
        """Per-1M prices of the five buckets at a tier. Above the threshold reasoning tokens cost
        long_output; a long_* price that is not set is its base price."""
        if tier == TIER_LONG_CONTEXT and self.long_context_threshold is not None:
            long_output = self.long_output if self.long_output is not None else self.output
            return (self.long_input if self.long_input is not None else self.input,
                    self.long_cache_read if self.long_cache_read is not None else self.cache_read,
                    self.long_cache_write if self.long_cache_write is not None else self.cache_write,
                    long_output, long_output)
        return self.input, self.cache_read, self.cache_write, self.output, self.reasoning

    def units(self, tier: int) -> tuple[int, int, int, int, int]:
        a, b, c, d, e = self.prices(tier)
        return units(a), units(b), units(c), units(d), units(e)


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """How a span's stored cost comes out of its price row: what the Cost tab shows."""

    record: PriceRecord
    tier: int
    tier_recorded: bool  # False: a span priced before tiers were stored; derived from the row
    prices: tuple[float, float, float, float, float]
    tokens: tuple[int, int, int, int, int]
    terms_femto_usd: tuple[int, int, int, int, int]
    cost_nusd: int  # the terms' sum, rounded once
    stored_nusd: int | None
    current_tier: int  # the tier the row as stored now gives the call

    @property
    def matches_stored(self) -> bool:
        """The stored row still prices the call as it was priced (same tier, same cost); False
        after a price table change that `llmobs-tui reprice` has not applied yet."""
        return self.tier == self.current_tier and (self.stored_nusd is None or self.stored_nusd == self.cost_nusd)


def breakdown(record: PriceRecord, tier: int | None, input_tokens: int | None, output_tokens: int | None,
              cache_read: int | None, cache_write: int | None, reasoning: int | None,
              stored_nusd: int | None) -> CostBreakdown:
    """The terms of `cost_nusd()` for a stored span, at the tier that priced it (or, for a span
    priced before tiers were stored, the tier its row gives it)."""
    current = tier_of(record.long_context_threshold, input_tokens)
    recorded = tier is not None
    if tier is None:
        tier = current
    split = token_split(input_tokens, output_tokens, cache_read, cache_write, reasoning)
    terms = cost_terms(record.units(tier), split)
    return CostBreakdown(record, tier, recorded, record.prices(tier), split, terms, round_nusd(sum(terms)),
                         stored_nusd, current)


# --- the price_rows table ------------------------------------------------------------------------

PRICE_ROW_COLUMNS = (
    "id", "provider", "kind", "models", "input", "cache_read", "cache_write", "output", "reasoning",
    "long_context_threshold", "long_input", "long_cache_read", "long_cache_write", "long_output",
    "checked", "source", "in_table",
)
_UPSERT = (f"INSERT OR REPLACE INTO price_rows ({', '.join(PRICE_ROW_COLUMNS)}, recorded_ns) "
           f"VALUES ({', '.join('?' * (len(PRICE_ROW_COLUMNS) + 1))})")


def record_from_row(row: tuple) -> PriceRecord:
    """A PriceRecord from the PRICE_ROW_COLUMNS of a stored row."""
    values = list(row)
    values[-1] = bool(values[-1])
    return PriceRecord(*values)


def record_price_rows(db: sqlite3.Connection, records: list[PriceRecord], now_ns: int) -> None:
    """Store the price table in effect: its rows replace stored rows of the same id; rows no longer
    in it stay (spans priced with them keep pointing at them), marked `in_table = 0`. Called by the
    writer when it starts and by `llmobs-tui reprice`; one transaction. A table that differs from the
    one recorded before becomes a `prices` change marker (store.changes.record_prices)."""
    # Imported here: store.changes imports store.dashboards, which imports this module.
    from store.changes import price_table_digest, record_prices

    rows = [(r.id, r.provider, r.kind, r.models, r.input, r.cache_read, r.cache_write, r.output, r.reasoning,
             r.long_context_threshold, r.long_input, r.long_cache_read, r.long_cache_write, r.long_output, r.checked,
             r.source) for r in records]
    own = not db.in_transaction
    if own:
        db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("UPDATE price_rows SET in_table = 0")
        db.executemany(_UPSERT, [(*row, 1, now_ns) for row in rows])
        # What was priced, not when it was checked: a re-dated row with the same prices is no change.
        record_prices(db, price_table_digest([row[:-2] for row in rows]), now_ns)
        if own:
            db.execute("COMMIT")
    except BaseException:
        if own:
            db.execute("ROLLBACK")
        raise
