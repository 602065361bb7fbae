"""The configuration file (`llmobs.toml` in the working directory, or `--config FILE`) and the
parsing of human-friendly flag values (durations like `7d`, sizes like `2GB`).

A bad file is rejected at start with the file, the line when TOML knows it, and the reason.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# parse_size is re-exported (the CLI's flags); durations and sizes live in llmobs_tui/units.py.
from llmobs_tui.units import format_duration, parse_duration, parse_size  # noqa: F401
from receiver import semconv
from receiver.redact import PatternError, check_pattern
from store import drift
from store.sessions import SessionSettings  # [sessions], read by the TUI (which must not import receiver/)

DEFAULT_CONFIG_NAME = "llmobs.toml"
_DATA = Path(__file__).parent / "data"
EXAMPLE_CONFIG = _DATA / "llmobs.example.toml"  # what `llmobs-tui init` writes
DEMO_CONFIG = _DATA / "demo.toml"  # the demo's rules, matched to the incidents its feed plants
_DIMENSIONS = tuple(semconv.DEFAULT_DIMENSION_KEYS)
KNOWN_SECTIONS = ("dimensions", "slo", "budgets", "alerts", "redaction", "sessions")
SLO_KINDS = ("availability", "validity", "ttft", "latency", "cost_per_call", "quality")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SloSpec:
    """A service-level objective: the share of good events over a window."""

    name: str
    kind: str  # one of SLO_KINDS
    objective: float  # e.g. 0.995
    window_s: float = 30 * 86400
    threshold: float | None = None  # ttft/latency: seconds; cost_per_call: USD; quality: minimum score
    feature: str | None = None
    model: str | None = None
    evaluation: str | None = None  # quality: the gen_ai.evaluation.name to count (default: all)

    @property
    def scope(self) -> str:
        parts = [f"feature={self.feature}" if self.feature else "", f"model={self.model}" if self.model else ""]
        return " ".join(p for p in parts if p) or "all"

    def target(self) -> str:
        """Short: `TTFT<2s ≥95%`."""
        objective = f"≥{self.objective * 100:g}%"
        threshold = self.threshold
        if self.kind in ("availability", "validity"):
            bound = {"availability": "avail", "validity": "valid"}[self.kind]
        else:
            limit = f"{threshold:g}" if threshold is not None else "?"
            bound = {"ttft": f"TTFT<{limit}s", "latency": f"lat<{limit}s", "cost_per_call": f"${limit}/call",
                     "quality": f"score≥{limit}"}[self.kind]
        return f"{bound} {objective}"

    def describe(self) -> str:
        bound = ""
        if self.kind in ("ttft", "latency") and self.threshold is not None:
            bound = f" < {self.threshold:g}s"
        elif self.kind == "cost_per_call" and self.threshold is not None:
            bound = f" < ${self.threshold:g}"
        elif self.kind == "quality" and self.threshold is not None:
            bound = f" ≥ {self.threshold:g}"
        return f"{self.kind}{bound} {self.objective * 100:g}% over {format_duration(self.window_s)}"


@dataclass(slots=True)
class AlertSettings:
    """Budgets and rule thresholds (`[budgets]`, `[alerts]`); every rule has a sensible default."""

    daily_cost_usd: dict[str, float] = field(default_factory=dict)  # feature → USD/day; "*" for the total
    tokens_per_call: dict[str, int] = field(default_factory=dict)  # feature → tokens (in + out) per call
    prompt_regression_factor: float = 1.5
    cache_hit_drop: float = 0.20
    error_spike: dict[str, float] = field(default_factory=lambda: {
        "rate_limit": 0.05, "provider": 0.02, "validation": 0.05, "guardrail": 0.05})
    error_spike_window_s: float = 300
    decode_drop: float = 0.5
    ttft_rise: float = 2.0
    min_calls: int = 20
    clear_after_s: float = 180
    # [alerts.drift]: token-length drift (PSI of the window against the 7 days before it, per feature)
    drift_psi: float = drift.PSI_SHIFTED
    drift_min_calls: int = drift.MIN_CALLS  # in the window and in the baseline
    drift_window_s: float = 3600
    drift_signals: tuple[str, ...] = ("input_tokens", "output_tokens")


@dataclass(slots=True)
class Config:
    path: Path | None = None
    dimension_keys: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(semconv.DEFAULT_DIMENSION_KEYS))
    slos: list[SloSpec] = field(default_factory=list)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    # [redaction]: RE2 patterns redacted besides the built-in ones; attribute keys never stored.
    redact_patterns: tuple[str, ...] = ()
    drop_keys: tuple[str, ...] = ()
    sessions: SessionSettings = field(default_factory=SessionSettings)
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
    text = file.read_text(encoding="utf-8")
    dims = data.get("dimensions", {})
    if not isinstance(dims, dict):
        raise ConfigError(f"{file}: [dimensions] must be a table")
    for name, keys in dims.items():
        if name not in _DIMENSIONS:
            raise ConfigError(f"{file}:{_line(text, 'dimensions', name)}: [dimensions] {name}: unknown dimension "
                              f"(known: {', '.join(_DIMENSIONS)})")
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise ConfigError(f"{file}:{_line(text, 'dimensions', name)}: [dimensions] {name} must be a list of "
                              f"attribute keys")
        config.dimension_keys[name] = tuple(keys)
    slos = data.get("slo", [])
    if not isinstance(slos, list):
        raise ConfigError(f"{file}:{_line(text, 'slo')}: write each SLO as a [[slo]] table")
    names = set()
    for index, entry in enumerate(slos):
        spec = _slo(file, text, index, entry)
        if spec.name in names:
            raise ConfigError(f"{file}:{_line(text, 'slo', 'name', index)}: two SLOs are named {spec.name!r}")
        names.add(spec.name)
        config.slos.append(spec)
    config.alerts = _alert_settings(file, text, data.get("budgets", {}), data.get("alerts", {}))
    config.redact_patterns, config.drop_keys = _redaction(file, text, data.get("redaction", {}))
    config.sessions = _sessions(file, text, data.get("sessions", {}))
    return config


def _sessions(file: Path, text: str, table: Any) -> SessionSettings:
    """`[sessions]`: `context_warning` (a share: 0.8 or "80%") and `context_windows` (a table of
    model-name prefix = tokens)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{file}:{_line(text, 'sessions')}: [sessions] must be a table")
    for key in table:
        if key not in ("context_warning", "context_windows"):
            raise ConfigError(f"{file}:{_line(text, 'sessions', key)}: [sessions] {key}: unknown "
                              f"(known: context_warning, context_windows)")
    settings = SessionSettings()
    if "context_warning" in table:
        try:
            share = _fraction(table["context_warning"], "[sessions] context_warning")
            if not 0 < share <= 1:
                raise ValueError(f"[sessions] context_warning must be above 0 and at most 100%, got {share:.0%}")
        except ValueError as exc:
            raise ConfigError(f"{file}:{_line(text, 'sessions', 'context_warning')}: {exc}") from None
        settings = SessionSettings(context_warning=share)
    windows = table.get("context_windows", {})
    if not isinstance(windows, dict) or not all(
            isinstance(k, str) and k and isinstance(v, int) and not isinstance(v, bool) and v > 0
            for k, v in windows.items()):
        raise ConfigError(f"{file}:{_line(text, 'sessions', 'context_windows')}: [sessions] context_windows must "
                          f"be a table of model-name prefix = tokens, e.g. {{ \"gpt-4o\" = 128000 }}")
    return SessionSettings(context_warning=settings.context_warning, context_windows=dict(windows))


def _redaction(file: Path, text: str, table: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`[redaction]`: `patterns` (RE2, compiled here so a typo fails at start with its line) and
    `drop_keys` (exact keys, or prefixes ending in `*`)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{file}:{_line(text, 'redaction')}: [redaction] must be a table")
    for key in table:
        if key not in ("patterns", "drop_keys"):
            raise ConfigError(f"{file}:{_line(text, 'redaction', key)}: [redaction] {key}: unknown "
                              f"(known: drop_keys, patterns)")
    lists = {}
    for key in ("patterns", "drop_keys"):
        values = table.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise ConfigError(f"{file}:{_line(text, 'redaction', key)}: [redaction] {key} must be a list of "
                              f"non-empty strings")
        lists[key] = tuple(values)
    for pattern in lists["patterns"]:
        try:
            check_pattern(pattern)
        except PatternError as exc:
            line = _value_line(text, "redaction", "patterns", pattern)
            raise ConfigError(f"{file}:{line}: [redaction] patterns: {pattern!r}: {exc}") from None
    for key in lists["drop_keys"]:
        if "*" in key[:-1] or key == "*":
            line = _value_line(text, "redaction", "drop_keys", key)
            raise ConfigError(f"{file}:{line}: [redaction] drop_keys: {key!r}: write an exact key, or a prefix "
                              f"followed by one final * (e.g. \"http.request.header.*\")")
    return lists["patterns"], lists["drop_keys"]


def _value_line(text: str, section: str, key: str, value: str) -> int:
    """The line where `value` is written in the list `key` of [section] (best effort), for errors."""
    start = _line(text, section, key)
    spellings = (value, value.replace("\\", "\\\\"))
    lines = text.splitlines()
    for number in range(start, len(lines) + 1):
        line = lines[number - 1]
        if any(f'"{s}"' in line or f"'{s}'" in line for s in spellings):
            return number
    return start


def _line(text: str, section: str, key: str | None = None, index: int = 0) -> int:
    """The line of `key` in the `index`-th [section] / [[section]] of the file (best effort), for errors."""
    lines = text.splitlines()
    header = re.compile(rf"^\s*\[\[?\s*{re.escape(section)}(\.[^\]]*)?\s*\]\]?")
    seen = -1
    start = None
    for number, line in enumerate(lines, start=1):
        if header.match(line):
            seen += 1
            if seen == index:
                start = number
                if key is None:
                    return number
                continue
        elif start is not None and line.lstrip().startswith("["):
            break
        if start is not None and re.match(rf"^\s*\"?{re.escape(key or '')}\"?\s*=", line):
            return number
    return start or 1


_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def _fraction(value: Any, where: str) -> float:
    """0.995, "99.5%" → 0.995."""
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if not match:
            raise ValueError(f"{where}: {value!r} is not a fraction or a percentage (write 0.995 or \"99.5%\")")
        value = float(match.group(1)) / 100
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a fraction such as 0.995 or \"99.5%\"")
    return float(value)


def _money(value: Any, where: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip().lstrip("$"))
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not an amount in USD (write 0.02 or \"$0.02\")") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{where}: expected a non-negative amount in USD")
    return float(value)


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("ms"):
            return float(text[:-2]) / 1000
        return parse_duration(text)
    raise ValueError(f"{where}: expected a duration such as \"1.5s\" or \"300ms\"")


_SLO_KEYS = {"name", "kind", "objective", "window", "threshold", "feature", "model", "evaluation"}


def _slo(file: Path, text: str, index: int, entry: Any) -> SloSpec:
    def fail(key: str | None, reason: str) -> ConfigError:
        return ConfigError(f"{file}:{_line(text, 'slo', key, index)}: [[slo]] #{index + 1}: {reason}")

    if not isinstance(entry, dict):
        raise fail(None, "must be a table")
    unknown = set(entry) - _SLO_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise fail(key, f"unknown key {key!r} (known: {', '.join(sorted(_SLO_KEYS))})")
    kind = entry.get("kind")
    if kind not in SLO_KINDS:
        raise fail("kind", f"kind must be one of {', '.join(SLO_KINDS)}")
    name = entry.get("name") or f"{kind} {entry.get('feature') or entry.get('model') or ''}".strip()
    try:
        objective = _fraction(entry.get("objective"), "objective")
        if not 0 < objective < 1:
            raise ValueError(f"objective must be between 0 and 100% (exclusive), got {objective:g}")
        window = parse_duration(entry.get("window", "30d")) if isinstance(entry.get("window", "30d"), str) else None
        if window is None:
            raise ValueError("window must be a duration such as \"30d\"")
        threshold = None
        if kind in ("ttft", "latency"):
            if "threshold" not in entry:
                raise ValueError(f"a {kind} SLO needs a threshold, e.g. threshold = \"1.5s\"")
            threshold = _seconds(entry["threshold"], "threshold")
        elif kind == "cost_per_call":
            if "threshold" not in entry:
                raise ValueError("a cost_per_call SLO needs a threshold in USD, e.g. threshold = 0.02")
            threshold = _money(entry["threshold"], "threshold")
        elif kind == "quality":
            threshold = float(entry.get("threshold", 0.5))
    except ValueError as exc:
        key = next((k for k in ("objective", "window", "threshold") if k in str(exc)), None)
        raise fail(key, str(exc)) from None
    for key in ("feature", "model", "evaluation"):
        if key in entry and not isinstance(entry[key], str):
            raise fail(key, f"{key} must be a string")
    return SloSpec(name=str(name), kind=kind, objective=objective, window_s=window, threshold=threshold,
                   feature=entry.get("feature"), model=entry.get("model"), evaluation=entry.get("evaluation"))


def _reject_unknown(table: str, given: dict, known: Sequence[str]) -> None:
    """A misspelt key fails loudly instead of being ignored: `[alerts] min_call: unknown (known: …)`."""
    for key in given:
        if key not in known:
            raise ValueError(f"{table} {key}: unknown (known: {', '.join(known)})")


def _drift_settings(settings: AlertSettings, drift: Any) -> None:
    """[alerts.drift]: psi, min_calls, window, signals."""
    if not isinstance(drift, dict):
        raise ValueError("[alerts.drift] drift: must be a table")
    _reject_unknown("[alerts.drift]", drift, ("psi", "min_calls", "window", "signals"))
    if "psi" in drift:
        settings.drift_psi = float(drift["psi"])
        if settings.drift_psi <= 0:
            raise ValueError("[alerts.drift] psi: must be above 0 (0.25 is the customary 'shifted')")
    if "min_calls" in drift:
        settings.drift_min_calls = int(drift["min_calls"])
        if settings.drift_min_calls < 1:
            raise ValueError("[alerts.drift] min_calls: must be at least 1")
    if "window" in drift:
        settings.drift_window_s = _seconds(drift["window"], "[alerts.drift] window")
    if "signals" in drift:
        signals = drift["signals"]
        allowed = ("input_tokens", "output_tokens")
        if not isinstance(signals, list) or not all(s in allowed for s in signals):
            raise ValueError(f"[alerts.drift] signals: a list of {', '.join(allowed)} (empty: the rule is off)")
        settings.drift_signals = tuple(signals)


def _alert_settings(file: Path, text: str, budgets: Any, alerts: Any) -> AlertSettings:
    settings = AlertSettings()
    if not isinstance(budgets, dict) or not isinstance(alerts, dict):
        raise ConfigError(f"{file}: [budgets] and [alerts] must be tables")
    try:
        _reject_unknown("[budgets]", budgets, ("daily_cost", "tokens_per_call"))
        for feature, amount in (budgets.get("daily_cost") or {}).items():
            settings.daily_cost_usd[feature] = _money(amount, f"[budgets.daily_cost] {feature}")
        for feature, tokens in (budgets.get("tokens_per_call") or {}).items():
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens <= 0:
                raise ValueError(f"[budgets.tokens_per_call] {feature}: expected a positive whole number of tokens")
            settings.tokens_per_call[feature] = tokens
        _reject_unknown("[alerts]", alerts, sorted({
            "prompt_regression_factor", "cache_hit_drop", "error_spike", "error_spike_window", "provider_health",
            "min_calls", "clear_after", "drift"}))
        if "prompt_regression_factor" in alerts:
            settings.prompt_regression_factor = float(alerts["prompt_regression_factor"])
            if settings.prompt_regression_factor <= 1:
                raise ValueError("[alerts] prompt_regression_factor must be above 1 (e.g. 1.5)")
        if "cache_hit_drop" in alerts:
            settings.cache_hit_drop = _fraction(alerts["cache_hit_drop"], "[alerts] cache_hit_drop")
        if "min_calls" in alerts:
            settings.min_calls = int(alerts["min_calls"])
        if "clear_after" in alerts:
            settings.clear_after_s = _seconds(alerts["clear_after"], "[alerts] clear_after")
        if "error_spike_window" in alerts:
            settings.error_spike_window_s = _seconds(alerts["error_spike_window"], "[alerts] error_spike_window")
        for name, rate in (alerts.get("error_spike") or {}).items():
            if name not in settings.error_spike:
                raise ValueError(f"[alerts.error_spike] {name}: unknown class (rate_limit, provider, validation, "
                                 f"guardrail)")
            settings.error_spike[name] = _fraction(rate, f"[alerts.error_spike] {name}")
        health = alerts.get("provider_health") or {}
        if "decode_drop" in health:
            settings.decode_drop = _fraction(health["decode_drop"], "[alerts.provider_health] decode_drop")
        if "ttft_rise" in health:
            settings.ttft_rise = float(health["ttft_rise"])
        _drift_settings(settings, alerts.get("drift") or {})
    except (ValueError, TypeError) as exc:
        message = str(exc)
        # Messages name their table, "[budgets.tokens_per_call] support: …": find that table's line.
        section = message[1:message.index("]")] if message.startswith("[") and "]" in message else "budgets"
        key = message.split("]", 1)[1].split(":")[0].strip() if "]" in message else None
        raise ConfigError(f"{file}:{_line(text, section, key)}: {message}") from None
    return settings
