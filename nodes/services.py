"""Node telemetry: recording each node's latency summaries (reads are in `nodes.selectors`).

A report is always written under the account whose token sent it; a body
naming another node is refused, and there is no way to change or delete a
report through the API, so one node can never touch another's data.

Each model's summary is a latency sketch in the JSON form of
`conclave_node.sketch` (DDSketch, 1 % relative error), the form the dashboards'
rollups use: `dashboards.selectors.latency.node_latency` merges one node's
reports or the whole network's.
"""

import datetime as dt
import ipaddress
import math
import urllib.parse

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from conclave_node.sketch import InvalidSketch, LatencySketch
from core.errors import Conflict, Forbidden, RateLimited, ValidationFailed
from core.locks import transaction_lock
from nodes.models import NodeReport, ServingNode


class TelemetryForbidden(Forbidden):
    default_code = "not_your_node"


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
) -> tuple[NodeReport, bool]:
    """Store one report from `node` (the authenticated node account); returns it and whether it is new.

    A report is idempotent per node and period: sending the same report for
    a period again (a retry after a lost answer) returns the stored one and
    stores nothing; other figures for a stored period are a conflict.
    """
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
        if period_start and period_end:
            stored = NodeReport.objects.filter(node=node, period_start=period_start, period_end=period_end).first()
            if stored is not None:
                if (stored.summary, stored.signed_set_version, stored.approved_set_version) != (
                    summary,
                    signed_set_version,
                    approved_set_version,
                ):
                    raise Conflict(
                        f"A report for {period_start.isoformat()} to {period_end.isoformat()} is already stored "
                        f"(id {stored.pk}) with other figures; a period is reported once.",
                        code="period_already_reported",
                    )
                return stored, False
        recent = NodeReport.objects.filter(node=node, received_at__gt=now - _WINDOW).order_by("received_at")
        limit = settings.TELEMETRY_MAX_REPORTS_PER_HOUR
        if recent.count() >= limit:
            oldest = recent.values_list("received_at", flat=True).first()
            retry_after = max(1, math.ceil((oldest + _WINDOW - now).total_seconds()))
            raise RateLimited(
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
    return report, True


# --- Serving nodes: join and heartbeat ---------------------------------------------------------


def node_url_validate(url: str) -> str:
    """The node's public URL, normalised (no trailing slash); ValidationFailed saying what to fix.

    http or https only, a host, no credentials, no query or fragment. Loopback,
    private, link-local and unspecified addresses are refused unless
    NODES_ALLOW_PRIVATE_URLS is on: otherwise a node could point the platform
    at its own internal services.
    """

    def refuse(reason: str):
        return ValidationFailed(f"url: {reason}", fields={"url": [reason]})

    if not isinstance(url, str) or not url or len(url) > 512:
        raise refuse("Give the node's public URL, at most 512 characters.")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise refuse(f"Not a valid URL ({exc}).") from exc
    if parts.scheme not in ("http", "https"):
        raise refuse("The scheme must be http or https.")
    if parts.username is not None or parts.password is not None:
        raise refuse("A node URL carries no credentials; the platform authenticates with the secret sent at join.")
    if not parts.hostname:
        raise refuse("The URL names no host.")
    if parts.query or parts.fragment:
        raise refuse("A node URL has no query or fragment.")
    host = parts.hostname
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
        if host == "localhost" or host.endswith(".localhost"):
            address = ipaddress.ip_address("127.0.0.1")
    if address is not None and not settings.NODES_ALLOW_PRIVATE_URLS:
        if address.is_loopback or address.is_private or address.is_link_local or address.is_unspecified:
            raise refuse(
                f"{host} is a loopback, private or link-local address; a node must be reachable at a public "
                "address (NODES_ALLOW_PRIVATE_URLS allows these, for tests and private networks)."
            )
    netloc = f"[{host}]" if address is not None and address.version == 6 else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def serving_node_join(
    *,
    node,
    url: str,
    secret: str,
    models: list[str],
    hardware: dict | None = None,
    signed_set_version: int | None = None,
    queue_capacity: int | None = None,
    now: dt.datetime | None = None,
) -> ServingNode:
    """Announce (or re-announce) `node` as serving `models` (manifest CIDs) at `url`; it is in the rotation at once.

    `queue_capacity` given, the node has room from its join on; otherwise
    from its first heartbeat (a re-join keeps the last one it beat).
    """
    now = now or timezone.now()
    url = node_url_validate(url)
    if not isinstance(secret, str) or not 32 <= len(secret) <= 128:
        raise ValidationFailed("secret: 32 to 128 characters.", fields={"secret": ["32 to 128 characters."]})
    defaults = {
        "url": url,
        "secret": secret,
        "models": sorted(set(models)),
        "hardware": hardware or {},
        "signed_set_version": signed_set_version,
        "running": 0,
        "waiting": 0,
        "joined_at": now,
        "last_heartbeat_at": now,
    }
    if queue_capacity is not None:
        defaults["queue_capacity"] = queue_capacity
    with transaction.atomic():
        serving, _ = ServingNode.objects.update_or_create(account=node, defaults=defaults)
    return serving


def serving_node_heartbeat(
    *,
    node,
    running: int,
    waiting: int,
    queue_capacity: int,
    models: list[str] | None = None,
    signed_set_version: int | None = None,
    now: dt.datetime | None = None,
) -> ServingNode:
    """Record `node`'s load; Conflict (code not_joined) when it has not joined, so it joins again."""
    now = now or timezone.now()
    fields = {
        "running": running,
        "waiting": waiting,
        "queue_capacity": queue_capacity,
        "last_heartbeat_at": now,
    }
    if models is not None:
        fields["models"] = sorted(set(models))
    if signed_set_version is not None:
        fields["signed_set_version"] = signed_set_version
    if not ServingNode.objects.filter(account=node).update(**fields):
        raise Conflict("This node has not joined; join first (POST /api/v1/nodes/join/).", code="not_joined")
    return ServingNode.objects.get(account=node)
