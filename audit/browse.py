"""Reads for browsing the audit log (the API and the log page)."""

from django.db.models import QuerySet

from audit.models import AuditCheckpoint, AuditEvent


def audit_event_list(
    *,
    object_type: str | None = None,
    object_id: str | None = None,
    actor: str | None = None,
    event_type: str | None = None,
    after_seq: int | None = None,
    after: int | None = None,
    upto: int | None = None,
    newest_first: bool = False,
) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.all()
    if object_type:
        events = events.filter(object_type=object_type)
    if object_id:
        events = events.filter(object_id=str(object_id))
    if actor:
        events = events.filter(actor_label=actor)
    if event_type:
        events = events.filter(event_type=event_type)
    for floor in (after_seq, after):
        if floor is not None:
            events = events.filter(seq__gt=floor)
    if upto is not None:
        events = events.filter(seq__lte=upto)
    return events.order_by("-seq" if newest_first else "seq")


def audit_checkpoint_list() -> QuerySet[AuditCheckpoint]:
    return AuditCheckpoint.objects.order_by("-seq")
