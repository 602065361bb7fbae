"""`llmobs-tui init`: write the commented example `llmobs.toml` (SLOs, budgets, alert thresholds,
dimensions, redaction) for the user to edit. Reads no config itself, so it works beside a broken one."""

from __future__ import annotations

from pathlib import Path

from llmobs_tui.cli.common import EXIT_OK, EXIT_USAGE, fail
from llmobs_tui.config import EXAMPLE_CONFIG
from llmobs_tui.settings import Settings


def cmd_init(settings: Settings) -> int:
    target = Path(settings.init_path)
    if target.exists() and not settings.force:
        return fail(f"{target} exists; pass --force to overwrite it", EXIT_USAGE)
    try:
        target.write_text(EXAMPLE_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    except OSError as exc:
        return fail(f"cannot write {target}: {exc.strerror or exc}")
    print(f"wrote {target}: edit the SLOs and budgets, then `llmobs-tui check --config {target}` "
          f"(./llmobs.toml is read by default)")
    return EXIT_OK
