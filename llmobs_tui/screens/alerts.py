"""Alerts: the SLO table (objective, current, error budget left, burn rates), the firing and
recently resolved alerts, and below them the drift panel (the window's token lengths, refusal and
failed-output rates and evaluation scores against the 7 days before). `a` acknowledges (the banner
stops showing it), Enter opens the example trace. The rules come from the alerting module
(`llmobs.toml`); this screen shows what the app's alert source holds."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.screens.base import LiveScreen
from llmobs_tui.units import format_duration
from llmobs_tui.widgets.drift_panel import DriftPanel
from llmobs_tui.widgets.keyed_table import KeyedTable
from llmobs_tui.widgets.quiet import update_static
from store import drift

BURN_WINDOWS = ((3600, "1h×"), (6 * 3600, "6h×"), (3 * 86400, "3d×"))


def burn_text(rate: float | None) -> Text:
    if rate is None:
        return Text("–", style="dim")
    style = "bold red" if rate >= 14.4 else "red" if rate >= 6 else "yellow" if rate >= 1 else ""
    return Text(f"{rate:.1f}", style=style)


def budget_text(left: float | None) -> Text:
    if left is None:
        return Text("–", style="dim")
    style = "bold red" if left <= 0 else "yellow" if left < 0.25 else "green"
    return Text(f"{left * 100:.0f}%", style=style)


def pct_text(value: float | None) -> Text:
    return Text("–", style="dim") if value is None else Text(f"{value * 100:.2f}%")


def rules_guide(source) -> Text | None:
    """Nothing fires and no rules file is loaded: how to get rules, and what runs without one."""
    config = getattr(source, "config", None)
    if config is not None and config.path is not None and (config.slos or config.alerts.daily_cost_usd):
        return None  # the user's own rules, and the SLO table above shows them
    text = Text("No llmobs.toml is loaded, so no SLOs or cost budgets are set.", style="bold")
    text.append("\n  llmobs-tui init", style="bold cyan")
    text.append("  writes a commented example (SLOs, budgets, thresholds)\n"
                "  to ./llmobs.toml, which the TUI reads when it starts; or pass ")
    text.append("--config FILE", style="bold cyan")
    text.append(".\n\n")
    if config is None:
        text.append("No alert rules run in this session.", style="dim")
        return text
    settings = config.alerts
    spikes = ", ".join(f"{name.replace('_', ' ')} ≥ {share:.0%}" for name, share in settings.error_spike.items())
    text.append("Without one, the built-in rules watch:\n", style="bold")
    for line in (
        f"  errors: {spikes}",
        f"    of calls over {format_duration(settings.error_spike_window_s)}",
        f"  prompts: a version costing ≥ {settings.prompt_regression_factor:g}× per call what the feature's",
        "    other versions cost over the prior 7 days",
        f"  caching: a feature's cache-hit rate {settings.cache_hit_drop:.0%} below the prior week",
        f"  providers: a model decoding {settings.decode_drop:.0%} slower, or its median time to",
        f"    first token {settings.ttft_rise:g}× the prior week",
        f"  drift: a feature's token lengths per call at PSI ≥ {settings.drift_psi:g} against the",
        f"    prior week (each needs {settings.drift_min_calls} calls in the last "
        f"{format_duration(settings.drift_window_s)})",
    ):
        text.append(line + "\n", style="dim")
    text.append(f"  (each needs at least {settings.min_calls} calls to judge)", style="dim")
    return text


class AlertsScreen(LiveScreen):
    WARM_WITH_DATA = True
    NAME = "alerts"
    DEFAULT_CSS = """
    AlertsScreen #slos { height: auto; max-height: 40%; }
    AlertsScreen #alerts { height: auto; max-height: 40%; }
    AlertsScreen #alerts-empty { height: auto; padding: 1 1; display: none; }
    AlertsScreen.short #alerts { height: 1fr; max-height: 100%; }
    """
    BINDINGS = [
        Binding("enter", "open", "Example trace", show=False),
        Binding("a", "acknowledge", "Acknowledge"),
    ]

    # Columns by terminal width, as on the Traces screen: narrow terminals fold value into the title.
    WIDE_WIDTH = 110
    # Below this height the drift panel folds to its summary line: the alerts keep the rows.
    DRIFT_MIN_HEIGHT = 36
    # The week's evaluation means read every scored log of the week: read again this often, not every tick.
    EVAL_BASELINE_TTL_S = 300
    _eval_baseline: tuple[float, float, dict] | None = None  # (window, read at, name → (mean, count))

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome_top()
        yield Static(id="alerts-note")
        yield Static(id="alerts-empty")
        yield KeyedTable(id="slos")
        yield KeyedTable(id="alerts")
        yield DriftPanel(id="drift")
        yield from self.compose_chrome_bottom()

    def on_mount(self) -> None:
        self._wide: bool | None = None
        self._set_columns()
        self._set_height()
        self.query_one("#slos", KeyedTable).display = False
        self.query_one("#alerts", KeyedTable).focus()

    def on_resize(self) -> None:
        if self._set_columns() | self._set_height():
            self.llmobs.wake()

    def _set_height(self) -> bool:
        short = 0 < self.size.height < self.DRIFT_MIN_HEIGHT
        if short == self.has_class("short"):
            return False
        self.set_class(short, "short")
        self.query_one(DriftPanel).set_class(short, "compact")
        return True

    def _drift_settings(self) -> tuple[float, int]:
        # The alert source's settings when it has rules; the rule's defaults otherwise. (Not via
        # llmobs_tui.config: it reaches into receiver/, which the read side never imports.)
        config = getattr(self.llmobs.alerts, "config", None)
        if config is None:
            return drift.PSI_SHIFTED, drift.MIN_CALLS
        return config.alerts.drift_psi, config.alerts.drift_min_calls

    @property
    def wide(self) -> bool:
        return self.size.width >= self.WIDE_WIDTH or not self.size.width

    def _set_columns(self) -> bool:
        wide = self.wide
        if wide == self._wide:
            return False
        self._wide = wide
        slos = self.query_one("#slos", KeyedTable)
        alerts = self.query_one("#alerts", KeyedTable)
        for table in (slos, alerts):
            table.reset(columns=True)
        slos.add_columns("SLO", "objective", "current", "budget", *(label for _, label in BURN_WINDOWS))
        if wide:
            slos.add_columns("window", "scope")
            alerts.add_columns("state", "sev", "since", "alert", "value", "window", "scope")
        else:
            alerts.add_columns("state", "sev", "since", "alert")
        return True

    async def load(self, reader, now_s: float):
        source = self.llmobs.alerts
        window_s = self.llmobs.window_s
        kept = self._eval_baseline
        fresh = kept is not None and kept[0] == window_s and 0 <= now_s - kept[1] < self.EVAL_BASELINE_TTL_S
        drift = await reader.drift(window_s, now_s, self._drift_settings()[1], kept[2] if fresh and kept else None)
        if not fresh:
            self._eval_baseline = (window_s, now_s, drift.eval_baseline)
        return source.snapshot(now_s), list(source.slo_rows), source.error, now_s, drift

    def show(self, data) -> None:
        alerts, slo_rows, error, now_s, drift = data
        marks, selected = self.llmobs.chart_marks() if hasattr(self.llmobs, "chart_marks") else ([], None)
        self.query_one(DriftPanel).show(drift, self._drift_settings()[0], marks, selected)
        note = self.query_one("#alerts-note", Static)
        firing = [a for a in alerts if a.firing]
        if error:
            update_static(note, fmt.safe(" " + error, style="bold red"))
        elif not alerts and rules_guide(self.llmobs.alerts) is not None:
            update_static(note, Text(" Nothing firing.", style="dim"))  # the guide below says which rules run
        elif not alerts:
            update_static(note, fmt.safe(" " + self.llmobs.alerts.empty_message, style="dim"))
        else:
            acked = sum(1 for a in firing if a.acknowledged)
            text = Text(f" {len(firing)} firing", style="bold")
            if acked:
                text.append(f" ({acked} acknowledged)")
            text.append(f" · {len(alerts) - len(firing)} resolved · a: acknowledge · Enter: example trace", style="dim")
            update_static(note, text)
        self._show_slos(slo_rows)
        empty = self.query_one("#alerts-empty", Static)
        guide = None if alerts or error else rules_guide(self.llmobs.alerts)
        empty.display = guide is not None
        if guide is not None:
            update_static(empty, guide)
        wide = self.wide
        title_width = 56 if wide else max(24, self.size.width - 30)
        rows = []
        for alert in alerts:
            if not alert.firing:
                state = Text("resolved", style="green")
            elif alert.acknowledged:
                state = Text("ACKED", style="yellow")
            else:
                state = Text("FIRING", style="bold red")
            cells = [state, Text(alert.severity, style="bold" if alert.severity == "page" else ""),
                     Text(fmt.ago(int(alert.since_s * 1e9), now_s))]
            if wide:
                cells += [fmt.safe(alert.title, limit=title_width), fmt.safe(alert.value_text, limit=48),
                          fmt.safe(alert.window, limit=16), fmt.safe(alert.scope or "all", limit=40)]
            else:
                cells.append(fmt.safe(f"{alert.title} · {alert.value_text}", limit=title_width))
            rows.append((alert.key, tuple(cells)))
        self.query_one("#alerts", KeyedTable).sync(rows)

    def _show_slos(self, slo_rows) -> None:
        table = self.query_one("#slos", KeyedTable)
        table.display = bool(slo_rows)
        wide = self.wide
        rows = []
        for row in slo_rows:
            spec = row.spec
            cells = [fmt.safe(spec.name, limit=32 if wide else 18), Text(spec.target()), pct_text(row.current),
                     budget_text(row.budget_left), *(burn_text(row.burns.get(w)) for w, _ in BURN_WINDOWS)]
            if wide:
                cells += [Text(format_duration(spec.window_s)), fmt.safe(spec.scope, limit=32)]
            rows.append((spec.name, tuple(cells)))
        table.sync(rows)

    def _selected(self):
        key = self.query_one("#alerts", KeyedTable).cursor_key
        return self.llmobs.alerts.get(key or "") if key else None

    def action_open(self) -> None:
        alert = self._selected()
        if alert is not None and alert.example_trace_id:
            self.llmobs.open_trace(alert.example_trace_id, span_id=alert.example_span_id)
        elif alert is not None:
            self.notify("This alert has no example trace in its window.")

    def action_acknowledge(self) -> None:
        alert = self._selected()
        if alert is None:
            self.notify("Select an alert to acknowledge it.", severity="warning")
        elif not alert.firing:
            self.notify("That alert has already resolved.")
        elif self.llmobs.alerts.acknowledge(alert.key):
            self.notify(f"Acknowledged: {alert.title}. The banner no longer shows it; it stays listed "
                        "here until it resolves.")
            self.llmobs.refresh_chrome(self)
            self.llmobs.wake()
        else:
            self.notify("That alert can no longer be acknowledged.")

    def on_data_table_row_selected(self, event) -> None:
        if event.data_table.id == "alerts":
            self.action_open()
