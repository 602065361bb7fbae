"""Compare with the past: which way is bad for each signal, and deltas as ▲/▼ percentages.

A delta is coloured by what it means, not by its sign: latency up is bad (red), cache hit rate up
is good (green), traffic up is neither (dim). The compare modes cycle off → the previous period
(the same window just before this one) → the same window a week ago.
"""

from __future__ import annotations

from rich.text import Text

COMPARE_MODES = ("off", "previous", "week")
COMPARE_WORDS = {"off": "", "previous": "vs previous period", "week": "vs same time last week"}

# +1: a rise is bad; -1: a fall is bad; 0: neither (volume).
BAD_WHEN = {
    "latency": 1, "ttft": 1, "tpot": 1, "errors": 1, "error_rate": 1, "rate_limit": 1, "cost": 1,
    "cost_per_call": 1, "unpriced": 1, "in_flight": 1,
    "decode": -1, "cache_hit": -1,
    "calls": 0, "tokens": 0,
}
# Changes smaller than this are noise: shown dim, without an arrow's colour.
FLAT_PCT = 2.0


def next_mode(mode: str) -> str:
    return COMPARE_MODES[(COMPARE_MODES.index(mode) + 1) % len(COMPARE_MODES)] if mode in COMPARE_MODES else "off"


def change_pct(now: float | None, past: float | None) -> float | None:
    """Percent change from `past` to `now`; None when either is missing or the past is zero."""
    if now is None or past is None or past == 0:
        return None
    return (now - past) / abs(past) * 100


def delta_style(signal: str, pct: float) -> str:
    bad = BAD_WHEN.get(signal, 0)
    if abs(pct) < FLAT_PCT or bad == 0:
        return "dim"
    return "red" if (pct > 0) == (bad > 0) else "green"


def delta_text(signal: str, now: float | None, past: float | None) -> Text:
    """`▲12%` / `▼3.4%` coloured by whether the change is bad for `signal`; `new` when the past had
    none of it, `–` when there is nothing to compare."""
    if past in (None, 0) and now:
        return Text("new", style="red" if BAD_WHEN.get(signal, 0) > 0 else "dim")
    pct = change_pct(now, past)
    if pct is None:
        return Text("–", style="dim")
    arrow = "▲" if pct > 0 else ("▼" if pct < 0 else "=")
    magnitude = abs(pct)
    number = f"{magnitude:.0f}%" if magnitude >= 10 else f"{magnitude:.1f}%"
    if pct >= 1000:  # a rise past 10×: the ratio reads better than the percentage
        number = f"{1 + pct / 100:.0f}×"
    return Text(f"{arrow}{number}", style=delta_style(signal, pct))
