"""The latency sketch keeps its stated guarantee: every quantile within 1 % of the exact one.

Exact quantiles are numpy's `percentile(..., method="lower")`, the value of
rank floor(q * (n - 1)), which is the quantile the guarantee is stated for.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conclave_node.sketch import (
    GAMMA,
    RELATIVE_ACCURACY,
    ZERO_THRESHOLD_MS,
    InvalidSketch,
    LatencySketch,
    key_value,
    sketch_key,
    sketches_merge,
)

QUANTILES = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0]
# Float rounding at bucket edges may add a few ulps to the bound.
BOUND = RELATIVE_ACCURACY * (1 + 1e-9)


def assert_within_bound(sketch: LatencySketch, values: np.ndarray) -> float:
    worst = 0.0
    answers = sketch.quantiles(QUANTILES)
    for q, answer in zip(QUANTILES, answers, strict=True):
        exact = float(np.percentile(values, q * 100, method="lower"))
        if exact <= ZERO_THRESHOLD_MS:
            # Below a nanosecond the guarantee is absolute: reported as 0.
            assert abs(answer - exact) <= ZERO_THRESHOLD_MS
            continue
        error = abs(answer - exact) / exact
        worst = max(worst, error)
        assert error <= BOUND, f"q={q}: sketch {answer} vs exact {exact} ({error:.5%})"
    return worst


def distributions(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "lognormal": rng.lognormal(mean=3.0, sigma=1.2, size=n),
        "uniform": rng.uniform(0.5, 2000.0, size=n),
        "bimodal": np.concatenate(
            [rng.normal(8.0, 1.0, n // 2).clip(0.01), rng.normal(900.0, 80.0, n - n // 2).clip(0.01)]
        ),
        "heavy_tail": (rng.pareto(1.5, size=n) + 1) * 5.0,
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 7, 1000, 50_000])
def test_quantiles_are_within_one_percent_on_seeded_distributions(seed, n):
    rng = np.random.default_rng(seed)
    for name, values in distributions(rng, n).items():
        sketch = LatencySketch()
        sketch.add_many(values.tolist())
        assert sketch.count == n, name
        assert_within_bound(sketch, values)


def test_the_bound_is_tight_not_just_loose():
    """A value at a bucket's edge is off by almost exactly α: the stated bound is the real one."""
    rng = np.random.default_rng(7)
    values = rng.lognormal(3.0, 1.0, 100_000)
    sketch = LatencySketch()
    sketch.add_many(values.tolist())
    worst = assert_within_bound(sketch, values)
    assert worst > RELATIVE_ACCURACY * 0.5


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=300),
    st.integers(min_value=1, max_value=5),
)
def test_merging_in_any_split_equals_one_sketch_and_keeps_the_bound(values, parts):
    whole = LatencySketch()
    whole.add_many(values)
    pieces = []
    for index in range(parts):
        piece = LatencySketch()
        piece.add_many(values[index::parts])
        pieces.append(piece.as_dict())
    merged = sketches_merge(reversed(pieces))
    assert merged.bins == whole.bins
    assert merged.zero == whole.zero and merged.count == whole.count
    assert merged.min == whole.min and merged.max == whole.max
    assert math.isclose(merged.total, whole.total, rel_tol=1e-9, abs_tol=1e-6)
    assert_within_bound(merged, np.array(values))


def test_bucket_representative_is_within_alpha_of_both_edges():
    for key in (-600, -3, 0, 1, 250, 900):
        upper, lower = GAMMA**key, GAMMA ** (key - 1)
        value = key_value(key)
        assert abs(value - upper) / upper <= BOUND
        assert abs(value - lower) / lower <= BOUND
        assert sketch_key(upper * (1 - 1e-12)) == key
        assert sketch_key(lower * (1 + 1e-12)) == key


def test_zero_and_tiny_values_are_exact_zero():
    sketch = LatencySketch()
    sketch.add_many([0.0, 0.0, 1e-9, 5.0])
    assert sketch.zero == 3
    assert sketch.quantile(0.5) == 0.0
    assert sketch.quantile(1.0) == 5.0


def test_empty_sketch_has_no_quantiles():
    assert LatencySketch().quantiles([0.5, 0.99]) == [None, None]


def test_dict_round_trip():
    sketch = LatencySketch()
    sketch.add_many([1.0, 2.5, 2.5, 300.0, 0.0])
    data = sketch.as_dict()
    assert data["kind"] == "ddsketch" and data["alpha"] == RELATIVE_ACCURACY
    again = LatencySketch.from_dict(data)
    assert again == sketch


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kind": "histogram"}, "kind"),
        ({"alpha": 0.02}, "alpha"),
        ({"unit": "s"}, "milliseconds"),
        ({"keys": [3, 1], "counts": [1, 1], "count": 2}, "increasing"),
        ({"counts": [0]}, "positive"),
        ({"count": 99}, "count must equal"),
        ({"sum": -1}, "sum"),
        ({"min": 5.0, "max": 1.0}, "min and max"),
        ({"keys": list(range(5000)), "counts": [1] * 5000, "count": 5000}, "at most"),
        ({"keys": [True], "counts": [1]}, "integers"),
        ({"keys": [200_000], "counts": [1]}, "integers between"),
        ({"sum": float("nan")}, "sum"),
        ({"sum": 1e300}, "sum"),
        ({"max": float("inf")}, "min and max"),
        ({"min": None}, "min and max"),
    ],
)
def test_malformed_summaries_are_refused_with_a_reason(change, message):
    data = {
        "kind": "ddsketch",
        "alpha": 0.01,
        "unit": "ms",
        "keys": [10],
        "counts": [1],
        "zero": 0,
        "count": 1,
        "sum": 1.2,
        "min": 1.2,
        "max": 1.2,
    }
    data.update(change)
    with pytest.raises(InvalidSketch, match=message):
        LatencySketch.from_dict(data)


def test_negative_or_nan_values_are_refused():
    sketch = LatencySketch()
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            sketch.add(bad)
    assert sketch.count == 0


def test_numpy_and_pure_python_quantiles_agree(monkeypatch):
    """Large sketches answer with numpy; the node agent may run without it."""
    import conclave_node.sketch as sketch_module

    rng = np.random.default_rng(12)
    sketch = LatencySketch()
    sketch.add_many(rng.lognormal(2.0, 4.0, 50_000).tolist() + [0.0] * 50)
    assert len(sketch.bins) > 512
    with_numpy = sketch.quantiles(QUANTILES)
    merged_with_numpy = sketches_merge([sketch.as_dict()] * 3).bins
    monkeypatch.setattr(sketch_module, "_np", None)
    assert sketch.quantiles(QUANTILES) == with_numpy
    assert sketches_merge([sketch.as_dict()] * 3).bins == merged_with_numpy
