"""Error budgets and burn rates (Google SRE workbook, "Alerting on SLOs", multiwindow multi-burn-rate).

An SLO with objective 99.5 % allows 0.5 % bad events: that is its error budget. The burn rate over a
window is the bad share in that window divided by the allowed share: 1× spends the budget exactly
over the SLO window, 14.4× spends 2 % of a 30-day budget in one hour.
"""

from __future__ import annotations

from dataclasses import dataclass

# (severity, burn factor, long window, short window): both windows must burn at the factor or more.
# The short window makes the alert stop soon after the burn stops.
TIERS = (
    ("page", 14.4, 3600, 300),
    ("page", 6.0, 6 * 3600, 1800),
    ("ticket", 1.0, 3 * 86400, 6 * 3600),
)
WINDOWS = sorted({w for _, _, long, short in TIERS for w in (long, short)})
MIN_EVENTS = 10  # fewer events in a window: no verdict, rather than 1 bad call in 2 paging someone


def bad_share(bad: float, total: float) -> float | None:
    return bad / total if total > 0 else None


def burn_rate(bad: float, total: float, objective: float) -> float | None:
    """How many times faster than allowed the error budget is being spent (None without events)."""
    share = bad_share(bad, total)
    if share is None:
        return None
    return share / (1.0 - objective)


def budget_left(bad: float, total: float, objective: float) -> float | None:
    """The share of the window's error budget not yet spent (negative once overspent)."""
    rate = burn_rate(bad, total, objective)
    return None if rate is None else 1.0 - rate


@dataclass(frozen=True, slots=True)
class TierVerdict:
    severity: str
    factor: float
    long_s: int
    short_s: int
    long_burn: float
    short_burn: float


def firing_tier(events: dict[int, tuple[float, float]], objective: float) -> TierVerdict | None:
    """The most severe tier whose long and short windows both burn at its factor.

    `events` maps a window (seconds) to (bad, total) in that window."""
    for severity, factor, long_s, short_s in TIERS:
        long_bad, long_total = events.get(long_s, (0, 0))
        short_bad, short_total = events.get(short_s, (0, 0))
        if long_total < MIN_EVENTS or short_total < 1:
            continue
        long_burn = burn_rate(long_bad, long_total, objective)
        short_burn = burn_rate(short_bad, short_total, objective)
        if long_burn is not None and short_burn is not None and long_burn >= factor and short_burn >= factor:
            return TierVerdict(severity, factor, long_s, short_s, long_burn, short_burn)
    return None
