"""The Metrics screen (`8`), driven through Pilot on a store whose metrics were written by the real
decoder (receiver/metrics_normalize.py) and writer (store/metrics.py). Figures are checked against
SQL over that store; hostile names are shown literally."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmobs_tui.app import LlmobsApp
from llmobs_tui.screens.metrics import MetricsScreen
from llmobs_tui.widgets.chart import TimeChart
from llmobs_tui.widgets.keyed_table import KeyedTable
from receiver.metrics_normalize import decode_metrics
from store.connection import open_reader, open_writer
from store.metrics import MetricWriter
from tests.metrics_factory import add_gauge, add_histogram, metrics_request, write_metrics
from tests.tui_fixtures import FROZEN_NOW, use_utc

pytestmark = pytest.mark.anyio

NS = 1_000_000_000
HOSTILE = "[bold red]evil[/]\x1b[31m.metric"


@pytest.fixture(scope="module")
def metrics_store(tmp_path_factory) -> Path:
    use_utc()
    path = tmp_path_factory.mktemp("metrics") / "metrics.db"
    now = FROZEN_NOW
    server = metrics_request("vllm")
    add_gauge(server, "vllm:num_requests_waiting", "", [(now - 300, {"model_name": "llama"}, 3.0),
                                                     (now - 60, {"model_name": "llama"}, 5.0)])
    add_gauge(server, "vllm:num_requests_running", "", [(now - 60, {"model_name": "llama"}, 12.0)])
    add_gauge(server, "vllm:kv_cache_usage_perc", "", [(now - 300, {"model_name": "llama"}, 0.5),
                                                    (now - 60, {"model_name": "llama"}, 0.82)])
    add_gauge(server, "hw.gpu.utilization", "1", [(now - 60, {"hw.id": "gpu0"}, 0.9), (now - 60, {"hw.id": "gpu1"}, 0.7)])
    app = metrics_request("chat-app")
    for model, tokens in (("gpt-4o", 1200.0), ("claude", 800.0)):
        add_histogram(app, "gen_ai.client.token.usage", "{token}", now - 120,
                   {"gen_ai.request.model": model, "gen_ai.token.type": "input", "user.id": "u-42"},
                   [100, 1000, 10000], [0, 1, 1, 0], tokens)
    add_histogram(app, "gen_ai.client.operation.duration", "s", now - 120, {"gen_ai.request.model": "gpt-4o"},
               [0.5, 1, 2, 4], [1, 2, 3, 0, 0], 6.0)
    add_gauge(app, HOSTILE, "", [(now - 60, {"who": "[link=http://x]click[/link]"}, 7.0)])
    write_metrics(path, [server, app], now)
    return path


def make_app(store: Path) -> LlmobsApp:
    return LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None)


async def settle(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.app.tick()
    await pilot.pause()


def cells(table: KeyedTable) -> dict[str, list[str]]:
    keys = table.keys()  # the table's row keys in order (KeyedTable.keys), not a dict's
    return {key: [getattr(c, "plain", str(c)) for c in table.get_row(key)] for key in keys}


def sql(store: Path, query: str, params: tuple = ()) -> list[tuple]:
    db = open_reader(store)
    try:
        return db.execute(query, params).fetchall()
    finally:
        db.close()


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_key_8_shows_serving_genai_gpu_and_other_metrics(metrics_store, size):
    app = make_app(metrics_store)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("8")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, MetricsScreen)
        table = screen.query_one("#metrics-list", KeyedTable)
        shown = cells(table)
        keys = table.keys()
        sections = [k for k in keys if k.startswith("section:")]
        assert sections == ["section:GenAI client", "section:Model serving", "section:GPU", "section:Other metrics"]

        def row_of(name: str, series: str = "") -> list[str]:
            found = [v for k, v in shown.items() if screen.metric_name(k) == name and series in v[1]]
            assert found, (name, series, shown)
            return found[0]

        # The serving section starts with the queue, then running, then the KV cache.
        serving = keys[keys.index("section:Model serving") + 1:keys.index("section:GPU")]
        assert [screen.metric_name(k) for k in serving] == [
            "vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"]
        assert row_of("vllm:num_requests_waiting")[2] == "5"  # the newest sample
        assert row_of("vllm:kv_cache_usage_perc")[2] == "82.0%"
        assert row_of("hw.gpu.utilization", "gpu0")[2] == "90.0%"
        assert row_of("hw.gpu.utilization", "gpu1")[2] == "70.0%"
        # Token usage per model (user.id is not a series dimension): the sum is the stored total.
        stored = dict(sql(metrics_store, "SELECT json_extract(s.attrs_json, '$.\"gen_ai.request.model\"'), "
                                         "sum(p.total) FROM metric_series s JOIN metric_points p ON p.series_id = s.id "
                                         "WHERE s.name = 'gen_ai.client.token.usage' AND p.res = 3600 GROUP BY 1"))
        assert stored == {"gpt-4o": 1200.0, "claude": 800.0}
        if size[0] >= 140:  # the detail column is cut at 80 columns
            assert "Σ 1.2k" in row_of("gen_ai.client.token.usage", "gpt-4o")[3]
            assert "p95" in row_of("gen_ai.client.operation.duration")[3]
        # A hostile name and attribute are shown literally, control characters made visible.
        hostile = [v for v in shown.values() if "evil" in v[0]]
        assert hostile and hostile[0][0].strip().startswith("[bold red]evil[/]")
        assert "\x1b" not in hostile[0][0]
        assert "[link=http://x]" in hostile[0][1] or size[0] < 140

        # Enter on the KV cache row charts it: the mean per 10 s bucket, as the store holds it.
        table.move_cursor(row=keys.index(next(k for k in keys if screen.metric_name(k) == "vllm:kv_cache_usage_perc")))
        await pilot.press("enter")
        await settle(pilot)
        chart = screen.query_one("#metrics-chart", TimeChart)
        assert chart.border_title == "vllm:kv_cache_usage_perc"  # no unit: Prometheus names carry none
        values = sorted(v for line in chart.data.lines for v in line.values if v is not None)
        stored_values = sorted(r[0] for r in sql(
            metrics_store, "SELECT p.total / p.n FROM metric_series s JOIN metric_points p ON p.series_id = s.id "
                           "WHERE s.name = 'vllm:kv_cache_usage_perc' AND p.res = 10"))
        assert values == pytest.approx(stored_values) and len(values) == 2
        assert chart.size.height >= (8 if size[1] < 40 else 14)


async def test_a_histogram_chart_draws_p50_and_p95(metrics_store):
    app = make_app(metrics_store)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("8")
        await settle(pilot)
        screen = app.screen
        table = screen.query_one("#metrics-list", KeyedTable)
        keys = table.keys()
        key = next(k for k in keys if screen.metric_name(k) == "gen_ai.client.operation.duration")
        table.move_cursor(row=keys.index(key))
        await pilot.press("enter")
        await settle(pilot)
        chart = screen.query_one("#metrics-chart", TimeChart)
        assert [line.label for line in chart.data.lines] == ["p50", "p95"]
        p50 = [v for v in chart.data.lines[0].values if v is not None]
        p95 = [v for v in chart.data.lines[1].values if v is not None]
        # Six observations: one in (0, 0.5], two in (0.5, 1], three in (1, 2]: p50 in the 2nd, p95 the 3rd
        # bucket, each at its bucket's midpoint within the log buckets' 2 %.
        assert p50 == [pytest.approx(0.75, rel=0.03)] and p95 == [pytest.approx(1.5, rel=0.03)]


async def test_an_empty_store_says_how_to_send_metrics(tmp_path):
    db = open_writer(tmp_path / "empty.db")
    db.close()
    app = make_app(tmp_path / "empty.db")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("8")
        await settle(pilot)
        chart = app.screen.query_one("#metrics-chart", TimeChart)
        assert "no OTLP metrics" in chart.data.empty_text


@pytest.mark.parametrize("payload", ["click", "link", "broken", "osc8", "controls"])
async def test_hostile_metric_names_and_attributes_are_shown_never_interpreted(tmp_path, payload):
    from tests.test_markup_safety import HOSTILE, assert_safe, assert_shows

    text = HOSTILE[payload]
    request = metrics_request(text)
    add_gauge(request, f"vllm:num_requests_waiting{text}", "", [(FROZEN_NOW - 60, {"model_name": text}, 4.0)])
    add_gauge(request, text, "", [(FROZEN_NOW - 60, {"gen_ai.request.model": text}, 2.0)])
    db = open_writer(tmp_path / "hostile.db")
    try:
        rows, _ = decode_metrics(request, int(FROZEN_NOW * NS))
        MetricWriter(db).write([rows])
    finally:
        db.close()
    app = make_app(tmp_path / "hostile.db")
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("8")
        await settle(pilot)
        frame = assert_safe(app, "metrics")
        assert_shows(frame.text, [text], "metrics", limit=12)
        table = app.screen.query_one("#metrics-list", KeyedTable)
        for row in range(table.row_count):  # chart every metric: its name is the chart's title
            table.move_cursor(row=row)
            await pilot.press("enter")
            await settle(pilot)
            assert_safe(app, f"metrics chart {row}")


def _card_text(screen, card_id: str) -> str:
    from tests.test_tui import card_text

    return " ".join(card_text(screen, card_id).split())


async def test_the_overview_saturation_shows_a_model_servers_queue_and_kv_cache(metrics_store, tmp_path):
    app = make_app(metrics_store)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        text = _card_text(app.screen, "#card-saturation")
        assert "queue 5 waiting · 12 running" in text, text  # the newest samples (5, not the earlier 3)
        assert "KV cache 82.0%" in text, text
    # A store without a model server's metrics: the card as before.
    db = open_writer(tmp_path / "plain.db")
    db.close()
    app = make_app(tmp_path / "plain.db")
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        text = _card_text(app.screen, "#card-saturation")
        assert "queue" not in text and "KV cache" not in text and "in flight" in text, text


async def test_a_server_silent_for_minutes_is_not_saturating(metrics_store):
    app = LlmobsApp(metrics_store, clock=lambda: FROZEN_NOW + 600, refresh_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        assert "queue" not in _card_text(app.screen, "#card-saturation")


def test_two_services_series_with_the_same_attributes_are_named_by_their_service():
    from llmobs_tui.screens.metrics import list_rows
    from store.metrics import MetricsOverview, SeriesSummary

    def gpu(series_id: int, service: str, gpu_id: str, value: float) -> SeriesSummary:
        return SeriesSummary(series_id, "hw.gpu.utilization", "1", "gauge", service, {"hw.id": gpu_id}, 1, value,
                             value, value, value, 1)

    shared = list_rows(MetricsOverview([gpu(1, "vllm", "gpu0", 0.9), gpu(2, "trainer", "gpu0", 0.4),
                                        gpu(3, "vllm", "gpu1", 0.7)], 0, 3600))
    assert [label for _key, _section, s, label in shared if s is not None] == [
        "trainer id=gpu0", "vllm id=gpu0", "vllm id=gpu1"]
    alone = list_rows(MetricsOverview([gpu(1, "vllm", "gpu0", 0.9), gpu(3, "vllm", "gpu1", 0.7)], 0, 3600))
    assert [label for _key, _section, s, label in alone if s is not None] == ["id=gpu0", "id=gpu1"]
    # And their chart's lines.
    from store.metrics import parse_chart

    now = 7200.0
    rows = [(1, "1", "gauge", "vllm", '{"hw.id": "gpu0"}', 3600, 1, 0.9, 0.9, None),
            (2, "1", "gauge", "trainer", '{"hw.id": "gpu0"}', 3600, 1, 0.4, 0.4, None)]
    assert sorted(line.label for line in parse_chart("hw.gpu.utilization", 3600, now, rows).lines) == [
        "trainer id=gpu0", "vllm id=gpu0"]
    assert [line.label for line in parse_chart("hw.gpu.utilization", 3600, now, rows[:1]).lines] == ["id=gpu0"]
