"""The `meta` table: small key → text values the store keeps about itself (the price table a
store was last repriced with, an attach cache's resume cursor). Writes go through the writer's
connection, each its own statement in autocommit, as before."""

from __future__ import annotations

import sqlite3

PRICES_DIGEST = "prices_digest"


def get_meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def set_prices_digest(db: sqlite3.Connection, digest: str) -> None:
    """Record the price table the stored costs were last computed with (`reprice`)."""
    set_meta(db, PRICES_DIGEST, digest)
