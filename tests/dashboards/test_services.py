"""Rolling latency samples up: exact counts, sketches equal to Python's, idempotent, resumable, prunable."""

import datetime as dt
from collections import Counter

import numpy as np
import pytest
from django.test import override_settings

from conclave_node.sketch import LatencySketch, sketches_merge
from dashboards.models import LatencyRollup, Resolution, RollupCursor
from dashboards.selectors.latency import overview
from dashboards.services import (
    metrics_rollup,
    metrics_rollup_redo,
    rollup_hours_rebuild,
    rollup_minutes_rebuild,
)
from dashboards.summaries import status_class
from inference.models import LatencySample
from tests.dashboards.factories import HOUR, MINUTE, T0, random_traffic, sample, samples_add

pytestmark = pytest.mark.django_db


def rows_snapshot(resolution: int = Resolution.MINUTE) -> list[dict]:
    fields = [f.name for f in LatencyRollup._meta.fields if f.name != "id"]
    return list(
        LatencyRollup.objects.filter(resolution=resolution)
        .order_by("period_start", "model", "endpoint")
        .values(*fields)
    )


def mixed_minutes() -> list[LatencySample]:
    """Three minutes of two models on two endpoints, with every kind of ending."""
    rng = np.random.default_rng(11)
    samples = []
    for minute in range(3):
        base = T0 + MINUTE * minute
        for i in range(40):
            at = base + dt.timedelta(seconds=i * 1.4)
            samples.append(
                sample(
                    at=at,
                    model="mini@1",
                    endpoint="embed",
                    e2e_ms=float(rng.lognormal(2, 0.5)),
                    queue_ms=0.0 if i % 7 == 0 else float(rng.exponential(1.0)),
                )
            )
            samples.append(
                sample(
                    at=at,
                    model="smol@1",
                    endpoint="generate",
                    e2e_ms=float(rng.lognormal(5, 0.7)),
                    ttft_ms=float(rng.lognormal(3, 0.3)),
                    completion_tokens=20,
                )
            )
        samples += [
            sample(
                at=base + dt.timedelta(seconds=50),
                model="smol@1",
                endpoint="generate",
                status=503,
                outcome="queue_full",
                e2e_ms=0.4,
                queue_ms=None,
            ),
            sample(
                at=base + dt.timedelta(seconds=51),
                model="smol@1",
                endpoint="generate",
                status=400,
                outcome="limit_exceeded",
                e2e_ms=0.3,
                queue_ms=None,
            ),
            sample(
                at=base + dt.timedelta(seconds=52),
                model="smol@1",
                endpoint="generate",
                status=504,
                outcome="timeout",
                e2e_ms=30000.0,
                ttft_ms=900.0,
                completion_tokens=3,
            ),
            sample(
                at=base + dt.timedelta(seconds=53),
                model="smol@1",
                endpoint="generate",
                status=499,
                outcome="cancelled",
                e2e_ms=1200.0,
                ttft_ms=100.0,
                completion_tokens=2,
            ),
        ]
    return samples_add(samples)


def test_minute_rows_hold_exact_counts_and_the_same_sketch_python_builds():
    samples = mixed_minutes()
    report = metrics_rollup(now=T0 + HOUR)
    assert report.minute_rows == 6  # 3 minutes x 2 (model, endpoint)

    for row in LatencyRollup.objects.filter(resolution=Resolution.MINUTE):
        mine = [
            s
            for s in samples
            if s.model == row.model
            and s.endpoint == row.endpoint
            and row.period_start <= s.created_at < row.period_start + MINUTE
        ]
        classes = Counter(status_class(s.status) for s in mine)
        assert row.requests == len(mine)
        assert (row.ok, row.rejections, row.errors, row.cancelled) == (
            classes["ok"],
            classes["rejection"],
            classes["error"],
            classes["cancelled"],
        )
        assert row.rejection_reasons == dict(Counter(s.outcome for s in mine if status_class(s.status) == "rejection"))
        assert row.outcomes == dict(Counter(s.outcome for s in mine))
        assert row.prompt_tokens == sum(s.prompt_tokens for s in mine)
        assert row.completion_tokens == sum(s.completion_tokens for s in mine)
        served = [s for s in mine if status_class(s.status) != "rejection"]
        for metric, column in (("e2e", "e2e_ms"), ("queue", "queue_ms"), ("ttft", "time_to_first_token_ms")):
            expected = LatencySketch()
            expected.add_many([getattr(s, column) for s in served if getattr(s, column) is not None])
            stored = LatencySketch.from_dict(getattr(row, metric))
            # Bucketing in SQL (ln, ceil) puts every value where Python does.
            assert stored.bins == expected.bins, (row, metric)
            assert (stored.zero, stored.count, stored.min, stored.max) == (
                expected.zero,
                expected.count,
                expected.min,
                expected.max,
            )


def test_rolling_up_again_gives_the_same_rows():
    mixed_minutes()
    metrics_rollup(now=T0 + HOUR)
    first = rows_snapshot()
    assert rollup_minutes_rebuild(start=T0, end=T0 + 3 * MINUTE) == 6
    assert rows_snapshot() == first
    report = metrics_rollup(now=T0 + HOUR)
    assert report.minute_rows == 0
    assert rows_snapshot() == first


@override_settings(DASHBOARDS_ROLLUP_LATENESS_SECONDS=120)
def test_minutes_inside_the_lateness_margin_are_left_for_later():
    samples_add([sample(at=T0), sample(at=T0 + 3 * MINUTE + dt.timedelta(seconds=10))])
    metrics_rollup(now=T0 + 4 * MINUTE)  # final through T0 + 2 min
    assert RollupCursor.objects.get(resolution=Resolution.MINUTE).through == T0 + 2 * MINUTE
    assert list(LatencyRollup.objects.values_list("period_start", flat=True)) == [T0]
    metrics_rollup(now=T0 + 10 * MINUTE)
    assert list(LatencyRollup.objects.filter(resolution=Resolution.MINUTE).values_list("period_start", flat=True)) == [
        T0,
        T0 + 3 * MINUTE,
    ]


def test_hour_rows_are_the_exact_merge_of_their_minute_rows():
    rng = np.random.default_rng(5)
    samples_add(random_traffic(rng, start=T0, span=3 * HOUR, n=2000))
    metrics_rollup(now=T0 + 4 * HOUR)
    hours = LatencyRollup.objects.filter(resolution=Resolution.HOUR).order_by("period_start")
    assert [h.period_start for h in hours] == [T0, T0 + HOUR, T0 + 2 * HOUR]
    for hour in hours:
        minutes = LatencyRollup.objects.filter(
            resolution=Resolution.MINUTE, period_start__gte=hour.period_start, period_start__lt=hour.period_start + HOUR
        )
        assert hour.requests == sum(m.requests for m in minutes)
        assert hour.completion_tokens == sum(m.completion_tokens for m in minutes)
        merged = sketches_merge(m.e2e for m in minutes)
        assert LatencySketch.from_dict(hour.e2e).bins == merged.bins
    assert sum(h.requests for h in hours) == 2000
    first = rows_snapshot(Resolution.HOUR)
    rollup_hours_rebuild(start=T0, end=T0 + 3 * HOUR)
    assert rows_snapshot(Resolution.HOUR) == first


def test_a_long_backlog_is_rolled_up_in_chunks_and_the_cursor_ends_at_the_last_final_minute():
    rng = np.random.default_rng(8)
    samples_add(random_traffic(rng, start=T0, span=10 * HOUR, n=1500))
    now = T0 + 10 * HOUR + 30 * MINUTE
    metrics_rollup(now=now)
    assert RollupCursor.objects.get(resolution=Resolution.MINUTE).through == now - 2 * MINUTE
    assert RollupCursor.objects.get(resolution=Resolution.HOUR).through == T0 + 10 * HOUR
    minute_total = sum(LatencyRollup.objects.filter(resolution=Resolution.MINUTE).values_list("requests", flat=True))
    assert minute_total == 1500


def test_late_samples_are_counted_after_a_redo():
    samples_add([sample(at=T0 + dt.timedelta(seconds=5))])
    metrics_rollup(now=T0 + HOUR)
    samples_add([sample(at=T0 + dt.timedelta(seconds=20), e2e_ms=99.0)])  # arrived after its minute was final
    assert overview(window="1h", end=T0 + 30 * MINUTE)["models"][0]["requests"] == 1
    metrics_rollup_redo(start=T0, end=T0 + HOUR)
    assert overview(window="1h", end=T0 + 30 * MINUTE)["models"][0]["requests"] == 2


@override_settings(DASHBOARDS_SAMPLE_RETENTION_HOURS=1)
def test_prune_deletes_only_old_samples_that_are_rolled_up():
    samples_add([sample(at=T0), sample(at=T0 + 3 * HOUR)])
    report = metrics_rollup(now=T0 + 3 * HOUR + 30 * MINUTE)
    assert report.samples_pruned == 1
    assert list(LatencySample.objects.values_list("created_at", flat=True)) == [T0 + 3 * HOUR]
    # The pruned sample still counts: its minute row holds it.
    assert overview(window="7d", end=T0 + 3 * HOUR + 30 * MINUTE)["models"][0]["requests"] == 2


@override_settings(DASHBOARDS_SAMPLE_RETENTION_HOURS=0)
def test_retention_zero_keeps_every_sample():
    samples_add([sample(at=T0)])
    assert metrics_rollup(now=T0 + 30 * HOUR).samples_pruned == 0
    assert LatencySample.objects.count() == 1


def test_nothing_to_roll_up_is_not_an_error():
    report = metrics_rollup(now=T0)
    assert (report.minute_rows, report.hour_rows, report.minutes_through) == (0, 0, None)
