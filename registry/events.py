"""Typed audit events of the registry: one helper per event type."""

from audit.models import EventType
from audit.services import audit_append
from registry.models import ApprovedSet, Manifest


def _manifest_event(event_type: str, manifest: Manifest, actor, **payload):
    return audit_append(
        event_type=event_type,
        actor=actor,
        object_type="manifest",
        object_id=manifest.pk,
        payload={"manifest": str(manifest), "manifest_cid": manifest.manifest_cid, **payload},
    )


def manifest_registered_event(*, manifest: Manifest, actor):
    return _manifest_event(
        EventType.MANIFEST_REGISTERED,
        manifest,
        actor,
        sha256=manifest.sha256,
        ipfs_cid=manifest.ipfs_cid,
        size_bytes=manifest.size_bytes,
        source=manifest.source,
    )


def manifest_pinned_event(*, manifest: Manifest, backend: str):
    return _manifest_event(EventType.MANIFEST_PINNED, manifest, None, ipfs_cid=manifest.ipfs_cid, backend=backend)


def manifest_pin_failed_event(*, manifest: Manifest, backend: str, error: str):
    return _manifest_event(EventType.MANIFEST_PIN_FAILED, manifest, None, backend=backend, error=error)


def manifest_approved_event(*, manifest: Manifest, actor, reason: str, proposal_id: int | None):
    return _manifest_event(EventType.MANIFEST_APPROVED, manifest, actor, reason=reason, proposal_id=proposal_id)


def manifest_retired_event(*, manifest: Manifest, actor, reason: str, proposal_id: int | None):
    return _manifest_event(EventType.MANIFEST_RETIRED, manifest, actor, reason=reason, proposal_id=proposal_id)


def manifest_metrics_recorded_event(*, manifest: Manifest, actor, metrics: dict):
    return _manifest_event(EventType.MANIFEST_METRICS_RECORDED, manifest, actor, metrics=metrics)


def approved_set_published_event(*, approved_set: ApprovedSet, actor, reason: str):
    return audit_append(
        event_type=EventType.APPROVED_SET_PUBLISHED,
        actor=actor,
        object_type="approved_set",
        object_id=approved_set.version,
        payload={"version": approved_set.version, "cid": approved_set.cid, "reason": reason},
    )


def genesis_adoption_event(*, manifests: list[Manifest], actor, reason: str):
    return audit_append(
        event_type=EventType.GENESIS_ADOPTION,
        actor=actor,
        object_type="adoption",
        object_id="genesis",
        payload={"manifests": [str(m) for m in manifests], "manifest_ids": [m.pk for m in manifests], "reason": reason},
    )
