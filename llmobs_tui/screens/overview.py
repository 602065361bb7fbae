"""Overview: the golden signals of the window, each figure a way into the traces behind it, and
four charts of the window with axes (latency, calls, cost burn, tokens), the compared past period
faint under them (`v`) and the change markers (`[` `]`)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid, VerticalScroll
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.alerting.runaway import RunawayDetector, RunawayReport
from llmobs_tui.compare import COMPARE_WORDS, delta_text
from llmobs_tui.screens.base import LiveScreen
from llmobs_tui.widgets.change_line import ChangeLine
from llmobs_tui.widgets.chart import ChartData, Line, Threshold, TimeChart
from llmobs_tui.widgets.chrome import empty_store_text, empty_window_text
from llmobs_tui.widgets.runaway_panel import RunawayPanel
from llmobs_tui.widgets.stat_card import Drill, Figure, StatCard
from store.charts import ERROR_LAYERS, LATENCY_QUANTILES, TOKEN_KINDS, Charts, projection_to_midnight
from store.dashboards import Overview
from store.metrics import ServingSaturation


def _pcts(values: list[float | None]) -> Text:
    """p50 · p95 · p99 (the card's subtitle names them), p95 in bold."""
    text = Text()
    for i, value in enumerate(values):
        if i:
            text.append(" · ", style="dim")
        text.append(fmt.seconds(value), style="bold" if i == 1 else "")
    return text


def _value(text: str, style: str = "bold") -> Text:
    return Text(text, style=style)


LATENCY_COLORS = {0.5: "green+", 0.95: "cyan+", 0.99: "magenta+"}
ERROR_COLORS = {"rate limit": "orange+", "provider 5xx": "red+", "other api": "red", "validation": "yellow+",
                "guardrail": "magenta"}
TOKEN_COLORS = {"uncached input": "blue+", "cache read": "cyan+", "cache write": "cyan", "output": "green+",
                "reasoning": "magenta+"}


BUDGET_SCALE = 4.0  # the budget line is drawn when it is at most this many times the day's highest point


def _usd_tick(value: float) -> str:
    return f"${value:,.0f}" if value >= 100 else f"${value:,.2f}"


def overview_chart_data(charts: Charts, thresholds: list[Threshold], budget_usd: float | None
                        ) -> dict[str, ChartData]:
    """The four charts' data (marks left to the caller): pure, so tests check it against SQL."""
    series, past = charts.series, charts.past_series
    latency = [Line(f"p{q * 100:g}", series.latency[q], LATENCY_COLORS[q]) for q in LATENCY_QUANTILES]
    latency.append(Line("TTFT p95", series.ttft_p95, "yellow"))
    if past is not None:
        latency.append(Line("past p95", past.latency[0.95], past=True))
    calls = [Line("ok", series.ok_per_s, "green+")]
    calls += [Line(label, series.errors_per_s[label], ERROR_COLORS[label]) for label, _ in ERROR_LAYERS]
    if past is not None:
        calls.append(Line("past calls/s", past.calls_per_s, past=True))
    tokens = [Line(kind, series.tokens[kind], TOKEN_COLORS[kind]) for kind in TOKEN_KINDS]
    if past is not None:
        tokens.append(Line("past total", [sum(v) for v in zip(*past.tokens.values())], past=True))
    burn = charts.cost
    cost = [Line("today", burn.usd, "yellow+", times=burn.times)]
    proj_times, proj_usd = projection_to_midnight(burn, charts.overview.cost_per_hour_usd)
    cost.append(Line("projection", proj_usd, "yellow", times=proj_times))
    if charts.past_cost is not None:
        cost.append(Line("past day", charts.past_cost.usd, past=True, times=charts.past_cost.times))
    day = [float(burn.midnight_s), float(burn.midnight_s + 86400)]
    highest = max([*proj_usd, *burn.usd, *(charts.past_cost.usd if charts.past_cost else ())], default=0.0)
    # A budget far above the day's spend would squash the spend against the axis: it is drawn only
    # when the curve stays readable under it (the chart's subtitle names it otherwise).
    budget_drawn = budget_usd is not None and 0 < budget_usd <= BUDGET_SCALE * max(highest, 1e-9)
    return {
        "chart-latency": ChartData(series.times, latency, thresholds=thresholds,
                                   y_format=lambda v: "0" if v == 0 else fmt.seconds(v)),
        "chart-calls": ChartData(series.times, calls, stacked=True, y_format=lambda v: f"{v:,.3g}/s"),
        "chart-cost": ChartData(day, cost, thresholds=[Threshold(budget_usd, f"budget {_usd_tick(budget_usd)}/day")]
                                if budget_drawn and budget_usd else [], y_format=_usd_tick),
        "chart-tokens": ChartData(series.times, tokens, stacked=True, y_format=fmt.tokens),
    }


def serving_figures(serving: ServingSaturation | None) -> list[Figure]:
    """The Saturation card's model-server lines: queue waiting / running and the fullest KV cache."""
    if serving is None:
        return []
    slowest = Drill(filter="calls>0", sort="duration", description="slowest traces")
    figures = []
    if serving.waiting is not None or serving.running is not None:
        waiting = "–" if serving.waiting is None else f"{serving.waiting:,.0f}"
        running = "–" if serving.running is None else f"{serving.running:,.0f}"
        figures.append(Figure("queue", _value(f"{waiting} waiting · {running} running",
                                              "bold red" if serving.waiting else "bold"), slowest))
    if serving.kv_cache is not None:
        figures.append(Figure("KV cache", _value(fmt.percent(serving.kv_cache),
                                                 "bold red" if serving.kv_cache >= 0.9 else "bold"), slowest))
    return figures


# Without a local rule engine (alerts from elsewhere) the runaway panel reads at most this often: a
# loop or a ceiling is minutes of behaviour, and the read is ~6 ms of CPU at 3M spans (80–100 ms while
# ingest keeps thousands of tool spans in its window), on every 1 s refresh otherwise.
RUNAWAY_EVERY_S = 5.0


class OverviewScreen(LiveScreen):
    NAME = "overview"
    DEFAULT_CSS = """
    OverviewScreen Grid { grid-size: 2; grid-gutter: 0 1; grid-rows: auto; height: auto; padding: 0 1; }
    OverviewScreen.-wide Grid { grid-size: 3; }
    OverviewScreen #overview-scroll { height: 1fr; }
    OverviewScreen #overview-empty { height: auto; padding: 1 0; display: none; }
    OverviewScreen #overview-charts { grid-size: 1; grid-rows: 12; height: auto; padding: 0 1; }
    OverviewScreen.-wide #overview-charts { grid-size: 2; }
    OverviewScreen.-wide.-tall #overview-charts { grid-rows: 1fr; height: 1fr; min-height: 22; }
    OverviewScreen.-tall StatCard > Sparkline { display: none; }
    """

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome_top()
        yield Static(id="overview-empty")
        with VerticalScroll(id="overview-scroll"):
            yield RunawayPanel(id="overview-runaway")  # hidden while no agent runs away
            with Grid(id="overview-cards"):
                yield StatCard("Latency", id="card-latency")
                yield StatCard("Traffic", id="card-traffic")
                yield StatCard("Errors", id="card-errors")
                yield StatCard("Saturation", id="card-saturation")
                yield StatCard("Cost", id="card-cost")
                yield StatCard("Tokens", id="card-tokens")
            yield ChangeLine(id="overview-changes")
            with Grid(id="overview-charts"):
                yield TimeChart("Latency", id="chart-latency")
                yield TimeChart("Calls/s by outcome", id="chart-calls")
                yield TimeChart("Cost today", id="chart-cost")
                yield TimeChart("Tokens per bucket", id="chart-tokens")
        yield from self.compose_chrome_bottom()

    def on_mount(self) -> None:
        self.query_one("#card-latency", StatCard).focus()

    def on_resize(self) -> None:
        self.set_class(self.size.width >= 150, "-wide")
        # Taller sparklines when the terminal has the rows for them.
        self.set_class(self.size.height >= 40, "-tall")

    async def load(self, reader, now_s: float) -> Charts:
        charts = await reader.charts(self.llmobs.window_s, now_s, self.llmobs.compare_shift_s())
        # Nothing in the window: is it the window, or has nothing ever been sent? (Read only then.)
        self._store_empty = not charts.overview["calls"] and await reader.newest_span_id() == 0
        # A model server's own queue and KV cache (OTLP metrics), when one reports them (store/metrics.py).
        self._serving = await reader.serving_saturation(now_s)
        self._runaway = await self._load_runaway(reader, now_s)
        return charts

    async def _load_runaway(self, reader, now_s: float) -> RunawayReport | None:
        """Agents looping or running past a ceiling, by the alert rules' settings (none loaded: none)."""
        settings = getattr(getattr(self.llmobs.alerts, "config", None), "alerts", None)
        if settings is None:
            return None
        evaluated = getattr(self.llmobs.alerts, "runaway_report", None)
        if evaluated is not None:
            # The alert rules evaluate runaway agents themselves, off the UI thread every 10 s: the
            # panel shows that report. A second detection here cost 80–100 ms of reads on a busy
            # 4M-span store every 5 s, in the Overview's load (so in front of a key that opened it).
            return evaluated
        last_s = getattr(self, "_runaway_at", None)
        if last_s is not None and 0 <= now_s - last_s < RUNAWAY_EVERY_S:
            return getattr(self, "_runaway", None)
        if getattr(self, "_runaway_detector", None) is None:
            self._runaway_detector = RunawayDetector()  # keeps the tool spans' digests between refreshes
        report = await reader.runaway(self._runaway_detector, settings, now_s)
        self._runaway_at = now_s
        return report

    def _show_empty(self, o: Overview) -> None:
        note = self.query_one("#overview-empty", Static)
        if o["calls"]:
            note.display = False
            return
        note.display = True
        if getattr(self, "_store_empty", False):
            note.update(empty_store_text(self.llmobs.status))
        else:
            note.update(empty_window_text("LLM calls", self.llmobs.window_s, "3: the traces that did arrive"))

    def show(self, charts: Charts) -> None:
        o = charts.overview
        self._show_empty(o)
        self._show_cards(o, charts)
        self.query_one(RunawayPanel).show(getattr(self, "_runaway", None))
        marks, selected = self.llmobs.chart_marks()
        self.query_one(ChangeLine).show(self.llmobs.changes, selected)
        budget = self._daily_budget_usd()
        for chart_id, data in overview_chart_data(charts, self._slo_thresholds(), budget).items():
            data.marks, data.selected_mark = marks, selected
            compared = COMPARE_WORDS.get(self.llmobs.compare_mode, "")
            notes = [f"gray: {compared}"] if charts.past else []
            if chart_id == "chart-cost" and budget and not data.thresholds:
                projected = data.lines[1].values[-1] if len(data.lines) > 1 else None
                share = f", {projected / budget:.0%} of it projected" if projected is not None else ""
                notes.append(f"budget {_usd_tick(budget)}/day (off the scale{share})")
            self.query_one(f"#{chart_id}", TimeChart).show(data, " · ".join(notes))

    def _slo_thresholds(self) -> list[Threshold]:
        config = getattr(self.llmobs.alerts, "config", None)
        found = []
        for slo in getattr(config, "slos", ()):
            if slo.kind in ("latency", "ttft") and slo.threshold is not None:
                scope = "" if slo.scope == "all" else f" {slo.scope}"
                found.append(Threshold(slo.threshold, f"SLO {slo.target().split(' ')[0]}{scope}",
                                       "red" if slo.kind == "latency" else "orange"))
        return found

    def _daily_budget_usd(self) -> float | None:
        config = getattr(self.llmobs.alerts, "config", None)
        return getattr(getattr(config, "alerts", None), "daily_cost_usd", {}).get("*")

    def _show_cards(self, o: Overview, charts: Charts) -> None:
        past = charts.past

        def delta(signal: str, now: float | None, then: float | None) -> Text | None:
            return delta_text(signal, now, then) if past is not None else None

        def p95(ov: Overview | None, which: str) -> float | None:
            return ov.percentiles(which)[1] if ov is not None else None
        pst = past  # the compared period's Overview (None: no comparison)
        total = o.percentiles("latency")
        ttft = o.percentiles("ttft")
        tpot = o.percentiles("tpot")
        slowest = Drill(filter="calls>0", sort="duration", description="slowest traces")
        self.query_one("#card-latency", StatCard).show([
            Figure("total", _pcts(total), slowest, delta("latency", total[1], p95(pst, "latency"))),
            Figure("TTFT", _pcts(ttft), Drill(filter=f"ttft>{(ttft[1] or 0):.3f}s", sort="duration",
                                               description="traces with a TTFT above p95"),
                   delta("ttft", ttft[1], p95(pst, "ttft"))),
            Figure("TPOT", _pcts(tpot), slowest, delta("tpot", tpot[1], p95(pst, "tpot"))),
            Figure("decode", _value("–" if o.decode_tokens_per_s is None else f"{o.decode_tokens_per_s:,.0f} tok/s"),
                   slowest, delta("decode", o.decode_tokens_per_s, pst.decode_tokens_per_s if pst else None)),
        ], o.series("p95_latency"), subtitle="p50 · p95 · p99, p95 per bucket")
        self.query_one("#card-traffic", StatCard).show([
            Figure("calls", _value(f"{fmt.rate(o.requests_per_s)}  ({o['calls']:,})"),
                   Drill(description="latest traces"), delta("calls", o.requests_per_s, pst and pst.requests_per_s)),
            Figure("tokens", _value(f"{fmt.tokens(o.tokens_per_s)}/s  "
                                    f"({fmt.tokens(o['input_tokens'] + o['output_tokens'])})"),
                   Drill(sort="tokens", description="most tokens"),
                   delta("tokens", o.tokens_per_s, pst and pst.tokens_per_s)),
            *[Figure(f"· {fmt.clean(model or '–', limit=60)}", _value(fmt.plural(calls, "call"), ""),
                     Drill(filter=f"model={model}" if model else "", description=f"calls to {model}"))
              for model, _cost, calls in o.models[:3]],
        ], o.series("calls"), subtitle="calls per bucket")
        rate_limit = o["err_rate_limit"]
        errors = [
            Figure("api", self._error(o["errors_api"], o.error_rate("errors_api")),
                   Drill(filter="error=~^(rate_limit|provider|client|timeout|network|other)$",
                         description="api errors"),
                   delta("error_rate", o.error_rate("errors_api"), pst and pst.error_rate("errors_api"))),
            Figure("· rate limit", self._error(rate_limit, o.error_rate("err_rate_limit"), sub=True),
                   Drill(filter="error=rate_limit", description="429s")),
            Figure("· provider 5xx", self._error(o["err_provider"], o.error_rate("err_provider"), sub=True),
                   Drill(filter="error=provider", description="provider errors")),
            Figure("· other api", self._error(o["err_client"] + o["err_timeout"] + o["err_network"] + o["err_other"],
                                              None, sub=True),
                   Drill(filter="error=~^(client|timeout|network|other)$", description="other api errors")),
            Figure("validation", self._error(o["errors_validation"], o.error_rate("errors_validation")),
                   Drill(filter="error=validation", description="validation failures"),
                   delta("error_rate", o.error_rate("errors_validation"), pst and pst.error_rate("errors_validation"))),
            Figure("guardrail", self._error(o["errors_guardrail"], o.error_rate("errors_guardrail")),
                   Drill(filter="error=guardrail", description="guardrail blocks"),
                   delta("error_rate", o.error_rate("errors_guardrail"), pst and pst.error_rate("errors_guardrail"))),
        ]
        self.query_one("#card-errors", StatCard).show(errors, o.series("errors"), subtitle="errors per bucket")
        share = o.rate_limit_share
        self.query_one("#card-saturation", StatCard).show([
            *serving_figures(getattr(self, "_serving", None)),
            Figure("in flight", _value(f"{o.in_flight:.1f} calls avg"), Drill(sort="calls", description="busiest"),
                   delta("in_flight", o.in_flight, pst and pst.in_flight)),
            Figure("429 share", _value(fmt.percent(share), "bold red" if share and share > 0.05 else "bold"),
                   Drill(filter="error=rate_limit", description="429s"),
                   delta("rate_limit", share, pst and pst.rate_limit_share)),
            Figure("unpriced", _value(fmt.plural(o['unpriced_calls'], "call"),
                                      "bold yellow" if o["unpriced_calls"] else ""),
                   Drill(description="latest traces")),
        ], o.series("err_rate_limit"), subtitle="429s per bucket")
        cost_figures = [
            Figure("$/h", _value(fmt.usd(o.cost_per_hour_usd)), Drill(sort="cost", description="most expensive"),
                   delta("cost", o.cost_per_hour_usd, pst and pst.cost_per_hour_usd)),
            Figure("today", _value(f"{fmt.money(o.today_cost_nusd)} → {fmt.usd(o.today_projection_usd)} proj."),
                   Drill(sort="cost", description="most expensive"),
                   # Today so far against the compared day at the same time of day (the cost chart's gray line).
                   delta("cost", charts.cost.total_usd, charts.past_cost.total_usd if charts.past_cost else None)),
        ]
        for feature, cost, calls in o.features[:4]:
            cost_figures.append(Figure(f"· {fmt.clean(feature or 'no feature', limit=60)}",
                                       _value(f"{fmt.money(cost)}  {fmt.plural(calls, 'call')}", ""),
                                       Drill(filter=f"feature={feature}" if feature else "", sort="cost",
                                             description=f"cost of {feature}")))
        self.query_one("#card-cost", StatCard).show(cost_figures, o.series("cost_nusd"), subtitle="cost per bucket")
        inp, cread, cwrite = o["input_tokens"], o["cache_read_tokens"], o["cache_write_tokens"]
        hit = o.totals.cache_hit_rate
        self.query_one("#card-tokens", StatCard).show([
            Figure("input", _value(f"{fmt.tokens(inp)} (uncached {fmt.tokens(max(0, inp - cread - cwrite))})"),
                   Drill(sort="tokens", description="most tokens")),
            Figure("cache", _value(f"hit {fmt.percent(hit)} · r {fmt.tokens(cread)} · w {fmt.tokens(cwrite)}"),
                   Drill(sort="tokens", description="most tokens"),
                   delta("cache_hit", hit, pst and pst.totals.cache_hit_rate)),
            Figure("output", _value(f"{fmt.tokens(o['output_tokens'])} "
                                    f"(reasoning {fmt.tokens(o['reasoning_tokens'])})"),
                   Drill(sort="tokens", description="most tokens")),
        ], o.series("tokens"), subtitle="tokens per bucket")

    @staticmethod
    def _error(count: int, rate: float | None, sub: bool = False) -> Text:
        style = "bold red" if count and not sub else ("red" if count else "")
        text = Text(f"{count:,}", style=style)
        if rate is not None:
            text.append(f"  {fmt.percent(rate)}", style="dim")
        return text

    def on_runaway_panel_opened(self, message: RunawayPanel.Opened) -> None:
        self.llmobs.open_trace(message.trace_id, span_id=message.span_id)

    def on_stat_card_drilled(self, message: StatCard.Drilled) -> None:
        drill = message.drill
        self.llmobs.open_traces(drill.filter, drill.sort, drill.descending, drill.description)
