"""Celery tasks of governance: thin wrappers around the services."""

from celery import shared_task


@shared_task
def proposals_advance() -> dict:
    """The beat (every GOVERNANCE_ADVANCE_INTERVAL_SECONDS): open, close, queue, execute, expire."""
    from governance.services import proposals_advance as advance

    return {str(proposal_id): done for proposal_id, done in advance().items()}
