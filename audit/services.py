"""Appending to the audit chain. Call only inside the transaction that makes the change."""

import json

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from audit.hashing import event_hash
from audit.models import AuditChainHead, AuditEvent


def _json_safe(payload: dict) -> dict:
    # Round-trip through JSON so the hashed payload is exactly what the
    # database will hand back (dates become strings, tuples become lists).
    return json.loads(json.dumps(payload, cls=DjangoJSONEncoder))


def audit_append(
    *,
    event_type: str,
    actor=None,
    object_type: str,
    object_id: str | int,
    payload: dict,
) -> AuditEvent:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_append must run inside the transaction that makes the change")
    head, _ = AuditChainHead.objects.select_for_update().get_or_create(id=1)
    actor_label = actor.get_username() if actor is not None and actor.is_authenticated else "system"
    safe_payload = _json_safe(payload)
    created_at = timezone.now()
    seq = head.last_seq + 1
    digest = event_hash(
        seq=seq,
        event_type=event_type,
        actor_label=actor_label,
        object_type=object_type,
        object_id=str(object_id),
        payload=safe_payload,
        created_at=created_at,
        prev_hash=head.last_hash,
    )
    event = AuditEvent.objects.create(
        seq=seq,
        event_type=event_type,
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_label=actor_label,
        object_type=object_type,
        object_id=str(object_id),
        payload=safe_payload,
        created_at=created_at,
        prev_hash=head.last_hash,
        hash=digest,
    )
    head.last_seq = seq
    head.last_hash = digest
    head.save(update_fields=["last_seq", "last_hash"])
    return event
