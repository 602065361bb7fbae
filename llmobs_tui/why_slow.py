""""Why slow?": a call or a trace set against its cohort, and where its extra time went.

A call is compared with the calls of its model on its feature over the window (store/cohort.py): its
percentile for total latency, TTFT and TPOT from the rollups' histograms, for input and output tokens
from the cohort's spans. Its excess over the cohort's median latency is split four ways, exactly
(for a streamed call, total = TTFT + (output − 1) × TPOT):

    TTFT beyond what calls of a similar input size wait     queueing or prefill at the provider
    those calls' TTFT beyond the cohort's median TTFT         a larger prompt to prefill
    (output − median output) × median TPOT                    a longer answer to decode
    (output − 1) × (TPOT − median TPOT)                       slower decoding at the provider

and what is left is the gap between the median latency and the medians' sum (or, for a call with no
TTFT, everything that cannot be split). Failed calls of the same model just before it, under the same
parent, are its retries: time the caller spent before this call started.

A trace is compared with the traces of its root name and feature: its percentile for duration, LLM
calls and tokens (exact, from the `traces` summaries), and its critical path (critical_path.py) cut
into waiting for first tokens, decoding, tool spans, retries, other work and time between spans, set
against the same cut of the cohort's most typical traces (those nearest its median duration).

A part's share is of the time lost: the sum of the parts that made the subject slower. A part where
it was faster than usual (a negative one) offsets them, so "71 % of the excess" never exceeds 100 %.

Below MIN_COHORT members there are no percentiles: the explanation says so and only splits the call's
or trace's own time. Pure and Textual-free; names from spans stay plain strings for the screen to make
safe.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from llmobs_tui import format as fmt
from llmobs_tui.critical_path import GAP, analyse
from store import histogram
from store.cohort import CallCohort, TraceCohort, TraceSample
from store.dashboards import SpanRow
from store.latency import decode_figures

# Fewer members than this and a percentile says more about chance than about the call.
MIN_COHORT = 20
# Calls "of a similar input size": the nearest fifth of the cohort by input tokens (log scale), and
# never fewer than this many, so that the median TTFT they give is not one call's luck.
MIN_SIMILAR = 10
# Typical traces whose critical paths make the baseline of a trace's.
TYPICAL_TRACES = 5
NS = 1_000_000_000

# Critical-path categories of a trace, in the order they are listed.
TRACE_CATEGORIES = {
    "prefill": "LLM calls waiting for the first token (queueing, prefill)",
    "decode": "LLM calls generating output (decode)",
    "llm": "LLM calls without TTFT (prefill and decode not told apart)",
    "tool": "tool spans",
    "retries": "failed LLM calls and their retries",
    "work": "retrieval, guardrail and other spans",
    "between": "time between spans (the app's own code, or waiting)",
}


@dataclass(frozen=True, slots=True)
class Standing:
    """One figure of the subject against its cohort."""

    what: str
    value: str
    rank: float | None  # share of the cohort below it, ties counted half (None: not comparable)
    median: str = "–"
    p95: str = "–"

    @property
    def percentile(self) -> str:
        return percentile_label(self.rank)


@dataclass(frozen=True, slots=True)
class Part:
    """Time attributed to one cause: against the cohort's typical member (or, for a cohort too small
    to compare with, the subject's own time), and its share of the excess (or of its own time)."""

    key: str
    what: str
    ns: int
    share: float | None
    detail: str = ""


@dataclass(slots=True)
class Explanation:
    subject: str  # "call" | "trace"
    name: str  # the span's or the trace root's name (untrusted)
    cohort: str  # "gpt-4o on support" (untrusted names inside)
    window: str  # "1h"
    cohort_size: int
    too_small: bool
    value_ns: int
    median_ns: int | None = None
    excess_ns: int | None = None
    standings: list[Standing] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verdict: str = ""


# --- percentiles ---------------------------------------------------------------------------------


def percentile_label(rank: float | None) -> str:
    return "–" if rank is None else f"p{min(99, math.floor(rank * 100 + 1e-9))}"


def histogram_rank(counts: Mapping[int, int], value_ns: float | None) -> float | None:
    """The share of a histogram's members below a value, its own bucket counted half. Members in
    that bucket are within one bucket (±4 %) of the value, so this is the exact rank of some value
    within 4 % of it."""
    total = histogram.count(counts)
    if value_ns is None or not total:
        return None
    bucket = histogram.bucket_of(value_ns / 1000)
    below = sum(c for b, c in counts.items() if b < bucket and c > 0)
    return (below + 0.5 * max(0, counts.get(bucket, 0))) / total


def histogram_quantile_ns(counts: Mapping[int, int], q: float) -> float | None:
    value = histogram.quantiles(counts, (q,))[0]
    return None if value is None else value * 1000


def exact_rank(ordered: Sequence[float], value: float | None) -> float | None:
    """The share of sorted values below `value`, ties counted half."""
    if value is None or not ordered:
        return None
    below = bisect_left(ordered, value)
    ties = bisect_right(ordered, value) - below
    return (below + 0.5 * ties) / len(ordered)


def exact_quantile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile (the histograms' definition)."""
    if not ordered:
        return None
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


def share_text(share: float | None) -> str:
    if share is None:
        return "–"
    return "all" if share >= 0.995 else f"{max(0.0, share):.0%}"


def _dur(ns: float | None) -> str:
    return fmt.duration(None if ns is None else round(ns))


def _tok(n: float | None) -> str:
    return "–" if n is None else fmt.tokens(n)


# --- a call --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Retries:
    count: int
    ns: int  # from the first failed attempt's start to this call's start
    errors: tuple[str, ...]


def model_of(span: SpanRow) -> str:
    """The model a call is filed under in the rollups (the request model first, as the writer does)."""
    return span.request_model or span.response_model or ""


def retries_before(span: SpanRow, spans: Sequence[SpanRow]) -> Retries | None:
    """Failed calls of the same model under the same parent that started before this one."""
    model = model_of(span)
    failed = [s for s in spans if s.span_id != span.span_id and s.parent_span_id == span.parent_span_id
              and s.is_llm and s.failed and model_of(s) == model and s.start_ns < span.start_ns]
    if not failed:
        return None
    errors = tuple(sorted({s.error_subclass or s.error_type or s.error_class or "error" for s in failed}))
    return Retries(len(failed), span.start_ns - min(s.start_ns for s in failed), errors)


def who_of(model: str | None, feature: str | None) -> str:
    return f"{model or '(no model)'} on {feature or '(no feature)'}"


def explain_call(span: SpanRow, trace_spans: Sequence[SpanRow], cohort: CallCohort, window: str) -> Explanation:
    who = who_of(cohort.model, cohort.feature)
    total = span.duration_ns or 0
    ttft = span.ttft_ns
    inp, out = span.input_tokens, span.output_tokens
    figures = decode_figures(span.duration_ns, ttft, out)
    tpot = figures.tpot_ns if figures else None
    size = histogram.count(cohort.latency)
    inputs = sorted(s.input_tokens for s in cohort.samples if s.input_tokens is not None)
    outputs = sorted(s.output_tokens for s in cohort.samples if s.output_tokens is not None)
    result = Explanation("call", span.name, who, window, size, size < MIN_COHORT, total)
    retries = retries_before(span, trace_spans)
    retry_text = ""
    if retries:
        retry_text = (f" Before it, {fmt.plural(retries.count, 'failed ' + (cohort.model or 'LLM') + ' call')} "
                      f"({', '.join(retries.errors)}) held the caller {_dur(retries.ns)}.")
        result.notes.append(f"retries: {fmt.plural(retries.count, 'failed call')} of the same model under the same "
                            f"parent started {_dur(retries.ns)} before this one ({', '.join(retries.errors)})")
    if span.failed:
        result.notes.append("this call failed: the cohort's latency figures leave failed API calls out")
    if span.start_ns < cohort.first_s * NS:
        result.notes.append(f"this call is older than the window: it is set against the last {window}'s calls")

    if result.too_small:
        result.standings = [Standing("total latency", _dur(total), None), Standing("TTFT", _dur(ttft), None),
                            Standing("TPOT", _dur(tpot), None), Standing("input tokens", _tok(inp), None),
                            Standing("output tokens", _tok(out), None)]
        result.parts = _own_call_parts(total, ttft)
        split = "; ".join(f"{p.what} {_dur(p.ns)} ({share_text(p.share)} of it)" for p in result.parts)
        result.verdict = (f"Too few calls to compare: {fmt.plural(size, 'call')} of {who} in the last {window} "
                          f"({MIN_COHORT} needed for percentiles). Its {_dur(total)}: {split or 'no TTFT to split'}."
                          f"{retry_text}")
        return result

    median = histogram_quantile_ns(cohort.latency, 0.5)
    ttft_median = histogram_quantile_ns(cohort.ttft, 0.5)
    tpot_median = histogram_quantile_ns(cohort.tpot, 0.5)
    out_median = exact_quantile(outputs, 0.5)
    token_enough = len(inputs) >= MIN_COHORT
    ranks = {
        "total": histogram_rank(cohort.latency, total),
        "ttft": histogram_rank(cohort.ttft, ttft),
        "tpot": histogram_rank(cohort.tpot, tpot),
        "input": exact_rank(inputs, inp) if token_enough else None,
        "output": exact_rank(outputs, out) if len(outputs) >= MIN_COHORT else None,
    }
    result.standings = [
        Standing("total latency", _dur(total), ranks["total"], _dur(median),
                 _dur(histogram_quantile_ns(cohort.latency, 0.95))),
        Standing("TTFT", _dur(ttft), ranks["ttft"], _dur(ttft_median), _dur(histogram_quantile_ns(cohort.ttft, 0.95))),
        Standing("TPOT", _dur(tpot), ranks["tpot"], _dur(tpot_median), _dur(histogram_quantile_ns(cohort.tpot, 0.95))),
        Standing("input tokens", _tok(inp), ranks["input"], _tok(exact_quantile(inputs, 0.5)),
                 _tok(exact_quantile(inputs, 0.95))),
        Standing("output tokens", _tok(out), ranks["output"], _tok(out_median), _tok(exact_quantile(outputs, 0.95))),
    ]
    if cohort.samples_capped:
        result.notes.append("token figures are from the newest calls of the window (the span read is bounded)")
    if not token_enough:
        result.notes.append(f"only {fmt.plural(len(inputs), 'call')} with token counts in the window: "
                            "no token percentiles")
    assert median is not None  # the cohort has latencies (size ≥ MIN_COHORT)
    result.median_ns = round(median)
    excess = total - median
    result.excess_ns = round(excess)
    label = {k: percentile_label(v) for k, v in ranks.items()}
    if excess <= 0:
        result.verdict = (f"Not slow for its cohort: total {_dur(total)} is {label['total']} for {who} "
                          f"(median {_dur(median)}).{retry_text}")
        return result

    parts: list[Part] = []
    if ttft is not None and ttft_median is not None:
        similar = _similar_input_ttft(cohort, inp)
        if similar is None:
            similar_ttft = ttft_median
            result.notes.append("too few cohort calls with TTFT and input tokens to compare by input size: "
                                "TTFT is set against the cohort's median")
        else:
            similar_ttft, low, high, count = similar
            result.notes.append(f"calls of a similar input size ({_tok(low)}–{_tok(high)} tokens, {count} calls) "
                                f"wait {_dur(similar_ttft)} for the first token; the cohort's median is "
                                f"{_dur(ttft_median)}")
        parts.append(Part("provider_prefill", "queueing or prefill beyond its input size (provider-side)",
                          round(ttft - similar_ttft), None, f"TTFT {_dur(ttft)} vs {_dur(similar_ttft)}"))
        parts.append(Part("input_size", "a larger prompt (prefill of more input tokens)",
                          round(similar_ttft - ttft_median), None, f"input {_tok(inp)} tokens"))
    if tpot_median is not None and out is not None and out_median is not None:
        parts.append(Part("output_length", "a longer answer (more output tokens to decode)",
                          round((out - out_median) * tpot_median), None,
                          f"{_tok(out)} vs median {_tok(out_median)} tokens × {_dur(tpot_median)}"))
        if tpot is not None:
            parts.append(Part("decode_speed", "slower decoding per token (provider-side)",
                              round((out - 1) * (tpot - tpot_median)), None,
                              f"TPOT {_dur(tpot)} vs {_dur(tpot_median)}"))
    rest = round(excess - sum(p.ns for p in parts))
    if ttft is None or ttft_median is None:
        whose = "this call" if ttft is None else "the cohort's calls"
        rest_part = Part("unsplit", f"not split: no TTFT on {whose}, so prefill and decode cannot be told apart",
                         rest, None)
    else:
        rest_part = Part("rest", "the rest (the cohort's median TTFT and decode do not add up to its median total)",
                         rest, None)
    if not parts or abs(rest) >= 0.05 * excess:
        parts.append(rest_part)
    result.parts = _with_shares(parts)

    main = max(result.parts, key=lambda p: p.ns)
    share = f"{share_text(main.share)} of the excess"
    if main.key == "provider_prefill":
        why = (f"TTFT {_dur(ttft)} is {label['ttft']} for {who} while input tokens are "
               f"{label['input'] if ranks['input'] is not None else 'unknown'}: provider-side (queueing or prefill)")
    elif main.key == "input_size":
        why = (f"input {_tok(inp)} tokens is {label['input']} for {who} (TTFT {_dur(ttft)}, {label['ttft']}): "
               "a larger prompt takes longer to prefill")
    elif main.key == "output_length":
        decode = figures.decode_ns if figures else None
        why = (f"output {_tok(out)} tokens is {label['output']} for {who}"
               f"{f' (decode {_dur(decode)})' if decode is not None else ''}: a long answer")
    elif main.key == "decode_speed":
        why = (f"TPOT {_dur(tpot)} is {label['tpot']} for {who} while output tokens are {label['output']}: "
               "slow decoding, provider-side")
    elif main.key == "unsplit":
        outputs_clause = f" with output tokens {label['output']}" if ranks["output"] is not None else ""
        why = (f"total {_dur(total)} is {label['total']} for {who}{outputs_clause}; "
               f"{main.what.removeprefix('not split: ')}")
    else:
        why = f"total {_dur(total)} is {label['total']} for {who}, and no single cause stands out"
    result.verdict = (f"{why}; {share}. Total {_dur(total)} is {label['total']}, {_dur(excess)} over the "
                      f"median {_dur(median)}.{retry_text}")
    result.verdict = result.verdict[0].upper() + result.verdict[1:]
    return result


def _with_shares(parts: Sequence[Part]) -> list[Part]:
    """Each part's share of the time lost: the sum of the parts that made it slower. Parts where
    it was faster than the typical member offset the losses, so sharing out the net excess would
    give a cause more than all of it; these shares add up to 100 %."""
    lost = sum(p.ns for p in parts if p.ns > 0)
    return [Part(p.key, p.what, p.ns, p.ns / lost if p.ns > 0 and lost else None, p.detail) for p in parts]


def _own_call_parts(total: int, ttft: int | None) -> list[Part]:
    """A call's own time split at its first token (what can be said without a cohort)."""
    if ttft is None or total <= 0:
        return []
    first = min(ttft, total)
    return [Part("ttft", "waiting for the first token (queueing, prefill)", first, first / total),
            Part("decode", "generating output (decode)", total - first, (total - first) / total)]


def _similar_input_ttft(cohort: CallCohort, inp: int | None) -> tuple[float, int, int, int] | None:
    """(median TTFT, smallest and largest input, calls) of the cohort calls nearest in input size."""
    pairs = [(s.input_tokens, s.ttft_ns) for s in cohort.samples
             if s.input_tokens is not None and s.ttft_ns is not None]
    if inp is None or len(pairs) < MIN_SIMILAR:
        return None
    target = math.log1p(inp)
    pairs.sort(key=lambda p: (abs(math.log1p(p[0]) - target), p[0]))
    nearest = pairs[:max(MIN_SIMILAR, len(pairs) // 5)]
    ttfts = sorted(t for _, t in nearest)
    median = exact_quantile(ttfts, 0.5)
    assert median is not None
    sizes = [i for i, _ in nearest]
    return median, min(sizes), max(sizes), len(nearest)


# --- a trace -------------------------------------------------------------------------------------


@dataclass(slots=True)
class TraceTime:
    """A trace's critical path cut into categories, and the span that gave each the most."""

    duration_ns: int
    by_category: dict[str, int] = field(default_factory=dict)
    top: dict[str, tuple[SpanRow, int]] = field(default_factory=dict)


def retry_windows(spans: Sequence[SpanRow]) -> list[tuple[int, int, SpanRow]]:
    """Each failed LLM call that a call of the same model under the same parent followed: from the
    failed call's start to the next attempt's start (the attempt and the back-off before the next).
    Overlapping windows merge; each keeps the failed call that opened it, to name."""
    windows: list[tuple[int, int, SpanRow]] = []
    siblings: dict[tuple[Hashable, str], list[SpanRow]] = {}
    for s in spans:
        if s.is_llm:
            siblings.setdefault((s.parent_span_id, model_of(s)), []).append(s)
    for group in siblings.values():
        group.sort(key=lambda s: (s.start_ns, s.id))
        for failed, following in pairwise(group):
            if failed.failed:
                windows.append((failed.start_ns, max(failed.start_ns, following.start_ns), failed))
    windows.sort(key=lambda w: (w[0], w[1], w[2].id))
    merged: list[tuple[int, int, SpanRow]] = []
    for start, end, failed in windows:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end), merged[-1][2])
        else:
            merged.append((start, end, failed))
    return merged


def trace_time(spans: Sequence[SpanRow]) -> TraceTime:
    path = analyse(spans)
    result = TraceTime(path.duration_ns)
    by_id: dict[Hashable, SpanRow] = {s.span_id: s for s in spans}
    retries = retry_windows(spans)
    per_span: dict[tuple[str, Hashable], int] = {}

    def add(category: str, span_id: Hashable, ns: int) -> None:
        if ns <= 0:
            return
        result.by_category[category] = result.by_category.get(category, 0) + ns
        per_span[(category, span_id)] = per_span.get((category, span_id), 0) + ns

    for span_id, start, end in path.sections:
        span = by_id.get(span_id) if span_id is not GAP else None
        for piece_start, piece_end, retried in _cut(start, end, retries):
            if retried is not None:
                add("retries", retried.span_id, piece_end - piece_start)
            elif span is None:
                add("between", GAP, piece_end - piece_start)
            elif span.is_llm:
                if span.ttft_ns is None:
                    add("llm", span_id, piece_end - piece_start)
                else:
                    first_token = span.start_ns + span.ttft_ns
                    add("prefill", span_id, max(0, min(piece_end, first_token) - piece_start))
                    add("decode", span_id, max(0, piece_end - max(piece_start, first_token)))
            elif span.kind == "tool":
                add("tool", span_id, piece_end - piece_start)
            elif span.kind in ("retriever", "guardrail"):
                add("work", span_id, piece_end - piece_start)
            else:
                add("between", span_id, piece_end - piece_start)
    for (category, span_id), ns in per_span.items():
        span = by_id.get(span_id)
        if span is not None and (category not in result.top or ns > result.top[category][1]):
            result.top[category] = (span, ns)
    return result


def _cut(start: int, end: int, windows: Sequence[tuple[int, int, SpanRow]]
         ) -> list[tuple[int, int, SpanRow | None]]:
    """[start, end) cut at the retry windows: (piece start, piece end, the failed call whose retry
    window holds the piece, or None)."""
    pieces: list[tuple[int, int, SpanRow | None]] = []
    at = start
    for w_start, w_end, failed in windows:
        if w_end <= at or w_start >= end:
            continue
        if w_start > at:
            pieces.append((at, w_start, None))
        pieces.append((max(at, w_start), min(end, w_end), failed))
        at = min(end, w_end)
    if at < end:
        pieces.append((at, end, None))
    return pieces


def explain_trace(spans: Sequence[SpanRow], cohort: TraceCohort, typical: Sequence[Sequence[SpanRow]],
                  window: str) -> Explanation:
    own = trace_time(spans)
    root = next((s for s in spans if s.parent_span_id is None), spans[0] if spans else None)
    root_name = cohort.root_name if cohort.subject else (root.name if root else None)
    feature = cohort.feature if cohort.subject else (root.feature if root else None)
    who = f"{root_name or '(no root)'} on {feature or '(no feature)'}"
    subject = cohort.subject or TraceSample(b"", own.duration_ns, 0, 0, 0)
    duration = subject.duration_ns
    samples = cohort.samples
    result = Explanation("trace", root_name or "(no root)", who, window, len(samples), len(samples) < MIN_COHORT,
                         duration)
    if cohort.capped:
        result.notes.append("the cohort is the newest traces of the window (the read is bounded)")
    if spans and min(s.start_ns for s in spans) < cohort.first_s * NS:
        result.notes.append(f"this trace is older than the window: it is set against the last {window}'s traces")
    if "retries" in own.by_category:
        failed = sum(1 for s in spans if s.is_llm and s.failed)
        result.notes.append(f"{fmt.plural(failed, 'failed LLM call')} in this trace; "
                            f"{_dur(own.by_category['retries'])} of its critical path went to failed attempts "
                            "and the wait before the next")

    def own_parts() -> list[Part]:
        total = own.duration_ns or 1
        return [Part(key, words, own.by_category[key], own.by_category[key] / total, _top_text(own, key))
                for key, words in TRACE_CATEGORIES.items() if own.by_category.get(key)]

    if result.too_small:
        result.standings = [Standing("duration", _dur(duration), None),
                            Standing("LLM calls", str(subject.llm_calls), None),
                            Standing("input tokens", _tok(subject.input_tokens), None),
                            Standing("output tokens", _tok(subject.output_tokens), None)]
        result.parts = own_parts()
        main = max(result.parts, key=lambda p: p.ns, default=None)
        largest = (f" Its {_dur(duration)}: {main.what} took the most, {_dur(main.ns)} "
                   f"({share_text(main.share)} of it){_top_suffix(own, main.key)}." if main else "")
        result.verdict = (f"Too few traces to compare: {fmt.plural(len(samples), 'trace')} of {who} in the last "
                          f"{window} ({MIN_COHORT} needed for percentiles).{largest}")
        return result

    durations = sorted(s.duration_ns for s in samples)
    column = {"LLM calls": sorted(s.llm_calls for s in samples),
              "input tokens": sorted(s.input_tokens for s in samples),
              "output tokens": sorted(s.output_tokens for s in samples)}
    median = int(exact_quantile(durations, 0.5) or 0)
    rank = exact_rank(durations, duration)
    result.standings = [Standing("duration", _dur(duration), rank, _dur(median), _dur(exact_quantile(durations, 0.95)))]
    for what, value in (("LLM calls", subject.llm_calls), ("input tokens", subject.input_tokens),
                        ("output tokens", subject.output_tokens)):
        values = column[what]
        show = str if what == "LLM calls" else _tok
        result.standings.append(Standing(what, show(value), exact_rank(values, value),
                                         show(exact_quantile(values, 0.5)), show(exact_quantile(values, 0.95))))
    result.median_ns = median
    excess = duration - median
    result.excess_ns = excess
    label = percentile_label(rank)
    if excess <= 0:
        result.verdict = (f"Not slow for its kind: duration {_dur(duration)} is {label} for {who} "
                          f"(median {_dur(median)}).")
        return result
    typical_times = [trace_time(t) for t in typical if t]
    if not typical_times:
        result.parts = own_parts()
        result.notes.append("no typical trace of the cohort could be read: the split is of this trace's own time")
        main = max(result.parts, key=lambda p: p.ns)
        result.verdict = (f"Duration {_dur(duration)} is {label} for {who}, {_dur(excess)} over the median "
                          f"{_dur(median)}; {main.what} took {_dur(main.ns)} of it{_top_suffix(own, main.key)}.")
        return result
    baseline = {key: sum(t.by_category.get(key, 0) for t in typical_times) / len(typical_times)
                for key in TRACE_CATEGORIES}
    result.notes.append(f"the baseline is the critical path of the {fmt.plural(len(typical_times), 'trace')} "
                        "nearest the cohort's median duration")
    parts = []
    for key, words in TRACE_CATEGORIES.items():
        mine, usual = own.by_category.get(key, 0), baseline[key]
        if mine or usual:
            parts.append(Part(key, words, round(mine - usual), None,
                              f"{_dur(mine)} vs {_usual(usual)} typical{_top_suffix(own, key, ';')}"))
    result.parts = _with_shares(parts)
    main = max(result.parts, key=lambda p: p.ns)
    mine, usual = own.by_category.get(main.key, 0), baseline[main.key]
    against = f"{_usual(usual)} in a typical trace"
    result.verdict = (f"{main.what[0].upper()}{main.what[1:]} took {_dur(mine)} on the critical path against "
                      f"{against}{_top_suffix(own, main.key)}: {share_text(main.share)} "
                      f"of the excess. Duration {_dur(duration)} is {label} for {who}, {_dur(excess)} over the "
                      f"median {_dur(median)}.")
    return result


def _usual(ns: float) -> str:
    """A typical trace's time in a category: under a millisecond reads as none (not `0µs`)."""
    return _dur(ns) if ns >= 1_000_000 else "none"


def _top_text(own: TraceTime, key: str) -> str:
    top = own.top.get(key)
    return "" if top is None else f"most: {top[0].name} {_dur(top[1])}"


def _top_suffix(own: TraceTime, key: str, lead: str = " (") -> str:
    top = own.top.get(key)
    if top is None:
        return ""
    text = f"most: {top[0].name} {_dur(top[1])}"
    if key in ("prefill", "decode", "llm") and top[0].billed:
        text += ", w on it compares it with its model's calls"
    return f"{lead} {text}" if lead == ";" else f"{lead}{text})"
