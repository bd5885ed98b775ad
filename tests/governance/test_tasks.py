"""The beat's task, run by a real Celery worker on the configured broker."""

import datetime as dt

import pytest
from django.conf import settings
from django.utils import timezone

from audit.selectors import audit_chain_verify
from governance.models import Proposal
from governance.selectors import proposal_state, runtime_parameter
from governance.services import vote_cast
from governance.tasks import proposals_advance
from tests.governance.factories import parameter_proposal, person


def test_advance_task_is_on_the_beat_schedule():
    entry = settings.CELERY_BEAT_SCHEDULE["governance-proposals-advance"]
    assert entry["task"] == "governance.tasks.proposals_advance"
    assert entry["schedule"] == 30.0


@pytest.mark.django_db(transaction=True)
def test_beat_task_closes_queues_and_executes_through_a_worker(celery_worker):
    alice = person("alice")
    # Created nine days ago: voting (7 days) and the timelock (1 day) are over now.
    started = timezone.now() - dt.timedelta(days=9)
    proposal = parameter_proposal(author=alice, parameter="max_concurrent_requests", value=4, now=started)
    vote_cast(proposal=proposal, voter=alice, choice="for", now=started + dt.timedelta(hours=1))

    report = proposals_advance.delay().get(timeout=30)

    assert report == {str(proposal.pk): ["closed", "queued", "executed"]}
    proposal = Proposal.objects.get(pk=proposal.pk)
    assert proposal_state(proposal) == "executed"
    assert runtime_parameter("max_concurrent_requests") == 4
    assert proposals_advance.delay().get(timeout=30) == {}
    assert audit_chain_verify().ok


@pytest.mark.django_db
def test_advance_command_reports_what_it_did():
    import io

    from django.core.management import call_command

    alice = person("alice")
    started = timezone.now() - dt.timedelta(days=9)
    proposal = parameter_proposal(author=alice, now=started)
    out = io.StringIO()
    call_command("proposals_advance", stdout=out)
    assert out.getvalue().strip() == f"proposal #{proposal.pk}: closed"
    out = io.StringIO()
    call_command("proposals_advance", stdout=out)
    assert out.getvalue().strip() == "nothing due"
