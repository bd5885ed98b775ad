"""Celery tasks of the registry: thin wrappers that load by id and call a service."""

import logging

from celery import shared_task
from django.conf import settings

from core.ipfs import PinError
from registry.models import ApprovedSet, Manifest, PinStatus

logger = logging.getLogger(__name__)


@shared_task(bind=True, max_retries=5, acks_late=True)
def manifest_pin_task(self, manifest_id: int) -> str:
    from registry.services import manifest_pin

    manifest = Manifest.objects.filter(pk=manifest_id).first()
    if manifest is None:
        return "gone"
    try:
        manifest_pin(manifest=manifest)
    except PinError as exc:
        # Backoff 30 s, 60 s, 120 s...; the periodic sweep picks it up after that.
        raise self.retry(exc=exc, countdown=30 * 2**self.request.retries) from exc
    return "pinned"


@shared_task(bind=True, max_retries=8, acks_late=True)
def manifest_document_version_pin_task(self, document: str, cid: str) -> str:
    """Pin one version of a manifest document, carried in the message (a few KB), so later changes cannot lose it."""
    from core.ipfs import pinning_backend

    try:
        pinning_backend().pin_bytes(document.encode(), cid=cid)
    except PinError as exc:
        raise self.retry(exc=exc, countdown=30 * 2**self.request.retries) from exc
    return "pinned"


@shared_task(bind=True, max_retries=5, acks_late=True)
def approved_set_pin_task(self, approved_set_id: int) -> str:
    from registry.services import approved_set_pin

    approved_set = ApprovedSet.objects.filter(pk=approved_set_id).first()
    if approved_set is None:
        return "gone"
    try:
        approved_set_pin(approved_set=approved_set)
    except PinError as exc:
        raise self.retry(exc=exc, countdown=30 * 2**self.request.retries) from exc
    return "pinned"


@shared_task
def registry_retry_unpinned() -> int:
    """Re-enqueue every manifest and approved set whose pin is pending or failed."""
    unpinned = [PinStatus.PENDING, PinStatus.FAILED]
    count = 0
    for manifest_id in Manifest.objects.filter(pin_status__in=unpinned).values_list("pk", flat=True):
        manifest_pin_task.delay(manifest_id)
        count += 1
    for set_id in ApprovedSet.objects.filter(pin_status__in=unpinned).values_list("pk", flat=True):
        approved_set_pin_task.delay(set_id)
        count += 1
    if count:
        logger.info("re-enqueued %d unpinned objects (sweep every %ss)", count, settings.REGISTRY_PIN_RETRY_SECONDS)
    return count


@shared_task
def registry_staging_sweep() -> int:
    from registry.services import staging_sweep

    return len(staging_sweep())
