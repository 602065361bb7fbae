"""The configuration file (`llmobs.toml` in the working directory, or `--config FILE`) and the
parsing of human-friendly flag values (durations like `7d`, sizes like `2GB`).

A bad file is rejected at start with the file, the line when TOML knows it, and the reason.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from receiver import semconv

DEFAULT_CONFIG_NAME = "llmobs.toml"
_DIMENSIONS = tuple(semconv.DEFAULT_DIMENSION_KEYS)
KNOWN_SECTIONS = ("dimensions",)


class ConfigError(ValueError):
    pass


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|day|days|w|wk)?\s*$", re.I)
_DURATION_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "day": 86400,
                   "days": 86400, "w": 604800, "wk": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.I)
_SIZE_UNITS = {"b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "ki": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
               "mi": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "gi": 2**30, "t": 10**12, "tb": 10**12,
               "tib": 2**40, "ti": 2**40}


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `24h`, `7d`, `2w` → seconds. A bare number is seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration: use a number with s, m, h, d or w (e.g. 7d, 24h)")
    value = float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "s").lower()]
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


@dataclass(slots=True)
class Config:
    path: Path | None = None
    dimension_keys: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(semconv.DEFAULT_DIMENSION_KEYS))
    raw: dict[str, Any] = field(default_factory=dict)


def load_config(path: str | Path | None) -> Config:
    """Load `path`, or `./llmobs.toml` when it exists, or the defaults."""
    explicit = path is not None
    file = Path(path) if path is not None else Path(DEFAULT_CONFIG_NAME)
    if not file.exists():
        if explicit:
            raise ConfigError(f"{file}: no such config file")
        return Config()
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from exc
    config = Config(path=file, raw=data)
    for section in data:
        if section not in KNOWN_SECTIONS:
            raise ConfigError(f"{file}: unknown section [{section}] (known: {', '.join(KNOWN_SECTIONS)})")
    dims = data.get("dimensions", {})
    if not isinstance(dims, dict):
        raise ConfigError(f"{file}: [dimensions] must be a table")
    for name, keys in dims.items():
        if name not in _DIMENSIONS:
            raise ConfigError(f"{file}: [dimensions] {name}: unknown dimension (known: {', '.join(_DIMENSIONS)})")
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise ConfigError(f"{file}: [dimensions] {name} must be a list of attribute keys")
        config.dimension_keys[name] = tuple(keys)
    return config
