"""Rules, proposals, votes, the lifecycle by the clock and by the beat, and execution."""

import datetime as dt
from decimal import Decimal

import pytest
from django.test import override_settings

from audit.models import AuditEvent
from audit.selectors import audit_chain_verify
from core.errors import Conflict, NotFound, ValidationFailed
from governance.models import (
    GovernedParameter,
    ParameterChange,
    Proposal,
    ProposalRules,
    ProposalState,
    ProposalType,
    Vote,
    VoteHistory,
)
from governance.selectors import (
    proposal_get,
    proposal_list,
    proposal_state,
    proposal_tally,
    rules_for,
    runtime_parameter,
    runtime_parameters,
)
from governance.services import (
    Forbidden,
    proposal_advance,
    proposal_cancel,
    proposal_create,
    proposal_execute,
    proposals_advance,
    rules_update,
    vote_cast,
)
from tests.governance.factories import DAY, HOUR, T0, operator, parameter_proposal, person, set_rules

pytestmark = pytest.mark.django_db


def events_of(proposal: Proposal) -> list[str]:
    return list(
        AuditEvent.objects.filter(object_type="proposal", object_id=str(proposal.pk)).values_list(
            "event_type", flat=True
        )
    )


def state_at(proposal: Proposal, when: dt.datetime) -> str:
    proposal.refresh_from_db()
    return proposal_state(proposal, now=when)


# --- Rules ------------------------------------------------------------------------


def test_rules_default_from_settings_when_no_row_exists():
    ProposalRules.objects.all().delete()
    rules = rules_for(ProposalType.MODEL_ADOPTION)
    assert rules.pk is None
    assert rules.voting_period_seconds == 7 * 24 * 3600
    assert rules.quorum == Decimal("0.2")


def test_rules_update_is_audited_and_frozen_into_later_proposals_only():
    before = parameter_proposal(now=T0)
    rules = set_rules(voting_period_seconds=3600, quorum=Decimal("0.5"))
    assert rules.voting_period_seconds == 3600
    event = AuditEvent.objects.filter(event_type="rules.changed").last()
    assert event.payload["before"]["quorum"] == "0.2000"
    assert event.payload["after"]["quorum"] == "0.5000"
    assert event.actor_label == "rules-operator"

    after = parameter_proposal(parameter="memory_limit_mb", value=4096, now=T0)
    assert before.rules["voting_period_seconds"] == 7 * 24 * 3600
    assert before.voting_ends_at == T0 + 7 * DAY
    assert after.rules["voting_period_seconds"] == 3600
    assert after.voting_ends_at == T0 + HOUR


def test_rules_update_refuses_bad_values_and_non_operators():
    with pytest.raises(ValidationFailed) as excinfo:
        set_rules(quorum=Decimal("1.5"), voting_period_seconds=10)
    assert set(excinfo.value.fields) == {"quorum", "voting_period_seconds"}
    with pytest.raises(ValidationFailed) as excinfo:
        set_rules(colour="blue")
    assert "colour" in excinfo.value.fields
    with pytest.raises(Forbidden):
        rules_update(proposal_type=ProposalType.PARAMETER_CHANGE, actor=person("carol"), changes={"quorum": 0})
    with pytest.raises(NotFound):
        set_rules("no-such-type", quorum=Decimal("0.1"))


def test_rules_update_without_change_writes_no_event():
    set_rules(quorum=Decimal("0.3"))
    count = AuditEvent.objects.count()
    set_rules(quorum=Decimal("0.3000"))
    assert AuditEvent.objects.count() == count


# --- Creating proposals -------------------------------------------------------------------


def test_parameter_change_captures_current_value_and_freezes_rules():
    proposal = parameter_proposal(parameter="max_tokens_per_request", value=1024)
    assert proposal.payload == {
        "parameter": "max_tokens_per_request",
        "value": 1024,
        "current_value": 512,
        "reason": "load test showed it helps",
    }
    assert proposal.subject == "parameter:max_tokens_per_request"
    assert proposal.rules["approval_threshold"] == "0.5000"
    assert proposal.approval_threshold_bp == 5000
    assert proposal.checks[0]["name"] == "bounds" and proposal.checks[0]["passed"]
    assert events_of(proposal) == ["proposal.created", "proposal.opened"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"parameter": "queue_size", "value": 100000, "reason": "r"}, "payload.value"),
        ({"parameter": "queue_size", "value": 5, "reason": "r"}, "payload.value"),
        ({"parameter": "queue_size", "value": "many", "reason": "r"}, "payload.value"),
        ({"parameter": "gpu_count", "value": 1, "reason": "r"}, "payload.parameter"),
        ({"parameter": "queue_size", "value": 6}, "payload.reason"),
        ({}, "payload.parameter"),
    ],
)
def test_bad_parameter_payload_is_refused_with_field_errors(payload, field):
    with pytest.raises(ValidationFailed) as excinfo:
        proposal_create(
            author=person("carol"), proposal_type=ProposalType.PARAMETER_CHANGE, title="t", payload=payload, now=T0
        )
    assert field in excinfo.value.fields
    assert Proposal.objects.count() == 0


def test_unknown_type_missing_title_and_non_object_payload_are_refused():
    carol = person("carol")
    with pytest.raises(ValidationFailed) as excinfo:
        proposal_create(author=carol, proposal_type="coup", title="t", payload={}, now=T0)
    assert "proposal_type" in excinfo.value.fields
    with pytest.raises(ValidationFailed) as excinfo:
        proposal_create(author=carol, proposal_type="parameter-change", title="t", payload=[1], now=T0)
    assert "payload" in excinfo.value.fields
    with pytest.raises(ValidationFailed) as excinfo:
        proposal_create(
            author=carol,
            proposal_type="parameter-change",
            title="  ",
            payload={"parameter": "queue_size", "value": 6, "reason": "r"},
            now=T0,
        )
    assert "title" in excinfo.value.fields


def test_nodes_and_anonymous_people_cannot_propose():
    from django.contrib.auth.models import AnonymousUser

    for user in (person("node-1", "node"), AnonymousUser()):
        with pytest.raises(Forbidden):
            parameter_proposal(author=user)


def test_two_open_proposals_may_not_change_the_same_parameter():
    first = parameter_proposal(parameter="queue_size", value=8, now=T0)
    with pytest.raises(Conflict) as excinfo:
        parameter_proposal(parameter="queue_size", value=9, now=T0 + HOUR)
    assert f"#{first.pk}" in excinfo.value.message
    # Another parameter is fine; the same one is fine once the first is over.
    parameter_proposal(parameter="queue_size", value=9, now=T0 + 8 * DAY)  # first was defeated (no votes)
    parameter_proposal(parameter="memory_limit_mb", value=4096, now=T0 + HOUR)


def test_canceled_proposal_frees_its_subject():
    first = parameter_proposal(now=T0)
    proposal_cancel(proposal=first, actor=operator(), reason="wrong value", now=T0 + HOUR)
    parameter_proposal(value=9, now=T0 + 2 * HOUR)


# --- The lifecycle by the clock ---------------------------------------------------------------


def test_states_follow_the_clock_pending_active_succeeded_queued_executed():
    set_rules(
        voting_delay_seconds=3600, voting_period_seconds=2 * 3600, timelock_seconds=3600, grace_period_seconds=3600
    )
    alice, bob = person("alice"), person("bob")
    proposal = parameter_proposal(author=alice, now=T0)
    assert proposal.voting_starts_at == T0 + HOUR
    assert state_at(proposal, T0) == ProposalState.PENDING
    assert state_at(proposal, T0 + HOUR) == ProposalState.ACTIVE
    vote_cast(proposal=proposal, voter=alice, choice="for", now=T0 + 90 * dt.timedelta(minutes=1))
    vote_cast(proposal=proposal, voter=bob, choice="for", now=T0 + 2 * HOUR)
    assert state_at(proposal, T0 + 3 * HOUR) == ProposalState.SUCCEEDED  # derived before any beat ran
    assert proposal_advance(proposal_id=proposal.pk, now=T0 + 3 * HOUR) == ["opened", "closed", "queued"]
    assert state_at(proposal, T0 + 3 * HOUR) == ProposalState.QUEUED
    with pytest.raises(Conflict) as excinfo:
        proposal_execute(proposal=proposal, now=T0 + 3 * HOUR)
    assert excinfo.value.code == "timelock_running"
    assert proposal_advance(proposal_id=proposal.pk, now=T0 + 4 * HOUR) == ["executed"]
    assert state_at(proposal, T0 + 4 * HOUR) == ProposalState.EXECUTED
    assert runtime_parameter("queue_size") == 8
    assert events_of(proposal) == [
        "proposal.created",
        "vote.cast",
        "vote.cast",
        "proposal.opened",
        "proposal.closed",
        "proposal.queued",
        "proposal.executed",
    ]


def test_no_votes_means_defeated_and_nothing_happens():
    proposal = parameter_proposal(now=T0)
    assert state_at(proposal, T0 + 7 * DAY) == ProposalState.DEFEATED
    assert proposals_advance(now=T0 + 7 * DAY) == {proposal.pk: ["closed"]}
    proposal.refresh_from_db()
    assert proposal.outcome == "defeated"
    assert proposal.final_tally["total"] == 0
    assert runtime_parameter("queue_size") == 5
    assert proposals_advance(now=T0 + 30 * DAY) == {}


def test_more_against_than_for_is_defeated_even_with_quorum():
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    proposal = parameter_proposal(author=alice, now=T0)
    vote_cast(proposal=proposal, voter=alice, choice="for", now=T0)
    vote_cast(proposal=proposal, voter=bob, choice="against", now=T0)
    vote_cast(proposal=proposal, voter=carol, choice="against", now=T0)
    assert state_at(proposal, T0 + 7 * DAY) == ProposalState.DEFEATED


def test_a_tie_is_defeated_at_the_default_threshold():
    alice, bob = person("alice"), person("bob")
    proposal = parameter_proposal(author=alice, now=T0)
    vote_cast(proposal=proposal, voter=alice, choice="for", now=T0)
    vote_cast(proposal=proposal, voter=bob, choice="against", now=T0)
    assert proposal_tally(proposal).quorum_reached
    assert state_at(proposal, T0 + 7 * DAY) == ProposalState.DEFEATED


def test_abstentions_count_toward_quorum_but_not_approval():
    set_rules(quorum=Decimal("0.5"))
    voters = [person(f"v{i}") for i in range(6)]
    proposal = parameter_proposal(author=voters[0], now=T0)
    # 7 eligible (6 + the rules operator): quorum needs ceil(3.5) = 4 for/abstain votes.
    assert proposal.eligible_voters == 7
    assert proposal.quorum_votes_required == 4
    vote_cast(proposal=proposal, voter=voters[0], choice="for", now=T0)
    for voter in voters[1:3]:
        vote_cast(proposal=proposal, voter=voter, choice="abstain", now=T0)
    tally = proposal_tally(proposal)
    assert (tally.quorum_votes, tally.quorum_reached, tally.approval_reached) == (3, False, True)
    assert state_at(proposal, T0 + 7 * DAY) == ProposalState.DEFEATED
    vote_cast(proposal=proposal, voter=voters[3], choice="abstain", now=T0 + HOUR)
    tally = proposal_tally(proposal)
    assert tally.quorum_reached and tally.passed
    assert tally.approval == 1.0
    assert state_at(proposal, T0 + 7 * DAY) == ProposalState.SUCCEEDED


def test_expired_when_not_executed_within_grace_period():
    set_rules(timelock_seconds=3600, grace_period_seconds=3600)
    alice = person("alice")
    proposal = parameter_proposal(author=alice, now=T0)
    vote_cast(proposal=proposal, voter=alice, choice="for", now=T0)
    end = proposal.voting_ends_at
    assert state_at(proposal, end) == ProposalState.SUCCEEDED
    assert state_at(proposal, end + 2 * HOUR) == ProposalState.EXPIRED  # by the clock alone
    assert proposals_advance(now=end + 2 * HOUR) == {proposal.pk: ["closed", "expired"]}
    proposal.refresh_from_db()
    assert proposal.expired_at == end + 2 * HOUR
    assert runtime_parameter("queue_size") == 5
    with pytest.raises(Conflict):
        proposal_execute(proposal=proposal, now=end + 2 * HOUR)
    assert proposals_advance(now=end + 3 * HOUR) == {}


def test_queued_proposal_expires_if_execution_keeps_failing():
    set_rules(timelock_seconds=0, grace_period_seconds=3600)
    alice = person("alice")
    proposal = parameter_proposal(author=alice, value=8, now=T0)
    vote_cast(proposal=proposal, voter=alice, choice="for", now=T0)
    # Bounds tightened after creation: execution fails and applies nothing.
    GovernedParameter.objects.filter(name="queue_size").update(maximum=6)
    end = proposal.voting_ends_at
    assert proposals_advance(now=end) == {proposal.pk: ["closed", "queued", "execution_failed"]}
    proposal.refresh_from_db()
    assert "outside its bounds" in proposal.execution_error
    assert state_at(proposal, end) == ProposalState.QUEUED
    assert proposals_advance(now=end + 2 * HOUR) == {proposal.pk: ["expired"]}
    assert state_at(proposal, end + 2 * HOUR) == ProposalState.EXPIRED
    assert runtime_parameter("queue_size") == 5
    assert "proposal.executed" not in events_of(proposal)


def test_cancel_needs_operator_and_reason_and_an_unfinished_proposal():
    proposal = parameter_proposal(now=T0)
    with pytest.raises(Forbidden):
        proposal_cancel(proposal=proposal, actor=person("carol"), reason="no", now=T0)
    with pytest.raises(ValidationFailed) as excinfo:
        proposal_cancel(proposal=proposal, actor=operator(), reason="  ", now=T0)
    assert "reason" in excinfo.value.fields
    proposal_cancel(proposal=proposal, actor=operator(), reason="duplicate of #1", now=T0 + HOUR)
    assert state_at(proposal, T0 + HOUR) == ProposalState.CANCELED
    assert state_at(proposal, T0 + 30 * DAY) == ProposalState.CANCELED
    assert proposal.cancel_reason == "duplicate of #1"
    event = AuditEvent.objects.get(event_type="proposal.canceled")
    assert event.payload["reason"] == "duplicate of #1" and event.payload["state_before"] == "active"
    with pytest.raises(Conflict) as excinfo:
        proposal_cancel(proposal=proposal, actor=operator(), reason="again", now=T0 + 2 * HOUR)
    assert excinfo.value.code == "not_cancelable"
    assert proposals_advance(now=T0 + 30 * DAY) == {}


def test_pending_and_queued_proposals_can_be_canceled_but_not_executed_ones():
    set_rules(voting_delay_seconds=3600, timelock_seconds=3600)
    alice = person("alice")
    pending = parameter_proposal(author=alice, parameter="queue_size", now=T0)
    proposal_cancel(proposal=pending, actor=operator(), reason="too early", now=T0)
    assert events_of(pending) == ["proposal.created", "proposal.canceled"]

    queued = parameter_proposal(author=alice, parameter="memory_limit_mb", value=4096, now=T0)
    vote_cast(proposal=queued, voter=alice, choice="for", now=T0 + HOUR)
    proposals_advance(now=queued.voting_ends_at)
    assert state_at(queued, queued.voting_ends_at) == ProposalState.QUEUED
    proposal_cancel(proposal=queued, actor=operator(), reason="security hold", now=queued.voting_ends_at)
    assert proposals_advance(now=queued.execution_eta) == {}
    assert runtime_parameter("memory_limit_mb") == 2048

    executed = parameter_proposal(author=alice, parameter="request_timeout_seconds", value=60, now=T0)
    vote_cast(proposal=executed, voter=alice, choice="for", now=T0 + HOUR)
    proposals_advance(now=executed.execution_eta)
    with pytest.raises(Conflict):
        proposal_cancel(proposal=executed, actor=operator(), reason="late", now=executed.execution_eta)


def test_beat_is_idempotent():
    alice = person("alice")
    proposal = parameter_proposal(author=alice, now=T0)
    vote_cast(proposal=proposal, voter=alice, choice="for", now=T0)
    when = proposal.execution_eta
    assert proposals_advance(now=when) == {proposal.pk: ["closed", "queued", "executed"]}
    count = AuditEvent.objects.count()
    assert proposals_advance(now=when) == {}
    assert proposal_advance(proposal_id=proposal.pk, now=when) == []
    assert AuditEvent.objects.count() == count
    assert ParameterChange.objects.count() == 1
    assert audit_chain_verify().ok


def test_python_and_sql_state_agree_in_every_state():
    set_rules(voting_delay_seconds=3600, voting_period_seconds=3600, timelock_seconds=3600, grace_period_seconds=3600)
    alice = person("alice")
    names = ["queue_size", "memory_limit_mb", "request_timeout_seconds", "max_concurrent_requests"]
    values = [8, 4096, 60, 4]
    proposals = [
        parameter_proposal(author=alice, parameter=n, value=v, now=T0) for n, v in zip(names, values, strict=True)
    ]
    for proposal in proposals[:3]:
        vote_cast(proposal=proposal, voter=alice, choice="for", now=T0 + HOUR)
    proposal_cancel(proposal=proposals[2], actor=operator(), reason="r", now=T0 + HOUR)
    moments = [T0, T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR, T0 + 4 * HOUR, T0 + 5 * HOUR]
    seen = set()
    for moment in moments:
        listed = {p.pk: p.state for p in proposal_list(now=moment)}
        for proposal in proposals:
            proposal.refresh_from_db()
            assert listed[proposal.pk] == proposal_state(proposal, now=moment), (moment, proposal)
            seen.add(listed[proposal.pk])
        for state in ProposalState.values:
            filtered = {p.pk for p in proposal_list(state=state, now=moment)}
            assert filtered == {pk for pk, s in listed.items() if s == state}, (moment, state)
        if moment == T0 + 2 * HOUR:
            proposals_advance(now=moment)  # queues; the timelock runs until T0 + 3h
        if moment == T0 + 3 * HOUR:
            proposal_execute(proposal=proposals[0], now=moment)
    assert seen == {s.value for s in ProposalState}


def test_list_filters_by_state_and_type():
    alice = person("alice")
    a = parameter_proposal(author=alice, parameter="queue_size", now=T0)
    b = parameter_proposal(author=alice, parameter="memory_limit_mb", value=4096, now=T0 + HOUR)
    vote_cast(proposal=b, voter=alice, choice="for", now=T0 + HOUR)
    later = T0 + 8 * DAY
    assert [p.pk for p in proposal_list(state="defeated", now=later)] == [a.pk]
    assert [p.pk for p in proposal_list(state="succeeded", now=later)] == [b.pk]
    assert [p.pk for p in proposal_list(state="active", now=T0 + HOUR)] == [b.pk, a.pk]
    assert list(proposal_list(proposal_type="model-adoption")) == []
    assert proposal_get(b.pk, now=later).votes_for == 1


# --- Votes --------------------------------------------------------------------------------------


def test_second_vote_replaces_first_and_history_keeps_both():
    alice = person("alice")
    proposal = parameter_proposal(author=alice, now=T0)
    first = vote_cast(proposal=proposal, voter=alice, choice="for", reason="faster", now=T0)
    second = vote_cast(proposal=proposal, voter=alice, choice="against", reason="on reflection", now=T0 + HOUR)
    assert first.created and second.changed
    assert Vote.objects.filter(proposal=proposal).count() == 1
    vote = Vote.objects.get(proposal=proposal)
    assert (vote.choice, vote.reason, vote.changes) == ("against", "on reflection", 1)
    history = list(VoteHistory.objects.filter(proposal=proposal).values_list("choice", "previous_choice"))
    assert history == [("for", ""), ("against", "for")]
    assert events_of(proposal)[-2:] == ["vote.cast", "vote.changed"]
    tally = proposal_tally(proposal)
    assert (tally.votes_for, tally.votes_against) == (0, 1)


def test_repeating_the_same_vote_changes_nothing():
    alice = person("alice")
    proposal = parameter_proposal(author=alice, now=T0)
    vote_cast(proposal=proposal, voter=alice, choice="for", now=T0)
    count = AuditEvent.objects.count()
    receipt = vote_cast(proposal=proposal, voter=alice, choice="for", now=T0 + HOUR)
    assert not receipt.created and not receipt.changed
    assert AuditEvent.objects.count() == count
    assert VoteHistory.objects.count() == 1


def test_votes_outside_the_window_are_refused_with_the_window_named():
    set_rules(voting_delay_seconds=3600, voting_period_seconds=3600)
    alice = person("alice")
    proposal = parameter_proposal(author=alice, now=T0)
    with pytest.raises(Conflict) as excinfo:
        vote_cast(proposal=proposal, voter=alice, choice="for", now=T0)
    assert excinfo.value.code == "voting_not_open"
    assert proposal.voting_starts_at.isoformat() in excinfo.value.message
    with pytest.raises(Conflict) as excinfo:
        vote_cast(proposal=proposal, voter=alice, choice="for", now=T0 + 2 * HOUR)
    assert excinfo.value.code == "voting_closed"
    assert proposal.voting_ends_at.isoformat() in excinfo.value.message
    vote_cast(proposal=proposal, voter=alice, choice="for", now=T0 + 2 * HOUR - dt.timedelta(seconds=1))
    assert Vote.objects.count() == 1


def test_votes_on_canceled_proposal_are_refused():
    alice = person("alice")
    proposal = parameter_proposal(author=alice, now=T0)
    proposal_cancel(proposal=proposal, actor=operator(), reason="r", now=T0)
    with pytest.raises(Conflict) as excinfo:
        vote_cast(proposal=proposal, voter=alice, choice="for", now=T0)
    assert excinfo.value.code == "voting_closed"


def test_only_contributors_and_operators_vote():
    proposal = parameter_proposal(now=T0)
    with pytest.raises(Forbidden):
        vote_cast(proposal=proposal, voter=person("node-1", "node"), choice="for", now=T0)
    vote_cast(proposal=proposal, voter=operator(), choice="for", now=T0)
    with pytest.raises(ValidationFailed) as excinfo:
        vote_cast(proposal=proposal, voter=person("carol"), choice="maybe", now=T0)
    assert "choice" in excinfo.value.fields
    with pytest.raises(ValidationFailed) as excinfo:
        vote_cast(proposal=proposal, voter=person("carol"), choice="for", reason="x" * 2001, now=T0)
    assert "reason" in excinfo.value.fields
    assert Vote.objects.count() == 1


# --- Parameters ------------------------------------------------------------------------------


def test_runtime_parameters_fall_back_to_defaults_without_rows():
    GovernedParameter.objects.all().delete()
    assert runtime_parameters() == {
        "max_tokens_per_request": 512,
        "max_concurrent_requests": 2,
        "request_timeout_seconds": 30,
        "memory_limit_mb": 2048,
        "queue_size": 5,
    }
    with pytest.raises(KeyError):
        runtime_parameter("gpu_count")


def test_executed_parameter_change_updates_live_value_with_history():
    alice = person("alice")
    proposal = parameter_proposal(author=alice, parameter="max_tokens_per_request", value=256, now=T0)
    vote_cast(proposal=proposal, voter=alice, choice="for", now=T0)
    proposals_advance(now=proposal.execution_eta)
    assert runtime_parameter("max_tokens_per_request") == 256
    change = ParameterChange.objects.get()
    assert (change.old_value, change.new_value, change.proposal_id) == (512, 256, proposal.pk)
    event = AuditEvent.objects.get(event_type="parameter.changed")
    assert event.payload == {
        "parameter": "max_tokens_per_request",
        "old_value": 512,
        "new_value": 256,
        "proposal_id": proposal.pk,
    }
    proposal.refresh_from_db()
    assert proposal.execution_result == {"parameter": "max_tokens_per_request", "old_value": 512, "new_value": 256}


def test_execute_twice_applies_once():
    alice = person("alice")
    proposal = parameter_proposal(author=alice, now=T0)
    vote_cast(proposal=proposal, voter=alice, choice="for", now=T0)
    proposals_advance(now=proposal.voting_ends_at)
    proposal_execute(proposal=proposal, now=proposal.execution_eta)
    with pytest.raises(Conflict) as excinfo:
        proposal_execute(proposal=proposal, now=proposal.execution_eta)
    assert excinfo.value.code == "already_executed"
    assert ParameterChange.objects.count() == 1
    assert AuditEvent.objects.filter(event_type="proposal.executed").count() == 1


@override_settings(GOVERNANCE_VOTING_PERIOD_SECONDS=600)
def test_rules_rows_are_created_on_demand_from_settings():
    ProposalRules.objects.all().delete()
    proposal = parameter_proposal(now=T0)
    assert proposal.voting_ends_at == T0 + dt.timedelta(seconds=600)
    assert ProposalRules.objects.count() == 1
