"""Regenerate screenshots/: every screen at 80×24 and 160×48, from the deterministic store.

    python -m tests.make_screenshots
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from tests.tui_fixtures import build_store, use_utc
from tests.tui_scenarios import SCENARIOS, SIZES, make_app

OUT = Path(__file__).resolve().parent.parent / "screenshots"


async def shoot(store: Path, name: str, size: tuple[int, int]) -> Path:
    app = make_app(store)
    async with app.run_test(size=size) as pilot:
        await SCENARIOS[name](pilot)
        filename = f"{name}-{size[0]}x{size[1]}.svg"
        app.save_screenshot(filename=filename, path=str(OUT))
    return OUT / filename


def main() -> int:
    use_utc()
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(Path(tmp) / "screens.db")
        for name in SCENARIOS:
            for size in SIZES:
                print(asyncio.run(shoot(store, name, size)).relative_to(OUT.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
