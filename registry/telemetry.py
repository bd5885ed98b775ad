"""Node telemetry: recording each node's latency summaries, and reading them back.

A report is always written under the account whose token sent it; a body
naming another node is refused, and there is no way to change or delete a
report through the API, so one node can never touch another's data.

Each model's summary is a latency sketch in the JSON form of
`conclave.sketch` (DDSketch, 1 % relative error), the form the dashboards'
rollups use: `dashboards.selectors.latency.node_latency` merges one node's
reports or the whole network's.
"""

import datetime as dt
import math

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from conclave.errors import DomainError, ValidationFailed
from conclave.locks import transaction_lock
from conclave.sketch import InvalidSketch, LatencySketch
from registry.models_nodes import NodeReport


class TelemetryForbidden(DomainError):
    status_code = 403
    error_type = "permission_error"
    default_code = "not_your_node"


class TelemetryRateLimited(DomainError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limited"


_WINDOW = dt.timedelta(hours=1)


def node_report_record(
    *,
    node,
    models: list[dict],
    claimed_node: str | None = None,
    signed_set_version: int | None = None,
    approved_set_version: int | None = None,
    period_start: dt.datetime | None = None,
    period_end: dt.datetime | None = None,
    client: dict | None = None,
    now: dt.datetime | None = None,
) -> NodeReport:
    """Store one report from `node` (the authenticated node account)."""
    now = now or timezone.now()
    if claimed_node is not None and claimed_node != node.get_username():
        raise TelemetryForbidden(
            f"This token belongs to node {node.get_username()!r}; it cannot report for {claimed_node!r}."
        )
    if len(models) > settings.TELEMETRY_MAX_MODELS:
        raise ValidationFailed(
            f"A report covers at most {settings.TELEMETRY_MAX_MODELS} models, got {len(models)}.",
            fields={"models": [f"At most {settings.TELEMETRY_MAX_MODELS} entries."]},
        )
    if period_start and period_end and period_end < period_start:
        raise ValidationFailed("period.end is before period.start.", fields={"period": ["End must not precede start."]})
    summary: dict[str, dict] = {}
    for index, entry in enumerate(models):
        key = f"{entry['model_name']}@{entry['version']}"
        if key in summary:
            raise ValidationFailed(f"{key} appears twice in models.", fields={f"models.{index}": ["Duplicate model."]})
        try:
            # The deep checks (one accuracy network-wide, increasing keys, counts adding up,
            # min <= max, finite numbers) keep every stored summary mergeable with every other.
            sketch = LatencySketch.from_dict(entry["latency_ms"])
        except InvalidSketch as exc:
            raise ValidationFailed(
                f"models.{index}.latency_ms: {exc}.", fields={f"models.{index}.latency_ms": [str(exc)]}
            ) from exc
        summary[key] = sketch.as_dict()
    with transaction.atomic():
        transaction_lock(f"telemetry:{node.pk}")
        recent = NodeReport.objects.filter(node=node, received_at__gt=now - _WINDOW).order_by("received_at")
        limit = settings.TELEMETRY_MAX_REPORTS_PER_HOUR
        if recent.count() >= limit:
            oldest = recent.values_list("received_at", flat=True).first()
            retry_after = max(1, math.ceil((oldest + _WINDOW - now).total_seconds()))
            raise TelemetryRateLimited(
                f"At most {limit} reports per node per hour; try again in {retry_after} s.",
                headers={"Retry-After": str(retry_after)},
            )
        report = NodeReport(
            node=node,
            signed_set_version=signed_set_version,
            approved_set_version=approved_set_version,
            models=list(summary),
            summary=summary,
            period_start=period_start,
            period_end=period_end,
            received_at=now,
            circuit_breaker=((client or {}).get("circuit_breaker") or {}).get("state", ""),
            client=client or {},
        )
        report.full_clean()
        report.save()
    return report


def node_reports_for(*, node) -> QuerySet[NodeReport]:
    return NodeReport.objects.filter(node=node).order_by("-received_at", "-id")


def node_reports_latest() -> list[NodeReport]:
    """The latest report of every node that ever reported (for the fleet view)."""
    latest_ids = {}
    for pk, node_id in NodeReport.objects.order_by("node_id", "-received_at", "-id").values_list("pk", "node_id"):
        latest_ids.setdefault(node_id, pk)
    return list(NodeReport.objects.select_related("node").filter(pk__in=latest_ids.values()).order_by("node__username"))
