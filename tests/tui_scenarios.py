"""Named UI states, replayed by the snapshot tests and by the screenshot script."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from llmobs_tui.alerting.live import EngineAlerts
from llmobs_tui.app import LlmobsApp
from llmobs_tui.config import DEMO_CONFIG, load_config
from llmobs_tui.widgets.chrome import IngestStatus
from store.connection import open_reader
from tests.tui_fixtures import FROZEN_NOW

Scenario = Callable[..., Awaitable[None]]


def fixed_status() -> IngestStatus:
    """What an embedded receiver's status line shows; fixed, so that pictures are reproducible
    (a real store path or a live rate would differ from run to run)."""
    return IngestStatus(address="127.0.0.1:4317 · http://127.0.0.1:4318", spans_per_s=184.0, queue=0,
                        rejected_spans=0, rejected_requests=0, store_bytes=48_300_000)


def make_app(store: Path) -> LlmobsApp:
    """The app as `llmobs-tui demo` runs it (the demo's alert rules), on the fixture store."""
    alerts = EngineAlerts(store, load_config(DEMO_CONFIG))
    alerts.evaluate_now(FROZEN_NOW)  # before the app starts, so no tick waits on the rules' thread
    return LlmobsApp(store, clock=lambda: FROZEN_NOW, refresh_s=None, status=fixed_status,
                     alerts=alerts)


async def settle(pilot) -> None:
    for _ in range(2):  # a screen switch schedules its refresh after the next repaint
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
    await pilot.app.tick()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def showcase_trace(store: Path) -> bytes:
    """The agentic trace with the most LLM calls and a failed call: the richest waterfall."""
    db = open_reader(store)
    try:
        return db.execute(
            "SELECT trace_id FROM traces WHERE errors_api > 0 AND start_ns > ? "
            "ORDER BY llm_calls DESC, spans DESC, trace_id LIMIT 1", (int((FROZEN_NOW - 1800) * 1e9),)).fetchone()[0]
    finally:
        db.close()


def similar_trace(store: Path, trace_id: bytes) -> bytes:
    """Another trace with the same root name: what a diff is for."""
    db = open_reader(store)
    try:
        return db.execute(
            "SELECT trace_id FROM traces WHERE root_name = (SELECT root_name FROM traces WHERE trace_id = ?) "
            "AND trace_id != ? ORDER BY start_ns DESC, trace_id LIMIT 1", (trace_id, trace_id)).fetchone()[0]
    finally:
        db.close()


async def overview(pilot) -> None:
    await settle(pilot)


async def overview_compare(pilot) -> None:
    """Compared with the previous hour (`v`), the oldest change marker selected (`]`)."""
    await settle(pilot)
    await pilot.press("v")
    await settle(pilot)
    await pilot.press("right_square_bracket")
    await settle(pilot)


async def breakdown_compare(pilot) -> None:
    await pilot.press("2")
    await pilot.press("v")
    await settle(pilot)


async def breakdown(pilot) -> None:
    await pilot.press("2")
    await settle(pilot)


async def breakdown_by_prompt(pilot) -> None:
    await pilot.press("2")
    await settle(pilot)
    for _ in range(3):
        await pilot.press("g")
    await settle(pilot)


async def traces(pilot) -> None:
    await pilot.press("3")
    await settle(pilot)


async def traces_filtered(pilot) -> None:
    pilot.app.open_traces("model=~claude status=error", "cost", True)
    await settle(pilot)


async def trace(pilot) -> None:
    pilot.app.open_trace(showcase_trace(pilot.app.db_path), slowest=True)
    await settle(pilot)


async def trace_cost(pilot) -> None:
    await trace(pilot)
    await pilot.press("dollar_sign")
    await settle(pilot)


async def alerts(pilot) -> None:
    await pilot.press("5")
    await settle(pilot)


async def alerts_acknowledged(pilot) -> None:
    """The first alert acknowledged: the banner moves on to the next one."""
    await alerts(pilot)
    await pilot.press("a")
    await settle(pilot)


async def help_screen(pilot) -> None:
    await trace(pilot)
    await pilot.press("question_mark")
    await settle(pilot)


async def traces_text_search(pilot) -> None:
    pilot.app.open_traces('text:"refund one of them"', "start", True)
    await settle(pilot)


async def trace_search(pilot) -> None:
    await trace(pilot)
    await pilot.press("slash")
    await pilot.press(*"refund")
    await pilot.press("enter")
    await settle(pilot)


async def why_slow(pilot) -> None:
    await trace(pilot)
    await pilot.press("w")
    await settle(pilot)


async def trace_diff(pilot) -> None:
    """The showcase trace marked, then compared with the next trace of the same root."""
    await trace(pilot)
    await pilot.press("m")
    pilot.app.open_trace(similar_trace(pilot.app.db_path, showcase_trace(pilot.app.db_path)))
    await settle(pilot)
    await pilot.press("d")
    await settle(pilot)


async def sessions(pilot) -> None:
    await pilot.press("6")
    await settle(pilot)


async def sessions_by_user(pilot) -> None:
    await sessions(pilot)
    await pilot.press("u")
    await settle(pilot)


async def conversation(pilot) -> None:
    await sessions(pilot)
    await pilot.press("N")  # most turns first
    await settle(pilot)
    await pilot.press("enter")
    await settle(pilot)


async def trends(pilot) -> None:
    """Trends (`7`): p95 latency by model, the top 8 series over the hour."""
    await pilot.press("7")
    await settle(pilot)


async def trends_variants(pilot) -> None:
    """Trends split by variant, with the two-variant comparison under the chart."""
    await pilot.press("7")
    await settle(pilot)
    while pilot.app.screen.by != "variant":
        await pilot.press("g")
    await settle(pilot)


async def metrics(pilot) -> None:
    """Metrics (`8`): the model server's queue and KV cache, GPUs, the app's GenAI instruments."""
    await pilot.press("8")
    await settle(pilot)


SCENARIOS: dict[str, Scenario] = {
    "overview": overview,
    "overview-compare": overview_compare,
    "breakdown": breakdown,
    "breakdown-compare": breakdown_compare,
    "breakdown-prompt": breakdown_by_prompt,
    "traces": traces,
    "traces-filtered": traces_filtered,
    "trace": trace,
    "trace-cost": trace_cost,
    "traces-text-search": traces_text_search,
    "trace-search": trace_search,
    "why-slow": why_slow,
    "trace-diff": trace_diff,
    "sessions": sessions,
    "sessions-by-user": sessions_by_user,
    "conversation": conversation,
    "trends": trends,
    "trends-variants": trends_variants,
    "metrics": metrics,
    "alerts": alerts,
    "alerts-acknowledged": alerts_acknowledged,
    "help": help_screen,
}
SIZES = ((80, 24), (160, 48))
