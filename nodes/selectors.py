"""Reads of nodes: one node's reports, every node's latest, and the serving nodes in the rotation."""

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from nodes.models import NodeReport, ServingNode


def node_reports_for(*, node) -> QuerySet[NodeReport]:
    return NodeReport.objects.filter(node=node).order_by("-received_at", "-id")


def node_reports_latest() -> list[NodeReport]:
    """The latest report of every node that ever reported (for the fleet view)."""
    latest_ids = {}
    for pk, node_id in NodeReport.objects.order_by("node_id", "-received_at", "-id").values_list("pk", "node_id"):
        latest_ids.setdefault(node_id, pk)
    return list(NodeReport.objects.select_related("node").filter(pk__in=latest_ids.values()).order_by("node__username"))


@dataclass(frozen=True)
class RoutableNode:
    """What the router needs of one serving node (a plain value: no database access after the read)."""

    node_id: int
    name: str
    url: str
    secret: str
    models: tuple[str, ...]
    running: int
    waiting: int
    queue_capacity: int
    hardware: dict
    last_heartbeat_at: dt.datetime
    joined_at: dt.datetime

    @property
    def has_room(self) -> bool:
        # queue_capacity is what the node admits at once: its governed max_concurrent_requests + queue_size.
        return self.running + self.waiting < self.queue_capacity


def _routable(serving: ServingNode) -> RoutableNode:
    return RoutableNode(
        node_id=serving.account_id,
        name=serving.account.get_username(),
        url=serving.url,
        secret=serving.secret,
        models=tuple(serving.models),
        running=serving.running,
        waiting=serving.waiting,
        queue_capacity=serving.queue_capacity,
        hardware=dict(serving.hardware),
        last_heartbeat_at=serving.last_heartbeat_at,
        joined_at=serving.joined_at,
    )


def serving_nodes_routable(
    *, manifest_cid: str | None = None, also_as: Collection[str] = (), now: dt.datetime | None = None
) -> list[RoutableNode]:
    """Nodes in the rotation (heartbeat fresh), serving `manifest_cid` when given, by name.

    `also_as` names other CIDs the same manifest's document has had: a node
    announces the CID of its signed set, which lags the registry's after a
    benchmark rewrites the metrics, and every version describes the same files.
    """
    now = now or timezone.now()
    fresh_since = now - dt.timedelta(seconds=settings.NODES_HEARTBEAT_TIMEOUT_SECONDS)
    nodes = ServingNode.objects.select_related("account").filter(last_heartbeat_at__gte=fresh_since)
    if manifest_cid is None:
        return [_routable(serving) for serving in nodes]
    wanted = {manifest_cid, *also_as}
    return [_routable(serving) for serving in nodes if wanted.intersection(serving.models or [])]


def serving_nodes_all() -> list[ServingNode]:
    """Every node that ever joined, in the rotation or not (for the fleet page)."""
    return list(ServingNode.objects.select_related("account").order_by("account__username"))


def serving_node_in_rotation(serving: ServingNode, *, now: dt.datetime | None = None) -> bool:
    now = now or timezone.now()
    return serving.last_heartbeat_at >= now - dt.timedelta(seconds=settings.NODES_HEARTBEAT_TIMEOUT_SECONDS)
