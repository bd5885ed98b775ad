"""The admin: rules change through the audited service; the record is read-only."""

import pytest
from django.contrib.auth import get_user_model

from audit.models import AuditEvent
from governance.models import ProposalRules, ProposalType
from governance.services import vote_cast
from tests.governance.factories import parameter_proposal, person

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.org", "pw")
    client.force_login(user)
    return client


def test_rules_rows_are_seeded_by_the_migration():
    assert set(ProposalRules.objects.values_list("proposal_type", flat=True)) == set(ProposalType.values)


def test_saving_rules_in_the_admin_is_audited(admin_client):
    rules = ProposalRules.objects.get(proposal_type="model-adoption")
    url = f"/admin/governance/proposalrules/{rules.pk}/change/"
    assert admin_client.get(url).status_code == 200
    form = {
        "voting_delay_seconds": 0,
        "voting_period_seconds": 3600,
        "quorum": "0.3",
        "approval_threshold": "0.5",
        "timelock_seconds": 60,
        "grace_period_seconds": 600,
    }
    response = admin_client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    rules.refresh_from_db()
    assert rules.voting_period_seconds == 3600
    event = AuditEvent.objects.get(event_type="rules.changed")
    assert event.actor_label == "root"
    assert event.payload["after"]["voting_period_seconds"] == 3600
    assert event.payload["after"]["quorum"] == "0.3000"


def test_admin_lists_render_and_the_record_is_read_only(admin_client):
    alice = person("alice")
    proposal = parameter_proposal(author=alice, now=None)
    vote_cast(proposal=proposal, voter=alice, choice="for")
    for model in ("proposal", "vote", "votehistory", "governedparameter", "proposalrules"):
        assert admin_client.get(f"/admin/governance/{model}/").status_code == 200, model
    assert admin_client.get("/admin/audit/auditevent/").status_code == 200
    assert admin_client.get("/admin/governance/proposal/add/").status_code == 403
    assert admin_client.post(f"/admin/governance/proposal/{proposal.pk}/delete/").status_code == 403
    assert admin_client.get("/admin/audit/auditevent/1/delete/").status_code == 403
