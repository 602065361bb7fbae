"""Per-call decode figures (design §2 rule 5), one definition for the writer's rollups (the TPOT
histogram, decode tokens and time) and the span detail."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DecodeFigures:
    decode_ns: int  # total − TTFT
    tpot_ns: float | None  # (total − TTFT) / (output − 1); None below two output tokens
    tokens_per_s: float | None  # output / (total − TTFT); None without output or decode time


def decode_figures(duration_ns: int | None, ttft_ns: int | None, output_tokens: int | None) -> DecodeFigures | None:
    """None when the call has no TTFT or no duration (nothing to split)."""
    if duration_ns is None or ttft_ns is None:
        return None
    decode_ns = duration_ns - ttft_ns
    output = output_tokens or 0
    tpot = decode_ns / (output - 1) if output > 1 else None
    rate = output / (decode_ns / 1e9) if output and decode_ns > 0 else None
    return DecodeFigures(decode_ns, tpot, rate)
