"""An append-only, hash-chained log of everything governance and the registry do."""

from django.conf import settings
from django.db import models


class EventType(models.TextChoices):
    MANIFEST_REGISTERED = "manifest.registered", "Manifest registered"
    MANIFEST_PINNED = "manifest.pinned", "Manifest pinned"
    MANIFEST_PIN_FAILED = "manifest.pin_failed", "Manifest pin failed"
    MANIFEST_APPROVED = "manifest.approved", "Manifest approved"
    MANIFEST_RETIRED = "manifest.retired", "Manifest retired"
    MANIFEST_METRICS_RECORDED = "manifest.metrics_recorded", "Manifest metrics recorded"
    APPROVED_SET_PUBLISHED = "approved_set.published", "Approved set published"
    GENESIS_ADOPTION = "adoption.genesis", "Genesis adoption"
    PROPOSAL_CREATED = "proposal.created", "Proposal created"
    PROPOSAL_OPENED = "proposal.opened", "Proposal opened"
    PROPOSAL_CANCELED = "proposal.canceled", "Proposal canceled"
    PROPOSAL_CLOSED = "proposal.closed", "Proposal closed"
    PROPOSAL_QUEUED = "proposal.queued", "Proposal queued"
    PROPOSAL_EXECUTED = "proposal.executed", "Proposal executed"
    PROPOSAL_EXPIRED = "proposal.expired", "Proposal expired"
    VOTE_CAST = "vote.cast", "Vote cast"
    VOTE_CHANGED = "vote.changed", "Vote changed"
    PARAMETER_CHANGED = "parameter.changed", "Parameter changed"
    RULES_CHANGED = "rules.changed", "Rules changed"
    CHECKPOINT_PINNED = "audit.checkpoint_pinned", "Audit checkpoint pinned"
    SIGNING_ROOT_PUBLISHED = "signing.root_published", "Signing root published"
    SIGNING_SET_SIGNED = "signing.set_signed", "Approved set signed"
    KNOWLEDGE_CREATED = "knowledge.created", "Knowledge document created"
    KNOWLEDGE_CHANGED = "knowledge.changed", "Knowledge document changed"
    KNOWLEDGE_DELETED = "knowledge.deleted", "Knowledge document deleted"


class AuditEvent(models.Model):
    """One link of the chain.

    `hash` covers every other column plus `prev_hash`, so changing, deleting
    or inserting a row breaks the chain at that row. `seq` is assigned under
    the chain-head lock and must have no gaps.
    """

    seq = models.BigIntegerField(unique=True)
    event_type = models.CharField(max_length=64, choices=EventType.choices, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=150, db_index=True)
    object_type = models.CharField(max_length=64, db_index=True)
    object_id = models.CharField(max_length=64, db_index=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]
        indexes = [models.Index(fields=["object_type", "object_id", "seq"])]

    def __str__(self) -> str:
        return f"#{self.seq} {self.event_type} {self.object_type}:{self.object_id}"


class AuditChainHead(models.Model):
    """The single row that serialises appends and remembers the chain's tip.

    Locking it (SELECT ... FOR UPDATE) orders concurrent writers; its copy of
    the last hash and seq also exposes a truncated tail.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_seq = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default="0" * 64)

    def __str__(self) -> str:
        return f"head #{self.last_seq}"


class AuditCheckpoint(models.Model):
    """A chain head pinned to IPFS, so a later rewrite can be proven."""

    seq = models.BigIntegerField()
    hash = models.CharField(max_length=64)
    cid = models.CharField(max_length=128)
    # The newest page of the exported log up to `seq` (named in the document); blank before exports.
    log_cid = models.CharField(max_length=128, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-seq"]

    def __str__(self) -> str:
        return f"checkpoint #{self.seq} {self.cid}"
