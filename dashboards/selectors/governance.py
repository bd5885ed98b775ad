"""The governance panel: open proposals with their live tallies, and participation over time."""

from __future__ import annotations

import datetime as dt

from django.db.models import Count
from django.db.models.functions import TruncDate
from django.urls import reverse
from django.utils import timezone

from governance.models import TERMINAL_STATES, VoteHistory
from governance.selectors import proposal_tally, proposals_with_tally, time_left

PARTICIPATION_PROPOSALS = 30
PARTICIPATION_DAYS = 30


def governance_overview(*, now: dt.datetime | None = None) -> dict:
    now = now or timezone.now()
    terminal = [state.value for state in TERMINAL_STATES]
    open_proposals = []
    for proposal in proposals_with_tally(now=now).exclude(state__in=terminal).order_by("voting_ends_at", "id"):
        tally = proposal_tally(proposal)
        remaining = time_left(proposal, state=proposal.state, now=now)
        open_proposals.append(
            {
                "id": proposal.pk,
                "title": proposal.title,
                "proposal_type": proposal.proposal_type,
                "state": proposal.state,
                "voting_starts_at": proposal.voting_starts_at,
                "voting_ends_at": proposal.voting_ends_at,
                "time_left_seconds": None if remaining is None else int(remaining.total_seconds()),
                "tally": tally.as_dict(),
                "quorum_progress": round(tally.quorum_progress, 4),
                "url": reverse("governance:proposal-detail", args=[proposal.pk]),
            }
        )

    # Participation of the proposals whose voting ended most recently.
    ended = (
        proposals_with_tally(now=now)
        .filter(voting_ends_at__lte=now, canceled_at__isnull=True)
        .order_by("-voting_ends_at", "-id")[:PARTICIPATION_PROPOSALS]
    )
    participation = []
    for proposal in reversed(list(ended)):
        tally = proposal_tally(proposal)
        participation.append(
            {
                "id": proposal.pk,
                "title": proposal.title,
                "ended_at": proposal.voting_ends_at,
                "votes": tally.total,
                "eligible_voters": tally.eligible_voters,
                "turnout": round(tally.turnout, 4),
                "state": proposal.state,
            }
        )

    since = (now - dt.timedelta(days=PARTICIPATION_DAYS - 1)).date()
    per_day = dict(
        VoteHistory.objects.filter(cast_at__date__gte=since)
        .annotate(day=TruncDate("cast_at", tzinfo=dt.UTC))
        .order_by()
        .values("day")
        .annotate(n=Count("id"))
        .values_list("day", "n")
    )
    votes_per_day = [
        {"day": since + dt.timedelta(days=i), "votes": per_day.get(since + dt.timedelta(days=i), 0)}
        for i in range(PARTICIPATION_DAYS)
    ]
    return {
        "generated_at": now,
        "open_proposals": open_proposals,
        "participation": participation,
        "votes_per_day": votes_per_day,
    }
