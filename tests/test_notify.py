"""Alert delivery (`[[notify]]`, llmobs_tui/alerting/notify.py): a planted 429 storm, written through
the real normalizer and writer, evaluated by the real rule engine, posted to a real local HTTP
receiver; then resolved when time moves on. Retries, the rate limit, a hanging receiver, Slack
escaping of hostile text, the command target, the bounded queue, the config table and the TUI's bell.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from llmobs_tui.alerting.engine import AlertState, Finding
from llmobs_tui.alerting.notify import (
    AlertChanges,
    AlertDelivery,
    AlertEvent,
    Notifier,
    payload,
    serve_alerts,
    slack_payload,
)
from llmobs_tui.config import AlertSettings, Config, ConfigError, NotifyTarget, load_config
from store.connection import open_reader
from tests.test_alerting import NOW, Store, last
from tests.tui_fixtures import use_utc

pytestmark = pytest.mark.anyio


# --- a local HTTP receiver ------------------------------------------------------------------------


@dataclass
class Receiver:
    """Answers each POST with the next of `answers` (then 200); `hang` never answers."""

    url: str = ""
    requests: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    hang: bool = False

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), json.loads(body)))
        if self.hang:
            await asyncio.sleep(3600)
        return web.Response(status=self.answers.pop(0) if self.answers else 200)

    def bodies(self) -> list[Any]:
        return [body for _, body in self.requests]


@asynccontextmanager
async def receiver(**kwargs: Any) -> AsyncIterator[Receiver]:
    r = Receiver(**kwargs)
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    r.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield r
    finally:
        await runner.cleanup()


# --- a planted 429 storm ------------------------------------------------------------------------


@pytest.fixture
def storm(tmp_path) -> Path:
    """Four minutes of calls to `search`, 12 of 42 answered 429 (the newest 10 s before NOW)."""
    use_utc()
    store = Store(tmp_path / "storm.db")
    store.add(*last(30, within_s=240, feature="search"))
    store.add(*last(12, within_s=240, feature="search", error="429"))
    return store.write()


def webhook(url: str, **kwargs: Any) -> NotifyTarget:
    return NotifyTarget(type="webhook", url=url, **kwargs)


async def test_a_429_storm_pages_the_webhook_once_and_resolves_it(storm):
    async with receiver() as hook:
        target = webhook(hook.url, severity=("page",), headers=(("X-Team", "llm"),),
                         headers_from_env=(("Authorization", "HOOK_TOKEN"),))
        lines: list[str] = []
        delivery = AlertDelivery(storm, Config(notify=[target]), say=lines.append, backoff_s=0.01,
                                 env={"HOOK_TOKEN": "Bearer s3cret"})
        delivery.notifier.start()
        try:
            events = await delivery.evaluate_once(NOW)
            assert [(e.kind, e.key) for e in events] == [("fire", "errors:rate_limit")]
            await delivery.notifier.drained()
            assert len(hook.requests) == 1
            headers, fired = hook.requests[0]
            assert headers["Authorization"] == "Bearer s3cret" and headers["X-Team"] == "llm"
            assert headers["Content-Type"] == "application/json"
            assert fired["event"] == "fire" and fired["status"] == "firing"
            assert (fired["severity"], fired["rule"], fired["key"]) == ("page", "error_spike", "errors:rate_limit")
            assert fired["value"] == pytest.approx(12 / 42) and fired["threshold"] == pytest.approx(0.05)
            assert (fired["window"], fired["scope"]) == ("5m", "all")
            assert fired["fired_at"] == "2026-11-18T11:06:40+00:00" and fired["resolved_at"] is None
            # The example is a real trace of the storm: a 429 in the store.
            db = open_reader(storm)
            try:
                row = db.execute("SELECT errors_api, feature FROM traces WHERE trace_id = ?",
                                 (bytes.fromhex(fired["example_trace_id"]),)).fetchone()
            finally:
                db.close()
            assert row is not None and row[0] >= 1 and row[1] == "search"

            # Still firing 20 s later: nothing new is sent.
            assert await delivery.evaluate_once(NOW + 20) == []
            # Ten minutes on, the storm has left the 5-minute window and clear_after (3 min) has passed.
            events = await delivery.evaluate_once(NOW + 600)
            assert [(e.kind, e.key) for e in events] == [("resolve", "errors:rate_limit")]
            await delivery.notifier.drained()
            assert len(hook.requests) == 2
            resolved = hook.bodies()[1]
            assert resolved["event"] == "resolve" and resolved["status"] == "resolved"
            assert resolved["key"] == "errors:rate_limit" and resolved["fired_at"] == fired["fired_at"]
            assert resolved["resolved_at"] == "2026-11-18T11:16:40+00:00"
            assert any("alert fired: [page] rate limit errors spiking" in line for line in lines)
            assert any("alert resolved" in line for line in lines)
            assert not any("s3cret" in line for line in lines)
        finally:
            await delivery.aclose(grace_s=1)


async def test_a_ticket_only_storm_does_not_reach_a_page_target(storm):
    """Twice the threshold pages; a threshold of 20 % makes 12/42 (29 %) a ticket: filtered out."""
    async with receiver() as hook:
        config = Config(notify=[webhook(hook.url, severity=("page",)), webhook(hook.url, severity=("ticket",))],
                        alerts=replace(AlertSettings(), error_spike={**AlertSettings().error_spike,
                                                                      "rate_limit": 0.2}))
        delivery = AlertDelivery(storm, config, say=lambda line: None)
        delivery.notifier.start()
        try:
            await delivery.evaluate_once(NOW)
            await delivery.notifier.drained()
            assert [(b["event"], b["severity"]) for b in hook.bodies()] == [("fire", "ticket")]
        finally:
            await delivery.aclose(grace_s=1)


# --- events and routes, with states made by hand ----------------------------------------------------


def finding(key: str = "errors:rate_limit", severity: str = "page", **kwargs: Any) -> Finding:
    values = {"rule": "error_spike", "title": "rate limit errors spiking", "value": 0.3, "threshold": 0.05,
              "value_text": "30.0% of 40 calls ≥ 5.0%", "window": "5m", "scope": "all",
              "example_trace_id": bytes(range(16))} | kwargs
    return Finding(key=key, severity=severity, **values)


def event(kind: str = "fire", since_s: float = NOW, **kwargs: Any) -> AlertEvent:
    return AlertEvent(kind, finding(**kwargs), since_s, NOW + 300 if kind == "resolve" else None)


def test_changes_fire_escalate_and_resolve():
    changes = AlertChanges()
    ticket = AlertState(finding(severity="ticket"), since_s=NOW, last_true_s=NOW)
    assert [(e.kind, e.finding.severity) for e in changes.diff([ticket])] == [("fire", "ticket")]
    assert changes.diff([ticket]) == []
    page = AlertState(finding(severity="page"), since_s=NOW, last_true_s=NOW + 10)
    assert [(e.kind, e.finding.severity) for e in changes.diff([page])] == [("fire", "page")]
    back_to_ticket = AlertState(finding(severity="ticket"), since_s=NOW, last_true_s=NOW + 20)
    assert changes.diff([back_to_ticket]) == []
    resolved = AlertState(finding(severity="ticket"), since_s=NOW, last_true_s=NOW + 20, resolved_s=NOW + 300)
    (gone,) = changes.diff([resolved])
    assert (gone.kind, gone.since_s, gone.resolved_s) == ("resolve", NOW, NOW + 300)
    assert changes.diff([resolved]) == []
    again = AlertState(finding(), since_s=NOW + 400, last_true_s=NOW + 400)
    assert [(e.kind, e.since_s) for e in changes.diff([again])] == [("fire", NOW + 400)]  # fired again


async def test_rate_limit_per_alert_and_severity():
    clock = [1000.0]
    async with receiver() as hook:
        lines: list[str] = []
        notifier = Notifier([webhook(hook.url, min_interval_s=600)], say=lines.append, clock=lambda: clock[0])
        notifier.start()
        try:
            notifier.publish([event("fire"), event("fire", key="errors:provider")])
            await notifier.drained()
            clock[0] += 200  # it resolves, and fires again within min_interval: one fire is enough
            notifier.publish([event("resolve"), event("fire", since_s=NOW + 200)])
            await notifier.drained()
            clock[0] += 100
            notifier.publish([event("resolve", since_s=NOW + 200)])  # never announced: not sent
            await notifier.drained()
            clock[0] += 400  # 700 s after the first fire: allowed again
            notifier.publish([event("fire", since_s=NOW + 700)])
            await notifier.drained()
            assert [(b["event"], b["key"]) for b in hook.bodies()] == [
                ("fire", "errors:rate_limit"), ("fire", "errors:provider"), ("resolve", "errors:rate_limit"),
                ("fire", "errors:rate_limit")]
            assert notifier.deliveries[0].stats.suppressed == 1
            assert any("rate limit" in line for line in lines)
        finally:
            await notifier.aclose(1)


async def test_retries_with_backoff_deliver_once():
    async with receiver(answers=[500, 503]) as hook:
        lines: list[str] = []
        notifier = Notifier([webhook(hook.url, retries=3)], say=lines.append, backoff_s=0.01)
        notifier.start()
        try:
            notifier.publish([event()])
            await notifier.drained()
            # The same message each time; only its sent_at (the attempt's wall clock) may differ, by a
            # second when the attempts straddle one (seen in CI).
            first, last = ({k: v for k, v in body.items() if k != "sent_at"} for body in (hook.bodies()[0],
                                                                                        hook.bodies()[2]))
            assert len(hook.requests) == 3 and first == last and "sent_at" in hook.bodies()[2]
            stats = notifier.deliveries[0].stats
            assert (stats.delivered, stats.failed) == (1, 0)
            assert any("sent fire of errors:rate_limit (attempt 3)" in line for line in lines)
        finally:
            await notifier.aclose(1)


async def test_bounded_attempts_and_no_retry_on_a_client_error():
    async with receiver(answers=[503] * 10) as flaky, receiver(answers=[400]) as wrong:
        lines: list[str] = []
        notifier = Notifier([webhook(flaky.url, retries=2), webhook(wrong.url, retries=5)], say=lines.append,
                            backoff_s=0.01)
        notifier.start()
        try:
            notifier.publish([event()])
            await notifier.drained()
            assert (len(flaky.requests), len(wrong.requests)) == (3, 1)
            assert [d.stats.failed for d in notifier.deliveries] == [1, 1]
            assert any("gave up on fire of errors:rate_limit after 3 attempts: HTTP 503" in line for line in lines)
            assert any("after 1 attempt: HTTP 400" in line for line in lines)
        finally:
            await notifier.aclose(1)


async def test_a_hanging_receiver_holds_up_only_its_own_messages():
    async with receiver(hang=True) as stuck, receiver() as fine:
        lines: list[str] = []
        notifier = Notifier([webhook(stuck.url, timeout_s=0.5, retries=0), webhook(fine.url)], say=lines.append)
        notifier.start()
        try:
            notifier.publish([event(), event(key="errors:provider")])  # returns at once: nothing is sent here
            assert stuck.requests == [] and fine.requests == []
            await notifier.deliveries[1].drained()
            assert [b["key"] for b in fine.bodies()] == ["errors:rate_limit", "errors:provider"]
            assert len(stuck.requests) == 1 and notifier.deliveries[0].stats.failed == 0  # still waiting
            await notifier.deliveries[0].drained()
            assert notifier.deliveries[0].stats.failed == 2
            assert any("no answer within 0.5 s" in line for line in lines)
        finally:
            await notifier.aclose(1)


async def test_a_full_queue_drops_the_oldest_and_says_so():
    async with receiver() as hook:
        lines: list[str] = []
        notifier = Notifier([webhook(hook.url)], say=lines.append, queue_size=2)
        notifier.start()
        try:
            notifier.publish([event(key=f"errors:{n}") for n in range(5)])
            await notifier.drained()
            assert [b["key"] for b in hook.bodies()] == ["errors:3", "errors:4"]
            assert notifier.deliveries[0].stats.dropped == 3
            assert any("queue full, dropped the oldest message (3 dropped so far)" in line for line in lines)
        finally:
            await notifier.aclose(1)


# --- untrusted text ---------------------------------------------------------------------------------

HOSTILE = "gpt-4o <!channel> & <https://evil.example|click here> \x1b[2J\n*bold*"


async def test_slack_escapes_hostile_names_and_the_webhook_keeps_them_verbatim():
    hostile = finding(key=f"health:{HOSTILE}:ttft", title=f"{HOSTILE}: time to first token up",
                      scope=f"model={HOSTILE}", rule="provider_health")
    async with receiver() as slack, receiver() as hook:
        notifier = Notifier([NotifyTarget(type="slack", url=slack.url), webhook(hook.url)], say=lambda line: None)
        notifier.start()
        try:
            notifier.publish([AlertEvent("fire", hostile, NOW)])
            await notifier.drained()
        finally:
            await notifier.aclose(1)
    (text,) = slack.bodies()[0].values()  # {"text": …} and nothing else
    assert "<" not in text and ">" not in text and "\x1b" not in text
    assert "&lt;!channel&gt; &amp; &lt;https://evil.example|click here&gt;" in text
    assert text.startswith(":rotating_light: [PAGE] gpt-4o &lt;!channel&gt;")
    assert bytes(range(16)).hex() in text
    generic = hook.bodies()[0]
    assert generic["scope"] == f"model={HOSTILE}" and generic["title"] == hostile.title  # JSON-encoded, intact


def test_slack_resolve_says_how_long_it_lasted():
    text = slack_payload(event("resolve"))["text"]
    assert text.startswith(":white_check_mark: Resolved [PAGE] rate limit errors spiking after 5 min")
    assert payload(event("resolve"))["resolved_at"] == "2026-11-18T11:11:40+00:00"


# --- the command target -----------------------------------------------------------------------------

_CAPTURE = "import json, sys; data = json.load(sys.stdin); open(sys.argv[1], 'w').write(json.dumps(data))"


async def test_a_command_gets_the_json_on_stdin_without_a_shell(tmp_path):
    out = tmp_path / "got.json"
    lines: list[str] = []
    targets = [NotifyTarget(type="command", command=(sys.executable, "-c", _CAPTURE, str(out))),
               NotifyTarget(type="command", command=(sys.executable, "-c", "import time; time.sleep(60)"),
                            timeout_s=0.5, retries=0),
               NotifyTarget(type="command", command=(sys.executable, "-c", "import sys; sys.exit('no pager')"),
                            retries=1)]
    notifier = Notifier(targets, say=lines.append, backoff_s=0.01)
    notifier.start()
    try:
        notifier.publish([AlertEvent("fire", finding(scope=f"model={HOSTILE}; rm -rf /"), NOW)])
        await notifier.drained()
    finally:
        await notifier.aclose(1)
    got = json.loads(out.read_text())
    assert (got["event"], got["key"], got["scope"]) == ("fire", "errors:rate_limit", f"model={HOSTILE}; rm -rf /")
    assert [d.stats.delivered for d in notifier.deliveries] == [1, 0, 0]
    assert any("still running after 0.5 s: killed" in line for line in lines)
    assert any("after 2 attempts: exit status 1: no pager" in line for line in lines)


# --- configuration ----------------------------------------------------------------------------------

CONFIG = """\
[alerts]
bell = false

[[notify]]
type = "webhook"
url = "https://hooks.example.com/llm"
severity = ["page"]
min_interval = "5m"
timeout = "3s"
headers = { X-Team = "llm" }
headers_from_env = { Authorization = "HOOK_TOKEN" }

[[notify]]
type = "slack"
url_from_env = "SLACK_WEBHOOK_URL"

[[notify]]
type = "command"
command = ["/usr/local/bin/page-oncall", "--team", "llm"]
retries = 0
"""


def test_the_notify_table(tmp_path):
    path = tmp_path / "llmobs.toml"
    path.write_text(CONFIG)
    config = load_config(path)
    assert config.alerts.bell is False
    hook, slack, command = config.notify
    assert hook == NotifyTarget(type="webhook", url="https://hooks.example.com/llm", severity=("page",),
                                min_interval_s=300, timeout_s=3, headers=(("X-Team", "llm"),),
                                headers_from_env=(("Authorization", "HOOK_TOKEN"),))
    assert (slack.url_from_env, slack.severity, slack.min_interval_s, slack.retries) == (
        "SLACK_WEBHOOK_URL", ("page", "ticket"), 600, 3)
    assert command.command == ("/usr/local/bin/page-oncall", "--team", "llm") and command.retries == 0
    # Logs name the target, never a secret.
    assert (hook.describe(), slack.describe(), command.describe()) == (
        "webhook hooks.example.com", "slack $SLACK_WEBHOOK_URL", "command /usr/local/bin/page-oncall")
    assert webhook("https://bot:hunter2@hooks.example.com:8443/x?key=k").describe() == "webhook hooks.example.com:8443"
    assert AlertSettings().bell is True  # without [alerts] bell


@pytest.mark.parametrize(("replace_", "line", "reason"), [
    (('type = "slack"', 'type = "sms"'), 14, "type must be one of webhook, slack, command"),
    (("retries = 0", "retry = 0"), 20, "unknown key 'retry'"),
    (('timeout = "3s"', 'timeout = "soon"'), 9, "timeout: 'soon' is not a duration"),
    (('X-Team = "llm"', 'Authorization = "Bearer x"'), 10, "a secret does not belong in the file"),
    (('command = ["/usr/local/bin/page-oncall", "--team", "llm"]', 'command = "page-oncall && rm -rf /"'), 19,
     "command must be a list of program and arguments"),
    (('severity = ["page"]', 'severity = ["urgent"]'), 7, "severity must be a list of page, ticket"),
    (('url = "https://hooks.example.com/llm"', 'url = "hooks.example.com"'), 6, "url must be an http"),
    (('url_from_env = "SLACK_WEBHOOK_URL"', 'url = "https://a.example"\ncommand = ["x"]'), 16,
     "command is for type = \"command\""),
    (("bell = false", 'bell = "no"'), 2, "[alerts] bell: must be true or false"),
])
def test_notify_config_errors_name_the_line(tmp_path, replace_, line, reason):
    path = tmp_path / "llmobs.toml"
    path.write_text(CONFIG.replace(*replace_))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert f"llmobs.toml:{line}: " in str(error.value) and reason in str(error.value), str(error.value)


def test_a_secret_variable_that_is_not_set_fails_at_start(tmp_path, monkeypatch):
    path = tmp_path / "llmobs.toml"
    path.write_text(CONFIG)
    config = load_config(path)
    monkeypatch.delenv("HOOK_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"header Authorization: \$HOOK_TOKEN \(headers_from_env\) is not set"):
        serve_alerts(config, tmp_path / "x.db", print)
    monkeypatch.setenv("HOOK_TOKEN", "Bearer t")
    with pytest.raises(ConfigError, match=r"\$SLACK_WEBHOOK_URL \(url_from_env\) is not set"):
        serve_alerts(config, tmp_path / "x.db", print)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/K")
    assert serve_alerts(config, tmp_path / "x.db", print) is not None
    assert serve_alerts(Config(), tmp_path / "x.db", print) is None  # no [[notify]]: serve evaluates nothing


# --- the TUI's bell ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bell", [True, False])
async def test_the_tui_rings_the_bell_once_per_new_page(storm, bell):
    from llmobs_tui.alerting.live import EngineAlerts
    from llmobs_tui.app import LlmobsApp

    clock = [NOW]
    alerts = EngineAlerts(storm, Config(alerts=replace(AlertSettings(), bell=bell)))
    app = LlmobsApp(storm, clock=lambda: clock[0], refresh_s=None, alerts=alerts)
    rung: list[float] = []
    app.bell = lambda: rung.append(clock[0])  # type: ignore[method-assign]
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            assert any(a.firing and a.severity == "page" for a in alerts.snapshot(NOW))
            for step in (20, 40, 60):  # still firing: no second ring
                clock[0] = NOW + step
                await app.tick()
            clock[0] = NOW + 600  # resolved: silence
            await app.tick()
            assert not any(a.firing for a in alerts.snapshot(clock[0]))
    finally:
        alerts.close()
    assert rung == ([NOW] if bell else [])


# --- end to end: a real serve -------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_real_serve_pages_a_429_storm_and_resolves_it(tmp_path):
    """serve with a [[notify]] webhook; a 429 storm sent over OTLP/gRPC: the page arrives within an
    evaluation (10 s). Then the storm ends: healthy calls bring the 429 share under its threshold,
    and the resolve follows at the next evaluation."""
    import os
    import re
    import subprocess
    import time

    from tests.otlp_factory import trace_request
    from tests.test_alerting import Call
    from tests.test_attach import export_with_token

    def calls_now(first: int, n: int, every: int) -> bytes:
        """`n` calls to search in the last seconds, every `every`-th a 429 (0: none)."""
        now = time.time()
        calls = [Call(now - 1 - i * 0.05, feature="search", error="429" if every and i % every == 0 else None)
                 for i in range(n)]
        spans = [span for number, call in enumerate(calls, start=first) for span in Store._spans(number, call)]
        return trace_request(spans).SerializeToString()

    async def wait_for(requests: int) -> None:
        deadline = time.monotonic() + 30
        while len(hook.requests) < requests and time.monotonic() < deadline:
            await asyncio.sleep(0.2)

    async with receiver() as hook:
        config = tmp_path / "llmobs.toml"
        config.write_text(f'[alerts]\nclear_after = "1s"\n\n'
                          f'[[notify]]\ntype = "webhook"\nurl = "{hook.url}"\nseverity = ["page"]\n'
                          f'headers_from_env = {{ Authorization = "HOOK_TOKEN" }}\n')
        serve = subprocess.Popen([sys.executable, "-m", "llmobs_tui", "serve", "--db", str(tmp_path / "s.db"),
                                  "--config", str(config), "--grpc-port", "0", "--http-port", "0", "--token", "T0K"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env={**os.environ, "HOOK_TOKEN": "Bearer e2e"})
        try:
            line = await asyncio.to_thread(serve.stdout.readline)
            grpc_port = int(re.search(r"OTLP/gRPC on 127\.0\.0\.1:(\d+)", line).group(1))
            await export_with_token(grpc_port, calls_now(1, 42, every=3))  # 14 of 42 answered 429
            await wait_for(1)
            await export_with_token(grpc_port, calls_now(1000, 400, every=0))  # 14 of 442: under 5 %
            await wait_for(2)
        finally:
            serve.terminate()
            rest = await asyncio.to_thread(serve.stdout.read)  # (communicate() would skip readline's buffer)
            await asyncio.to_thread(serve.wait, 30)
    text = line + rest
    assert [(b["event"], b["key"], b["severity"]) for b in hook.bodies()] == [
        ("fire", "errors:rate_limit", "page"), ("resolve", "errors:rate_limit", "page")], text
    assert hook.requests[0][0]["Authorization"] == "Bearer e2e"
    assert hook.bodies()[0]["value"] == pytest.approx(14 / 42)
    assert "alert rules evaluated every 10 s; notifying webhook 127.0.0.1:" in text
    assert "alert fired: [page] rate limit errors spiking" in text and "alert resolved" in text
    assert "sent fire of errors:rate_limit" in text and "sent resolve of errors:rate_limit" in text
    assert serve.returncode == 0, text
