"""Redaction of personal data and secrets in every string of every span, log record, resource and
scope, before it is stored.

Every string is covered, not a list of known content keys: a prompt under `pydantic_ai.all_messages`
or an embedding input under `ai.values` carries the same e-mail as one under `gen_ai.input.messages`.
The cost stays small with a prefilter: the normalizer serializes each span anyway (it stores the
protobuf bytes), and one RE2 scan of those bytes with `Redactor.may_match` (≈1.5 µs per KB) tells
whether any string inside could need redaction. Only then does it walk the span's strings one by one
(`Redactor.redact`). The prefilter is the same pattern with its context assertions (`\b`, `^`, `$`…)
replaced by empty groups: a superset, because a match inside a string is also a run of bytes of the
serialized message, whatever bytes the protobuf framing puts around it.

RE2: one combined pattern scanned by a DFA costs ≈4 µs per KB of clean prose, where Python's
backtracking `re` measured 40–250 µs for the same alternation. Python code runs only for the (rare)
matches, to tell a card (Luhn) from an order number, a phone from a date, an IP address from a
version string. Replacements are plain ASCII without quotes or backslashes, so redacting inside a
JSON string keeps the JSON valid.

What is found, and what is deliberately not:
- e-mail addresses; API keys and tokens (OpenAI/Anthropic/Stripe `sk-…`, AWS `AKIA…`, GitHub,
  Slack, Google, JWTs, `Bearer …`, `password=…`-style assignments);
- phone numbers (10–15 digits written with phone punctuation or a leading +), card numbers (13–19
  digits starting 2–6 that pass the Luhn check), US SSNs (ddd-dd-dddd). A digit run glued to a word
  (`chatcmpl-4111…`, `a716-446655440000` in a UUID, `resp_4155550134`) is part of an identifier and
  kept; dates, and dates followed by an hour (`2024-01-15 10:30`), are kept;
- IPv4 addresses: exactly four dot-separated decimal numbers 0–255, not glued to letters or to
  further dotted numbers (`10.0.0.1` is redacted; `1.2.3`, `1.2.3.4.5`, `v1.2.3.4`, `300.1.1.1` are
  not). A four-part version string whose parts are all ≤ 255 is indistinguishable and is redacted;
- IPv6 addresses: eight hex groups, or a `::`-compressed form with at least one group (`::1`,
  `fe80::1%eth0`, `2001:db8::8a2e:370:7334`, `::ffff:192.0.2.1`), that Python's `ipaddress` accepts
  and that contain a decimal digit (so `dead::beef` and C++'s `std::vector` are words, not
  addresses). Times (`10:30:00`) and MAC addresses (six groups) are not IPv6;
- extra patterns from `llmobs.toml` (`[redaction] patterns`, RE2 syntax), replaced whole by
  `[REDACTED:custom]`; they are tried before the built-in ones.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

import re2

EMAIL = "[REDACTED:email]"
PHONE = "[REDACTED:phone]"
CARD = "[REDACTED:card]"
SSN = "[REDACTED:ssn]"
SECRET = "[REDACTED:secret]"
IP = "[REDACTED:ip]"
CUSTOM = "[REDACTED:custom]"

_HEX = "[0-9A-Fa-f]{1,4}"
_IPV4_TAIL = r"(?:\.[0-9]{1,3}){3}"
DEFAULT_PATTERNS: tuple[str, ...] = (
    # e-mail addresses
    r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9][A-Za-z0-9-]{0,62}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}",
    # API keys: OpenAI/Anthropic/Stripe style, AWS access key ids, GitHub, Slack, Google
    r"\b(?:sk|pk|rk)-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_-]{16,}",
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{30,}",
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
    r"\bAIza[0-9A-Za-z_-]{35}",
    # JWTs and bearer tokens
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    r"[Bb]earer [A-Za-z0-9._~+/-]{16,}=*",
    # key = value assignments of credentials
    r"(?i:api[_-]?key|access[_-]?token|client[_-]?secret|secret[_-]?key|password|passwd)[\"']?\s*[:=]\s*[\"']?"
    r"[^\s\"',;}]{8,}",
    # IPv6 (validated in Python): eight groups, or `::`-compressed with a group on one side, an
    # optional dotted IPv4 tail and an optional zone. `\B` before a leading `::` keeps `Foo::Bar` out.
    rf"(?:\b(?:{_HEX}:){{7}}{_HEX}|\b(?:{_HEX}:){{1,7}}:(?:{_HEX}(?::{_HEX}){{0,5}})?|\B::{_HEX}(?::{_HEX}){{0,6}})"
    rf"(?:{_IPV4_TAIL})?(?:%[0-9A-Za-z_.-]{{1,32}})?",
    # IPv4 candidates (validated in Python): dotted decimal runs of four or more parts
    r"\b[0-9]{1,3}(?:\.[0-9]{1,3}){3,}\b",
    # digit runs of 9+ digits: phones, cards, SSNs (classified in Python)
    r"(?:\+\(?|\(|\b)[0-9](?:[ ().-]{0,3}[0-9]){8,}\b",
)

_OPTIONS = re2.Options()
_OPTIONS.max_mem = 32 << 20
_CUSTOM_GROUP = "llmobs_custom"
_SSN = re2.compile(r"^[0-9]{3}-[0-9]{2}-[0-9]{4}$")
_DATE_LIKE = re2.compile(r"^(?:[0-9]{4}[-./][0-9]{1,2}[-./][0-9]{1,2}|[0-9]{1,2}[-./][0-9]{1,2}[-./][0-9]{2,4})"
                         r"(?:[ T][0-9]{1,2})?$")
_IPV4_SHAPE = re2.compile(r"^[0-9]{1,3}(?:\.[0-9]{1,3}){3,}$")
_ASSIGNMENT_SEPARATORS = ":="
_CREDENTIAL_NAMES = ("api", "access", "client", "secret", "password", "passwd")
_UNANCHORED = re2._Anchor.UNANCHORED  # the bare RE2 binding takes its anchor enum
_NO_MATCH = (-1, -1)


class PatternError(ValueError):
    """A redaction pattern RE2 does not accept, or one that would match the empty string."""


def check_pattern(pattern: str) -> None:
    """Raise PatternError when `pattern` cannot be used as an extra redaction pattern."""
    if not isinstance(pattern, str) or not pattern:
        raise PatternError("a pattern must be a non-empty string")
    try:
        compiled = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        raise PatternError(f"not a valid RE2 pattern: {exc}") from None
    if compiled.search("") is not None:
        raise PatternError("the pattern matches the empty string (it would redact between every character)")
    if _CUSTOM_GROUP in pattern:
        raise PatternError(f"the group name {_CUSTOM_GROUP!r} is reserved")


def without_assertions(pattern: str) -> str | None:
    """`pattern` with every zero-width assertion (`^ $ \\A \\z \\b \\B`) replaced by an empty group:
    the same pattern, minus its dependence on context, so it matches a superset of what it matched.
    None when the pattern is beyond this small scanner (the caller then skips the prefilter)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    class_first = -1  # the index where a `]` is still a literal (just after `[` or `[^`)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                return None
            d = pattern[i + 1]
            if d == "Q":  # \Q…\E is literal text
                end = pattern.find("\\E", i + 2)
                end = n if end < 0 else end + 2
                out.append(pattern[i:end])
                i = end
                continue
            if d in "pPx" and i + 2 < n and pattern[i + 2] == "{":
                end = pattern.find("}", i + 3)
                if end < 0:
                    return None
                out.append(pattern[i:end + 1])
                i = end + 1
                continue
            if not in_class and d in "bBAz":
                out.append("(?:)")
            else:
                out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            if c == "[" and pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                if end < 0:
                    return None
                out.append(pattern[i:end + 2])
                i = end + 2
                continue
            if c == "]" and i != class_first:
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            class_first = i + 2 if pattern.startswith("[^", i) else i + 1
            out.append(pattern[i:class_first])
            i = class_first
            continue
        if c in "^$":
            out.append("(?:)")
        else:
            out.append(c)
        i += 1
    return None if in_class else "".join(out)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _glued(data: bytes, start: int) -> bool:
    """Whether the match at byte `start` continues an identifier: a word character right before it,
    or a `-` right after one (`chatcmpl-4111…`, `a716-4466…`)."""
    if start == 0:
        return False
    before = data[start - 1:start]
    if before.isalnum() or before == b"_":
        return True
    return before == b"-" and start >= 2 and (data[start - 2:start - 1].isalnum() or data[start - 2:start - 1] == b"_")


def _classify_digit_run(run: str) -> str:
    stripped = run.strip(" .-()")
    if _SSN.match(stripped):
        return SSN
    if _DATE_LIKE.match(stripped):
        return run
    digits = "".join(ch for ch in run if "0" <= ch <= "9")
    n = len(digits)
    if 13 <= n <= 19 and "2" <= digits[0] <= "6" and _luhn_ok(digits):
        return CARD
    # A phone number: 10–15 digits, written with phone punctuation or a leading +.
    if 10 <= n <= 15 and (run.startswith("+") or any(c in run for c in " ().-")):
        return PHONE
    return run


def _classify_ipv4(run: str) -> str | None:
    """IP for a dotted quad of 0–255; None for another dotted run (a version, a phone with dots)."""
    parts = run.split(".")
    if len(parts) == 4 and all(int(p) <= 255 for p in parts):
        return IP
    return None


def _classify_ipv6(text: str) -> str:
    address = text.split("%", 1)[0]
    if not any("0" <= c <= "9" for c in address):
        return text
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return text
    return IP


def _classify(text: str, data: bytes, start: int) -> str:
    """The replacement of one match of the built-in patterns (`text`, found at byte `start` of
    `data`): a marker, or `text` itself when it is not what it looked like."""
    first = text[0]
    lowered = text[:16].lower()
    if lowered.startswith(_CREDENTIAL_NAMES):
        # Keep the name of the credential, hide its value.
        cut = min((i for i in (text.find(c) for c in _ASSIGNMENT_SEPARATORS) if i >= 0), default=-1)
        if cut >= 0:
            return text[: cut + 1] + SECRET
    if "@" in text:
        return EMAIL
    if ":" in text:
        return _classify_ipv6(text)
    if "0" <= first <= "9" or first in "+(":
        if _IPV4_SHAPE.match(text):
            ip = _classify_ipv4(text)
            if ip is not None:
                return ip
            return text  # another dotted run: a version, an OID, `300.1.1.1`
        if "0" <= first <= "9" and _glued(data, start):
            return text
        return _classify_digit_run(text)
    return SECRET


def _compile(pattern: str, capture: bool) -> re2._Regexp:
    options = re2.Options()
    options.max_mem = _OPTIONS.max_mem
    options.never_capture = not capture  # one span per call, and the fastest RE2 path
    return re2.compile(pattern, options)


class Redactor:
    """The built-in patterns plus `extra` ones, compiled once (one per decoder process).

    Each call into RE2 costs ≈0.5 µs however short the text, so checks are batched: `may_match`
    scans a whole serialized message, `candidates` a list of strings joined into one buffer, and
    only the strings they point at go through `redact`."""

    __slots__ = ("patterns", "extra", "_find", "_prefilter")

    def __init__(self, extra: Sequence[str] = ()) -> None:
        for pattern in extra:
            check_pattern(pattern)
        self.extra = tuple(extra)
        self.patterns = (*self.extra, *DEFAULT_PATTERNS)
        alternatives = list(DEFAULT_PATTERNS)
        if self.extra:
            custom = "|".join(f"(?:{p})" for p in self.extra)
            alternatives.insert(0, f"(?P<{_CUSTOM_GROUP}>{custom})")
        combined = "|".join(alternatives)
        # The bare RE2 call: no Python Match object, no str↔bytes offset bookkeeping. Group 1 is the
        # custom patterns' group when there are any (RE2 numbers groups left to right).
        self._find = _compile(combined, capture=bool(self.extra))._regexp.Match
        loose = without_assertions(combined)
        prefilter = None
        if loose is not None:
            try:
                prefilter = _compile(loose, capture=False)._regexp.Match
            except re2.error:
                prefilter = None
            if prefilter is not None and prefilter(_UNANCHORED, b"", 0, 0)[0] != _NO_MATCH:
                prefilter = None  # it matches anywhere: no use as a filter
        self._prefilter = prefilter

    def may_match(self, data: bytes) -> bool:
        """False only when no string inside `data` (a serialized protobuf message, or any bytes that
        contain each string's UTF-8 verbatim) can need redaction."""
        if self._prefilter is None:
            return True
        return self._prefilter(_UNANCHORED, data, 0, len(data))[0] != _NO_MATCH

    def candidates(self, texts: Sequence[str]) -> Sequence[int]:
        """The indexes of the `texts` that may need redaction (a superset), from one scan of them
        all joined by NUL bytes."""
        prefilter = self._prefilter
        if prefilter is None:
            return range(len(texts))
        joined = "\x00".join(texts)
        data = joined.encode("utf-8", "surrogatepass")
        end = len(data)
        a, b = prefilter(_UNANCHORED, data, 0, end)[0]
        if a < 0:
            return ()
        # ends[i]: the byte offset where text i + 1 starts (characters are bytes when all is ASCII).
        if end == len(joined):
            ends = list(accumulate(len(t) + 1 for t in texts))
        else:
            ends = list(accumulate(len(t.encode("utf-8", "surrogatepass")) + 1 for t in texts))
        found: set[int] = set()
        while a >= 0:
            first = bisect_right(ends, a)
            last = bisect_right(ends, b - 1) if b > a else first
            found.update(range(first, min(last, len(texts) - 1) + 1))
            position = b if b > a else a + 1
            if position >= end:
                break
            a, b = prefilter(_UNANCHORED, data, position, end)[0]
        return sorted(found)

    def redact(self, text: str) -> str:
        """`text` with e-mails, phones, cards, SSNs, IP addresses, secrets and custom patterns
        replaced; the same object when nothing was replaced."""
        if not text:
            return text
        data = text.encode("utf-8", "surrogatepass")
        end = len(data)
        find = self._find
        custom = bool(self.extra)
        out: list[bytes] = []
        done = 0
        position = 0
        while position <= end:
            spans = find(_UNANCHORED, data, position, end)
            a, b = spans[0]
            if a < 0:
                break
            found = data[a:b].decode("utf-8", "surrogatepass")
            if custom and spans[1][0] >= 0:
                replacement = CUSTOM
            else:
                replacement = _classify(found, data, a)
            if replacement != found:
                out.append(data[done:a])
                out.append(replacement.encode("utf-8"))
                done = b
            position = b if b > a else a + 1
        if not out:
            return text
        out.append(data[done:])
        return b"".join(out).decode("utf-8", "surrogatepass")


DEFAULT_REDACTOR = Redactor()


def redact_text(text: str) -> str:
    """Return `text` with e-mails, phone numbers, card numbers, SSNs, IP addresses and secrets replaced."""
    return DEFAULT_REDACTOR.redact(text)
