"""Untrusted text never reaches the terminal as markup or as control characters (issue 9, item 3).

A remote sender controls span names, attribute keys and values, service, model, provider, feature,
tenant, prompt id and version, error messages and the conversation. Each hostile string below is
written into every one of those fields, through the real normalizer and writer, into a store where
the real rule engine fires a prompt-regression alert whose title quotes the hostile feature and
prompt version. The real app is then driven over every screen, with the alert acknowledged (the
toast), a drill from the breakdown into the trace list (the filter built from a hostile value), the
filter prompt pre-filled with it, a bad filter and a bad command (the errors quote what was typed).

After every step: the app is still running (a MarkupError would have ended it); the frame as the
terminal would receive it holds no escape sequence that came from data, no OSC 8 hyperlink, no
bidi, zero-width or separator character; no cell carries a link or a click action; and what a
person reads there is the hostile text itself, literally (markup brackets and all, control
characters as visible stand-ins).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from textual import events
from textual.widgets import Input, Static

from llmobs_tui import format as fmt
from llmobs_tui.alerting.live import EngineAlerts
from llmobs_tui.app import LlmobsApp
from llmobs_tui.config import Config
from llmobs_tui.scenarios import MS, S, SpanSpec, Trace, to_otlp_request
from llmobs_tui.screens.prompt import PromptScreen
from llmobs_tui.screens.traces import TracesScreen
from llmobs_tui.widgets.chrome import AlertBanner
from llmobs_tui.widgets.keyed_table import KeyedTable
from tests.store_writing import writing
from tests.tui_fixtures import FROZEN_NOW, use_utc
from tests.tui_scenarios import settle

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

HOSTILE = {
    # Valid markup: a live action and a hyperlink, if parsed.
    "click": "[@click=app.quit]q[/]",
    "link": "[link=file:///etc/passwd]x[/link]",
    # Invalid markup: a MarkupError, if parsed.
    "broken": "[/]x[bold[red]unclosed",
    # Terminal sequences: an OSC 8 hyperlink and a screen clear.
    "osc8": "\x1b]8;;file:///etc/passwd\x07x\x1b]8;;\x07",
    # Characters that hide, reorder or move text: CSI, bidi override and isolate, zero-width
    # space, line separator, BOM, Arabic letter mark, the 8-bit CSI.
    "controls": "\x1b[2Ja\u202eb\u200bc\u2028d\ufeff\u2066e\u061c\x9b",
}

# Characters that must never be written to the terminal, whatever the field.
FORBIDDEN_CHARS = ("\x07", "\x9b", "\u202e", "\u2066", "\u200b", "\u2028", "\u2029", "\ufeff", "\u061c")
HOURS = 3600


def fields(payload: str) -> dict[str, str]:
    """One hostile value per field, each tagged so that the test can tell which field it sees."""
    names = ("root", "span", "svc", "model", "prov", "feat", "tenant", "pid", "ver", "err", "etype", "key", "val",
             "event", "ekey", "eval", "prompt", "completion", "role", "tool", "finish", "name", "variant")
    return {name: f"{name}:{payload}" for name in names}


def llm_attrs(f: dict[str, str], *, version: str, input_tokens: int, model: str = "gpt-4o",
              provider: str = "openai") -> dict:
    return {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.request.model": model,
        "gen_ai.response.model": model, "gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": 50,
        "app.llm.feature": f["feat"], "app.llm.tenant.id": f["tenant"], "llmobs.variant": f["variant"],
        "app.llm.prompt.template.id": f["pid"], "app.llm.prompt.template.version": version,
    }


def regression_trace(f: dict[str, str], version: str, input_tokens: int) -> Trace:
    """A priced call of the hostile feature and prompt: cheap at v1, ten times dearer at the hostile version."""
    root = SpanSpec(f["root"], None, 0, 900 * MS, {"app.llm.feature": f["feat"], "app.llm.tenant.id": f["tenant"]},
                    kind=2)
    call = SpanSpec(f["span"], 0, 10 * MS, 800 * MS, llm_attrs(f, version=version, input_tokens=input_tokens), kind=3)
    return Trace(f["feat"], f["svc"], [root, call])


def everything_trace(f: dict[str, str]) -> Trace:
    """The newest trace: every other field hostile too (model, provider, errors, attributes, events, content)."""
    prompt = json.dumps([{"role": f["role"], "name": f["name"], "parts": [{"type": "text", "content": f["prompt"]}]}])
    completion = json.dumps([{"role": "assistant", "finish_reason": f["finish"], "parts": [
        {"type": "text", "content": f["completion"]},
        {"type": "tool_call", "id": "call_1", "name": f["tool"], "arguments": {"q": f["val"]}}]}])
    attrs = llm_attrs(f, version=f["ver"], input_tokens=120, model=f["model"], provider=f["prov"])
    attrs |= {"gen_ai.input.messages": prompt, "gen_ai.output.messages": completion, "error.type": f["etype"],
              f["key"]: f["val"]}
    root = SpanSpec(f["root"], None, 0, 900 * MS, {"app.llm.feature": f["feat"], "app.llm.tenant.id": f["tenant"],
                                                   f["key"]: f["val"]}, kind=2)
    call = SpanSpec(f["span"], 0, 10 * MS, 800 * MS, attrs, error=f["err"], kind=3,
                    events=[(f["event"], 20 * MS, {f["ekey"]: f["eval"]})])
    return Trace(f["feat"], f["svc"], [root, call])


def build_hostile_store(path: Path, payload: str) -> Path:
    f = fields(payload)
    batch = []
    number = 1
    # The baseline: 25 cheap calls at v1 over the prior day; then 25 dear ones at the hostile version in the last hour.
    for i in range(25):
        batch.append((regression_trace(f, "v1", 100), number, int((FROZEN_NOW - 20 * HOURS + i * 600) * S)))
        number += 1
    for i in range(25):
        batch.append((regression_trace(f, f["ver"], 3000), number, int((FROZEN_NOW - 3000 + i * 100) * S)))
        number += 1
    batch.append((everything_trace(f), number, int((FROZEN_NOW - 30) * S)))
    with writing(path, int(FROZEN_NOW * S)) as (normalizer, writer, db):
        rows, resources, scopes, rejections = normalizer.decode_traces(to_otlp_request(batch), int(FROZEN_NOW * S))
        assert rejections.count == 0, rejections.message()
        writer.write(rows, [], resources, scopes)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


# -- what the terminal receives ------------------------------------------------------------------


class Frame:
    """The current screen rendered exactly as the driver would write it to the terminal."""

    def __init__(self, app: LlmobsApp) -> None:
        width, height = app.size
        console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                          color_system="truecolor", legacy_windows=False, safe_box=False)
        update = app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
        self.raw = update.render_segments(console)
        self.lines = []
        self.segments = []
        for line in update.strips:
            text = []
            for strip in line:
                for segment in strip:
                    if not segment.control:
                        text.append(segment.text)
                        self.segments.append(segment)
            self.lines.append("".join(text))
        self.text = "\n".join(self.lines)


def assert_safe(app: LlmobsApp, where: str) -> Frame:
    """The app is alive and nothing from data acts on the terminal."""
    assert app.is_running and app.return_code is None, f"{where}: the app exited"
    frame = Frame(app)
    assert "\x1b" not in frame.text, f"{where}: a raw ESC in the screen text"
    for ch in FORBIDDEN_CHARS:
        assert ch not in frame.raw, f"{where}: {ch!r} written to the terminal"
    assert "\x1b]8;" not in frame.raw, f"{where}: an OSC 8 hyperlink written to the terminal"
    assert "\x1b[2J" not in frame.raw, f"{where}: a screen clear written to the terminal"
    assert "etc/passwd" not in "".join(re.findall(r"\x1b\][^\x1b]*", frame.raw)), where
    for segment in frame.segments:
        style = segment.style
        if style is None:
            continue
        assert not style.link, f"{where}: {segment.text!r} links to {style.link}"
        click = style.meta.get("@click")
        assert click is None or "quit" not in str(click), f"{where}: {segment.text!r} runs {click}"
    return frame


def shown(value: str, limit: int = 20) -> str:
    """How a value reads on screen: its visible form, as much of it as every column has room for."""
    return fmt.clean(value)[:limit]


def assert_shows(text: str, values: list[str], where: str, limit: int = 20) -> None:
    for value in values:
        assert shown(value, limit) in text, f"{where}: {shown(value, limit)!r} not shown literally in:\n{text}"


def static_text(widget: Static, width: int = 400) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(widget.content)
    return console.export_text()


async def toasts(pilot) -> list:
    """The toasts on screen (they are mounted a few refreshes after `notify`), as their Content."""
    for _ in range(20):
        found = list(pilot.app.screen.query("Toast"))
        if len(found) >= len(pilot.app._notifications):
            break
        await pilot.pause()
    await pilot.pause()
    return [toast.render() for toast in pilot.app.screen.query("Toast")]


def table_text(table: KeyedTable) -> str:
    return "\n".join(" | ".join(str(cell) for cell in table.get_row(key)) for key in table.keys())  # noqa: SIM118 (KeyedTable's own method, not a dict's)


# -- the tour --------------------------------------------------------------------------------------


@pytest.fixture(params=list(HOSTILE), ids=list(HOSTILE))
def hostile(request, tmp_path) -> tuple[str, Path]:
    use_utc()
    payload = HOSTILE[request.param]
    return payload, build_hostile_store(tmp_path / "hostile.db", payload)


def make_app(store: Path, tmp_path: Path) -> LlmobsApp:
    config = Config()  # the built-in rules, no SLOs; error spikes out of the way so the regression leads
    config.alerts.error_spike = {name: 0.99 for name in config.alerts.error_spike}
    alerts = EngineAlerts(store, config)
    alerts.evaluate_now(FROZEN_NOW)
    return LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None, alerts=alerts,
                     export_dir=tmp_path)


async def test_hostile_text_is_shown_never_interpreted(hostile, tmp_path):
    payload, store = hostile
    f = fields(payload)
    app = make_app(store, tmp_path)
    async with app.run_test(size=(200, 60), notifications=True) as pilot:
        await settle(pilot)
        # The alert fired on the hostile prompt version of the hostile feature, and its title quotes both.
        firing = [a for a in app.alerts.snapshot(FROZEN_NOW) if a.firing]
        alert = next(a for a in firing if a.key.startswith("prompt:"))
        assert f["feat"] in alert.title and f["ver"] in alert.title

        # Overview: the banner (the alert title) and the per-model / per-feature figures.
        frame = assert_safe(app, "overview")
        banner = app.screen.query_one(AlertBanner)
        assert banner.has_class("-firing")
        assert_shows(static_text(banner), [alert.title], "banner", limit=200)
        assert_shows(frame.text, [f["model"], f["feat"]], "overview", limit=8)

        # Breakdown, every grouping.
        await pilot.press("2")
        await settle(pilot)
        for by, values in (("model", ["model"]), ("feature", ["feat"]), ("tenant", ["tenant"]),
                           ("prompt", ["pid"]), ("variant", ["variant"]), ("provider", ["prov"])):
            assert app.screen.by == by
            frame = assert_safe(app, f"breakdown by {by}")
            # (provider names are stored lower-cased)
            assert_shows(frame.text, [f[v].lower() if by == "provider" else f[v] for v in values], f"breakdown by {by}")
            if by != "provider":
                await pilot.press("g")
                await settle(pilot)

        # Trends, split by every dimension: series names in the legend table and the chart.
        await pilot.press("7")
        await settle(pilot)
        for _ in range(8):
            by = app.screen.by
            frame = assert_safe(app, f"trends by {by}")
            wanted = {"model": "model", "feature": "feat", "tenant": "tenant", "variant": "variant"}.get(by)
            if wanted:
                assert_shows(frame.text, [f[wanted]], f"trends by {by}", limit=12)
            await pilot.press("g")
            await settle(pilot)

        # Traces: root name and service; then the trace, its waterfall and every detail tab.
        await pilot.press("3")
        await settle(pilot)
        frame = assert_safe(app, "traces")
        assert_shows(frame.text, [f["root"], f["svc"]], "traces")
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen.NAME == "trace"
        frame = assert_safe(app, "trace")
        # The waterfall drops whole label parts (the model first) where the bar leaves no room; the
        # model is checked on the Cost tab below.
        assert_shows(frame.text, [f["root"], f["span"]], "trace")
        await pilot.press("down")  # the LLM call
        await settle(pilot)
        tabs = {
            "c": ("conversation", ["prompt", "completion", "tool", "finish", "name"]),
            "a": ("attributes", ["err", "etype", "key", "val", "feat", "tenant", "pid", "ver", "svc", "model", "prov"]),
            "e": ("events", ["event", "ekey", "eval"]),
            "dollar_sign": ("cost", ["model"]),
        }
        for key, (tab, names) in tabs.items():
            await pilot.press(key)
            await settle(pilot)
            assert_safe(app, f"trace {tab} tab")
            assert_shows(static_text(app.screen.query_one(f"#detail-{tab}", Static)), [f[n] for n in names],
                         f"{tab} tab", limit=30)  # attribute keys are cut at 42 columns
        conversation = static_text(app.screen.query_one("#detail-conversation", Static))
        assert_shows(conversation, [f["role"].lower()], "conversation role", limit=200)

        # Help over the trace.
        await pilot.press("question_mark")
        await settle(pilot)
        assert_safe(app, "help")
        await pilot.press("escape")
        await settle(pilot)

        # Alerts: the table, then acknowledge the hostile alert: the toast quotes its title.
        await pilot.press("5")
        await settle(pilot)
        frame = assert_safe(app, "alerts")
        table = app.screen.query_one("#alerts", KeyedTable)
        assert_shows(table_text(table), [alert.title], "alerts table", limit=40)
        table.move_cursor(row=table.keys().index(alert.key))
        await pilot.press("a")
        await settle(pilot)
        assert app.alerts.get(alert.key).acknowledged
        shown_toasts = [t for t in await toasts(pilot) if "Acknowledged" in t.plain]
        frame = assert_safe(app, "acknowledged toast")
        assert shown_toasts, "no acknowledgement toast"
        toast = shown_toasts[0]
        assert_shows(toast.plain, [f["feat"], f["ver"], f["pid"]], "toast", limit=200)
        assert not [s for s in toast.spans if "@click" in str(s.style) or "link" in str(s.style)], toast.spans

        # Breakdown by feature, Enter: a filter built from the hostile feature, described on the trace list.
        await pilot.press("2")
        await settle(pilot)
        while app.screen.by != "feature":
            await pilot.press("g")
            await settle(pilot)
        groups = app.screen.query_one(KeyedTable)
        groups.move_cursor(row=groups.keys().index(repr((f["feat"],))))
        await pilot.press("enter")
        await settle(pilot)
        frame = assert_safe(app, "drilled traces")
        assert isinstance(app.screen, TracesScreen)
        assert app.screen.flt.text == f"feature={f['feat']}"
        assert_shows(static_text(app.screen.query_one("#traces-filter", Static)), [f["feat"]], "filter line")
        assert_shows(frame.text, [f["root"]], "drilled traces")

        # The filter prompt, pre-filled with that filter: the input shows it, one visible character
        # for each hidden one, and sends nothing raw; the value itself is the filter, untouched.
        await pilot.press("slash")
        await settle(pilot)
        assert isinstance(app.screen, PromptScreen)
        value = app.screen.query_one(Input).value
        assert value == f"feature={f['feat']}"
        frame = assert_safe(app, "filter prompt")
        assert fmt.clean_in_place(value)[:24] in frame.text, frame.lines[-3:]
        # A filter that does not parse: the error quotes it, in a toast.
        app.screen.query_one(Input).value = f["val"]
        await pilot.press("enter")
        await settle(pilot)
        await toasts(pilot)
        assert_safe(app, "bad filter toast")
        # A command that does not parse: the error quotes it too.
        await pilot.press("colon")
        await settle(pilot)
        app.screen.query_one(Input).value = f"window {f['val']}"
        await pilot.press("enter")
        await settle(pilot)
        messages = [t.plain for t in await toasts(pilot)]
        assert_safe(app, "bad command toast")
        assert any("is not a duration" in m and "val:" in m for m in messages), messages
        assert app.is_running and app.return_code is None


async def test_notifications_are_plain_text_whoever_sends_them(tmp_path):
    """The app's `notify` (and a screen's, which passes markup=True) never parses markup."""
    use_utc()
    store = build_hostile_store(tmp_path / "hostile.db", "x")
    app = make_app(store, tmp_path)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        hostile = "[/] [@click=app.quit]q[/] \x1b]8;;file:///etc/passwd\x07x a\u202eb"
        app.notify(hostile, title="[b]t[/b]\x1b[2J")
        app.screen.notify(hostile, markup=True)
        await settle(pilot)
        messages = [t.plain for t in await toasts(pilot)]
        assert_safe(app, "notifications")
        assert len(messages) == 2
        for message in messages:
            assert "[/] [@click=app.quit]q[/] ␛]8;;file:///etc/passwd␇x a⁅U+202E⁆b" in message, message
        assert any(m.startswith("[b]t[/b]␛[2J\n") for m in messages), messages
        # Textual's own toasts, which it writes in markup, are said again in plain words, once.
        app.clear_notifications()
        await pilot.press("ctrl+c")
        app.post_message(events.DeliveryComplete(key="k", path=Path("/tmp/shot[/].svg"), name="screenshot"))
        await settle(pilot)
        messages = sorted(t.plain for t in await toasts(pilot))
        assert len(messages) == 2, messages
        assert messages[0].startswith("Do you want to quit?\nPress ") and "[b]" not in messages[0], messages
        assert messages[1] == "Screenshot\nSaved screenshot to /tmp/shot[/].svg", messages
        assert_safe(app, "Textual's notifications")


def test_clean_shows_hidden_characters():
    assert fmt.clean("a\x1b[2Jb") == "a␛[2Jb"
    assert fmt.clean("\x00\x07\x08\x0d\x7f") == "␀␇␈␍␡"
    assert fmt.clean("a\u202eb\u2066c\u061cd") == "a⁅U+202E⁆b⁅U+2066⁆c⁅U+061C⁆d"
    assert fmt.clean("a\u200bb\u200dc\u2060d\ufeffe") == "a⁅U+200B⁆b⁅U+200D⁆c⁅U+2060⁆d⁅U+FEFF⁆e"
    assert fmt.clean("a\u2028b\u2029c", newlines=True) == "a⁅U+2028⁆b⁅U+2029⁆c"
    assert fmt.clean("\x9b31m\x9d0;x") == "⁅U+009B⁆31m⁅U+009D⁆0;x"
    assert fmt.clean("\ud800") == "⁅U+D800⁆"
    assert fmt.clean("a\nb") == "a␊b" and fmt.clean("a\nb", newlines=True) == "a\nb"
    # Markup stays text, and other scripts and spaces stay as they are.
    assert fmt.clean("[b]x[/b] עברית 中文 \u00a0é") == "[b]x[/b] עברית 中文 \u00a0é"
    # For an input being edited, one character for one, so the cursor stays put.
    assert fmt.clean_in_place("a\x1bb\u202ec\tz") == "a␛b�c␉z"
    assert len(fmt.clean_in_place("\u200b\u2028\x9b")) == 3

