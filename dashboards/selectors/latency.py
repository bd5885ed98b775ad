"""Latency and traffic per model, from rollups (and the newest minutes' raw samples).

A window is read in up to three pieces, oldest first: hour rollups where the
window's step is whole hours, minute rollups up to the minute cursor, and
raw samples only for the few minutes the rollup task has not made final yet.
The three kinds summarise requests the same way (`samples_summarize` is what
the rollup task stores), so the pieces merge without seams.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import BigIntegerField, Case, Count, F, FloatField, Func, Max, Min, Q, Sum, Value, When
from django.db.models.functions import Ceil, Ln
from django.utils import timezone

from conclave_node.sketch import KIND, LN_GAMMA, RELATIVE_ACCURACY, ZERO_THRESHOLD_MS, LatencySketch, sketches_merge
from core.errors import ValidationFailed
from dashboards.models import LatencyRollup, Resolution, RollupCursor
from dashboards.summaries import COUNT_FIELDS, LATENCY_METRICS, METRIC_COLUMNS, PeriodAccumulator, PeriodSummary
from inference.models import ANSWER_CACHE_ENDPOINT, LatencySample

PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}


@dataclass(frozen=True)
class Window:
    name: str
    duration: dt.timedelta
    step: dt.timedelta
    label: str


WINDOWS = {
    window.name: window
    for window in (
        Window("15m", dt.timedelta(minutes=15), dt.timedelta(minutes=1), "15 minutes"),
        Window("1h", dt.timedelta(hours=1), dt.timedelta(minutes=1), "1 hour"),
        Window("24h", dt.timedelta(hours=24), dt.timedelta(hours=1), "24 hours"),
        Window("7d", dt.timedelta(days=7), dt.timedelta(hours=2), "7 days"),
    )
}
DEFAULT_WINDOW = "1h"

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# Refused before running: 4xx other than 499 (client gone), and 503 (queue full, no worker).
REJECTED = Q(status=503) | (Q(status__gte=400, status__lt=500) & ~Q(status=499))


def window_get(name: str | None) -> Window:
    window = WINDOWS.get(name or DEFAULT_WINDOW)
    if window is None:
        choices = ", ".join(WINDOWS)
        raise ValidationFailed(
            f"Unknown window {name!r}; choose one of {choices}.", fields={"window": [f"Choose one of {choices}."]}
        )
    return window


def floor_time(moment: dt.datetime, step: dt.timedelta) -> dt.datetime:
    """`moment` rounded down to a multiple of `step` since the Unix epoch (UTC)."""
    epoch = _EPOCH
    seconds = int(step.total_seconds())
    elapsed = int((moment - epoch).total_seconds())
    return epoch + dt.timedelta(seconds=elapsed - elapsed % seconds)


def window_bounds(window: Window, end: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """[start, end): as many whole steps as the window has, aligned to the step; the last may be in progress."""
    steps = int(window.duration / window.step)
    last_step_end = floor_time(end, window.step)
    if last_step_end < end:
        last_step_end += window.step
    return last_step_end - window.step * steps, end


class EpochMinute(Func):
    """Whole minutes since the Unix epoch (UTC) of a datetime column, as an integer.

    Grouping by an integer, not a truncated timestamp, spares converting a
    datetime for every (minute, bucket) row that comes back.
    """

    output_field = BigIntegerField()

    def as_postgresql(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, template="FLOOR(EXTRACT(EPOCH FROM %(expressions)s) / 60)::bigint")

    def as_sqlite(self, compiler, connection, **extra_context):
        # Django stores aware datetimes in SQLite as UTC text that strftime reads; "%%%%" survives
        # both the template and the backend's placeholder rewriting as one "%".
        return self.as_sql(compiler, connection, template="(CAST(strftime('%%%%s', %(expressions)s) AS INTEGER) / 60)")


# --- Reading the three kinds of source ---------------------------------------------------------


Key = tuple[dt.datetime, str, str]  # (period start, model, endpoint)


def samples_summarize(
    *, start: dt.datetime, end: dt.datetime, model: str | None = None, endpoint: str | None = None
) -> dict[Key, PeriodSummary]:
    """Per-minute summaries of the raw samples in [start, end), computed in the database.

    Counting and bucketing happen in SQL (GROUP BY minute, model, endpoint
    and bucket key), so what crosses to Python is one row per non-empty
    bucket, never one per sample.
    """
    samples = LatencySample.objects.filter(created_at__gte=start, created_at__lt=end)
    if model is not None:
        samples = samples.filter(model=model)
    if endpoint is not None:
        samples = samples.filter(endpoint=endpoint)
    samples = samples.annotate(minute=EpochMinute("created_at")).order_by()
    summaries: dict[Key, PeriodSummary] = defaultdict(PeriodSummary)
    periods: dict[int, dt.datetime] = {}

    def key_of(minute: int, model_name: str, endpoint_name: str) -> Key:
        period = periods.get(minute) or periods.setdefault(minute, _EPOCH + dt.timedelta(minutes=minute))
        return period, model_name, endpoint_name

    counts = samples.values_list("minute", "model", "endpoint", "status", "outcome").annotate(
        n=Count("id"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")
    )
    for minute, model_name, endpoint_name, status, outcome, n, prompt, completion in counts:
        summaries[key_of(minute, model_name, endpoint_name)].count_requests(
            status=status, outcome=outcome, n=n, prompt_tokens=prompt or 0, completion_tokens=completion or 0
        )

    served = samples.exclude(REJECTED)
    for metric in LATENCY_METRICS:
        column = METRIC_COLUMNS[metric]
        buckets = (
            served.filter(**{f"{column}__isnull": False})
            .annotate(
                key=Case(
                    When(**{f"{column}__gt": ZERO_THRESHOLD_MS}, then=Ceil(Ln(F(column)) / Value(LN_GAMMA))),
                    default=None,
                    output_field=FloatField(),
                )
            )
            .values_list("minute", "model", "endpoint", "key")
            .annotate(n=Count("id"), total=Sum(column), low=Min(column), high=Max(column))
        )
        for minute, model_name, endpoint_name, key, n, total, low, high in buckets:
            sketch: LatencySketch = getattr(summaries[key_of(minute, model_name, endpoint_name)], metric)
            if key is None:
                sketch.zero += n
            else:
                key = int(key)
                sketch.bins[key] = sketch.bins.get(key, 0) + n
            sketch.count += n
            sketch.total += total or 0.0
            sketch.min = low if sketch.min is None else min(sketch.min, low)
            sketch.max = high if sketch.max is None else max(sketch.max, high)
    return dict(summaries)


_ROW_FIELDS = ("period_start", "model", "endpoint", *COUNT_FIELDS, "outcomes", "rejection_reasons", *LATENCY_METRICS)


def rollups_read(
    *,
    resolution: int,
    start: dt.datetime,
    end: dt.datetime,
    model: str | None = None,
    endpoint: str | None = None,
) -> Iterable[tuple[Key, dict]]:
    rows = LatencyRollup.objects.filter(resolution=resolution, period_start__gte=start, period_start__lt=end)
    if model is not None:
        rows = rows.filter(model=model)
    if endpoint is not None:
        rows = rows.filter(endpoint=endpoint)
    for values in rows.order_by().values(*_ROW_FIELDS).iterator(chunk_size=2000):
        yield (values["period_start"], values["model"], values["endpoint"]), values


def rollup_cursor(resolution: int) -> dt.datetime | None:
    return RollupCursor.objects.filter(resolution=resolution).values_list("through", flat=True).first()


@dataclass(frozen=True)
class WindowPlan:
    """Which source answers which part of [start, end)."""

    hours: tuple[dt.datetime, dt.datetime] | None
    minutes: tuple[dt.datetime, dt.datetime] | None
    samples: tuple[dt.datetime, dt.datetime] | None


def window_plan(*, start: dt.datetime, end: dt.datetime, step: dt.timedelta) -> WindowPlan:
    position = start
    hours = minutes = None
    hour_cursor = rollup_cursor(Resolution.HOUR)
    if hour_cursor and step % dt.timedelta(hours=1) == dt.timedelta(0) and start == floor_time(start, step):
        until = min(hour_cursor, floor_time(end, dt.timedelta(hours=1)))
        if until > position:
            hours, position = (position, until), until
    minute_cursor = rollup_cursor(Resolution.MINUTE)
    if minute_cursor:
        until = min(minute_cursor, floor_time(end, dt.timedelta(minutes=1)))
        if until > position:
            minutes, position = (position, until), until
    samples = (position, end) if end > position else None
    return WindowPlan(hours=hours, minutes=minutes, samples=samples)


def window_accumulate(
    *,
    start: dt.datetime,
    end: dt.datetime,
    step: dt.timedelta,
    bucket,
    model: str | None = None,
    endpoint: str | None = None,
) -> None:
    """Add every period of [start, end) to the accumulators `bucket(period, model, endpoint)` returns.

    `bucket` returns the accumulators (`PeriodAccumulator`) a period belongs to.
    """
    plan = window_plan(start=start, end=end, step=step)
    for resolution, piece in ((Resolution.HOUR, plan.hours), (Resolution.MINUTE, plan.minutes)):
        if piece:
            rows = rollups_read(resolution=resolution, start=piece[0], end=piece[1], model=model, endpoint=endpoint)
            for key, values in rows:
                for accumulator in bucket(*key):
                    accumulator.add_row_values(values)
    if plan.samples:
        tail = samples_summarize(start=plan.samples[0], end=plan.samples[1], model=model, endpoint=endpoint)
        for key, summary in tail.items():
            for accumulator in bucket(*key):
                accumulator.add_summary(summary)


# --- The overview ------------------------------------------------------------------------------


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def latency_stats(sketch: LatencySketch) -> dict:
    values = sketch.quantiles(list(PERCENTILES.values()))
    return {
        "count": sketch.count,
        **{name: _rounded(value) for name, value in zip(PERCENTILES, values, strict=True)},
        "mean": _rounded(sketch.mean),
        "max": _rounded(sketch.max),
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def overview(
    *,
    window: str | None = None,
    end: dt.datetime | None = None,
    model: str | None = None,
    endpoint: str | None = None,
) -> dict:
    """Request rate, error and rejection rates, p50/p95/p99 latencies and tokens/s per model, with a time series."""
    spec = window_get(window)
    end = end or timezone.now()
    start, end = window_bounds(spec, end)
    seconds = (end - start).total_seconds()
    step_count = int(spec.duration / spec.step)
    totals: dict[str, PeriodAccumulator] = {}
    steps: dict[tuple[str, int], PeriodAccumulator] = {}
    endpoints: dict[str, set[str]] = defaultdict(set)

    cache = PeriodAccumulator()

    def bucket(period: dt.datetime, name: str, endpoint_name: str):
        if endpoint_name == ANSWER_CACHE_ENDPOINT:
            # Cache lookups are not served requests: they make the hit rate only.
            return (cache,)
        endpoints[name].add(endpoint_name)
        index = int((period - start) / spec.step)
        total = totals.get(name) or totals.setdefault(name, PeriodAccumulator())
        step = steps.get((name, index)) or steps.setdefault((name, index), PeriodAccumulator())
        return total, step

    window_accumulate(start=start, end=end, step=spec.step, bucket=bucket, model=model, endpoint=endpoint)

    models = []
    empty = PeriodSummary()
    for name in sorted(totals):
        total = totals[name].summary()
        series = []
        for index in range(step_count):
            accumulator = steps.get((name, index))
            step = accumulator.summary() if accumulator else empty
            step_start = start + spec.step * index
            step_seconds = (min(step_start + spec.step, end) - step_start).total_seconds()
            series.append(
                {
                    "start": step_start,
                    "requests": step.requests,
                    "errors": step.errors,
                    "rejections": step.rejections,
                    "request_rate": round(step.requests / step_seconds, 4) if step_seconds > 0 else None,
                    **{metric: _percentiles(getattr(step, metric)) for metric in LATENCY_METRICS},
                }
            )
        models.append(
            {
                "model": name,
                "endpoints": sorted(endpoints[name]),
                "requests": total.requests,
                "ok": total.ok,
                "errors": total.errors,
                "rejections": total.rejections,
                "cancelled": total.cancelled,
                "request_rate": round(total.requests / seconds, 4) if seconds else None,
                "error_rate": _rate(total.errors, total.requests),
                "rejection_rate": _rate(total.rejections, total.requests),
                "rejection_reasons": dict(sorted(total.rejection_reasons.items())),
                "outcomes": dict(sorted(total.outcomes.items())),
                "prompt_tokens": total.prompt_tokens,
                "completion_tokens": total.completion_tokens,
                "prompt_tokens_per_second": round(total.prompt_tokens / seconds, 3) if seconds else None,
                "completion_tokens_per_second": round(total.completion_tokens / seconds, 3) if seconds else None,
                "latency_ms": {metric: latency_stats(getattr(total, metric)) for metric in LATENCY_METRICS},
                "series": series,
            }
        )
    return {
        "window": spec.name,
        "start": start,
        "end": end,
        "step_seconds": int(spec.step.total_seconds()),
        "relative_accuracy": RELATIVE_ACCURACY,
        "answer_cache": answer_cache_stats(cache.summary()),
        "models": models,
    }


def answer_cache_stats(summary: PeriodSummary) -> dict:
    """/ask's semantic cache in a window: lookups, hits and the hit rate."""
    hits = summary.outcomes.get("hit", 0)
    return {"lookups": summary.requests, "hits": hits, "hit_rate": _rate(hits, summary.requests)}


def _percentiles(sketch: LatencySketch) -> dict:
    values = sketch.quantiles(list(PERCENTILES.values()))
    return {name: _rounded(value) for name, value in zip(PERCENTILES, values, strict=True)}


def model_latency(*, model: str, start: dt.datetime, end: dt.datetime) -> dict | None:
    """One model's totals over [start, end) (all endpoints): for side-by-side comparisons."""
    accumulator = PeriodAccumulator()
    window_accumulate(
        start=start, end=end, step=dt.timedelta(minutes=1), bucket=lambda *key: (accumulator,), model=model
    )
    total = accumulator.summary()
    if not total.requests:
        return None
    return {
        "start": start,
        "end": end,
        "requests": total.requests,
        "error_rate": _rate(total.errors, total.requests),
        "rejection_rate": _rate(total.rejections, total.requests),
        "latency_ms": {metric: latency_stats(getattr(total, metric)) for metric in LATENCY_METRICS},
    }


def node_latency(*, model: str, start: dt.datetime, end: dt.datetime, node=None) -> dict:
    """A model's latency as nodes reported it (one node, or every node merged) over [start, end).

    Nodes report `conclave_node.sketch` sketches (the server validates each one
    before storing it), so per-node summaries merge exactly, like rollups.
    Reports stored before nodes sent sketches hold fixed-bucket histograms,
    which cannot become sketches: they are counted in `unmergeable` rather
    than approximated.
    """
    from nodes.models import NodeReport

    reports = NodeReport.objects.filter(received_at__gte=start, received_at__lt=end)
    if node is not None:
        reports = reports.filter(node=node)
    sketches, unmergeable = [], 0
    for summary in reports.values_list("summary", flat=True).iterator(chunk_size=2000):
        entry = (summary or {}).get(model)
        if entry is None:
            continue
        if isinstance(entry, dict) and entry.get("kind") == KIND:
            sketches.append(entry)
        else:
            unmergeable += 1
    return {
        "model": model,
        "reports": len(sketches),
        "unmergeable": unmergeable,
        "e2e": latency_stats(sketches_merge(sketches)),
    }
