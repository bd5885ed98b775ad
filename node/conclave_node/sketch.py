"""Mergeable latency summaries with a relative-error guarantee (DDSketch's log-spaced buckets).

A value x > 0 (milliseconds) falls in bucket ``key = ceil(log_γ(x))`` with
``γ = (1 + α) / (1 - α)``, i.e. bucket ``key`` holds (γ^(key-1), γ^key].
A bucket is reported as ``2·γ^key / (γ + 1)``, which is within a relative
error α of every value the bucket can hold. Values at or below
``ZERO_THRESHOLD_MS`` (a nanosecond) are counted in a separate zero bucket
and reported as 0.

**Guarantee.** With α = 1 % (``RELATIVE_ACCURACY``), ``quantile(q)``
returns v with ``|v - x| ≤ α·x``, where x is the exact q-quantile of the
observed values in the "lower" sense: the value of rank ⌊q·(n - 1)⌋
(0-based) in sorted order (numpy's ``percentile(..., method="lower")``).
It holds for any distribution, any n and any order of merging, because
merging adds bucket counts exactly. ``min`` and ``max`` are kept exactly.
Against an interpolating percentile (PostgreSQL ``percentile_cont``) the
difference is bounded by α plus the gap between the two neighbouring
ranks, which vanishes as samples grow dense.

The JSON form, which is what rollups store and what nodes report
(``conclave-node report``; the server validates it with ``from_dict``)::

    {"kind": "ddsketch", "alpha": 0.01, "unit": "ms",
     "keys": [k0, k1, ...],       # strictly increasing bucket keys
     "counts": [c0, c1, ...],     # positive counts, one per key
     "zero": z,                   # values <= ZERO_THRESHOLD_MS
     "count": z + sum(counts), "sum": total, "min": m, "max": M}

Two summaries with the same α merge by adding counts per key, so a
minute's summary, an hour's, one node's and the network's all combine
without loss. This module has no Django imports (and numpy is optional):
the node agent (`conclave_node`) builds its summaries with it, and the
dashboards merge them with the same code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

try:  # Optional: the node agent can use this module without numpy.
    import numpy as _np
except ImportError:  # pragma: no cover
    _np = None

KIND = "ddsketch"
RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
LN_GAMMA = math.log(GAMMA)
ZERO_THRESHOLD_MS = 1e-6
# A sketch holding 1 ns .. 1 day at α = 1 % spans about 1,600 keys; more is not a latency.
MAX_KEYS = 4096
# |key| beyond this is a value below 1e-870 ms or above 1e870 ms: not a latency.
MAX_KEY = 100_000
MAX_COUNT = 2**53
_MAX_NUMBER = 1e15  # ms (about 31,000 years): anything larger in a summary is an error


class InvalidSketch(ValueError):
    pass


def sketch_key(value_ms: float) -> int | None:
    """The bucket key of a value; None for the zero bucket."""
    if value_ms <= ZERO_THRESHOLD_MS:
        return None
    return math.ceil(math.log(value_ms) / LN_GAMMA)


def key_value(key: int) -> float:
    """The value a bucket reports: within α of anything in (γ^(key-1), γ^key]."""
    return 2.0 * GAMMA**key / (GAMMA + 1.0)


@dataclass
class LatencySketch:
    bins: dict[int, int] = field(default_factory=dict)
    zero: int = 0
    count: int = 0
    total: float = 0.0
    min: float | None = None
    max: float | None = None

    # --- building ---------------------------------------------------------------
    def add(self, value_ms: float, weight: int = 1) -> None:
        if not value_ms >= 0 or math.isinf(value_ms):
            raise ValueError(f"a latency must be a finite, non-negative number, got {value_ms!r}")
        key = sketch_key(value_ms)
        if key is None:
            self.zero += weight
        else:
            self.bins[key] = self.bins.get(key, 0) + weight
        self.count += weight
        self.total += value_ms * weight
        self.min = value_ms if self.min is None else min(self.min, value_ms)
        self.max = value_ms if self.max is None else max(self.max, value_ms)

    def add_many(self, values_ms: Iterable[float]) -> None:
        for value in values_ms:
            self.add(value)

    def merge(self, other: LatencySketch) -> LatencySketch:
        """Add `other` into this sketch (in place) and return it."""
        for key, count in other.bins.items():
            self.bins[key] = self.bins.get(key, 0) + count
        self.zero += other.zero
        self.count += other.count
        self.total += other.total
        if other.min is not None:
            self.min = other.min if self.min is None else min(self.min, other.min)
        if other.max is not None:
            self.max = other.max if self.max is None else max(self.max, other.max)
        return self

    # --- reading ------------------------------------------------------------------
    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        return self.quantiles([q])[0]

    def quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """The q-quantiles (each 0..1), within α of the exact "lower" quantiles; None when empty."""
        if self.count == 0:
            return [None] * len(qs)
        for q in qs:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"a quantile must be between 0 and 1, got {q!r}")
        if _np is not None and len(self.bins) > 512:
            return self._quantiles_numpy(qs)
        order = sorted(range(len(qs)), key=lambda i: qs[i])
        answers: list[float | None] = [None] * len(qs)
        keys = sorted(self.bins)
        position = 0
        seen = self.zero
        for i in order:
            rank = math.floor(qs[i] * (self.count - 1))
            if rank < self.zero:
                answers[i] = self._clamp(0.0)
                continue
            while position < len(keys) and seen + self.bins[keys[position]] <= rank:
                seen += self.bins[keys[position]]
                position += 1
            key = keys[min(position, len(keys) - 1)]
            answers[i] = self._clamp(key_value(key))
        return answers

    def _quantiles_numpy(self, qs: Sequence[float]) -> list[float | None]:
        keys = _np.fromiter(self.bins.keys(), dtype=_np.int64, count=len(self.bins))
        counts = _np.fromiter(self.bins.values(), dtype=_np.int64, count=len(self.bins))
        order = _np.argsort(keys)
        keys, cumulative = keys[order], self.zero + _np.cumsum(counts[order])
        answers: list[float | None] = []
        for q in qs:
            rank = math.floor(q * (self.count - 1))
            if rank < self.zero:
                answers.append(self._clamp(0.0))
                continue
            # The first bucket whose running count passes the rank holds it.
            position = int(_np.searchsorted(cumulative, rank, side="right"))
            answers.append(self._clamp(key_value(int(keys[min(position, len(keys) - 1)]))))
        return answers

    def _clamp(self, value: float) -> float:
        # The exact extremes are known; clamping only moves an estimate towards the truth.
        if self.min is not None and value < self.min:
            return self.min
        if self.max is not None and value > self.max:
            return self.max
        return value

    # --- JSON ----------------------------------------------------------------------
    def as_dict(self) -> dict:
        keys = sorted(self.bins)
        return {
            "kind": KIND,
            "alpha": RELATIVE_ACCURACY,
            "unit": "ms",
            "keys": keys,
            "counts": [self.bins[key] for key in keys],
            "zero": self.zero,
            "count": self.count,
            "sum": round(self.total, 6),
            "min": self.min,
            "max": self.max,
        }

    @classmethod
    def from_dict(cls, data: object) -> LatencySketch:
        """Validate a summary (e.g. received from a node) and build the sketch."""
        if not isinstance(data, Mapping):
            raise InvalidSketch("a latency summary must be an object")
        if data.get("kind") != KIND:
            raise InvalidSketch(f"kind must be {KIND!r}")
        if data.get("unit", "ms") != "ms":
            raise InvalidSketch("latency summaries are in milliseconds (unit 'ms')")
        alpha = data.get("alpha")
        if not _is_number(alpha) or not math.isclose(alpha, RELATIVE_ACCURACY, rel_tol=1e-9):
            raise InvalidSketch(f"alpha must be {RELATIVE_ACCURACY}: only sketches of one accuracy merge")
        keys, counts = data.get("keys"), data.get("counts")
        if not isinstance(keys, list) or not isinstance(counts, list) or len(keys) != len(counts):
            raise InvalidSketch("keys and counts must be lists of the same length")
        if len(keys) > MAX_KEYS:
            raise InvalidSketch(f"at most {MAX_KEYS} keys")
        if not all(_is_int(key) and abs(key) <= MAX_KEY for key in keys):
            raise InvalidSketch(f"keys must be integers between {-MAX_KEY} and {MAX_KEY}")
        if any(later <= earlier for earlier, later in zip(keys, keys[1:], strict=False)):
            raise InvalidSketch("keys must be strictly increasing")
        if not all(_is_int(c) and 0 < c < MAX_COUNT for c in counts):
            raise InvalidSketch("counts must be positive integers")
        zero = data.get("zero", 0)
        if not _is_int(zero) or not 0 <= zero < MAX_COUNT:
            raise InvalidSketch("zero must be a non-negative integer")
        count = zero + sum(counts)
        if "count" in data and data["count"] != count:
            raise InvalidSketch("count must equal zero + the sum of counts")
        total = data.get("sum", 0)
        if not _is_number(total) or total < 0:
            raise InvalidSketch(f"sum must be a finite, non-negative number below {_MAX_NUMBER:g}")
        low, high = data.get("min"), data.get("max")
        if count:
            if not (_is_number(low) and _is_number(high) and 0 <= low <= high):
                raise InvalidSketch(f"min and max must be finite numbers below {_MAX_NUMBER:g} with 0 <= min <= max")
        else:
            low = high = None
        return cls(
            bins=dict(zip(keys, counts, strict=True)),
            zero=zero,
            count=count,
            total=float(total),
            min=None if low is None else float(low),
            max=None if high is None else float(high),
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) < _MAX_NUMBER
    )


class SketchAccumulator:
    """Collects many sketches' buckets and adds them up once, in C when numpy is there.

    Merging thousands of stored rows one dict at a time is what makes a week
    slow; extending two lists per row and summing with one `bincount` is not.
    """

    __slots__ = ("keys", "counts", "parts", "zero", "count", "total", "min", "max")

    def __init__(self) -> None:
        self.parts = 0
        self.keys: list[int] = []
        self.counts: list[int] = []
        self.zero = self.count = 0
        self.total = 0.0
        self.min: float | None = None
        self.max: float | None = None

    def _extremes(self, low: float | None, high: float | None) -> None:
        if low is not None and (self.min is None or low < self.min):
            self.min = low
        if high is not None and (self.max is None or high > self.max):
            self.max = high

    def add_dict(self, summary: Mapping) -> None:
        """Add a stored summary (written by `as_dict`; trusted, not re-validated)."""
        if not summary or not summary.get("count"):
            return
        self.parts += 1
        self.keys.extend(summary["keys"])
        self.counts.extend(summary["counts"])
        self.zero += summary.get("zero", 0)
        self.count += summary["count"]
        self.total += summary.get("sum", 0.0)
        self._extremes(summary.get("min"), summary.get("max"))

    def add_sketch(self, sketch: LatencySketch) -> None:
        if not sketch.count:
            return
        self.parts += 1
        self.keys.extend(sketch.bins.keys())
        self.counts.extend(sketch.bins.values())
        self.zero += sketch.zero
        self.count += sketch.count
        self.total += sketch.total
        self._extremes(sketch.min, sketch.max)

    def sketch(self) -> LatencySketch:
        # One part has one count per key already: nothing to add up.
        bins = (
            dict(zip(self.keys, self.counts, strict=True)) if self.parts == 1 else _sum_by_key(self.keys, self.counts)
        )
        return LatencySketch(
            bins=bins,
            zero=self.zero,
            count=self.count,
            total=self.total,
            min=self.min,
            max=self.max,
        )


def _sum_by_key(keys: list[int], counts: list[int]) -> dict[int, int]:
    if not keys:
        return {}
    if _np is None or len(keys) < 256:
        bins: dict[int, int] = {}
        for key, count in zip(keys, counts, strict=True):
            bins[key] = bins.get(key, 0) + count
        return bins
    key_array = _np.asarray(keys, dtype=_np.int64)
    lowest = int(key_array.min())
    # float64 weights add integers exactly below 2**53 (MAX_COUNT).
    summed = _np.bincount(key_array - lowest, weights=_np.asarray(counts, dtype=_np.float64))
    present = _np.flatnonzero(summed)
    return dict(zip((present + lowest).tolist(), summed[present].astype(_np.int64).tolist(), strict=True))


def sketches_merge(summaries: Iterable[Mapping | LatencySketch | None]) -> LatencySketch:
    """Merge stored summaries (dicts as written by `as_dict`, or sketches); empty when none."""
    accumulator = SketchAccumulator()
    for summary in summaries:
        if isinstance(summary, LatencySketch):
            accumulator.add_sketch(summary)
        elif summary:
            accumulator.add_dict(summary)
    return accumulator.sketch()
