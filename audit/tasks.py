"""Celery tasks of the audit trail."""

from celery import shared_task

from core.ipfs import PinError


@shared_task(bind=True, max_retries=3, acks_late=True)
def audit_checkpoint_pin(self) -> dict | None:
    """The beat (every AUDIT_CHECKPOINT_INTERVAL_SECONDS): pin the chain head as a checkpoint."""
    from audit.checkpoints import audit_checkpoint_create

    try:
        checkpoint = audit_checkpoint_create()
    except PinError as exc:
        raise self.retry(exc=exc, countdown=60 * 2**self.request.retries) from exc
    if checkpoint is None:
        return None
    return {"seq": checkpoint.seq, "cid": checkpoint.cid}
