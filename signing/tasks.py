"""Celery tasks of signing: thin wrappers that load by id and call `signing.services`.

The task names are the ones they had in `registry.signing_tasks`, so messages
already queued and the beat schedule keep reaching them.
"""

import logging

from celery import shared_task

from core.ipfs import PinError
from registry.models import ApprovedSet

logger = logging.getLogger(__name__)


@shared_task(name="registry.signing_tasks.signed_set_publish_task", bind=True, max_retries=3, acks_late=True)
def signed_set_publish_task(self, approved_set_id: int) -> int | None:
    """Sign a newly published approved set (enqueued after its transaction commits)."""
    from signing.services import signed_set_publish_for

    approved_set = ApprovedSet.objects.filter(pk=approved_set_id).first()
    if approved_set is None:
        return None
    return signed_set_publish_for(approved_set).version


@shared_task(name="registry.signing_tasks.signing_refresh_task")
def signing_refresh_task() -> int | None:
    """Beat: re-sign the current set before it expires; renew root; retry unpinned documents."""
    from signing.selectors import signed_metadata_unpinned
    from signing.services import signed_set_refresh

    signed = signed_set_refresh()
    for kind, pk in signed_metadata_unpinned():
        signed_metadata_pin_task.delay(kind, pk)
    return signed.version if signed else None


@shared_task(name="registry.signing_tasks.signed_metadata_pin_task", bind=True, max_retries=5, acks_late=True)
def signed_metadata_pin_task(self, kind: str, pk: int) -> str:
    from signing.services import signed_metadata_pin

    try:
        return "pinned" if signed_metadata_pin(kind=kind, pk=pk) else "gone"
    except PinError as exc:
        raise self.retry(exc=exc, countdown=30 * 2**self.request.retries) from exc
