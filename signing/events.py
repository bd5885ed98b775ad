"""Typed audit events for signing: one helper per event type, called by the service that did it."""

from audit.models import EventType
from audit.services import audit_append
from signing.models import RootMetadata

ROOT_PUBLISHED_EVENT = EventType.SIGNING_ROOT_PUBLISHED


def root_published_event(*, root: RootMetadata, actor, signed: dict, previous_version: int | None):
    return audit_append(
        event_type=ROOT_PUBLISHED_EVENT,
        actor=actor,
        object_type="root_metadata",
        object_id=root.version,
        payload={
            "version": root.version,
            "cid": root.cid,
            "expires": signed["expires"],
            "roles": signed["roles"],
            "previous_version": previous_version,
        },
    )
