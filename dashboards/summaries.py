"""What one model's requests on one endpoint amounted to in one period, and how periods add up.

`PeriodSummary` is the in-memory form of a `LatencyRollup` row: the counts
add, the sketches merge, so minutes make hours, hours make a week, and a
summary built from raw samples merges with one read from a rollup row.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from conclave_node.sketch import LatencySketch, SketchAccumulator

LATENCY_METRICS = ("e2e", "queue", "ttft", "cpu")
# The sample column each sketch summarises (`cpu`: CPU ms per request, the cost of a query).
METRIC_COLUMNS = {"e2e": "e2e_ms", "queue": "queue_ms", "ttft": "time_to_first_token_ms", "cpu": "cpu_ms"}
COUNT_FIELDS = ("requests", "ok", "errors", "rejections", "cancelled", "prompt_tokens", "completion_tokens")


def status_class(status: int) -> str:
    """ok | rejection | cancelled | error, by HTTP status (see LatencyRollup)."""
    if status < 400:
        return "ok"
    if status == 499:
        return "cancelled"
    if status == 503 or status < 500:
        return "rejection"
    return "error"


@dataclass
class PeriodSummary:
    requests: int = 0
    ok: int = 0
    errors: int = 0
    rejections: int = 0
    cancelled: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    outcomes: Counter = field(default_factory=Counter)
    rejection_reasons: Counter = field(default_factory=Counter)
    e2e: LatencySketch = field(default_factory=LatencySketch)
    queue: LatencySketch = field(default_factory=LatencySketch)
    ttft: LatencySketch = field(default_factory=LatencySketch)
    cpu: LatencySketch = field(default_factory=LatencySketch)

    def count_requests(self, *, status: int, outcome: str, n: int, prompt_tokens: int, completion_tokens: int) -> None:
        kind = status_class(status)
        self.requests += n
        if kind == "ok":
            self.ok += n
        elif kind == "cancelled":
            self.cancelled += n
        elif kind == "rejection":
            self.rejections += n
            self.rejection_reasons[outcome or "unknown"] += n
        else:
            self.errors += n
        self.outcomes[outcome or "unknown"] += n
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def merge(self, other: PeriodSummary) -> PeriodSummary:
        for name in COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.outcomes.update(other.outcomes)
        self.rejection_reasons.update(other.rejection_reasons)
        for metric in LATENCY_METRICS:
            getattr(self, metric).merge(getattr(other, metric))
        return self

    def row_fields(self) -> dict:
        """The columns of a LatencyRollup row (period, model and endpoint aside)."""
        return {
            **{name: getattr(self, name) for name in COUNT_FIELDS},
            "outcomes": dict(sorted(self.outcomes.items())),
            "rejection_reasons": dict(sorted(self.rejection_reasons.items())),
            **{metric: getattr(self, metric).as_dict() for metric in LATENCY_METRICS},
        }


class PeriodAccumulator:
    """Adds many periods (stored rows or summaries) up into one `PeriodSummary`, cheaply."""

    __slots__ = (*COUNT_FIELDS, "outcomes", "rejection_reasons", *LATENCY_METRICS)

    def __init__(self) -> None:
        for name in COUNT_FIELDS:
            setattr(self, name, 0)
        self.outcomes: Counter = Counter()
        self.rejection_reasons: Counter = Counter()
        for metric in LATENCY_METRICS:
            setattr(self, metric, SketchAccumulator())

    def add_row_values(self, values: dict) -> None:
        """Add a LatencyRollup row's values (as `rollups_read` yields them)."""
        for name in COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + values[name])
        if values["outcomes"]:
            self.outcomes.update(values["outcomes"])
        if values["rejection_reasons"]:
            self.rejection_reasons.update(values["rejection_reasons"])
        for metric in LATENCY_METRICS:
            getattr(self, metric).add_dict(values[metric])

    def add_summary(self, summary: PeriodSummary) -> None:
        for name in COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(summary, name))
        self.outcomes.update(summary.outcomes)
        self.rejection_reasons.update(summary.rejection_reasons)
        for metric in LATENCY_METRICS:
            getattr(self, metric).add_sketch(getattr(summary, metric))

    def summary(self) -> PeriodSummary:
        return PeriodSummary(
            **{name: getattr(self, name) for name in COUNT_FIELDS},
            outcomes=Counter(self.outcomes),
            rejection_reasons=Counter(self.rejection_reasons),
            **{metric: getattr(self, metric).sketch() for metric in LATENCY_METRICS},
        )
