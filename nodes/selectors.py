"""Reads of node telemetry: one node's reports, and every node's latest."""

from django.db.models import QuerySet

from nodes.models import NodeReport


def node_reports_for(*, node) -> QuerySet[NodeReport]:
    return NodeReport.objects.filter(node=node).order_by("-received_at", "-id")


def node_reports_latest() -> list[NodeReport]:
    """The latest report of every node that ever reported (for the fleet view)."""
    latest_ids = {}
    for pk, node_id in NodeReport.objects.order_by("node_id", "-received_at", "-id").values_list("pk", "node_id"):
        latest_ids.setdefault(node_id, pk)
    return list(NodeReport.objects.select_related("node").filter(pk__in=latest_ids.values()).order_by("node__username"))
