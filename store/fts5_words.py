"""The content index's words without FTS5, for a store that has no FTS5 (ClickHouse).

SQLite's content index (store/content_index.py) finds a `text:` search with the FTS5 phrase query
`"w1 w2 … wN" *`: the search's words in order, the last possibly cut short, each word compared after
unicode61's case folding. A store without FTS5 keeps, for each span and log record, its words as one string:
every token of the indexed text, folded, each preceded by one space (` refund policy applies`). The phrase then
matches exactly when ` w1 w2 … wN` is a substring of it (`needle`): a token holds no space, so the substring
starts at a token, takes whole tokens up to the last, and the last as a prefix. One substring search, which
every database does well, and no index of our own to keep.

It is exact only if the words are FTS5's, character for character: which characters are token characters and
how each folds. Python's categories and lower() differ from SQLite's (Unicode 6.1) tables in thousands of
places (combining marks are token characters there; 'İ' does not fold; unassigned code points are tokens),
so both are read from SQLite's own tokenizer, configured as the index is, once per process (0.3–0.7 s): each
code point of the planes where Unicode has separators (0–1 and 14) tokenized after a letter, and before one.
The other planes (ideographs, private use, unassigned) are token characters there, and fold to themselves.
tests/test_fts5_words.py compares the two on every code point.
"""

from __future__ import annotations

import functools
import re
import sqlite3

from store.content_index import TOKENIZER, split_unspaced, strip_marks

# unicode61's ASCII token characters are the letters and digits: every other ASCII character separates.
_ASCII_SEPARATORS = str.maketrans({c: " " for c in map(chr, range(128)) if not c.isalnum()})
# The code points read from SQLite: the Basic and Supplementary Multilingual Planes and the tags.
_READ = (range(0x80, 0xD800), range(0xE000, 0x20000), range(0xE0000, 0xE1000))


@functools.cache
def _tables() -> tuple[re.Pattern[str], dict[int, str], re.Pattern[str]]:
    """(a token's pattern, the folding of the code points that fold, a pattern of the token characters that
    lower() folds otherwise), read from SQLite's tokenizer."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute(f"CREATE VIRTUAL TABLE words USING fts5(body, tokenize = \"{TOKENIZER}\")")
        db.execute("CREATE VIRTUAL TABLE tokens USING fts5vocab(words, 'instance')")
        # Each code point after a letter ("aX"): the token is "a" (a separator) or "a" + its folding.
        after_letter = _one_token_each(db, [c for block in _READ for c in block], "a{}")
        folded = {c: term[1:] for c, term in after_letter.items() if len(term) > 1}
        # Some (unicode61's diacritics, U+0300…) continue a word but cannot start one: before a letter
        # ("Xb"), the token is "b" alone.
        starting = {c for c, term in _one_token_each(db, list(folded), "{}b").items() if len(term) > 1}
    finally:
        db.close()
    upper = [*range(0x20000, 0xE0000), *range(0xE1000, 0x110000)]  # not read: every one is a token character
    first = _character_class(sorted([*starting, *upper]))
    rest = _character_class(sorted([*folded, *upper]))
    folds = {c: term for c, term in folded.items() if term != chr(c)}
    for c in range(ord("A"), ord("Z") + 1):
        folds[c] = chr(c).lower()
    # lower() is C and a dozen times faster than translate(): right for all but these ('İ', 'ϴ', …).
    unlike_lower = [c for c, term in folded.items() if chr(c).lower() != term]
    return (re.compile(f"[0-9A-Za-z{first}][0-9A-Za-z{rest}]*"), folds,
            re.compile(f"[{_character_class(unlike_lower)}]" if unlike_lower else "(?!)"))


def _one_token_each(db: sqlite3.Connection, code_points: list[int], shape: str) -> dict[int, str]:
    """Each code point put in `shape` (which makes exactly one token of it, whatever it is) and tokenized:
    its token, by code point. Thousands to a row, a token per word: reading them costs little."""
    found: dict[int, str] = {}
    for row, at in enumerate(range(0, len(code_points), 4096)):
        chunk = code_points[at:at + 4096]
        db.execute("DELETE FROM words")
        body = " ".join(shape.format(chr(c)) for c in chunk)
        db.execute("INSERT INTO words (rowid, body) VALUES (?, ?)", (row, body))
        terms = db.execute("SELECT offset, term FROM tokens ORDER BY offset").fetchall()
        if len(terms) == len(chunk):
            found.update((chunk[offset], term) for offset, term in terms)
            continue
        for c in chunk:  # a word made no token, or two (another SQLite's tables): one at a time, the first
            db.execute("DELETE FROM words")
            db.execute("INSERT INTO words (rowid, body) VALUES (0, ?)", (shape.format(chr(c)),))
            first = db.execute("SELECT term FROM tokens ORDER BY offset LIMIT 1").fetchone()
            found[c] = first[0] if first else ""
    return found


def _character_class(code_points: list[int]) -> str:
    """These code points (sorted) as the inside of a regular expression's [...], in ranges."""
    ranges: list[list[int]] = []
    for c in code_points:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


def words(text: str) -> str:
    """The words of an indexed text (what store.content_index indexes for a span or a log record) as the
    content index's tokenizer makes them: ' w1 w2 …', folded ('' for a text without one)."""
    if text.isascii():  # most content, in a third of the time a regular expression takes (9 µs a KB)
        found = text.lower().translate(_ASCII_SEPARATORS).split()
        return " " + " ".join(found) if found else ""
    pattern, folds, unlike_lower = _tables()
    found = pattern.findall(text)
    if not found:
        return ""
    joined = " ".join(found)
    return " " + (joined.translate(folds) if unlike_lower.search(joined) else joined.lower())


def needle(user_text: str) -> str:
    """A `text:` search as the substring of `words` it matches (store.content_index.phrase_query's phrase);
    '' for a search without a word (which filtering refuses)."""
    return words(split_unspaced(strip_marks(user_text)))
