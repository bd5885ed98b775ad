"""Roll latency samples up now (what the beat does every minute), or redo a past range."""

import datetime as dt
import re

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from dashboards.services import metrics_rollup, metrics_rollup_redo

_SPAN = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def _span(text: str) -> dt.timedelta:
    match = _SPAN.match(text)
    if not match:
        raise CommandError(f"--redo takes a span such as 90m, 6h or 2d, not {text!r}")
    return dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


class Command(BaseCommand):
    help = (
        "Roll every final minute of latency samples up into per-minute and per-hour summaries "
        "(idempotent). --redo SPAN recomputes the rollups of the last SPAN, e.g. after samples arrived late."
    )

    def add_arguments(self, parser):
        parser.add_argument("--redo", metavar="SPAN", help="recompute the rollups of the last SPAN (90m, 6h, 2d)")

    def handle(self, *args, redo: str | None, **options):
        if redo:
            report = metrics_rollup_redo(start=timezone.now() - _span(redo))
            self.stdout.write(f"recomputed {report.minute_rows} minute rows and {report.hour_rows} hour rows")
        report = metrics_rollup()
        self.stdout.write(
            self.style.SUCCESS(
                f"{report.minute_rows} minute rows and {report.hour_rows} hour rows written; "
                f"minutes final through {report.minutes_through or '—'}, hours through {report.hours_through or '—'}; "
                f"{report.samples_pruned} old samples pruned"
            )
        )
