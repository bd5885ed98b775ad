"""Latency summaries as fixed-bucket histograms: what nodes report and dashboards merge.

A summary is a JSON object::

    {"unit": "ms",
     "bounds": [1, 2, 5, ..., 60000],      # upper bounds, strictly increasing
     "counts": [c0, c1, ..., cN],          # len(bounds) + 1 counts
     "count": c0 + ... + cN,
     "sum": total of all observations}

`counts[i]` holds observations v with bounds[i-1] < v <= bounds[i] (the
first bucket from 0, the last one above the final bound). Summaries with the
same bounds merge by adding counts, count and sum, so per-node summaries add
up to the network's exactly, in any order; percentiles come from the merged
counts (interpolated inside a bucket, so they are as precise as the buckets).
The default bounds are the same for every node, which keeps every summary
mergeable with every other.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

DEFAULT_BOUNDS_MS: tuple[float, ...] = (
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000,
)
MAX_BUCKETS = 64


class InvalidSummary(ValueError):
    pass


@dataclass
class LatencyHistogram:
    bounds: tuple[float, ...] = DEFAULT_BOUNDS_MS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.bounds = tuple(self.bounds)
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    @property
    def count(self) -> int:
        return sum(self.counts)

    def observe(self, value_ms: float) -> None:
        if value_ms < 0:
            raise ValueError("a latency cannot be negative")
        index = len(self.bounds)
        for position, bound in enumerate(self.bounds):
            if value_ms <= bound:
                index = position
                break
        self.counts[index] += 1
        self.total += value_ms

    def observe_many(self, values_ms: Iterable[float]) -> None:
        for value in values_ms:
            self.observe(value)

    def merge(self, other: "LatencyHistogram") -> "LatencyHistogram":
        if tuple(other.bounds) != tuple(self.bounds):
            raise InvalidSummary("histograms with different bucket bounds cannot be merged")
        return LatencyHistogram(
            bounds=self.bounds,
            counts=[a + b for a, b in zip(self.counts, other.counts, strict=True)],
            total=self.total + other.total,
        )

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1), interpolated linearly inside its bucket; None when empty."""
        count = self.count
        if count == 0:
            return None
        rank = q * count
        seen = 0
        for index, bucket_count in enumerate(self.counts):
            if bucket_count and seen + bucket_count >= rank:
                lower = self.bounds[index - 1] if index > 0 else 0.0
                if index == len(self.bounds):
                    return float(self.bounds[-1])
                upper = self.bounds[index]
                return lower + (upper - lower) * max(rank - seen, 0) / bucket_count
            seen += bucket_count
        return float(self.bounds[-1])

    def as_dict(self) -> dict:
        return {
            "unit": "ms",
            "bounds": list(self.bounds),
            "counts": list(self.counts),
            "count": self.count,
            "sum": round(self.total, 3),
        }

    @classmethod
    def from_dict(cls, data: object) -> "LatencyHistogram":
        """Validate a summary (as received over the network) and build the histogram."""
        if not isinstance(data, dict):
            raise InvalidSummary("a latency summary must be an object")
        if data.get("unit", "ms") != "ms":
            raise InvalidSummary("latency summaries are in milliseconds (unit 'ms')")
        bounds, counts = data.get("bounds"), data.get("counts")
        if not isinstance(bounds, list) or not 1 <= len(bounds) <= MAX_BUCKETS - 1:
            raise InvalidSummary(f"bounds must be a list of 1 to {MAX_BUCKETS - 1} numbers")
        if not all(_is_number(b) and b > 0 for b in bounds):
            raise InvalidSummary("bounds must be positive numbers")
        if any(later <= earlier for earlier, later in zip(bounds, bounds[1:], strict=False)):
            raise InvalidSummary("bounds must be strictly increasing")
        if not isinstance(counts, list) or len(counts) != len(bounds) + 1:
            raise InvalidSummary("counts must have one entry per bound plus one for the overflow bucket")
        if not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 2**53 for c in counts):
            raise InvalidSummary("counts must be non-negative integers")
        if "count" in data and data["count"] != sum(counts):
            raise InvalidSummary("count must equal the sum of counts")
        total = data.get("sum", 0)
        if not _is_number(total) or total < 0:
            raise InvalidSummary("sum must be a non-negative number")
        return cls(bounds=tuple(bounds), counts=list(counts), total=float(total))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value and abs(value) < 1e15


def merge_summaries(summaries: Sequence[dict]) -> LatencyHistogram | None:
    """Merge validated summary dicts (e.g. one model across nodes); None when there are none."""
    merged = None
    for summary in summaries:
        histogram = LatencyHistogram.from_dict(summary)
        merged = histogram if merged is None else merged.merge(histogram)
    return merged
