"""A small real history for the panels: a genesis adoption, an executed adoption that replaced a
model, an executed parameter change, an open proposal with votes, and traffic on both models."""

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pytest
from django.db import transaction
from django.utils import timezone

from governance.models import Proposal, ProposalType
from governance.services import proposal_create, proposals_advance, vote_cast
from registry.models import Manifest
from registry.services import genesis_adopt
from tests.dashboards.factories import random_traffic, samples_add
from tests.governance.factories import person
from tests.registry.factories import register_test_manifest


@dataclass
class Story:
    original: Manifest
    successor: Manifest
    adoption: Proposal
    parameter_change: Proposal
    open_proposal: Proposal
    voters: list


def _execute(proposal: Proposal, voters) -> Proposal:
    for voter in voters:
        vote_cast(proposal=proposal, voter=voter, choice="for", now=proposal.voting_starts_at)
    proposals_advance(now=proposal.voting_ends_at)
    proposals_advance(now=proposal.execution_eta)
    proposal.refresh_from_db()
    assert proposal.executed_at is not None, proposal.execution_error
    return proposal


def story_build() -> Story:
    now = timezone.now()
    operator = person("olive", "operator")
    voters = [person(name) for name in ("alice", "bob", "carol")]
    original = register_test_manifest(name="mini", version="1")
    with transaction.atomic():
        genesis_adopt(manifests=[original], actor=operator, reason="genesis for the dashboards tests")
    successor = register_test_manifest(name="mini", version="2")
    adoption = _execute(
        proposal_create(
            author=voters[0],
            proposal_type=ProposalType.MODEL_ADOPTION,
            title="Adopt mini 2",
            payload={"candidate": successor.pk, "replaces": original.pk, "reason": "faster"},
            now=now,
        ),
        voters[:2],
    )
    parameter_change = _execute(
        proposal_create(
            author=voters[1],
            proposal_type=ProposalType.PARAMETER_CHANGE,
            title="Longer queue",
            payload={"parameter": "queue_size", "value": 8, "reason": "bursts"},
            now=now,
        ),
        voters,
    )
    open_proposal = proposal_create(
        author=voters[2],
        proposal_type=ProposalType.PARAMETER_CHANGE,
        title="More tokens",
        payload={"parameter": "max_tokens_per_request", "value": 768, "reason": "longer answers"},
        now=now,
    )
    vote_cast(proposal=open_proposal, voter=voters[0], choice="for")
    vote_cast(proposal=open_proposal, voter=voters[1], choice="against")

    rng = np.random.default_rng(21)
    samples_add(
        random_traffic(
            rng,
            start=now - dt.timedelta(minutes=50),
            span=dt.timedelta(minutes=45),
            n=300,
            model="mini@2",
            endpoint="embed",
        )
    )
    samples_add(
        random_traffic(
            rng, start=now - dt.timedelta(hours=20), span=dt.timedelta(hours=2), n=200, model="mini@1", endpoint="embed"
        )
    )
    original.refresh_from_db()
    successor.refresh_from_db()
    return Story(original, successor, adoption, parameter_change, open_proposal, voters)


@pytest.fixture
def story(db) -> Story:
    return story_build()
