"""Typed audit events for governance: one helper per event type.

Each is called by the service that made the change, inside its transaction.
Votes are filed under their proposal, so a proposal's audit trail shows them.
A vote records `cast_at`: the clock reading its voting window was checked
against, under the proposal's lock (the event's own time is taken a moment
later, and may fall just past the window's end for a vote cast at its last
instant).
"""

from audit.models import EventType
from audit.services import audit_append
from governance.models import GovernedParameter, Proposal, ProposalRules, Vote


def _proposal_event(event_type: str, proposal: Proposal, *, actor=None, **payload):
    return audit_append(
        event_type=event_type,
        actor=actor,
        object_type="proposal",
        object_id=proposal.pk,
        payload={"proposal_type": proposal.proposal_type, **payload},
    )


def proposal_created_event(*, proposal: Proposal, actor, evidence_required: bool | None = None):
    # An adoption records whether benchmark runs were to inform its vote: its execution must then name
    # their pinned evidence (conclave-verify checks it).
    extra = {} if evidence_required is None else {"evidence_required": evidence_required}
    return _proposal_event(
        EventType.PROPOSAL_CREATED,
        proposal,
        actor=actor,
        title=proposal.title,
        subject=proposal.subject,
        payload=proposal.payload,
        rules=proposal.rules,
        checks=proposal.checks,
        eligible_voters=proposal.eligible_voters,
        quorum_votes_required=proposal.quorum_votes_required,
        voting_starts_at=proposal.voting_starts_at,
        voting_ends_at=proposal.voting_ends_at,
        execution_eta=proposal.execution_eta,
        expires_at=proposal.expires_at,
        **extra,
    )


def proposal_opened_event(*, proposal: Proposal):
    return _proposal_event(EventType.PROPOSAL_OPENED, proposal, voting_starts_at=proposal.voting_starts_at)


def proposal_canceled_event(*, proposal: Proposal, actor, reason: str, state_before: str):
    return _proposal_event(EventType.PROPOSAL_CANCELED, proposal, actor=actor, reason=reason, state_before=state_before)


def proposal_closed_event(*, proposal: Proposal, tally: dict, outcome: str):
    return _proposal_event(
        EventType.PROPOSAL_CLOSED, proposal, voting_ends_at=proposal.voting_ends_at, outcome=outcome, tally=tally
    )


def proposal_queued_event(*, proposal: Proposal):
    return _proposal_event(
        EventType.PROPOSAL_QUEUED, proposal, execution_eta=proposal.execution_eta, expires_at=proposal.expires_at
    )


def proposal_executed_event(*, proposal: Proposal, actor, result: dict):
    return _proposal_event(EventType.PROPOSAL_EXECUTED, proposal, actor=actor, result=result)


def proposal_expired_event(*, proposal: Proposal):
    return _proposal_event(
        EventType.PROPOSAL_EXPIRED,
        proposal,
        expires_at=proposal.expires_at,
        last_execution_error=proposal.execution_error,
    )


def vote_cast_event(*, vote: Vote):
    return _proposal_event(
        EventType.VOTE_CAST,
        vote.proposal,
        actor=vote.voter,
        voter=vote.voter.get_username(),
        choice=vote.choice,
        reason=vote.reason,
        cast_at=vote.cast_at,
    )


def vote_changed_event(*, vote: Vote, previous_choice: str):
    return _proposal_event(
        EventType.VOTE_CHANGED,
        vote.proposal,
        actor=vote.voter,
        voter=vote.voter.get_username(),
        choice=vote.choice,
        previous_choice=previous_choice,
        reason=vote.reason,
        cast_at=vote.cast_at,
    )


def parameter_changed_event(*, parameter: GovernedParameter, old_value: int, proposal: Proposal | None, actor=None):
    return audit_append(
        event_type=EventType.PARAMETER_CHANGED,
        actor=actor,
        object_type="parameter",
        object_id=parameter.name,
        payload={
            "parameter": parameter.name,
            "old_value": old_value,
            "new_value": parameter.value,
            "proposal_id": proposal.pk if proposal else None,
        },
    )


def rules_changed_event(*, rules: ProposalRules, actor, before: dict, after: dict):
    return audit_append(
        event_type=EventType.RULES_CHANGED,
        actor=actor,
        object_type="rules",
        object_id=rules.proposal_type,
        payload={"proposal_type": rules.proposal_type, "before": before, "after": after},
    )
