"""store/fts5_words.py: the words a ClickHouse store searches are SQLite's content index's, character for
character, and a search's needle is in them exactly when the index's phrase query matches."""

from __future__ import annotations

import random
import sqlite3

from store.content_index import TOKENIZER, phrase_query, split_unspaced, strip_marks
from store.fts5_words import needle, words


def _fts5() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE texts USING fts5(body, tokenize = \"{TOKENIZER}\")")
    db.execute("CREATE VIRTUAL TABLE tokens USING fts5vocab(texts, 'instance')")
    return db


def test_every_code_point_is_a_separator_or_a_token_character_folded_as_in_sqlite() -> None:
    """Each code point between two words, and at the start of one: the tokens, in order and folded, are those
    SQLite's tokenizer makes (Python's own categories and lower() differ in thousands of places)."""
    db = _fts5()
    code_points = [c for c in range(0x20, 0x110000) if not 0xD800 <= c < 0xE000]
    texts = {c: f"Qa{chr(c)}Zb {chr(c)}é" for c in code_points}
    db.executemany("INSERT INTO texts (rowid, body) VALUES (?, ?)", texts.items())
    tokens: dict[int, list[tuple[int, str]]] = {}
    for doc, offset, term in db.execute("SELECT doc, offset, term FROM tokens"):
        tokens.setdefault(doc, []).append((offset, term))
    differ = [(hex(c), text) for c, text in texts.items()
              if words(text) != "".join(" " + term for _, term in sorted(tokens.get(c, [])))]
    assert differ == []
    assert words("Refund-POLICY_v2, İstanbul ǅ") == " refund policy v2 İstanbul ǆ"  # SQLite's folds, not Python's


_PIECES = ["refund", "Refund", "REFUNDS", "policy", "pol", "café", "CAFÉ", "cafe", "naïve", "e\u0301", "ß", "straße",
           "İ", "i", "退款", "政策", "退", "ありがとう", "한국어", "ไทย", "🙂", "🤖", "x²", "٣", "Ω", "ω", "µ", "μ",
           "under_score", "dash-ed", "a.b", "42", "'", "\"", " ", "  ", "\n", "\t", ",", "\u00a0", "\u200b", "\ue000",
           "\ue002", "𝐀𝐁", "𐐀", "𐐨"]


def test_a_needle_is_in_the_words_exactly_when_the_phrase_query_matches() -> None:
    """Random texts of words, scripts without spaces, marks, emoji and punctuation, and searches cut from them
    (whole words, words cut short, spans across punctuation, other case): the substring test agrees with FTS5's
    MATCH of the same search on every pair."""
    rng = random.Random(17)
    texts = ["".join(rng.choice(_PIECES) + rng.choice(["", " ", ", ", "\n"]) for _ in range(rng.randint(1, 12)))
             for _ in range(400)]
    db = _fts5()
    # As the index holds them: the texts store.content_index extracts have the marks taken out and a separator
    # between the characters of scripts written without spaces.
    db.executemany("INSERT INTO texts (rowid, body) VALUES (?, ?)",
                   ((i, split_unspaced(strip_marks(text))) for i, text in enumerate(texts)))
    searches = set()
    for text in texts[:150]:
        start = rng.randrange(len(text))
        searches.add(text[start:start + rng.randint(1, 14)])
        searches.add(text[start:start + rng.randint(1, 14)].swapcase())
    searches |= {"refund pol", "REFUND", "退款政", "café", "cafe", "e\u0301", "under score", "🙂", "ω", "ss"}
    checked = 0
    for search in sorted(searches):
        wanted = needle(search)
        if not wanted:
            continue  # no word in it: filtering refuses the search
        matched = {row[0] for row in db.execute("SELECT rowid FROM texts WHERE texts MATCH ?", (phrase_query(search),))}
        assert {i for i, text in enumerate(texts) if wanted in words(split_unspaced(strip_marks(text)))} == matched, \
            search
        checked += 1
    assert checked > 200
