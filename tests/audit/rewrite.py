"""A server that rewrites its own history consistently: the attack witnesses and checkpoints exist for.

`history_rewrite` edits, inserts or drops events and then renumbers and
re-hashes the whole chain, the head row, every checkpoint row (each
re-pointed at a newly pinned document and newly exported log pages for the
rewritten chain) and the checkpoint events that name them, so the rewritten
database passes the server's own `audit_verify`. Only someone holding an
older head or checkpoint CID, or re-checking what the events say, can tell.
"""

from collections.abc import Callable

from aleph_cid import compute_cid
from django.db import transaction

from audit.checkpoints import checkpoint_document
from audit.export import audit_log_export
from audit.hashing import GENESIS_HASH, event_hash
from audit.models import AuditChainHead, AuditCheckpoint, AuditEvent, EventType
from core.ipfs import pinning_backend


def history_rewrite(transform: Callable[[list[AuditEvent]], list[AuditEvent]]) -> None:
    """Replace the chain by `transform(events)` (events may be edited, added unsaved, or left out)."""
    with transaction.atomic():
        events = list(AuditEvent.objects.order_by("seq"))
        for event in events:
            event.original_seq = event.seq
        rewritten = transform(events)
        checkpoints = {c.seq: c for c in AuditCheckpoint.objects.all()}
        AuditEvent.objects.all().delete()
        previous = GENESIS_HASH
        moved: dict[int, tuple[int, str]] = {}  # checkpointed seq -> (new seq, new hash)
        repointed: dict[str, dict] = {}  # old checkpoint CID -> new payload fields
        for seq, event in enumerate(rewritten, start=1):
            event.pk, event.seq, event.prev_hash = None, seq, previous
            if event.event_type == EventType.CHECKPOINT_PINNED and event.payload.get("cid") in repointed:
                event.payload = {**event.payload, **repointed[event.payload["cid"]]}
            event.hash = event_hash(
                seq=event.seq,
                event_type=event.event_type,
                actor_label=event.actor_label,
                object_type=event.object_type,
                object_id=str(event.object_id),
                payload=event.payload,
                created_at=event.created_at,
                prev_hash=previous,
            )
            event.save(force_insert=True)
            previous = event.hash
            checkpoint = checkpoints.get(getattr(event, "original_seq", None))
            if checkpoint is not None:
                moved[checkpoint.seq] = (event.seq, event.hash)
                # New log pages and a new checkpoint document for the rewritten history, pinned.
                log_cid = audit_log_export(upto_seq=event.seq)[0] if checkpoint.log_cid else ""
                data = checkpoint_document(event, log_cid=log_cid)
                cid = compute_cid(data)
                pinning_backend().pin_bytes(data, cid=cid)
                repointed[checkpoint.cid] = {
                    "seq": event.seq,
                    "hash": event.hash,
                    "cid": cid,
                    **({"log": log_cid} if log_cid else {}),
                }
                AuditCheckpoint.objects.filter(pk=checkpoint.pk).update(
                    seq=event.seq, hash=event.hash, cid=cid, log_cid=log_cid
                )
        AuditChainHead.objects.filter(id=1).update(last_seq=len(rewritten), last_hash=previous)


def chain_rewrite(edit: Callable[[AuditEvent], bool]) -> int:
    """Apply `edit` to each event (True when it changed one), re-hash consistently; return the first seq changed."""
    changed: list[int] = []

    def transform(events: list[AuditEvent]) -> list[AuditEvent]:
        changed.extend(event.seq for event in events if edit(event))
        return events

    history_rewrite(transform)
    return changed[0] if changed else None
