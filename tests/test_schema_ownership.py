"""`store/` is the only owner of the schema (issue 12): outside it, no module imports sqlite3 or
aiosqlite (bar the TUI's reader, which holds the read-only aiosqlite connection) and no module
spells SQL over our tables. Renaming a column then means editing `store/` alone."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("llmobs_tui", "receiver")
DRIVERS = {"sqlite3", "aiosqlite"}
DRIVER_ALLOWED = {"llmobs_tui/reader.py"}
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b.*\b(spans|traces|logs|meta|rollups|dims|resources|scopes)\b",
                 re.I | re.S)


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _driver_imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in DRIVERS]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in DRIVERS:
            found.append(f"from {node.module} import …")
    return found


def _sql_literals(tree: ast.AST) -> list[str]:
    found = []
    parts = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    for node in ast.walk(tree):
        if id(node) in parts:  # judged with its f-string
            continue
        if isinstance(node, ast.JoinedStr):  # f-strings: judge the literal parts together
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        else:
            continue
        # SQL is written in capitals here; prose ("select the spans…") is not.
        if re.search(r"\b(SELECT|INSERT|UPDATE|DELETE)\b", text) and SQL.search(text):
            found.append(f"line {node.lineno}: {text[:80]!r}")
    return found


def test_the_walk_sees_the_packages():
    names = {p.relative_to(ROOT).as_posix() for p in _modules()}
    assert "llmobs_tui/reader.py" in names and "receiver/query_server.py" in names


def test_only_the_tui_reader_imports_a_sqlite_driver():
    offenders = []
    for path in _modules():
        rel = path.relative_to(ROOT).as_posix()
        if rel in DRIVER_ALLOWED:
            continue
        offenders += [f"{rel}: {imp}" for imp in _driver_imports(ast.parse(path.read_text(), rel))]
    assert not offenders, "move this into store/ (or take the connection from a store/ function):\n" + "\n".join(offenders)


def test_no_sql_over_our_tables_outside_store():
    offenders = []
    for path in _modules():
        rel = path.relative_to(ROOT).as_posix()
        offenders += [f"{rel} {hit}" for hit in _sql_literals(ast.parse(path.read_text(), rel))]
    assert not offenders, "move this SQL into a typed function in store/:\n" + "\n".join(offenders)


def test_the_checks_catch_what_they_are_for():
    tree = ast.parse('import sqlite3\nfrom aiosqlite import connect\n'
                     'q = f"SELECT max(start_ns) FROM {t} traces"\nw = "INSERT OR REPLACE INTO meta VALUES (?, ?)"\n'
                     'ok = "select the spans you want"\n')
    assert len(_driver_imports(tree)) == 2
    assert [hit.split(":")[0] for hit in _sql_literals(tree)] == ["line 3", "line 4"]
