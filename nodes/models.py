"""What nodes tell the platform: their latency summaries per model, and where they serve."""

from django.conf import settings
from django.db.models import (
    CASCADE,
    CharField,
    DateTimeField,
    ForeignKey,
    Index,
    JSONField,
    Model,
    OneToOneField,
    PositiveIntegerField,
    Q,
    UniqueConstraint,
)


class NodeReport(Model):
    """One telemetry report from one node, written under the node's own account.

    `models` lists the "model_name@version" the node runs; `summary` maps
    each of them to a latency sketch in the mergeable JSON form of
    `conclave_node.sketch` (DDSketch, α = 1 %: keys, counts, zero, count, sum,
    min, max), the form the dashboards' rollups use. Reports stored before
    nodes sent sketches hold fixed-bucket histograms; the dashboards count
    those as unmergeable. A node has at most one report per period: a
    resend of the same report is answered with the stored one.

    `client` holds the node's client library metrics as it sent them (call
    counts, success rate, latency, circuit breaker); `circuit_breaker` is
    that breaker's state (closed | open | half_open), blank when the node
    sent none.
    """

    node = ForeignKey(settings.AUTH_USER_MODEL, on_delete=CASCADE, related_name="node_reports")
    signed_set_version = PositiveIntegerField(null=True, blank=True)
    approved_set_version = PositiveIntegerField(null=True, blank=True)
    models = JSONField(default=list, blank=True)
    summary = JSONField(default=dict, blank=True)
    period_start = DateTimeField(null=True, blank=True)
    period_end = DateTimeField(null=True, blank=True)
    received_at = DateTimeField(db_index=True)
    circuit_breaker = CharField(max_length=16, blank=True, default="")
    client = JSONField(default=dict, blank=True)

    class Meta:
        db_table = "registry_nodereport"
        ordering = ["-received_at", "-id"]
        indexes = [Index(fields=["node", "-received_at"], name="node_report_latest")]
        constraints = [
            UniqueConstraint(
                fields=["node", "period_start", "period_end"],
                condition=Q(period_start__isnull=False, period_end__isnull=False),
                name="node_report_once_per_period",
            )
        ]

    def __str__(self) -> str:
        return f"report from {self.node} at {self.received_at:%Y-%m-%d %H:%M}"


class ServingNode(Model):
    """A node that serves inference for the platform: where it listens, what it runs, how loaded it is.

    One per node account. `join` (re)writes the announced fields; each
    heartbeat updates the load and `last_heartbeat_at`. A node is in the
    rotation while its last heartbeat is younger than
    NODES_HEARTBEAT_TIMEOUT_SECONDS: there is no "left" flag to forget to
    clear, so a node that stops beating leaves by itself and one that beats
    again is back.

    `models` lists the manifest CIDs the node serves. `secret` is the
    bearer the platform presents to the node (the node generated it and sent
    it over its own authenticated join): nodes never see user tokens.
    """

    account = OneToOneField(settings.AUTH_USER_MODEL, on_delete=CASCADE, related_name="serving_node")
    url = CharField(max_length=512)
    secret = CharField(max_length=128)
    models = JSONField(default=list, blank=True)
    hardware = JSONField(default=dict, blank=True)
    signed_set_version = PositiveIntegerField(null=True, blank=True)
    running = PositiveIntegerField(default=0)
    waiting = PositiveIntegerField(default=0)
    queue_capacity = PositiveIntegerField(default=0)
    joined_at = DateTimeField()
    last_heartbeat_at = DateTimeField(db_index=True)

    class Meta:
        ordering = ["account__username"]

    def __str__(self) -> str:
        return f"{self.account} at {self.url}"
