"""Overview: the golden signals of the window, each figure a way into the traces behind it."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid, VerticalScroll
from textual.widgets import Static

from llmobs_tui import format as fmt
from llmobs_tui.screens.base import LiveScreen
from llmobs_tui.widgets.chrome import empty_store_text, empty_window_text
from llmobs_tui.widgets.stat_card import Drill, Figure, StatCard
from store.dashboards import Overview


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


class OverviewScreen(LiveScreen):
    NAME = "overview"
    DEFAULT_CSS = """
    OverviewScreen Grid { grid-size: 2; grid-gutter: 0 1; grid-rows: auto; height: auto; padding: 0 1; }
    OverviewScreen.-wide Grid { grid-size: 3; }
    OverviewScreen #overview-scroll { height: 1fr; }
    OverviewScreen #overview-empty { height: auto; padding: 1 0; display: none; }
    """

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome_top()
        yield Static(id="overview-empty")
        with VerticalScroll(id="overview-scroll"), Grid():
            yield StatCard("Latency", id="card-latency")
            yield StatCard("Traffic", id="card-traffic")
            yield StatCard("Errors", id="card-errors")
            yield StatCard("Saturation", id="card-saturation")
            yield StatCard("Cost", id="card-cost")
            yield StatCard("Tokens", id="card-tokens")
        yield from self.compose_chrome_bottom()

    def on_mount(self) -> None:
        self.query_one("#card-latency", StatCard).focus()

    def on_resize(self) -> None:
        self.set_class(self.size.width >= 150, "-wide")
        # Taller sparklines when the terminal has the rows for them.
        self.set_class(self.size.height >= 40, "-tall")

    async def load(self, reader, now_s: float) -> Overview:
        overview = await reader.overview(self.llmobs.window_s, now_s)
        # Nothing in the window: is it the window, or has nothing ever been sent? (Read only then.)
        self._store_empty = not overview["calls"] and (await reader.counts())[1] == 0
        return overview

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

    def show(self, o: Overview) -> None:
        self._show_empty(o)
        total = o.percentiles("latency")
        ttft = o.percentiles("ttft")
        tpot = o.percentiles("tpot")
        slowest = Drill(filter="calls>0", sort="duration", description="slowest traces")
        self.query_one("#card-latency", StatCard).show([
            Figure("total", _pcts(total), slowest),
            Figure("TTFT", _pcts(ttft), Drill(filter=f"ttft>{(ttft[1] or 0):.3f}s", sort="duration",
                                               description="traces with a TTFT above p95")),
            Figure("TPOT", _pcts(tpot), slowest),
            Figure("decode", _value("–" if o.decode_tokens_per_s is None else f"{o.decode_tokens_per_s:,.0f} tok/s"),
                   slowest),
        ], o.series("p95_latency"), subtitle="p50 · p95 · p99, p95 per bucket")
        self.query_one("#card-traffic", StatCard).show([
            Figure("calls", _value(f"{fmt.rate(o.requests_per_s)}  ({o['calls']:,})"),
                   Drill(description="latest traces")),
            Figure("tokens", _value(f"{fmt.tokens(o.tokens_per_s)}/s  "
                                    f"({fmt.tokens(o['input_tokens'] + o['output_tokens'])})"),
                   Drill(sort="tokens", description="most tokens")),
            *[Figure(f"· {fmt.clean(model or '–', limit=60)}", _value(fmt.plural(calls, "call"), ""),
                     Drill(filter=f"model={model}" if model else "", description=f"calls to {model}"))
              for model, _cost, calls in o.models[:3]],
        ], o.series("calls"), subtitle="calls per bucket")
        rate_limit = o["err_rate_limit"]
        errors = [
            Figure("api", self._error(o["errors_api"], o.error_rate("errors_api")),
                   Drill(filter="error=~^(rate_limit|provider|client|timeout|network|other)$",
                         description="api errors")),
            Figure("· rate limit", self._error(rate_limit, o.error_rate("err_rate_limit"), sub=True),
                   Drill(filter="error=rate_limit", description="429s")),
            Figure("· provider 5xx", self._error(o["err_provider"], o.error_rate("err_provider"), sub=True),
                   Drill(filter="error=provider", description="provider errors")),
            Figure("· other api", self._error(o["err_client"] + o["err_timeout"] + o["err_network"] + o["err_other"],
                                              None, sub=True),
                   Drill(filter="error=~^(client|timeout|network|other)$", description="other api errors")),
            Figure("validation", self._error(o["errors_validation"], o.error_rate("errors_validation")),
                   Drill(filter="error=validation", description="validation failures")),
            Figure("guardrail", self._error(o["errors_guardrail"], o.error_rate("errors_guardrail")),
                   Drill(filter="error=guardrail", description="guardrail blocks")),
        ]
        self.query_one("#card-errors", StatCard).show(errors, o.series("errors"), subtitle="errors per bucket")
        share = o.rate_limit_share
        self.query_one("#card-saturation", StatCard).show([
            Figure("in flight", _value(f"{o.in_flight:.1f} calls avg"), Drill(sort="calls", description="busiest")),
            Figure("429 share", _value(fmt.percent(share), "bold red" if share and share > 0.05 else "bold"),
                   Drill(filter="error=rate_limit", description="429s")),
            Figure("unpriced", _value(fmt.plural(o['unpriced_calls'], "call"),
                                      "bold yellow" if o["unpriced_calls"] else ""),
                   Drill(description="latest traces")),
        ], o.series("err_rate_limit"), subtitle="429s per bucket")
        cost_figures = [
            Figure("$/h", _value(fmt.usd(o.cost_per_hour_usd)), Drill(sort="cost", description="most expensive")),
            Figure("today", _value(f"{fmt.money(o.today_cost_nusd)} → {fmt.usd(o.today_projection_usd)} proj."),
                   Drill(sort="cost", description="most expensive")),
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
                   Drill(sort="tokens", description="most tokens")),
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

    def on_stat_card_drilled(self, message: StatCard.Drilled) -> None:
        drill = message.drill
        self.llmobs.open_traces(drill.filter, drill.sort, drill.descending, drill.description)
