"""Typed audit events for signing: one helper per event type, called by the service that did it."""

from audit.models import EventType
from audit.services import audit_append
from signing.models import RootMetadata, SignedApprovedSet

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


def set_signed_event(*, signed_set: SignedApprovedSet, signed: dict):
    """Names the signed set's CID in the history, so a checkpoint alone leads a verifier to every signing."""
    return audit_append(
        event_type=EventType.SIGNING_SET_SIGNED,
        actor=None,
        object_type="signed_set",
        object_id=signed_set.version,
        payload={
            "version": signed_set.version,
            "cid": signed_set.cid,
            "approved_set_version": signed["approved_set"]["version"],
            "root_version": signed_set.root_version,
            "audit_head": signed["audit_head"],
        },
    )
