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
from receiver.content_tiers import MODES as CONTENT_MODES
from receiver.content_tiers import ContentPolicy
from receiver.redact import PatternError, check_pattern
from store import drift
from store.sessions import SessionSettings  # [sessions], read by the TUI (which must not import receiver/)

DEFAULT_CONFIG_NAME = "llmobs.toml"
_DATA = Path(__file__).parent / "data"
EXAMPLE_CONFIG = _DATA / "llmobs.example.toml"  # what `llmobs-tui init` writes
DEMO_CONFIG = _DATA / "demo.toml"  # the demo's rules, matched to the incidents its feed plants
_DIMENSIONS = tuple(semconv.DEFAULT_DIMENSION_KEYS)
KNOWN_SECTIONS = ("dimensions", "slo", "budgets", "alerts", "redaction", "sessions", "notify", "content")
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
    bell: bool = True  # the TUI rings the terminal bell when a new page fires
    # [alerts.runaway]: agents looping (the same tool with the same arguments `repeats` times in one
    # trace, or across one conversation's turns) or still running past a ceiling (0: that check is off).
    runaway_repeats: int = 5
    # Across a conversation's turns the bar is higher: a chat that looks the same customer up on each
    # turn is ordinary; ten times in the window is not.
    runaway_conversation_repeats: int = 10
    runaway_max_steps: int = 50  # LLM calls + tool calls of a trace whose root has not arrived
    runaway_max_tokens: int = 0
    runaway_max_cost_usd: float = 0.0
    runaway_window_s: float = 900  # the tool calls and running traces looked at: those active this recently
    runaway_severity: str = "ticket"  # of a running agent's finding; a finished trace's loop is a ticket


NOTIFY_TYPES = ("webhook", "slack", "command")
SEVERITIES = ("page", "ticket")


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    """One `[[notify]]` table: where `serve` sends alert fire and resolve messages (alerting/notify.py).
    Secrets are never in the file: `url_from_env` and `headers_from_env` name environment variables,
    read when serve starts."""

    type: str  # one of NOTIFY_TYPES
    url: str | None = None  # webhook, slack
    url_from_env: str | None = None  # webhook, slack: the variable holding the URL (a Slack URL is a secret)
    command: tuple[str, ...] = ()  # command: argv, run without a shell, the message as JSON on stdin
    severity: tuple[str, ...] = SEVERITIES  # which alerts it receives
    min_interval_s: float = 600  # per alert and severity: at most one fire message per interval
    timeout_s: float = 10
    retries: int = 3  # after the first attempt, with exponential backoff
    headers: tuple[tuple[str, str], ...] = ()  # webhook: literal headers
    headers_from_env: tuple[tuple[str, str], ...] = ()  # webhook: header name → environment variable

    def describe(self) -> str:
        """For serve's log: the type and where, never a secret (a Slack URL's path is its key)."""
        if self.type == "command":
            return f"command {self.command[0]}"
        if self.url_from_env:
            return f"{self.type} ${self.url_from_env}"
        from urllib.parse import urlsplit

        parts = urlsplit(self.url or "")  # the host and port only: a URL can carry user:password@
        return f"{self.type} {parts.hostname}" + (f":{parts.port}" if parts.port else "")


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
    notify: list[NotifyTarget] = field(default_factory=list)  # [[notify]]: where `serve` delivers alerts
    content: ContentPolicy | None = None  # [content]: the content tiers (None: no table; --content decides)
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
    targets = data.get("notify", [])
    if not isinstance(targets, list):
        raise ConfigError(f"{file}:{_line(text, 'notify')}: write each target as a [[notify]] table")
    config.notify = [_notify(file, text, index, entry) for index, entry in enumerate(targets)]
    if "content" in data:
        config.content = _content(file, text, data["content"])
    return config


_CONTENT_KEYS = ("mode", "sample", "slowest", "costliest", "window", "on_burn", "min_samples")


def _content(file: Path, text: str, table: Any) -> ContentPolicy:
    """`[content]`: the content tiers (receiver/content_tiers.py). `mode` defaults to "tiered" here:
    the table's other keys mean nothing otherwise. `--content` wins over `mode`."""
    def fail(key: str | None, reason: str) -> ConfigError:
        return ConfigError(f"{file}:{_line(text, 'content', key)}: [content] {reason}")

    if not isinstance(table, dict):
        raise fail(None, "must be a table")
    for key in table:
        if key not in _CONTENT_KEYS:
            raise fail(key, f"{key}: unknown (known: {', '.join(_CONTENT_KEYS)})")
    mode = table.get("mode", "tiered")
    if mode not in CONTENT_MODES:
        raise fail("mode", f"mode must be one of {', '.join(CONTENT_MODES)}")
    shares = {}
    for key, default, low_ok in (("sample", 0.05, True), ("slowest", 0.99, False), ("costliest", 0.99, False)):
        try:
            share = _fraction(table.get(key, default), f"{key}")
        except ValueError as exc:
            raise fail(key, str(exc)) from None
        if not (0 <= share <= 1 if low_ok else 0 < share <= 1):
            bound = "from 0 to 100%" if low_ok else "above 0 and at most 100% (1: no span is kept for it)"
            raise fail(key, f"{key} must be {bound}, got {share:g}")
        shares[key] = share
    try:
        window = _seconds(table.get("window", "15m"), "window")
    except ValueError as exc:
        raise fail("window", str(exc)) from None
    if not 60 <= window <= 86400:
        raise fail("window", "window must be from 1m to 1d")
    on_burn = table.get("on_burn", True)
    if not isinstance(on_burn, bool):
        raise fail("on_burn", "on_burn must be true or false")
    min_samples = table.get("min_samples", 50)
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        raise fail("min_samples", "min_samples must be a whole number of at least 1")
    return ContentPolicy(mode=mode, sample=shares["sample"], slowest=shares["slowest"],
                         costliest=shares["costliest"], window_s=window, on_burn=on_burn, min_samples=min_samples)


_NOTIFY_KEYS = ("type", "url", "url_from_env", "command", "severity", "min_interval", "timeout", "retries",
                "headers", "headers_from_env")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)


def _notify(file: Path, text: str, index: int, entry: Any) -> NotifyTarget:
    """One [[notify]] table; every mistake names its line."""
    def fail(key: str | None, reason: str) -> ConfigError:
        return ConfigError(f"{file}:{_line(text, 'notify', key, index)}: [[notify]] #{index + 1}: {reason}")

    if not isinstance(entry, dict):
        raise fail(None, "must be a table")
    for key in entry:
        if key not in _NOTIFY_KEYS:
            raise fail(key, f"unknown key {key!r} (known: {', '.join(sorted(_NOTIFY_KEYS))})")
    kind = entry.get("type")
    if kind not in NOTIFY_TYPES:
        raise fail("type", f"type must be one of {', '.join(NOTIFY_TYPES)}")
    url = entry.get("url")
    url_env = entry.get("url_from_env")
    command: tuple[str, ...] = ()
    if kind == "command":
        for key in ("url", "url_from_env", "headers", "headers_from_env"):
            if key in entry:
                raise fail(key, f"{key} is for webhook and slack targets; a command gets the alert on stdin")
        argv = entry.get("command")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
            raise fail("command", "command must be a list of program and arguments, e.g. [\"/usr/local/bin/page\", "
                                  "\"--team\", \"llm\"] (it runs without a shell)")
        command = tuple(argv)
    else:
        if "command" in entry:
            raise fail("command", "command is for type = \"command\"")
        if (url is None) == (url_env is None):
            raise fail("url", "give url or url_from_env (the name of an environment variable holding the URL)")
        if url is not None and (not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url)):
            raise fail("url", "url must be an http:// or https:// URL")
        if url_env is not None and (not isinstance(url_env, str) or not _ENV_NAME.match(url_env)):
            raise fail("url_from_env", "url_from_env must be the name of an environment variable")
        if kind == "slack":
            for key in ("headers", "headers_from_env"):
                if key in entry:
                    raise fail(key, f"{key} is for webhook targets (a Slack incoming webhook needs none)")
    headers = _notify_headers(entry, "headers", fail)
    from_env = _notify_headers(entry, "headers_from_env", fail)
    for name, value in from_env:
        if not _ENV_NAME.match(value):
            raise fail("headers_from_env", f"headers_from_env {name}: {value!r} is not an environment variable name")
    for name, _value in headers:
        if name.lower() in ("authorization", "proxy-authorization", "cookie"):
            raise fail("headers", f"headers {name}: a secret does not belong in the file; name the environment "
                                  f"variable that holds it: headers_from_env = {{ {name} = \"WEBHOOK_TOKEN\" }}")
    severity = entry.get("severity", list(SEVERITIES))
    if not isinstance(severity, list) or not severity or not all(s in SEVERITIES for s in severity):
        raise fail("severity", f"severity must be a list of {', '.join(SEVERITIES)}, e.g. [\"page\"]")
    retries = entry.get("retries", 3)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
        raise fail("retries", "retries must be a whole number from 0 to 10")
    durations = {}
    for key, default in (("min_interval", "10m"), ("timeout", "10s")):
        try:
            durations[key] = _seconds(entry.get(key, default), key)
        except ValueError as exc:
            raise fail(key, f"{key}: {exc}") from None
    if durations["min_interval"] < 0:
        raise fail("min_interval", "min_interval must not be negative (0: no rate limit)")
    if not 0 < durations["timeout"] <= 300:
        raise fail("timeout", "timeout must be above 0 and at most 5m")
    return NotifyTarget(type=kind, url=url, url_from_env=url_env, command=command,
                        severity=tuple(s for s in SEVERITIES if s in severity),
                        min_interval_s=durations["min_interval"], timeout_s=durations["timeout"], retries=retries,
                        headers=headers, headers_from_env=from_env)


def _notify_headers(entry: dict, key: str, fail: Any) -> tuple[tuple[str, str], ...]:
    table = entry.get(key, {})
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise fail(key, f"{key} must be a table of header name = string, e.g. {key} = {{ X-Team = \"llm\" }}")
    for name, value in table.items():
        if not _HEADER_NAME.match(name) or "\n" in value or "\r" in value:
            raise fail(key, f"{key} {name!r}: not a valid header name or value")
    return tuple(table.items())


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


def _runaway_settings(settings: AlertSettings, table: Any) -> None:
    """[alerts.runaway]: repeats, conversation_repeats, max_steps, max_tokens, max_cost, window, severity."""
    if not isinstance(table, dict):
        raise ValueError("[alerts.runaway] runaway: must be a table")
    _reject_unknown("[alerts.runaway]", table, ("repeats", "conversation_repeats", "max_steps", "max_tokens",
                                                 "max_cost", "window", "severity"))
    for key, attribute, low in (("repeats", "runaway_repeats", 2),
                                ("conversation_repeats", "runaway_conversation_repeats", 2),
                                ("max_steps", "runaway_max_steps", 1),
                                ("max_tokens", "runaway_max_tokens", 1)):
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int) or (value != 0 and value < low):
                raise ValueError(f"[alerts.runaway] {key}: must be a whole number of at least {low} (0: off)")
            setattr(settings, attribute, value)
    if "max_cost" in table:
        settings.runaway_max_cost_usd = _money(table["max_cost"], "[alerts.runaway] max_cost")
    if "window" in table:
        try:
            settings.runaway_window_s = _seconds(table["window"], "[alerts.runaway] window")
        except ValueError as exc:
            message = str(exc)
            raise ValueError(message if message.startswith("[") else f"[alerts.runaway] window: {message}") from None
        if not 60 <= settings.runaway_window_s <= 86400:
            raise ValueError("[alerts.runaway] window: must be from 1m to 1d")
    if "severity" in table:
        if table["severity"] not in SEVERITIES:
            raise ValueError(f"[alerts.runaway] severity: must be one of {', '.join(SEVERITIES)}")
        settings.runaway_severity = table["severity"]


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
            "min_calls", "clear_after", "drift", "bell", "runaway"}))
        if "prompt_regression_factor" in alerts:
            settings.prompt_regression_factor = float(alerts["prompt_regression_factor"])
            if settings.prompt_regression_factor <= 1:
                raise ValueError("[alerts] prompt_regression_factor must be above 1 (e.g. 1.5)")
        if "cache_hit_drop" in alerts:
            settings.cache_hit_drop = _fraction(alerts["cache_hit_drop"], "[alerts] cache_hit_drop")
        if "min_calls" in alerts:
            settings.min_calls = int(alerts["min_calls"])
        if "bell" in alerts:
            if not isinstance(alerts["bell"], bool):
                raise ValueError("[alerts] bell: must be true or false")
            settings.bell = alerts["bell"]
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
        _runaway_settings(settings, alerts.get("runaway") or {})
    except (ValueError, TypeError) as exc:
        message = str(exc)
        # Messages name their table, "[budgets.tokens_per_call] support: …": find that table's line.
        section = message[1:message.index("]")] if message.startswith("[") and "]" in message else "budgets"
        key = message.split("]", 1)[1].split(":")[0].strip() if "]" in message else None
        raise ConfigError(f"{file}:{_line(text, section, key)}: {message}") from None
    return settings
