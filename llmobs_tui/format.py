"""Pure formatters for the TUI: durations, tokens, money, times, and untrusted text made safe.

Untrusted text (span names, attribute values, prompts) is data, never markup: it is wrapped in
`rich.text.Text` (which never parses `[bold]`), and control characters are replaced with visible
stand-ins so that a value holding `\\x1b[2J` cannot clear or restyle the screen.
"""

from __future__ import annotations

import time
import unicodedata

from rich.text import Text

NS = 1_000_000_000

# C0 controls, DEL and C1 controls become visible; tab and newline are allowed only where asked.
_CONTROL_NAMES = {0x1B: "␛", 0x07: "␇", 0x08: "␈", 0x0D: "␍", 0x00: "␀", 0x7F: "␡"}


def clean(value: object, *, newlines: bool = False, limit: int | None = 4000) -> str:
    """A string that is safe to draw: no control characters, no bidi overrides, bounded length."""
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\n" and newlines:
            out.append(ch)
        elif ch == "\t":
            out.append("    " if newlines else " ")
        elif code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
            out.append(_CONTROL_NAMES.get(code, "�"))
        elif unicodedata.category(ch) == "Cf" and code in (0x202A, 0x202B, 0x202C, 0x202D, 0x202E,
                                                          0x2066, 0x2067, 0x2068, 0x2069):
            # Bidi embeddings/overrides would reorder the rest of the line: show them instead.
            out.append("⁅" + f"U+{code:04X}" + "⁆")
        else:
            out.append(ch)
    return "".join(out)


def safe(value: object, style: str = "", *, newlines: bool = False, limit: int | None = 4000) -> Text:
    """Untrusted text as a Rich Text: literal, never parsed as markup."""
    if value is None:
        return Text("–", style="dim")
    return Text(clean(value, newlines=newlines, limit=limit), style=style)


def duration(ns: int | float | None) -> str:
    if ns is None:
        return "–"
    seconds = ns / NS
    if seconds < 0.001:
        return f"{ns / 1000:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def seconds(value: float | None) -> str:
    return "–" if value is None else duration(value * NS)


def tokens(n: int | float | None) -> str:
    if n is None:
        return "–"
    n = float(n)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def money(nusd: int | None, *, unpriced: bool = False) -> str:
    if nusd is None:
        return "unpriced" if unpriced else "–"
    usd = nusd / 1e9
    if usd == 0:
        return "$0"
    if usd < 0.0001:
        return f"${usd:.6f}"
    if usd < 0.01:
        return f"${usd:.4f}"
    if usd < 100:
        return f"${usd:.2f}"
    return f"${usd:,.0f}"


def usd(value: float) -> str:
    return money(int(round(value * 1e9)))


def rate(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:,.0f}/s"
    if value >= 1:
        return f"{value:.1f}/s"
    return f"{value:.2f}/s"


def percent(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 100:.1f}%" if value < 0.995 or value == 1 else f"{value * 100:.2f}%"


def clock(ns: int, now_s: float | None = None) -> str:
    """HH:MM:SS today, else MM-DD HH:MM."""
    seconds_ = ns / NS
    now_s = time.time() if now_s is None else now_s
    if now_s - seconds_ < 20 * 3600:
        return time.strftime("%H:%M:%S", time.localtime(seconds_))
    return time.strftime("%m-%d %H:%M", time.localtime(seconds_))


def ago(ns: int, now_s: float) -> str:
    delta = now_s - ns / NS
    if delta < 60:
        return f"{max(0, int(delta))}s ago"
    if delta < 3600:
        return f"{int(delta // 60)}m ago"
    if delta < 86400:
        return f"{int(delta // 3600)}h ago"
    return f"{int(delta // 86400)}d ago"


def bytes_(n: int | None) -> str:
    if n is None:
        return "–"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def window_label(seconds_: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds_ >= size and seconds_ % size == 0:
            return f"{int(seconds_ // size)}{unit}"
    return f"{int(seconds_)}s"
