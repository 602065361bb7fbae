"""Pure formatters for the TUI: durations, tokens, money, times, and untrusted text made safe.

Untrusted text (span names, attribute values, prompts, and every message that quotes them: alert
titles, filter errors) is data, never markup: it is wrapped in `rich.text.Text` (which never parses
`[bold]`), or handed to Textual with markup off, and control, format, bidi and separator characters
are replaced with visible stand-ins so that a value holding `\\x1b[2J` cannot clear or restyle the
screen and a zero-width or right-to-left character cannot move the columns after it.
"""

from __future__ import annotations

import math
import time
import unicodedata

from rich.text import Text

NS = 1_000_000_000

# A span's kind as one glyph: the waterfall's rows, the trace header and `llmobs-tui show`.
KIND_MARK = {"llm": "●", "embedding": "◌", "tool": "⚒", "retriever": "⌕", "agent": "◆", "chain": "▪",
             "guardrail": "⛨", "span": "·"}

# Shown instead of the character itself. C0 controls and DEL become the Unicode control pictures
# (ESC as ␛, so `\x1b[2J` reads ␛[2J and no escape sequence reaches the terminal); C1 controls
# (the 8-bit CSI, OSC, NEL), format characters (zero-width spaces and joiners, bidi embeddings,
# overrides and isolates, the BOM, soft hyphens), line and paragraph separators and lone surrogates
# become a ⁅U+XXXX⁆ marker: each would otherwise reorder, hide or move the text after it, and a
# column would no longer line up with what its width was measured as.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def _visible(ch: str) -> str:
    code = ord(ch)
    if code < 0x20:
        return chr(0x2400 + code)  # ␀ … ␟
    if code == 0x7F:
        return "␡"
    return f"⁅U+{code:04X}⁆"


def _hidden(ch: str) -> bool:
    return not ch.isprintable() and unicodedata.category(ch) in _HIDDEN_CATEGORIES


def clean(value: object, *, newlines: bool = False, limit: int | None = 4000) -> str:
    """A string that is safe to draw: every control, format, bidi and separator character shown
    visibly instead of acted on (newlines kept if asked, tabs as spaces), bounded length.

    Only the characters themselves are made safe: markup such as `[bold]` stays as it is, so the
    result goes into `Text(...)` (see `safe`), never into anything that parses markup."""
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    if text.isprintable():  # the common case, in C: no control, format or separator character at all
        return text
    out = []
    for ch in text:
        if ch.isprintable() or (ch == "\n" and newlines):
            out.append(ch)
        elif ch == "\t":
            out.append("    " if newlines else " ")
        elif unicodedata.category(ch) in _HIDDEN_CATEGORIES:
            out.append(_visible(ch))
        else:
            out.append(ch)  # spaces other than ' ' (no-break, ideographic), private use, unassigned
    return "".join(out)


def clean_in_place(text: str) -> str:
    """`clean` for text being edited: each hidden character becomes exactly one visible one (a
    control picture, else �), so positions in the string stay positions on screen."""
    if text.isprintable():
        return text
    return "".join((_visible(ch) if ord(ch) < 0x20 or ord(ch) == 0x7F else "�") if _hidden(ch) else ch
                   for ch in text)


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
    return money(round(value * 1e9))


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


CLOCK_TODAY_S = 20 * 3600  # how long `clock` shows a time without its date


def clock(ns: int, now_s: float | None = None) -> str:
    """HH:MM:SS today, else MM-DD HH:MM."""
    seconds_ = ns / NS
    now_s = time.time() if now_s is None else now_s
    if now_s - seconds_ < CLOCK_TODAY_S:
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


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 call`, `2 calls`, `1,204 calls` (with `many` for irregular plurals)."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def article(word: str) -> str:
    """`a tool span`, `an agent span`: the indefinite article for a word shown after it."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def usd_figure(value: float, *, digits: int = 2) -> str:
    """A dollar amount for a report: four decimals, and more below that, so that a sub-cent cost
    keeps `digits` significant digits (0.00042, 0.0000012), never 0.0000."""
    decimals = 4
    if value:
        decimals = max(4, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


def window_label(seconds_: float) -> str:
    # A day is shown as 24h (as `t` and the README name it); two days and more in days.
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds_ >= max(size, 2 * 86400 if unit == "d" else 0) and seconds_ % size == 0:
            return f"{int(seconds_ // size)}{unit}"
    return f"{int(seconds_)}s"
