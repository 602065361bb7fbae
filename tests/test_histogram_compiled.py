"""store/_histogram.c against the Python it replaces (store/histogram.py's _encode and _decode_into):
the same bytes, the same dict updates, the same exception types, on random and awkward input; and
the module is used only when it was built from the source beside it (store/compiled.py)."""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path
from types import MappingProxyType

import pytest

from store import compiled, histogram
from tests.test_span_walk import _can_compile  # what hatch_build.py needs: a C compiler, Python.h

needs_compiled = pytest.mark.skipif(not histogram.COMPILED, reason="store._histogram is not built here")
SOURCE = Path(histogram.__file__).with_name("_histogram.c")


def _random_counts(rng: random.Random) -> dict[int, int]:
    return {rng.randint(0, histogram.MAX_BUCKET): rng.choice([0, 0, 1, 2, 7, -1, -5, 2**31 - 1, -2**31])
            for _ in range(rng.randint(0, 90))}


@needs_compiled
def test_compiled_encode_gives_the_python_bytes():
    rng = random.Random(21)
    assert histogram._compiled is not None
    for _ in range(2000):
        counts = _random_counts(rng)
        assert histogram._compiled.encode(counts) == histogram._encode(counts), counts
    # 64 buckets and more take the heap instead of the stack
    many = {b: rng.randint(-3, 3) for b in range(histogram.MAX_BUCKET + 1)}
    assert histogram._compiled.encode(many) == histogram._encode(many)
    assert histogram._compiled.encode({True: 1, 0: 0}) == histogram._encode({True: 1, 0: 0})


@needs_compiled
@pytest.mark.parametrize("counts", [
    {1: 2**31},          # a count past int32
    {1: -2**31 - 1},
    {2**31: 1},          # a kept bucket past int32
    {1: 1.5},            # not an int
    {"1": 1},
])
def test_compiled_encode_refuses_what_the_python_refuses(counts):
    assert histogram._compiled is not None
    with pytest.raises(Exception) as python_error:
        histogram._encode(counts)
    with pytest.raises(type(python_error.value)):
        histogram._compiled.encode(counts)


@needs_compiled
def test_an_emptied_bucket_past_int32_is_left_out_by_both():
    """The Python path converts a bucket only when its count is kept; the C does the same."""
    assert histogram._compiled is not None
    assert histogram._compiled.encode({2**40: 0, 3: 1}) == histogram._encode({2**40: 0, 3: 1})


def test_encode_takes_any_mapping_and_decode_any_sign():
    """What the C does not take (a mapping that is not a dict, a sign other than ±1) runs in Python."""
    counts = {5: 2, 1: 1}
    assert histogram.encode(MappingProxyType(counts)) == struct.pack("<4i", 1, 1, 5, 2)
    into: dict[int, int] = {5: 1}
    histogram.decode_into(histogram.encode(counts), into, sign=3)
    assert into == {5: 7, 1: 3}


@needs_compiled
def test_compiled_decode_makes_the_python_updates():
    rng = random.Random(22)
    assert histogram._compiled is not None
    for _ in range(1000):
        parts = [histogram._encode(_random_counts(rng)) or b"" for _ in range(rng.randint(1, 4))]
        blob = b"".join(parts)  # the readers' SQL concatenates rows' blobs: buckets repeat
        start = _random_counts(rng)
        sign = rng.choice([1, -1])
        python, compiled_ = dict(start), dict(start)
        histogram._decode_into(blob, python, sign)
        histogram._compiled.decode_into(blob, compiled_, sign)
        assert compiled_ == python
        assert list(compiled_) == list(python)  # new buckets in the same order too
    for blob in (None, b""):
        untouched = {1: 1}
        histogram._compiled.decode_into(blob, untouched, 1)
        assert untouched == {1: 1}
    with pytest.raises(ValueError):
        histogram._decode_into(b"\x01\x00\x00", {}, 1)
    with pytest.raises(ValueError):
        histogram._compiled.decode_into(b"\x01\x00\x00", {}, 1)
    with pytest.raises(TypeError):
        histogram._compiled.decode_into("text", {}, 1)
    with pytest.raises(TypeError):
        histogram._decode_into("text", {}, 1)  # type: ignore[arg-type]


@needs_compiled
def test_compiled_quantiles_find_the_python_buckets():
    """Random histograms (empty, emptied and negative buckets, one bucket, every bucket) and quantiles at
    and around the ranks' edges: the same buckets as the Python, in the dense path and the sorted one."""
    rng = random.Random(23)
    assert histogram._compiled is not None
    qs = [0.0, 1e-9, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0, 1.5, -0.5]
    for _ in range(3000):
        counts = _random_counts(rng)
        if rng.random() < 0.2:  # a bucket past the dense array, or below it
            counts[rng.choice([1024, 5000, -3, -2**31])] = rng.randint(1, 9)
        qs_here = rng.sample(qs, rng.randint(1, len(qs)))
        expected = histogram._quantiles(counts, qs_here)
        found = histogram._compiled.quantile_buckets(counts, qs_here)
        assert found is not NotImplemented
        assert [None if b is None else histogram.bucket_value(b) for b in found] == expected, (counts, qs_here)
        assert histogram.quantiles(counts, qs_here) == expected
    # every rank of a small histogram: the boundary between two buckets
    counts = {3: 2, 7: 3, 700: 5}
    for step in range(0, 101):
        q = step / 100
        assert histogram.quantiles(counts, [q]) == histogram._quantiles(counts, [q]), q
    assert histogram.quantiles({}, [0.5]) == [None]
    assert histogram.quantiles({4: 0, 5: -2}, [0.5, 0.99]) == [None, None]


@needs_compiled
@pytest.mark.parametrize("counts", [
    {1: 2**63},                 # a count past long long
    {2**40: 1},                 # a bucket past int32
    {1: 2**62, 2: 2**62},       # a total past what a double holds exactly
    {1.5: 1},                   # not an int
    {1: 2.0},
])
def test_what_the_compiled_quantiles_cannot_hold_is_found_in_python(counts):
    assert histogram._compiled is not None
    assert histogram._compiled.quantile_buckets(counts, [0.5]) is NotImplemented
    try:
        expected = histogram._quantiles(counts, [0.5, 0.99])
    except OverflowError:  # a bucket past 2^31 has no value a float holds
        with pytest.raises(OverflowError):
            histogram.quantiles(counts, [0.5, 0.99])
    else:
        assert histogram.quantiles(counts, [0.5, 0.99]) == expected


def test_quantiles_of_a_mapping_that_is_not_a_dict_and_nan():
    counts = {9: 1, 2: 3}
    assert histogram.quantiles(MappingProxyType(counts), [0.5, 1.0]) == histogram.quantiles(counts, [0.5, 1.0])
    with pytest.raises(ValueError):  # math.ceil(nan): the C leaves it to the Python, which raises
        histogram.quantiles(counts, [float("nan")])


@pytest.mark.skipif(not _can_compile(), reason="no C compiler or no Python headers on this machine")
def test_the_compiled_histogram_is_built_where_a_c_compiler_is(monkeypatch: pytest.MonkeyPatch):
    """An install on a machine with a compiler must not fall back to Python unnoticed (hatch_build.py)."""
    if os.environ.get("LLMOBS_PURE_PYTHON"):
        pytest.skip("LLMOBS_PURE_PYTHON is set")
    assert histogram.COMPILED
    monkeypatch.setenv("LLMOBS_PURE_PYTHON", "1")
    assert compiled.load("_histogram", SOURCE) is None


@needs_compiled
def test_a_histogram_module_built_from_another_source_is_not_used(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("LLMOBS_PURE_PYTHON", raising=False)
    assert compiled.load("_histogram", SOURCE) is not None
    changed = tmp_path / "_histogram.c"
    changed.write_bytes(SOURCE.read_bytes() + b"\n/* changed */\n")
    assert compiled.load("_histogram", changed) is None
    assert compiled.load("_histogram", tmp_path / "absent.c") is not None  # a wheel without its source


@needs_compiled
def test_the_alert_rules_decode_of_joined_blobs_is_the_same_either_way(monkeypatch: pytest.MonkeyPatch):
    """store.alerts._decode: a week of rows' blobs joined (every bucket repeated, some summing to 0 or
    below) gives the same dict, in the same key order, compiled and in Python."""
    from store import alerts

    rng = random.Random(24)
    for _ in range(200):
        joined = b"".join(histogram._encode(_random_counts(rng)) or b"" for _ in range(rng.randint(1, 40)))
        compiled_ = alerts._decode(joined)
        with monkeypatch.context() as patch:
            patch.setattr(histogram, "COMPILED", False)
            python = alerts._decode(joined)
        assert compiled_ == python
        assert list(compiled_) == list(python)
    assert alerts._decode(None) == {} and alerts._decode(b"") == {}
