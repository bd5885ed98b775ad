"""Reading and verifying the audit chain."""

from dataclasses import dataclass

from audit.hashing import GENESIS_HASH, event_hash
from audit.models import AuditChainHead, AuditEvent


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    events_checked: int
    head_seq: int
    head_hash: str
    first_broken_seq: int | None = None
    reason: str = ""

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "events_checked": self.events_checked,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "first_broken_seq": self.first_broken_seq,
            "reason": self.reason,
        }


def audit_chain_verify() -> ChainVerification:
    """Recompute every link in order and name the first one that breaks.

    Catches an edited row (its hash no longer matches), a deleted row (a gap
    in `seq`, or a `prev_hash` that points at the wrong row), an inserted row
    (it cannot carry both a valid hash and the next row's `prev_hash`), and a
    truncated tail (the head row remembers the last seq and hash).
    """
    head = AuditChainHead.objects.filter(id=1).first()
    expected_seq = 1
    prev_hash = GENESIS_HASH
    checked = 0
    rows = AuditEvent.objects.order_by("seq").values_list(
        "seq",
        "event_type",
        "actor_label",
        "object_type",
        "object_id",
        "payload",
        "created_at",
        "prev_hash",
        "hash",
    )
    for seq, event_type, actor_label, object_type, object_id, payload, created_at, stored_prev, stored in rows.iterator(
        chunk_size=2000
    ):
        if seq != expected_seq:
            return _broken(
                checked,
                head,
                expected_seq,
                f"expected event #{expected_seq}, found #{seq}: an event is missing or was inserted",
            )
        if stored_prev != prev_hash:
            return _broken(checked, head, seq, f"event #{seq} does not link to the event before it")
        recomputed = event_hash(
            seq=seq,
            event_type=event_type,
            actor_label=actor_label,
            object_type=object_type,
            object_id=object_id,
            payload=payload,
            created_at=created_at,
            prev_hash=stored_prev,
        )
        if recomputed != stored:
            return _broken(checked, head, seq, f"event #{seq} was altered: its content no longer matches its hash")
        prev_hash = stored
        expected_seq += 1
        checked += 1
    head_seq = head.last_seq if head else 0
    head_hash = head.last_hash if head else GENESIS_HASH
    if head_seq != checked or head_hash != prev_hash:
        return _broken(
            checked,
            head,
            checked + 1 if head_seq > checked else checked,
            f"the chain ends at #{checked} but its head records #{head_seq}: events were removed from or added to the "
            "end",
        )
    return ChainVerification(ok=True, events_checked=checked, head_seq=head_seq, head_hash=head_hash)


def _broken(checked: int, head, seq: int, reason: str) -> ChainVerification:
    return ChainVerification(
        ok=False,
        events_checked=checked,
        head_seq=head.last_seq if head else 0,
        head_hash=head.last_hash if head else GENESIS_HASH,
        first_broken_seq=seq,
        reason=reason,
    )


def audit_events_for_object(*, object_type: str, object_id: str | int):
    return AuditEvent.objects.filter(object_type=object_type, object_id=str(object_id)).order_by("seq")
