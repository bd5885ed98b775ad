"""A server that rewrites its own history consistently: the attack witnesses and checkpoints exist for.

`chain_rewrite` edits events and recomputes every later hash, the head row,
every checkpoint row (each re-pointed at a newly pinned document and newly
exported log pages for the rewritten chain) and the checkpoint events that
name them, so the rewritten
database passes the server's own `audit_verify`. Only someone holding an
older head or checkpoint CID can tell.
"""

from collections.abc import Callable

from aleph_cid import compute_cid
from django.db import transaction

from audit.checkpoints import checkpoint_document
from audit.export import audit_log_export
from audit.hashing import GENESIS_HASH, event_hash
from audit.models import AuditChainHead, AuditCheckpoint, AuditEvent, EventType
from registry.ipfs import pinning_backend


def chain_rewrite(edit: Callable[[AuditEvent], bool]) -> int:
    """Apply `edit` to each event (it returns True when it changed one) and re-hash consistently.

    Returns the first seq `edit` changed.
    """
    previous = GENESIS_HASH
    first_changed = None
    repointed: dict[str, dict] = {}
    checkpoints = {c.seq: c for c in AuditCheckpoint.objects.all()}
    with transaction.atomic():
        for event in list(AuditEvent.objects.order_by("seq")):
            if edit(event) and first_changed is None:
                first_changed = event.seq
            if event.event_type == EventType.CHECKPOINT_PINNED and event.payload.get("cid") in repointed:
                event.payload = {**event.payload, **repointed[event.payload["cid"]]}
            if event.event_type == EventType.CHECKPOINT_PINNED and event.payload.get("seq") in checkpoints:
                event.payload = {**event.payload, "hash": checkpoints[event.payload["seq"]].hash}
            event.prev_hash = previous
            event.hash = event_hash(
                seq=event.seq, event_type=event.event_type, actor_label=event.actor_label,
                object_type=event.object_type, object_id=event.object_id, payload=event.payload,
                created_at=event.created_at, prev_hash=previous,
            )
            AuditEvent.objects.filter(seq=event.seq).update(
                event_type=event.event_type, actor_label=event.actor_label, object_id=event.object_id,
                payload=event.payload, prev_hash=event.prev_hash, hash=event.hash,
            )
            checkpoint = checkpoints.get(event.seq)
            if checkpoint is not None and checkpoint.hash != event.hash:
                # New log pages and a new checkpoint document for the rewritten history, pinned.
                log_cid = audit_log_export(upto_seq=event.seq)[0] if checkpoint.log_cid else ""
                data = checkpoint_document(event, log_cid=log_cid)
                cid = compute_cid(data)
                pinning_backend().pin_bytes(data, cid=cid)
                repointed[checkpoint.cid] = {"cid": cid, **({"log": log_cid} if log_cid else {})}
                checkpoint.hash, checkpoint.cid = event.hash, cid
                AuditCheckpoint.objects.filter(pk=checkpoint.pk).update(hash=event.hash, cid=cid, log_cid=log_cid)
            previous = event.hash
        AuditChainHead.objects.filter(id=1).update(last_hash=previous)
    return first_changed

