"""The home page: the approved set as it stands, and the proposals open for a vote."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from audit.models import AuditEvent, EventType
from dashboards.selectors.adoptions import manifest_brief, proposal_brief
from governance.models import Proposal, ProposalState
from governance.selectors import proposal_tally, proposals_with_tally, time_left
from registry.selectors import approved_manifests, approved_set_current

# Proposals a visitor can still act on or watch open: voting, or about to.
OPEN_STATES = (ProposalState.ACTIVE, ProposalState.PENDING)


def approved_set_summary() -> dict:
    """The current approved set: version and CID, and each model with when and how it was adopted.

    `proposal` is the proposal whose execution approved the model, or None
    for the genesis adoption that `manage.py bootstrap` records.
    """
    current = approved_set_current()
    manifests = list(approved_manifests().prefetch_related("files"))
    approvals: dict[int, int | None] = {}
    events = AuditEvent.objects.filter(
        event_type=EventType.MANIFEST_APPROVED, object_type="manifest", object_id__in=[str(m.pk) for m in manifests]
    ).order_by("seq")
    for event in events:
        approvals[int(event.object_id)] = event.payload.get("proposal_id")
    proposals = {p.pk: p for p in Proposal.objects.filter(pk__in={pk for pk in approvals.values() if pk})}
    models = []
    for manifest in manifests:
        proposal = proposals.get(approvals.get(manifest.pk))
        models.append(
            {
                **manifest_brief(manifest),
                "adopted_at": manifest.adoption_date,
                "proposal": proposal_brief(proposal) if proposal else None,
                "metrics": manifest.metrics or {},
            }
        )
    return {
        "version": current.version if current else None,
        "cid": current.cid if current else None,
        "generated_at": current.generated_at if current else None,
        "models": models,
    }


def open_proposals(*, now: dt.datetime | None = None, limit: int = 20) -> list[dict]:
    """Proposals voting now (closing soonest first), then those about to open, with the time left."""
    now = now or timezone.now()
    proposals = (
        proposals_with_tally(now=now)
        .filter(canceled_at__isnull=True, executed_at__isnull=True, voting_ends_at__gt=now)
        .filter(state__in=[state.value for state in OPEN_STATES])
        .order_by("voting_starts_at", "voting_ends_at", "id")[:limit]
    )
    entries = [
        {
            "proposal": proposal,
            "state": proposal.state,
            "tally": proposal_tally(proposal),
            "time_left": time_left(proposal, state=proposal.state, now=now),
        }
        for proposal in proposals
    ]
    entries.sort(key=lambda entry: (entry["state"] != ProposalState.ACTIVE, entry["time_left"] or dt.timedelta(0)))
    return entries
