"""Checkpoints: the chain's head pinned to IPFS, so a later rewrite can be proven.

A checkpoint document is a pure function of the chain: the canonical JSON
(RFC 8785) of `{seq, hash, created_at}` of one event, plus `log`: the CID
of the newest page of the exported log up to that event (`audit.export`),
from which anyone walks the whole history. Anyone holding the CID can
recompute it from the log; a log rewritten after the checkpoint no longer
yields that CID.
"""

import logging
from dataclasses import dataclass

from aleph_cid import compute_cid
from django.db import transaction

from audit.export import audit_log_export
from audit.models import AuditCheckpoint, AuditEvent, EventType
from audit.selectors import audit_chain_verify
from audit.services import audit_append
from conclave_node.auditchain import checkpoint_document as _checkpoint_document
from core.errors import Conflict

logger = logging.getLogger(__name__)


def checkpoint_document(event: AuditEvent, *, log_cid: str = "") -> bytes:
    return _checkpoint_document(seq=event.seq, digest=event.hash, created_at=event.created_at, log=log_cid or None)


def audit_checkpoint_create() -> AuditCheckpoint | None:
    """Verify the chain, export the log up to its head, pin the head's document, and record the checkpoint.

    Returns None when there is nothing new to anchor (no events, or only
    checkpoint events since the last checkpoint, which already names its
    exported log). Refuses to anchor a broken chain. The pins happen before
    the transaction that records them, so a failed pin leaves no checkpoint
    row behind.
    """
    from core.ipfs import pinning_backend

    verification = audit_chain_verify()
    if not verification.ok:
        raise Conflict(
            f"The audit chain is broken at #{verification.first_broken_seq} ({verification.reason}); "
            "not pinning a checkpoint of it.",
            code="audit_chain_broken",
        )
    if verification.head_seq == 0:
        return None
    last = AuditCheckpoint.objects.order_by("-seq").first()
    if last is not None:
        news = AuditEvent.objects.filter(seq__gt=last.seq).exclude(event_type=EventType.CHECKPOINT_PINNED)
        if not news.exists() and last.log_cid:
            return None
    head = AuditEvent.objects.get(seq=verification.head_seq)
    log_cid, _ = audit_log_export(upto_seq=head.seq)
    data = checkpoint_document(head, log_cid=log_cid)
    cid = compute_cid(data)
    pinning_backend().pin_bytes(data, cid=cid)
    with transaction.atomic():
        checkpoint = AuditCheckpoint.objects.create(seq=head.seq, hash=head.hash, cid=cid, log_cid=log_cid)
        audit_append(
            event_type=EventType.CHECKPOINT_PINNED,
            actor=None,
            object_type="audit_checkpoint",
            object_id=checkpoint.pk,
            payload={"seq": head.seq, "hash": head.hash, "cid": cid, "log": log_cid},
        )
    logger.info("audit checkpoint #%s pinned as %s", head.seq, cid)
    return checkpoint


@dataclass(frozen=True)
class CheckpointVerification:
    ok: bool
    checked: int
    problems: list[str]

    def as_dict(self) -> dict:
        return {"ok": self.ok, "checked": self.checked, "problems": self.problems}


def audit_checkpoints_verify() -> CheckpointVerification:
    """Check that every checkpoint still matches the log and is still pinned.

    Catches a log rewritten consistently (every hash recomputed) after a
    checkpoint: the event at the checkpoint's seq no longer has its hash,
    so its document no longer has the checkpoint's CID.
    """
    from core.ipfs import pinning_backend

    backend = pinning_backend()
    problems: list[str] = []
    checkpoints = list(AuditCheckpoint.objects.order_by("seq"))
    events = AuditEvent.objects.in_bulk([c.seq for c in checkpoints], field_name="seq")
    for checkpoint in checkpoints:
        event = events.get(checkpoint.seq)
        if event is None:
            problems.append(f"checkpoint {checkpoint.cid}: event #{checkpoint.seq} is missing from the log")
            continue
        if event.hash != checkpoint.hash:
            problems.append(f"checkpoint {checkpoint.cid}: event #{checkpoint.seq} no longer has the pinned hash")
        elif compute_cid(checkpoint_document(event, log_cid=checkpoint.log_cid)) != checkpoint.cid:
            problems.append(f"checkpoint {checkpoint.cid}: event #{checkpoint.seq} no longer yields this CID")
        if not backend.is_pinned(checkpoint.cid):
            problems.append(f"checkpoint {checkpoint.cid} (#{checkpoint.seq}) is not pinned")
    return CheckpointVerification(ok=not problems, checked=len(checkpoints), problems=problems)
