"""Human-friendly flag and config values: durations like `7d`, sizes like `2GB`. Plain functions with
no dependencies, so the screens, the CLI and the config file parse and print them alike."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|day|days|w|wk)?\s*$", re.I)
_DURATION_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "day": 86400,
                   "days": 86400, "w": 604800, "wk": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.I)
_SIZE_UNITS = {"b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "ki": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
               "mi": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "gi": 2**30, "t": 10**12, "tb": 10**12,
               "tib": 2**40, "ti": 2**40}


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `24h`, `7d`, `2w` → seconds. A bare number is an error: `--retention 90` once
    meant 90 seconds where 90 days was meant, and retention deletes data."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration: use a number with s, m, h, d or w (e.g. 7d, 24h)")
    if match.group(2) is None:
        raise ValueError(f"{text.strip()}: give a unit, e.g. {text.strip()}d or {text.strip()}m")
    value = float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
    if value <= 0:
        raise ValueError(f"{text!r}: a duration must be positive")
    return value


def parse_size(text: str) -> int:
    """`2GB`, `500MB`, `1.5GiB` → bytes."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size: use a number with KB, MB, GB or TB (e.g. 2GB)")
    value = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])
    if value < 1 << 20:
        raise ValueError(f"{text!r}: the size limit must be at least 1 MB")
    return value


def format_duration(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
