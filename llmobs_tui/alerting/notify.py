"""Alert delivery from `serve`: the rules evaluated every few seconds, and each alert that fires or
resolves sent to the `[[notify]]` targets of llmobs.toml (a JSON webhook, a Slack incoming webhook,
a command).

The pieces, each testable alone:
- `AlertChanges` turns the engine's states (after hysteresis) into fire and resolve events;
- `Route` decides what one target is told: its severities, at most one fire per alert and severity
  per `min_interval`, and a resolve only for an alert it was told about;
- `payload`/`slack_payload` build the messages. Alert text quotes span data (feature, model and
  prompt names come from whoever sends spans): it is only ever JSON-encoded, and Slack's control
  characters `&`, `<`, `>` are escaped so a model name cannot become a link or an `@channel`;
- `Notifier` delivers: one asyncio task and one bounded queue per target (a hanging receiver holds
  up its own messages only), retries with exponential backoff, a timeout on every attempt;
- `AlertDelivery` is serve's loop: the evaluation runs in a thread on its own read-only connection,
  so the event loop that receives spans only awaits it.

No Textual here: serve runs headless.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from llmobs_tui.alerting.engine import SEVERITY_ORDER, AlertEngine, AlertState, Finding
from llmobs_tui.config import Config, ConfigError, NotifyTarget
from llmobs_tui.format import clean

QUEUE_SIZE = 100  # per target; when full the oldest message is dropped (and counted): news beats history
MAX_BACKOFF_S = 60.0
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})  # worth another try; other 4xx never succeed


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """An alert that fired (or went up to page) or resolved."""

    kind: str  # "fire" | "resolve"
    finding: Finding
    since_s: float  # when it fired
    resolved_s: float | None = None

    @property
    def key(self) -> str:
        return self.finding.key

    def describe(self) -> str:
        """One line for serve's log; the text is span data, so control characters are shown, not acted on."""
        f = self.finding
        verb = "fired" if self.kind == "fire" else "resolved"
        return clean(f"alert {verb}: [{f.severity}] {f.title}: {f.value_text} ({f.window}, {f.scope})", limit=300)


class AlertChanges:
    """The fire and resolve events between one evaluation and the next (the engine keeps the states)."""

    def __init__(self) -> None:
        self._firing: dict[str, tuple[float, str]] = {}  # key → (since, severity) of the alerts firing

    def diff(self, states: Sequence[AlertState]) -> list[AlertEvent]:
        events = []
        seen = set()
        for state in states:
            key = state.finding.key
            seen.add(key)
            known = self._firing.get(key)
            if state.firing:
                severity = state.finding.severity
                # New, fired again, or gone up from ticket to page (a page target hears of it only then).
                if (known is None or known[0] != state.since_s
                        or SEVERITY_ORDER[severity] < SEVERITY_ORDER[known[1]]):
                    events.append(AlertEvent("fire", state.finding, state.since_s))
                    self._firing[key] = (state.since_s, severity)
            elif known is not None:
                events.append(AlertEvent("resolve", state.finding, known[0], state.resolved_s))
                del self._firing[key]
        for key in [k for k in self._firing if k not in seen]:  # dropped without a resolve: not expected
            del self._firing[key]
        return events


@dataclass(slots=True)
class Route:
    """What one target is told."""

    target: NotifyTarget
    announced: dict[str, float] = field(default_factory=dict)  # alert key → since, of the fires sent
    last_fire_s: dict[tuple[str, str], float] = field(default_factory=dict)  # (key, severity) → monotonic time

    def wants(self, event: AlertEvent, now_s: float) -> str | None:
        """None when the event is to be sent, else why not (for the log)."""
        key = event.key
        if event.kind == "resolve":
            # Only for an alert this target heard fire: a resolve of something never announced is noise.
            if self.announced.pop(key, None) is None:
                return "not announced"
            return None
        if event.finding.severity not in self.target.severity:
            return f"severity {event.finding.severity}"
        last = self.last_fire_s.get((key, event.finding.severity))
        if last is not None and now_s - last < self.target.min_interval_s:
            return f"rate limit: fired {now_s - last:.0f} s ago (min_interval {self.target.min_interval_s:g} s)"
        self.last_fire_s[(key, event.finding.severity)] = now_s
        self.announced[key] = event.since_s
        return None


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def payload(event: AlertEvent, sent_s: float | None = None) -> dict[str, Any]:
    """The generic webhook's (and the command's) JSON."""
    body = event.finding.as_json()
    body.update({
        "source": "llmobs-tui",
        "event": event.kind,  # "fire" | "resolve"
        "status": "firing" if event.kind == "fire" else "resolved",
        "fired_at": _iso(event.since_s),
        "resolved_at": _iso(event.resolved_s),
        "sent_at": _iso(time.time() if sent_s is None else sent_s),
    })
    return body


def slack_escape(text: str) -> str:
    """Slack's three control characters: `<!channel>`, `<https://evil|click>` stay literal text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(event: AlertEvent) -> dict[str, Any]:
    """A Slack incoming webhook's {"text": …}: every quoted value escaped (and JSON-encoded when sent)."""
    f = event.finding
    if event.kind == "fire":
        head = f"{':rotating_light:' if f.severity == 'page' else ':warning:'} [{f.severity.upper()}] {f.title}"
    else:
        lasted = format_span(event.resolved_s - event.since_s) if event.resolved_s is not None else ""
        head = f":white_check_mark: Resolved [{f.severity.upper()}] {f.title}" + (f" after {lasted}" if lasted else "")
    lines = [head, f"{f.value_text} (threshold {f.threshold:g}, window {f.window}, scope {f.scope})"]
    if f.detail:
        lines.append(f.detail)
    if f.example_trace_id:
        lines.append(f"example trace {f.example_trace_id.hex()}")
    return {"text": slack_escape(clean("\n".join(lines), newlines=True, limit=3000))}


def format_span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class DeliveryFailed(Exception):
    def __init__(self, reason: str, retry: bool = True, after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry = retry
        self.after_s = after_s  # a Retry-After the receiver asked for


def resolve_secrets(target: NotifyTarget, env: Mapping[str, str]) -> tuple[str | None, dict[str, str]]:
    """(url, headers) with the environment's values; a variable that is not set is a ConfigError, at start."""
    url = target.url
    if target.url_from_env is not None:
        url = env.get(target.url_from_env) or None
        if url is None:
            raise ConfigError(f"[[notify]] {target.type}: ${target.url_from_env} (url_from_env) is not set")
    headers = dict(target.headers)
    for name, variable in target.headers_from_env:
        value = env.get(variable)
        if not value:
            raise ConfigError(f"[[notify]] {target.type}: header {name}: ${variable} (headers_from_env) is not set")
        headers[name] = value
    return url, headers


@dataclass(slots=True)
class TargetStats:
    delivered: int = 0
    failed: int = 0  # given up after the last attempt
    dropped: int = 0  # the queue was full
    suppressed: int = 0  # rate limit


class Delivery:
    """One target's queue and the task that empties it, in order (a fire before its resolve)."""

    def __init__(self, target: NotifyTarget, env: Mapping[str, str], *, backoff_s: float,
                 say: Callable[[str], None], queue_size: int = QUEUE_SIZE) -> None:
        self.target = target
        self.route = Route(target)
        self.url, self.headers = resolve_secrets(target, env)
        self.backoff_s = backoff_s
        self.say = say
        self.stats = TargetStats()
        self._queue: deque[AlertEvent] = deque(maxlen=queue_size)
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"notify {self.target.describe()}")

    def put(self, event: AlertEvent, now_s: float) -> None:
        skip = self.route.wants(event, now_s)
        if skip is not None:
            if skip.startswith("rate limit"):
                self.stats.suppressed += 1
                self.say(f"notify {self.target.describe()}: not sending {event.kind} of {clean(event.key)}: {skip}")
            return
        if len(self._queue) == self._queue.maxlen:
            self.stats.dropped += 1  # deque(maxlen) drops the oldest as this one goes in
            self.say(f"notify {self.target.describe()}: queue full, dropped the oldest message "
                     f"({self.stats.dropped} dropped so far)")
        self._queue.append(event)
        self._idle.clear()
        self._ready.set()

    async def drained(self) -> None:
        await self._idle.wait()

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._ready.clear()
                await self._ready.wait()
                continue
            event = self._queue.popleft()
            await self._deliver(event)

    async def _deliver(self, event: AlertEvent) -> None:
        attempts = 1 + self.target.retries
        for attempt in range(1, attempts + 1):
            try:
                await self._send(event)
            except DeliveryFailed as exc:
                if not exc.retry or attempt == attempts:
                    self.stats.failed += 1
                    self.say(f"notify {self.target.describe()}: gave up on {event.kind} of {clean(event.key)} "
                             f"after {attempt} attempt{'s' if attempt > 1 else ''}: {exc}")
                    return
                wait = min(MAX_BACKOFF_S, self.backoff_s * 2 ** (attempt - 1))
                if exc.after_s is not None:
                    wait = min(MAX_BACKOFF_S, max(wait, exc.after_s))
                self.say(f"notify {self.target.describe()}: {event.kind} of {clean(event.key)}: attempt {attempt} "
                         f"failed ({exc}); again in {wait:.1f} s")
                await asyncio.sleep(wait)
            else:
                self.stats.delivered += 1
                self.say(f"notify {self.target.describe()}: sent {event.kind} of {clean(event.key)}"
                         + (f" (attempt {attempt})" if attempt > 1 else ""))
                return

    async def _send(self, event: AlertEvent) -> None:
        if self.target.type == "command":
            await self._run_command(json.dumps(payload(event)).encode())
            return
        body = slack_payload(event) if self.target.type == "slack" else payload(event)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=self.target.timeout_s)
        assert self.url is not None
        try:
            async with self._session.post(self.url, data=json.dumps(body).encode(), timeout=timeout,
                                          headers={"Content-Type": "application/json", **self.headers},
                                          allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return
                after = response.headers.get("Retry-After", "")
                raise DeliveryFailed(f"HTTP {response.status}", retry=response.status in _RETRY_STATUSES,
                                     after_s=float(after) if after.isdigit() else None)
        except TimeoutError:
            raise DeliveryFailed(f"no answer within {self.target.timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None

    async def _run_command(self, data: bytes) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                *self.target.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise DeliveryFailed(f"cannot run {self.target.command[0]}: {exc}", retry=False) from None
        try:
            _, stderr = await asyncio.wait_for(process.communicate(data), self.target.timeout_s)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise DeliveryFailed(f"still running after {self.target.timeout_s:g} s: killed") from None
        if process.returncode != 0:
            last = stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise DeliveryFailed(f"exit status {process.returncode}" + (f": {clean(last[0], limit=200)}"
                                                                         if last[0] else ""))

    async def aclose(self, grace_s: float) -> None:
        """What is queued or in flight gets `grace_s` to finish, then is abandoned."""
        if self._task is not None:
            try:
                await asyncio.wait_for(self.drained(), grace_s)
            except TimeoutError:
                pending = len(self._queue) + 1
                self.say(f"notify {self.target.describe()}: stopping with {pending} message(s) not delivered")
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._session is not None:
            await self._session.close()


class Notifier:
    """Every target's delivery; `publish(events)` never waits."""

    def __init__(self, targets: Sequence[NotifyTarget], *, env: Mapping[str, str] | None = None,
                 backoff_s: float = 1.0, say: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.monotonic, queue_size: int = QUEUE_SIZE) -> None:
        env = os.environ if env is None else env
        self.clock = clock  # the rate limit's: monotonic, whatever the evaluation's `now` is
        self.deliveries = [Delivery(t, env, backoff_s=backoff_s, say=say, queue_size=queue_size) for t in targets]

    def start(self) -> None:
        for delivery in self.deliveries:
            delivery.start()

    def publish(self, events: Sequence[AlertEvent]) -> None:
        now = self.clock()
        for event in events:
            for delivery in self.deliveries:
                delivery.put(event, now)

    async def drained(self) -> None:
        """Every queue empty and nothing in flight (tests; serve's shutdown)."""
        await asyncio.gather(*(d.drained() for d in self.deliveries))

    async def aclose(self, grace_s: float = 2.0) -> None:
        await asyncio.gather(*(d.aclose(grace_s) for d in self.deliveries))


class AlertDelivery:
    """serve's alert loop: evaluate every `interval_s`, log each change, and hand it to the notifier."""

    def __init__(self, db_path: Any, config: Config, *, interval_s: float = 10.0,
                 say: Callable[[str], None] = print, env: Mapping[str, str] | None = None, backoff_s: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = AlertEngine(db_path, config)
        self.changes = AlertChanges()
        self.notifier = Notifier(config.notify, env=env, backoff_s=backoff_s, say=say)
        self.interval_s = interval_s
        self.say = say
        self.clock = clock
        self.evaluations = 0
        self.cpu_s = 0.0  # the evaluating thread's CPU time, all evaluations: what alerting costs serve
        self._failing: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, stop: asyncio.Event) -> None:
        """Deliver, and evaluate every interval until `stop` is set (then `aclose`)."""
        self.notifier.start()
        self._task = asyncio.create_task(self.run(stop), name="alert rules")
        targets = ", ".join(d.target.describe() for d in self.notifier.deliveries)
        self.say(f"llmobs-tui serve: alert rules evaluated every {self.interval_s:g} s; notifying {targets}")

    async def evaluate_once(self, now_s: float | None = None) -> list[AlertEvent]:
        """One evaluation (in a thread: a week of spans takes a tenth of a second of CPU) and its events."""
        now_s = self.clock() if now_s is None else now_s
        try:
            states = await asyncio.to_thread(self._update, now_s)
        except Exception as exc:  # a failing rule or a locked store must not stop serve; say it once
            message = f"alert rules failed: {type(exc).__name__}: {exc}"
            if message != self._failing:
                self.say(f"llmobs-tui serve: {message}")
            self._failing = message
            return []
        self._failing = None
        events = self.changes.diff(states)
        for event in events:
            self.say(f"llmobs-tui serve: {event.describe()}")
        self.notifier.publish(events)
        return events

    def _update(self, now_s: float) -> list[AlertState]:
        cpu = time.thread_time()
        try:
            return self.engine.update(now_s)
        finally:
            self.evaluations += 1
            self.cpu_s += time.thread_time() - cpu

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.evaluate_once()
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            except TimeoutError:
                pass

    async def aclose(self, grace_s: float = 2.0) -> None:
        """After `stop` is set: the evaluation in progress ends (it is not interrupted: its thread holds
        the engine's connection), the queues get `grace_s`, and the connection is closed."""
        if self._task is not None:
            await self._task
        await self.notifier.aclose(grace_s)
        await asyncio.to_thread(self.engine.close)


def serve_alerts(config: Config, db_path: Any, say: Callable[[str], None]) -> AlertDelivery | None:
    """serve's alert delivery, or None without [[notify]] targets: nobody would hear of an alert that
    the TUI and `check` do not already evaluate for themselves, and a week of spans costs a tenth of
    a CPU-second per evaluation. A variable named by url_from_env/headers_from_env that is not set
    is a ConfigError here, at start."""
    if not config.notify:
        return None
    return AlertDelivery(db_path, config, say=say)


class BurnWatch:
    """`--content tiered` with `[content] on_burn`: the (feature, model) scopes whose SLO is burning its
    error budget now (the engine's multiwindow burn rule), for the ingest pipeline to keep their content
    whole until they recover (receiver/content_tiers.py). Called in a thread; one read-only connection
    of its own, opened on first use."""

    def __init__(self, db_path: Any, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.engine = AlertEngine(db_path, config)
        self.clock = clock

    def __call__(self) -> frozenset[tuple[str | None, str | None]]:
        findings, _rows = self.engine.evaluate_slos(self.clock())
        firing = {f.key for f in findings}
        return frozenset((spec.feature, spec.model) for spec in self.engine.config.slos
                         if f"slo:{spec.name}" in firing)
