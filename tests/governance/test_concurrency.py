"""Races on PostgreSQL: many votes by one voter, several executors, several beats.

These need real row locks and concurrent connections, which SQLite (one
writer at a time, by design) cannot show; they run in the PostgreSQL pass.
"""

import threading

import pytest
from django.db import connection

from audit.models import AuditEvent
from audit.selectors import audit_chain_verify
from core.errors import Conflict
from governance.models import ParameterChange, Vote, VoteHistory
from governance.selectors import runtime_parameter
from governance.services import proposal_execute, proposals_advance, vote_cast
from tests.governance.factories import T0, parameter_proposal, person

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="needs PostgreSQL row locks and concurrent connections; runs in the PostgreSQL pass",
    ),
]


def race(workers: int, work) -> tuple[list, list[BaseException]]:
    """Run `work(i)` in `workers` threads released together; return results and errors."""
    barrier = threading.Barrier(workers)
    results: list = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        try:
            barrier.wait()
            outcome = work(index)
            with lock:
                results.append(outcome)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            with lock:
                errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results, errors


def test_many_concurrent_votes_by_one_contributor_count_once():
    alice = person("alice")
    proposal = parameter_proposal(author=alice, now=T0)
    choices = ["for", "against", "abstain"]

    results, errors = race(16, lambda i: vote_cast(proposal=proposal, voter=alice, choice=choices[i % 3], now=T0))

    assert errors == []
    assert Vote.objects.filter(proposal=proposal, voter=alice).count() == 1
    assert sum(receipt.created for receipt in results) == 1
    recorded = sum(1 for receipt in results if receipt.created or receipt.changed)
    assert VoteHistory.objects.filter(proposal=proposal).count() == recorded
    assert AuditEvent.objects.filter(event_type__in=["vote.cast", "vote.changed"]).count() == recorded
    assert audit_chain_verify().ok


def test_concurrent_executors_execute_once():
    alice = person("alice")
    proposal = parameter_proposal(author=alice, value=9, now=T0)
    vote_cast(proposal=proposal, voter=alice, choice="for", now=T0)
    proposals_advance(now=proposal.voting_ends_at)

    results, errors = race(8, lambda i: proposal_execute(proposal=proposal, now=proposal.execution_eta))

    assert len(results) == 1
    assert len(errors) == 7
    assert all(isinstance(e, Conflict) and e.code == "already_executed" for e in errors)
    assert ParameterChange.objects.count() == 1
    assert AuditEvent.objects.filter(event_type="proposal.executed").count() == 1
    assert AuditEvent.objects.filter(event_type="parameter.changed").count() == 1
    assert runtime_parameter("queue_size") == 9
    assert audit_chain_verify().ok


def test_concurrent_beats_record_each_transition_once():
    alice = person("alice")
    proposal = parameter_proposal(author=alice, value=7, now=T0)
    vote_cast(proposal=proposal, voter=alice, choice="for", now=T0)

    results, errors = race(6, lambda i: proposals_advance(now=proposal.execution_eta))

    assert errors == []
    done = [step for report in results for step in report.get(proposal.pk, [])]
    assert sorted(done) == ["closed", "executed", "queued"]
    for event_type in ("proposal.closed", "proposal.queued", "proposal.executed"):
        assert AuditEvent.objects.filter(event_type=event_type).count() == 1
    assert ParameterChange.objects.count() == 1
    assert audit_chain_verify().ok
