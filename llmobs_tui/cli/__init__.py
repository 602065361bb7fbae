"""The `llmobs-tui` command line.

    llmobs-tui           the live TUI (receiver + store + UI; `demo`: on a built-in demo feed)
    llmobs-tui serve     receiver + store, no UI (a sidecar, a cluster, CI)
    llmobs-tui attach    the TUI on a remote `serve --query-port`
    llmobs-tui report    calls, errors, tokens, cost and latency per group, from the store
    llmobs-tui export    one trace as OTLP/JSON that can be sent again
    llmobs-tui traces    the trace list, filtered with the TUI's `/` language (table or JSON)
    llmobs-tui show      one trace's span tree with self time and critical path (tree or JSON)
    llmobs-tui prices    the price table in effect
    llmobs-tui reprice   apply a changed price table to stored history
    llmobs-tui forget    delete every trace of a user, conversation or tenant (deletion on request)
    llmobs-tui check     evaluate the SLOs and alert rules once: exit 0 ok, 1 ticket, 2 page
    llmobs-tui init      write a commented llmobs.toml (SLOs, budgets, alert thresholds)

`main` parses the flags (cli/parser.py), builds the one `Settings` of this invocation
(llmobs_tui/settings.py: environment, files, checks) and hands it to the command's module: live.py
(tui, demo, attach), serve.py, reports.py (report, check, export), investigate.py (traces, show),
prices.py (prices, reprice), forget.py, init.py. Command modules import their heavy dependencies inside the
command, so `--help` and `--version` stay fast and this package imports no Textual.

Every failure a user can cause (a bad flag, a busy port, a corrupt or locked database, a bad price
or config file) ends with one line saying what and how to fix it, and a non-zero exit code.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from llmobs_tui.cli.common import EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE, fail
from llmobs_tui.cli.parser import build_parser
from llmobs_tui.settings import Settings, SettingsError

__all__ = ["build_parser", "main"]


def _commands() -> dict[str, Callable[[Settings], int]]:
    from llmobs_tui.cli import forget, init, investigate, live, prices, reports, serve

    return {
        "tui": live.cmd_tui,
        "demo": live.cmd_tui,
        "attach": live.cmd_attach,
        "serve": serve.cmd_serve,
        "report": reports.cmd_report,
        "check": reports.cmd_check,
        "export": reports.cmd_export,
        "traces": investigate.cmd_traces,
        "show": investigate.cmd_show,
        "prices": prices.cmd_prices,
        "reprice": prices.cmd_reprice,
        "forget": forget.cmd_forget,
        "init": init.cmd_init,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = Settings.from_args(args)
    except SettingsError as exc:
        # `check` gives 1 and 2 their alerting meaning; a config it cannot read is "could not evaluate".
        return fail(str(exc), EXIT_CHECK_FAILED if args.command == "check" else EXIT_USAGE)
    handler = _commands()[settings.command]
    try:
        return handler(settings)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `llmobs-tui report | head` closing the pipe early is not an error.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
