"""Content tiers and tail sampling (`--content tiered`): which spans keep their prompts and completions.

Every span keeps its skeleton (timings, tokens, cost, status, model, ids); only content (the
semconv.CONTENT_* attributes and events) is subject to the policy. A span's content is kept when,
in this order of precedence (the first that applies is the tier recorded in its flags, store/models.py):

1. guardrail / validation / error: the span failed (a guardrail or content-filter rejection, output
   the app could not use, any other failed status);
2. burning: an SLO whose scope (feature, model) covers the span is burning its error budget: the
   main process tells every decoder the burning scopes (a control frame, `encode_burning`);
3. slow / costly: its duration (cost) is in a bucket above the configured percentile of its model's
   (an LLM call) or operation's (any other span) recent values, over a sliding window;
4. sampled: its trace id hashes below the `sample` rate: blake2b of the id, not Python's salted
   hash(), so every decoder and every restart keeps or drops the same traces whole.

Otherwise the content is dropped, and the span says so (tier "sampled out").

Decided in the decoder, which sees each span whole and already drops content for `--content none`:
no second pass, no buffering. What that costs in exactness, stated rather than hidden:
- the slow/costly percentiles are per decoder process: each decoder's window sees about 1/N of the
  traffic (requests go to the least busy decoder, so each sees a similar mix); with enough calls per
  window the thresholds agree closely, and until a key has `min_samples` values no span of it is kept
  as slow or costly;
- only the sampled tier is whole-trace. A trace sampled out whose LLM call failed keeps that call's
  content (tier error) and drops its siblings': which spans of a trace fail is known only when each
  ends, in whichever decoder gets it, so "keep the whole trace when one span fails" would need every
  span held until the trace is complete;
- the burning tier matches a span's own feature (or its resource's). A span that inherits its
  feature from the trace root (the writer decides that) has no feature here: while a feature's SLO
  burns, such spans are kept when their model matches — more content kept, never less;
- content sent as log records (GenAI events as logs) is kept when its trace is sampled in, or its span
  was kept by this decoder (when the span came first to the same decoder), or an SLO over all traffic
  is burning; a log record does not carry its span's status, duration or feature, so a failed call's
  log-borne content can be lost when its log records come before its span or to the other decoder.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from math import ceil, log
from typing import Final

from store.histogram import GAMMA, MAX_BUCKET
from store.models import (
    TIER_BURNING,
    TIER_COSTLY,
    TIER_ERROR,
    TIER_GUARDRAIL,
    TIER_SAMPLED,
    TIER_SAMPLED_OUT,
    TIER_SLOW,
    TIER_VALIDATION,
)

MODES: Final = ("all", "none", "tiered")
DEFAULT_MODE: Final = "all"

# A control frame from the main process to a decoder starts with the request header's req_id field
# (protocol.REQUEST_HEADER, a little-endian u64 first) set to 0, which no request uses (ids start at 1).
CONTROL_PREFIX: Final = bytes(8)

_SLICES: Final = 15  # the sliding window, in this many slices (a 15 min window moves by the minute)
_RECOMPUTE_EVERY: Final = 32  # a key's thresholds are recomputed after this many new values (and per slice)
_MAX_KEYS: Final = 2000  # models and operations with a window of their own; more share one
_OTHER_KEY: Final = "\0other"
_KEPT_MEMORY: Final = 65536  # (trace, span) ids of recently kept spans, for their log records
_INV_LOG_GAMMA: Final = 1 / math.log(GAMMA)


@dataclass(frozen=True, slots=True)
class ContentPolicy:
    """`--content` and llmobs.toml's `[content]` table."""

    mode: str = DEFAULT_MODE  # one of MODES
    sample: float = 0.05  # the share of the remaining traces whose content is kept, by trace id
    slowest: float = 0.99  # spans slower than this percentile of their model/operation keep content
    costliest: float = 0.99  # calls costlier than this percentile of their model keep content
    window_s: float = 900.0  # the sliding window those percentiles are taken over
    on_burn: bool = True  # keep all content of a scope whose SLO is burning its error budget
    min_samples: int = 50  # values a model/operation needs in its window before slow/costly apply

    def describe(self) -> str:
        if self.mode != "tiered":
            return f"content {self.mode}"
        parts = [f"errors, p{_pct(self.slowest)} slowest, p{_pct(self.costliest)} costliest",
                 f"{self.sample * 100:g} % of traces"]
        if self.on_burn:
            parts.append("burning SLO scopes")
        return "content tiered (" + ", ".join(parts) + ")"


def _pct(q: float) -> str:
    return f"{q * 100:g}"


def trace_sampled(trace_id: bytes, rate: float) -> bool:
    """The trace-id hash rule: the same answer in every decoder and after every restart."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(trace_id, digest_size=8).digest()
    return int.from_bytes(digest, "big") < int(rate * 2**64)


def encode_burning(scopes: Iterable[tuple[str | None, str | None]]) -> bytes:
    """The control frame telling a decoder which (feature, model) scopes are burning (None: any)."""
    return CONTROL_PREFIX + json.dumps(sorted([list(s) for s in set(scopes)], key=str)).encode()


def decode_burning(frame: bytes) -> frozenset[tuple[str | None, str | None]]:
    return frozenset((feature, model) for feature, model in json.loads(bytes(frame[len(CONTROL_PREFIX):])))


def is_control(frame: bytes) -> bool:
    return frame[:len(CONTROL_PREFIX)] == CONTROL_PREFIX


class _Window:
    """One model's (or operation's) recent durations and costs as log-bucket counts (histogram.py's
    buckets), over the last `_SLICES` slices of the window."""

    __slots__ = ("current", "slices", "latency", "cost", "n_latency", "n_cost", "since", "slow_above",
                 "costly_above")

    def __init__(self) -> None:
        self.current = -1  # the slice values are added to
        # (slice index, its latency buckets, its cost buckets), oldest first: what to take out when it expires
        self.slices: deque[tuple[int, list[int], list[int]]] = deque()
        self.latency: dict[int, int] = {}  # bucket → values, over the window
        self.cost: dict[int, int] = {}
        self.n_latency = 0
        self.n_cost = 0
        self.since = 0  # values added since the thresholds were computed
        self.slow_above: int | None = None  # a bucket above this one is "slow" (None: not enough values)
        self.costly_above: int | None = None

    def advance(self, index: int, slices: int) -> None:
        """Move the window to slice `index`, forgetting the slices that fell out of it."""
        self.current = index
        self.slices.append((index, [], []))
        while self.slices[0][0] <= index - slices:
            _, latency, cost = self.slices.popleft()
            _forget(self.latency, latency)
            _forget(self.cost, cost)
            self.n_latency -= len(latency)
            self.n_cost -= len(cost)

    def recompute(self, slowest: float, costliest: float, min_samples: int) -> None:
        self.slow_above = _quantile_bucket(self.latency, self.n_latency, slowest, min_samples)
        self.costly_above = _quantile_bucket(self.cost, self.n_cost, costliest, min_samples)
        self.since = 0


def _forget(totals: dict[int, int], buckets: list[int]) -> None:
    for bucket in buckets:
        left = totals[bucket] - 1
        if left:
            totals[bucket] = left
        else:
            del totals[bucket]


def _bucket(value: float) -> int:
    """store.histogram.bucket_of, inlined on the decoder's per-span path."""
    if value <= 1.0:
        return 0
    index = ceil(log(value) * _INV_LOG_GAMMA)
    return index if index < MAX_BUCKET else MAX_BUCKET


def _quantile_bucket(counts: dict[int, int], total: int, q: float, min_samples: int) -> int | None:
    """The bucket holding the q-quantile of the counts (the smallest with ≥ q of the values at or below it)."""
    if total < max(1, min_samples) or q >= 1.0:
        return None
    need = math.ceil(q * total)
    seen = 0
    for bucket in sorted(counts):
        seen += counts[bucket]
        if seen >= need:
            return bucket
    return None


class ContentTiers:
    """One decoder's tier decisions and the state they need (windows, burning scopes, kept spans).
    Not thread-safe: one per Normalizer."""

    def __init__(self, policy: ContentPolicy) -> None:
        self.policy = policy
        # A trace is sampled when the first 8 bytes of blake2b(trace id) are below this (2^64: all).
        self._sample_below = int(min(max(policy.sample, 0.0), 1.0) * 2**64)
        self._slice_ns = max(1, int(policy.window_s * 1e9 / _SLICES))
        self._windows: dict[str, _Window] = {}
        self.burning: frozenset[tuple[str | None, str | None]] = frozenset()
        self._kept: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        # The last trace's verdict: the spans of a trace mostly come together, and the hash is a third
        # of a decision's cost.
        self._last_trace: bytes | None = None
        self._last_sampled = False

    def set_burning(self, scopes: Iterable[tuple[str | None, str | None]]) -> None:
        self.burning = frozenset(scopes)

    def sampled(self, trace_id: bytes) -> bool:
        if trace_id == self._last_trace:
            return self._last_sampled
        verdict = int.from_bytes(hashlib.blake2b(trace_id, digest_size=8).digest(), "big") < self._sample_below
        self._last_trace = trace_id
        self._last_sampled = verdict
        return verdict

    def _burns(self, feature: str | None, model: str | None) -> bool:
        for scope_feature, scope_model in self.burning:
            if scope_model is not None and scope_model != model:
                continue
            if scope_feature is not None and feature is not None and scope_feature != feature:
                continue
            return True
        return False

    def decide(self, trace_id: bytes, span_id: bytes, billable: bool, error_class: str | None, failed: bool,
               validation_marker: int, duration_ns: int | None, cost_nusd: int | None, model: str | None,
               operation: str | None, feature: str | None, received_ns: int) -> int:
        """The tier of a span that carries content (store.models TIER_*): a keeping tier or TIER_SAMPLED_OUT.
        Every such span's duration and cost enter its key's window, kept or not."""
        policy = self.policy
        tier = 0
        if error_class == "guardrail":
            tier = TIER_GUARDRAIL
        elif error_class == "validation" or validation_marker:
            tier = TIER_VALIDATION
        elif failed or error_class is not None:
            tier = TIER_ERROR
        elif self.burning and policy.on_burn and self._burns(feature, model):
            tier = TIER_BURNING
        # The windows: a span is compared with the values before it, then joins them.
        key = (model if billable else operation) or _OTHER_KEY
        window = self._windows.get(key)
        if window is None:
            window = self._window(key)
        index = received_ns // self._slice_ns
        if index != window.current:
            window.advance(index, _SLICES)
            window.recompute(policy.slowest, policy.costliest, policy.min_samples)
        elif window.since >= _RECOMPUTE_EVERY or (
                window.since and window.slow_above is None and window.costly_above is None):
            window.recompute(policy.slowest, policy.costliest, policy.min_samples)
        _, latency_slice, cost_slice = window.slices[-1]
        if duration_ns is not None:
            bucket = _bucket(duration_ns / 1000)  # µs, as the rollups' latency histograms
            if not tier and window.slow_above is not None and bucket > window.slow_above:
                tier = TIER_SLOW
            latency_slice.append(bucket)
            window.latency[bucket] = window.latency.get(bucket, 0) + 1
            window.n_latency += 1
        if cost_nusd is not None and billable:
            # Cost in nano-USD: a cheap embedding call is a few thousand, still resolved by the log buckets.
            bucket = _bucket(cost_nusd)
            if not tier and window.costly_above is not None and bucket > window.costly_above:
                tier = TIER_COSTLY
            cost_slice.append(bucket)
            window.cost[bucket] = window.cost.get(bucket, 0) + 1
            window.n_cost += 1
        window.since += 1
        if not tier:
            tier = TIER_SAMPLED if self.sampled(trace_id) else TIER_SAMPLED_OUT
        if tier != TIER_SAMPLED_OUT:
            self._remember(trace_id, span_id)
        return tier

    def _window(self, key: str) -> _Window:
        if len(self._windows) >= _MAX_KEYS:
            key = _OTHER_KEY
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
        return window

    def _remember(self, trace_id: bytes, span_id: bytes) -> None:
        kept = self._kept
        kept[(trace_id, span_id)] = None
        if len(kept) > _KEPT_MEMORY:
            kept.popitem(last=False)

    def keeps_log(self, trace_id: bytes | None, span_id: bytes | None) -> bool:
        """Whether a log record's content is kept: its trace is sampled in, or its span was kept here,
        or (without a trace) any scope is burning."""
        if trace_id is None:
            return bool(self.policy.on_burn and self.burning)
        if self.sampled(trace_id):
            return True
        if span_id is not None and (trace_id, span_id) in self._kept:
            return True
        return bool(self.policy.on_burn and self.burning and (None, None) in self.burning)
