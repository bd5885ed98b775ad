"""Writes of the dashboards app: rolling latency samples up, and pruning what rollups replaced.

Rolling up is idempotent: a period's rows are deleted and recomputed from
their source (raw samples for minutes, minute rows for hours) in one
transaction, so running it twice, or over a range already rolled up, gives
the same rows. `RollupCursor` remembers how far each resolution is final;
the beat moves it forward, never back.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.errors import ValidationFailed
from core.locks import transaction_lock
from dashboards.models import LatencyRollup, Resolution, RollupCursor
from dashboards.selectors.latency import floor_time, rollup_cursor, rollups_read, samples_summarize
from dashboards.summaries import PeriodAccumulator
from inference.models import LatencySample

logger = logging.getLogger(__name__)

MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
# Bounds the memory and transaction size of catching up on a long backlog.
MINUTES_PER_CHUNK = dt.timedelta(hours=3)
HOURS_PER_CHUNK = dt.timedelta(hours=24)
_LOCK = "dashboards:rollup"


@dataclass(frozen=True)
class RollupReport:
    minute_rows: int
    hour_rows: int
    minutes_through: dt.datetime | None
    hours_through: dt.datetime | None
    samples_pruned: int

    def as_dict(self) -> dict:
        return {
            "minute_rows": self.minute_rows,
            "hour_rows": self.hour_rows,
            "minutes_through": self.minutes_through.isoformat() if self.minutes_through else None,
            "hours_through": self.hours_through.isoformat() if self.hours_through else None,
            "samples_pruned": self.samples_pruned,
        }


def _rows(resolution: int, summaries: dict) -> list[LatencyRollup]:
    return [
        LatencyRollup(
            period_start=period, resolution=resolution, model=model, endpoint=endpoint, **summary.row_fields()
        )
        for (period, model, endpoint), summary in sorted(summaries.items())
    ]


def _check_range(start: dt.datetime, end: dt.datetime, step: dt.timedelta) -> None:
    if start != floor_time(start, step) or end != floor_time(end, step):
        raise ValidationFailed(f"A rollup range must start and end on whole {step}s; got {start} .. {end}.")
    if end < start:
        raise ValidationFailed("A rollup range cannot end before it starts.")


def rollup_minutes_rebuild(*, start: dt.datetime, end: dt.datetime) -> int:
    """Recompute the minute rows of [start, end) from the raw samples; returns the rows written."""
    _check_range(start, end, MINUTE)
    with transaction.atomic():
        transaction_lock(_LOCK)
        summaries = samples_summarize(start=start, end=end)
        LatencyRollup.objects.filter(
            resolution=Resolution.MINUTE, period_start__gte=start, period_start__lt=end
        ).delete()
        rows = LatencyRollup.objects.bulk_create(_rows(Resolution.MINUTE, summaries), batch_size=500)
    return len(rows)


def rollup_hours_rebuild(*, start: dt.datetime, end: dt.datetime) -> int:
    """Recompute the hour rows of [start, end) by merging their minute rows."""
    _check_range(start, end, HOUR)
    with transaction.atomic():
        transaction_lock(_LOCK)
        accumulators: dict = defaultdict(PeriodAccumulator)
        for (period, model, endpoint), values in rollups_read(resolution=Resolution.MINUTE, start=start, end=end):
            accumulators[(floor_time(period, HOUR), model, endpoint)].add_row_values(values)
        summaries = {key: accumulator.summary() for key, accumulator in accumulators.items()}
        LatencyRollup.objects.filter(resolution=Resolution.HOUR, period_start__gte=start, period_start__lt=end).delete()
        rows = LatencyRollup.objects.bulk_create(_rows(Resolution.HOUR, summaries), batch_size=500)
    return len(rows)


def _cursor_set(resolution: int, through: dt.datetime) -> None:
    RollupCursor.objects.update_or_create(resolution=resolution, defaults={"through": through})


def _first_sample_minute() -> dt.datetime | None:
    first = LatencySample.objects.order_by("created_at").values_list("created_at", flat=True).first()
    return None if first is None else floor_time(first, MINUTE)


def _first_minute_row_hour() -> dt.datetime | None:
    first = (
        LatencyRollup.objects.filter(resolution=Resolution.MINUTE)
        .order_by("period_start")
        .values_list("period_start", flat=True)
        .first()
    )
    return None if first is None else floor_time(first, HOUR)


def metrics_rollup(*, now: dt.datetime | None = None) -> RollupReport:
    """Roll every minute that is final (ended at least the lateness margin ago), then every whole hour.

    Catches up in chunks from the cursor, each chunk its own transaction, so
    a long backlog never holds one huge transaction and an interrupted run
    resumes where it stopped.
    """
    now = now or timezone.now()
    minute_rows = hour_rows = 0
    target = floor_time(now - dt.timedelta(seconds=settings.DASHBOARDS_ROLLUP_LATENESS_SECONDS), MINUTE)
    position = rollup_cursor(Resolution.MINUTE) or _first_sample_minute()
    while position is not None and position < target:
        chunk_end = min(position + MINUTES_PER_CHUNK, target)
        with transaction.atomic():
            transaction_lock(_LOCK)
            # Another run may have moved the cursor while this one waited for the lock.
            current = rollup_cursor(Resolution.MINUTE)
            if current is not None and current >= chunk_end:
                position = current
                continue
            minute_rows += rollup_minutes_rebuild(start=position, end=chunk_end)
            _cursor_set(Resolution.MINUTE, chunk_end)
        position = chunk_end
    minutes_through = rollup_cursor(Resolution.MINUTE)

    hours_through = rollup_cursor(Resolution.HOUR)
    if minutes_through is not None:
        hour_target = floor_time(minutes_through, HOUR)
        position = hours_through or _first_minute_row_hour()
        while position is not None and position < hour_target:
            chunk_end = min(position + HOURS_PER_CHUNK, hour_target)
            with transaction.atomic():
                transaction_lock(_LOCK)
                current = rollup_cursor(Resolution.HOUR)
                if current is not None and current >= chunk_end:
                    position = current
                    continue
                hour_rows += rollup_hours_rebuild(start=position, end=chunk_end)
                _cursor_set(Resolution.HOUR, chunk_end)
            position = chunk_end
        hours_through = rollup_cursor(Resolution.HOUR)

    pruned = latency_samples_prune(now=now)
    return RollupReport(minute_rows, hour_rows, minutes_through, hours_through, pruned)


def metrics_rollup_redo(*, start: dt.datetime, end: dt.datetime | None = None) -> RollupReport:
    """Recompute rollups of [start, end) that are already final (e.g. after samples arrived late).

    Only the part before the cursors is redone; the beat rolls the rest.
    """
    minutes_through = rollup_cursor(Resolution.MINUTE)
    hours_through = rollup_cursor(Resolution.HOUR)
    if minutes_through is None:
        return RollupReport(0, 0, None, hours_through, 0)
    end = min(end or minutes_through, minutes_through)
    start = floor_time(start, MINUTE)
    minute_rows = hour_rows = 0
    position = start
    while position < end:
        chunk_end = min(position + MINUTES_PER_CHUNK, floor_time(end, MINUTE))
        if chunk_end <= position:
            break
        minute_rows += rollup_minutes_rebuild(start=position, end=chunk_end)
        position = chunk_end
    if hours_through is not None:
        position = floor_time(start, HOUR)
        hour_end = min(hours_through, floor_time(end, HOUR) + HOUR)
        while position < hour_end:
            chunk_end = min(position + HOURS_PER_CHUNK, hour_end)
            hour_rows += rollup_hours_rebuild(start=position, end=chunk_end)
            position = chunk_end
    return RollupReport(minute_rows, hour_rows, minutes_through, hours_through, 0)


def latency_samples_prune(*, now: dt.datetime | None = None) -> int:
    """Delete raw samples past retention that minute rollups already hold; returns how many."""
    hours = settings.DASHBOARDS_SAMPLE_RETENTION_HOURS
    through = rollup_cursor(Resolution.MINUTE)
    if hours <= 0 or through is None:
        return 0
    cutoff = min((now or timezone.now()) - dt.timedelta(hours=hours), through)
    deleted, _ = LatencySample.objects.filter(created_at__lt=cutoff).delete()
    if deleted:
        logger.info("pruned %d latency samples older than %s (rolled up)", deleted, cutoff.isoformat())
    return deleted
