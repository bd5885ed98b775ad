"""Property: the database tally equals a plain Python count of the last vote per voter."""

import math
from collections import Counter
from decimal import Decimal
from fractions import Fraction

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governance.models import Proposal
from governance.selectors import proposal_list, proposal_tally, quorum_votes_required
from governance.services import vote_cast
from tests.governance.factories import HOUR, T0, parameter_proposal, person

pytestmark = pytest.mark.django_db

VOTERS = 12
CHOICES = ["for", "against", "abstain"]


@pytest.fixture
def scene():
    voters = [person(f"voter-{i}") for i in range(VOTERS)]
    return parameter_proposal(author=voters[0], now=T0), voters


def reference(votes: list[tuple[int, str]], *, eligible: int, quorum: Fraction, threshold: Fraction) -> dict:
    last = {}
    for voter, choice in votes:
        last[voter] = choice
    counts = Counter(last.values())
    for_, against, abstain = counts["for"], counts["against"], counts["abstain"]
    quorum_reached = for_ + abstain >= math.ceil(quorum * eligible)
    approved = for_ + against > 0 and Fraction(for_, for_ + against) > threshold
    return {"for": for_, "against": against, "abstain": abstain, "passed": quorum_reached and approved}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    votes=st.lists(st.tuples(st.integers(0, VOTERS - 1), st.sampled_from(CHOICES)), max_size=40),
    quorum_pct=st.integers(0, 100),
    threshold_pct=st.integers(0, 99),
    eligible=st.integers(VOTERS, 40),
)
def test_tally_equals_reference_count(scene, votes, quorum_pct, threshold_pct, eligible):
    proposal, voters = scene
    quorum, threshold = Fraction(quorum_pct, 100), Fraction(threshold_pct, 100)
    with transaction.atomic():
        Proposal.objects.filter(pk=proposal.pk).update(
            eligible_voters=eligible,
            quorum_votes_required=quorum_votes_required(quorum=Decimal(quorum_pct) / 100, eligible_voters=eligible),
            approval_threshold_bp=threshold_pct * 100,
        )
        for voter, choice in votes:
            vote_cast(proposal=proposal, voter=voters[voter], choice=choice, now=T0 + HOUR)
        fresh = Proposal.objects.get(pk=proposal.pk)
        expected = reference(votes, eligible=eligible, quorum=quorum, threshold=threshold)

        tally = proposal_tally(fresh)
        assert (tally.votes_for, tally.votes_against, tally.votes_abstain) == (
            expected["for"],
            expected["against"],
            expected["abstain"],
        )
        assert tally.passed == expected["passed"]

        end = fresh.voting_ends_at
        listed = proposal_list(now=end).get(pk=proposal.pk)
        assert (listed.votes_for, listed.votes_against, listed.votes_abstain) == (
            expected["for"],
            expected["against"],
            expected["abstain"],
        )
        assert listed.state == ("succeeded" if expected["passed"] else "defeated")
        transaction.set_rollback(True)
