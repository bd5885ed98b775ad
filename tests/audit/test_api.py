"""The audit API: paginated, filterable events; verification; checkpoints."""

import pytest
from django.db import connection

from audit.checkpoints import audit_checkpoint_create
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


def test_events_are_listed_in_chain_order_with_hashes(client_as, proposal):
    body = client_as(None).get("/api/v1/audit/").json()
    assert body["count"] == 4
    events = body["results"]
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert [e["event_type"] for e in events] == ["proposal.created", "proposal.opened", "vote.cast", "vote.cast"]
    assert all(later["prev_hash"] == earlier["hash"] for earlier, later in zip(events, events[1:], strict=False))
    assert events[2]["actor"] == "alice" and events[1]["actor"] == "system"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("actor=bob", 1),
        ("event_type=vote.cast", 2),
        ("object_type=proposal", 4),
        ("object_type=proposal&object_id=999", 0),
        ("after_seq=2", 2),
    ],
)
def test_events_filter(client_as, proposal, query, expected):
    assert client_as(None).get(f"/api/v1/audit/?{query}").json()["count"] == expected


def test_events_between_two_heads_are_listed_in_order_and_paginated(client_as, proposal):
    client = client_as(None)
    body = client.get("/api/v1/audit/?after=1&upto=3").json()
    assert [e["seq"] for e in body["results"]] == [2, 3]
    first = client.get("/api/v1/audit/?after=0&upto=4&page_size=3").json()
    assert first["count"] == 4
    assert [e["seq"] for e in first["results"]] == [1, 2, 3]
    second = client.get("/api/v1/audit/?after=0&upto=4&page_size=3&page=2").json()
    assert [e["seq"] for e in second["results"]] == [4]
    assert client.get("/api/v1/audit/?after=3&upto=3").json()["count"] == 0


def test_served_events_recompute_with_the_node_side_hashing(client_as, proposal):
    from conclave_node.auditchain import walk_chain

    events = client_as(None).get("/api/v1/audit/?page_size=1000").json()["results"]
    assert [e["seq"] for e in walk_chain(events)] == [1, 2, 3, 4]


def test_a_negative_range_bound_is_400(client_as, proposal):
    response = client_as(None).get("/api/v1/audit/?after=-1&upto=x")
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"after", "upto"}


def test_object_filter_uses_the_proposal_id(client_as, proposal):
    body = client_as(None).get(f"/api/v1/audit/?object_type=proposal&object_id={proposal.pk}").json()
    assert body["count"] == 4


def test_bad_filters_are_400(client_as):
    for query in ("event_type=nope", "after_seq=-1", "after_seq=x"):
        response = client_as(None).get(f"/api/v1/audit/?{query}")
        assert response.status_code == 400, query
        assert response.json()["error"]["fields"]


def test_events_are_paginated(client_as, proposal):
    first = client_as(None).get("/api/v1/audit/?page_size=3").json()
    assert len(first["results"]) == 3 and first["next"]
    second = client_as(None).get(first["next"]).json()
    assert [e["seq"] for e in second["results"]] == [4]


def test_verify_reports_ok_then_the_first_broken_link(client_as, proposal):
    body = client_as(None).get("/api/v1/audit/verify/").json()
    assert body["ok"] is True and body["events_checked"] == 4 and body["first_broken_seq"] is None
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {AuditEvent._meta.db_table} SET object_id = '77' WHERE seq = 3")
    body = client_as(None).get("/api/v1/audit/verify/").json()
    assert body["ok"] is False
    assert body["first_broken_seq"] == 3
    assert "altered" in body["reason"]


def test_checkpoints_are_listed_with_their_cids(client_as, proposal):
    assert client_as(None).get("/api/v1/audit/checkpoints/").json()["count"] == 0
    checkpoint = audit_checkpoint_create()
    body = client_as(None).get("/api/v1/audit/checkpoints/").json()
    assert body["results"] == [
        {
            "seq": checkpoint.seq,
            "hash": checkpoint.hash,
            "cid": checkpoint.cid,
            "created_at": body["results"][0]["created_at"],
        }
    ]
    verify = client_as(None).get("/api/v1/audit/verify/").json()
    assert verify["checkpoints"] == {"ok": True, "checked": 1, "problems": []}
