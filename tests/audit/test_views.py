"""The audit log page: filterable by object and actor; the verify page."""

import pytest
from django.db import connection

from audit.models import AuditEvent
from governance.services import vote_cast
from tests.governance.factories import parameter_proposal, person

pytestmark = pytest.mark.django_db


@pytest.fixture
def proposal():
    alice, bob = person("alice"), person("bob")
    proposal = parameter_proposal(author=alice, now=None)
    vote_cast(proposal=proposal, voter=alice, choice="for")
    vote_cast(proposal=proposal, voter=bob, choice="against")
    return proposal


def rows(html: str) -> int:
    return html.split("<tbody>")[1].count("<tr>") if "<tbody>" in html else 0


def test_log_page_lists_events_newest_first(client, proposal):
    html = client.get("/audit/").content.decode()
    assert rows(html) == 4
    table = html.split("<tbody>")[1]
    assert table.index("vote.cast") < table.index("proposal.created")


def test_log_filters_by_actor_object_and_type(client, proposal):
    assert rows(client.get("/audit/?actor=bob").content.decode()) == 1
    assert rows(client.get(f"/audit/?object_type=proposal&object_id={proposal.pk}").content.decode()) == 4
    assert rows(client.get("/audit/?object_type=parameter").content.decode()) == 0
    assert rows(client.get("/audit/?event_type=proposal.opened").content.decode()) == 1


def test_log_htmx_request_gets_only_the_rows(client, proposal):
    fragment = client.get("/audit/?actor=alice", HTTP_HX_REQUEST="true").content.decode()
    assert fragment.lstrip().startswith('<div id="event-rows">') and "<html" not in fragment
    assert rows(fragment) == 2


def test_verify_page_reports_ok_then_the_broken_link(client, proposal):
    response = client.get("/audit/verify/")
    assert response.status_code == 200 and "The chain verifies: 4 events" in response.content.decode()
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {AuditEvent._meta.db_table} WHERE seq = 2")
    response = client.get("/audit/verify/")
    assert response.status_code == 409
    assert "broken at event #2" in response.content.decode()
