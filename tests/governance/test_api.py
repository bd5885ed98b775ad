"""The governance API: permissions, payload validation, voting, lists, and the schema."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import include, path
from django.utils import timezone

from governance.models import Proposal, ProposalType, Vote
from governance.services import proposal_create, vote_cast
from tests.governance.factories import person, set_rules
from tests.registry.factories import register_test_manifest

pytestmark = pytest.mark.django_db

ROLES = [None, "contributor", "operator", "node"]
PARAMETER_PAYLOAD = {
    "type": "parameter-change",
    "title": "Longer answers",
    "payload": {"parameter": "max_tokens_per_request", "value": 1024, "reason": "users ask for it"},
}


@pytest.fixture
def proposal():
    return proposal_create(
        author=person("alice"),
        proposal_type=ProposalType.PARAMETER_CHANGE,
        title="Bigger queue",
        payload={"parameter": "queue_size", "value": 8, "reason": "bursts"},
    )


def error_fields(response) -> dict:
    return response.json()["error"].get("fields", {})


# --- Permission matrix ---------------------------------------------------------------

READ_ENDPOINTS = [
    "/api/v1/proposals/",
    "/api/v1/proposals/{id}/",
    "/api/v1/proposals/{id}/votes/",
    "/api/v1/proposals/{id}/votes/history/",
    "/api/v1/parameters/",
    "/api/v1/parameters/queue_size/",
    "/api/v1/rules/",
    "/api/v1/rules/model-adoption/",
    "/api/v1/audit/",
    "/api/v1/audit/verify/",
    "/api/v1/audit/checkpoints/",
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("url", READ_ENDPOINTS)
def test_everyone_reads(client_as, proposal, role, url):
    response = client_as(role).get(url.format(id=proposal.pk))
    assert response.status_code == 200, response.content


WRITES = [
    # (method, url, body, expected status for anonymous, contributor, operator, node)
    ("post", "/api/v1/proposals/", PARAMETER_PAYLOAD, (401, 201, 201, 403)),
    ("post", "/api/v1/proposals/{id}/votes/", {"choice": "for"}, (401, 201, 201, 403)),
    ("post", "/api/v1/proposals/{id}/cancel/", {"reason": "duplicate"}, (401, 403, 200, 403)),
    ("patch", "/api/v1/rules/parameter-change/", {"quorum": "0.3"}, (401, 403, 200, 403)),
]


@pytest.mark.parametrize(("method", "url", "body", "expected"), WRITES, ids=[f"{w[0]} {w[1]}" for w in WRITES])
@pytest.mark.parametrize("role_index", range(4), ids=["anonymous", "contributor", "operator", "node"])
def test_permission_matrix_for_writes(client_as, proposal, method, url, body, expected, role_index):
    client = client_as(ROLES[role_index])
    response = getattr(client, method)(url.format(id=proposal.pk), body, format="json")
    assert response.status_code == expected[role_index], response.content
    if response.status_code >= 400:
        assert set(response.json()["error"]) >= {"message", "type", "code"}


# --- Creating --------------------------------------------------------------------------------


def test_create_returns_the_proposal_with_state_and_tally(client_as):
    response = client_as("contributor").post("/api/v1/proposals/", PARAMETER_PAYLOAD, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["type"] == "parameter-change"
    assert body["state"] == "active"
    assert body["author"] == "contributor-user"
    assert body["payload"]["current_value"] == 512
    assert body["tally"]["total"] == 0 and body["tally"]["passed"] is False
    assert body["seconds_left"] > 0
    assert body["url"] == f"/governance/proposals/{body['id']}/"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "type"),
        ({**PARAMETER_PAYLOAD, "type": "coup"}, "type"),
        ({**PARAMETER_PAYLOAD, "title": ""}, "title"),
        ({**PARAMETER_PAYLOAD, "payload": "not an object"}, "payload"),
        ({**PARAMETER_PAYLOAD, "payload": {"parameter": "queue_size", "value": -1, "reason": "r"}}, "payload.value"),
        ({**PARAMETER_PAYLOAD, "payload": {"parameter": "queue_size", "value": 7}}, "payload.reason"),
        ({**PARAMETER_PAYLOAD, "payload": {"parameter": "warp", "value": 7, "reason": "r"}}, "payload.parameter"),
        ({"type": "model-adoption", "title": "t", "payload": {"candidate": "x", "reason": "r"}}, "payload.candidate"),
        (
            {"type": "model-adoption", "title": "t", "payload": {"candidate": 424242, "reason": "r"}},
            "payload.candidate",
        ),
        ({"type": "model-retirement", "title": "t", "payload": {"reason": "r"}}, "payload.manifest"),
    ],
)
def test_bad_payloads_get_400_with_field_errors(client_as, body, field):
    response = client_as("contributor").post("/api/v1/proposals/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in error_fields(response)
    assert Proposal.objects.count() == 0


def test_failed_content_checks_are_listed_in_the_400(client_as):
    candidate = register_test_manifest(name="gemma-like", license="Gemma-Terms")
    response = client_as("contributor").post(
        "/api/v1/proposals/",
        {"type": "model-adoption", "title": "Adopt", "payload": {"candidate": candidate.pk, "reason": "r"}},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "checks_failed"
    assert "Gemma-Terms" in error_fields(response)["checks.license"][0]


def test_second_open_proposal_on_a_parameter_is_a_conflict(client_as, proposal):
    body = {**PARAMETER_PAYLOAD, "payload": {"parameter": "queue_size", "value": 9, "reason": "r"}}
    response = client_as("contributor").post("/api/v1/proposals/", body, format="json")
    assert response.status_code == 409
    assert f"#{proposal.pk}" in response.json()["error"]["message"]


# --- Voting --------------------------------------------------------------------------------------


def test_vote_then_change_it(client_as, proposal):
    client = client_as("contributor")
    first = client.post(f"/api/v1/proposals/{proposal.pk}/votes/", {"choice": "for", "reason": "yes"}, format="json")
    assert first.status_code == 201
    assert first.json()["tally"]["for"] == 1
    second = client.post(f"/api/v1/proposals/{proposal.pk}/votes/", {"choice": "against"}, format="json")
    assert second.status_code == 200
    assert second.json()["changed"] is True
    assert second.json()["tally"] == {**second.json()["tally"], "for": 0, "against": 1, "total": 1}
    votes = client.get(f"/api/v1/proposals/{proposal.pk}/votes/").json()
    assert votes["count"] == 1 and votes["results"][0]["choice"] == "against"
    history = client.get(f"/api/v1/proposals/{proposal.pk}/votes/history/").json()
    assert [(h["choice"], h["previous_choice"]) for h in history["results"]] == [("against", "for"), ("for", "")]


def test_vote_with_bad_choice_is_400(client_as, proposal):
    response = client_as("contributor").post(
        f"/api/v1/proposals/{proposal.pk}/votes/", {"choice": "maybe"}, format="json"
    )
    assert response.status_code == 400
    assert "choice" in error_fields(response)


def test_vote_outside_the_window_is_409_naming_it(client_as):
    set_rules(voting_delay_seconds=3600)
    pending = proposal_create(
        author=person("alice"),
        proposal_type=ProposalType.PARAMETER_CHANGE,
        title="Later",
        payload={"parameter": "queue_size", "value": 8, "reason": "r"},
    )
    response = client_as("contributor").post(f"/api/v1/proposals/{pending.pk}/votes/", {"choice": "for"}, format="json")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "voting_not_open"
    assert pending.voting_starts_at.isoformat() in error["message"]
    assert Vote.objects.count() == 0


def test_unknown_proposal_is_404(client_as):
    assert client_as(None).get("/api/v1/proposals/999/").status_code == 404
    response = client_as("contributor").post("/api/v1/proposals/999/votes/", {"choice": "for"}, format="json")
    assert response.status_code == 404


# --- Cancel, rules, parameters ----------------------------------------------------------------------


def test_cancel_needs_a_reason_and_is_recorded(client_as, proposal):
    operator = client_as("operator")
    response = operator.post(f"/api/v1/proposals/{proposal.pk}/cancel/", {}, format="json")
    assert response.status_code == 400 and "reason" in error_fields(response)
    response = operator.post(f"/api/v1/proposals/{proposal.pk}/cancel/", {"reason": "spam"}, format="json")
    assert response.status_code == 200
    assert response.json()["state"] == "canceled"
    assert response.json()["cancel_reason"] == "spam"
    assert response.json()["canceled_by"] == "operator-user"
    again = operator.post(f"/api/v1/proposals/{proposal.pk}/cancel/", {"reason": "twice"}, format="json")
    assert again.status_code == 409


def test_rules_are_listed_and_patched_with_validation(client_as):
    rules = client_as(None).get("/api/v1/rules/").json()
    assert [r["type"] for r in rules] == ["model-adoption", "model-retirement", "parameter-change"]
    operator = client_as("operator")
    response = operator.patch("/api/v1/rules/model-adoption/", {"voting_period_seconds": 3600}, format="json")
    assert response.status_code == 200 and response.json()["voting_period_seconds"] == 3600
    for body, field in [
        ({"quorum": "2"}, "quorum"),
        ({"voting_period_seconds": 5}, "voting_period_seconds"),
        ({"colour": "red"}, "colour"),
    ]:
        response = operator.patch("/api/v1/rules/model-adoption/", body, format="json")
        assert response.status_code == 400, body
        assert field in error_fields(response)
    assert operator.patch("/api/v1/rules/model-adoption/", {}, format="json").status_code == 400
    assert operator.patch("/api/v1/rules/nonsense/", {"quorum": "0.1"}, format="json").status_code == 404


def test_parameters_show_values_bounds_and_history(client_as):
    response = client_as(None).get("/api/v1/parameters/")
    by_name = {p["name"]: p for p in response.json()}
    assert by_name["max_tokens_per_request"]["value"] == 512
    assert by_name["queue_size"]["minimum"] == 0
    assert by_name["queue_size"]["history"] == []
    assert client_as(None).get("/api/v1/parameters/warp/").status_code == 404


# --- Lists ------------------------------------------------------------------------------------------------


def test_list_filters_and_rejects_unknown_filter_values(client_as, proposal):
    client = client_as(None)
    assert client.get("/api/v1/proposals/?state=active").json()["count"] == 1
    assert client.get("/api/v1/proposals/?state=executed").json()["count"] == 0
    assert client.get("/api/v1/proposals/?type=model-adoption").json()["count"] == 0
    assert client.get("/api/v1/proposals/?author=alice").json()["count"] == 1
    response = client.get("/api/v1/proposals/?state=sleeping")
    assert response.status_code == 400 and "state" in error_fields(response)


def _clone_proposals(template: Proposal, count: int) -> None:
    rows = []
    for index in range(count):
        clone = Proposal(
            **{f.attname: getattr(template, f.attname) for f in Proposal._meta.concrete_fields if f.attname != "id"}
        )
        clone.title = f"clone {index}"
        clone.subject = f"clone:{index}"
        rows.append(clone)
    Proposal.objects.bulk_create(rows)


def test_list_query_count_does_not_grow_with_page_size(client_as, proposal, django_assert_max_num_queries):
    voters = [person(f"v{i}") for i in range(3)]
    for voter in voters:
        vote_cast(proposal=proposal, voter=voter, choice="for")
    client = client_as(None)
    with CaptureQueriesContext(connection) as few:
        assert client.get("/api/v1/proposals/").json()["count"] == 1
    _clone_proposals(proposal, 49)
    with django_assert_max_num_queries(len(few)), CaptureQueriesContext(connection) as many:
        body = client.get("/api/v1/proposals/").json()
    assert len(body["results"]) == 50
    assert len(many) == len(few)
    original = next(p for p in body["results"] if p["id"] == proposal.pk)
    assert original["tally"]["for"] == 3


# --- Schema ----------------------------------------------------------------------------------------------


def test_openapi_schema_for_governance_and_audit_generates_without_warnings():
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator

    patterns = [path("api/v1/", include("governance.api.urls")), path("api/v1/", include("audit.api.urls"))]
    GENERATOR_STATS.reset()
    schema = SchemaGenerator(patterns=patterns).get_schema(request=None, public=True)
    assert not GENERATOR_STATS._warn_cache and not GENERATOR_STATS._error_cache, (
        dict(GENERATOR_STATS._warn_cache),
        dict(GENERATOR_STATS._error_cache),
    )
    assert set(schema["paths"]) >= {
        "/api/v1/proposals/",
        "/api/v1/proposals/{proposal_id}/",
        "/api/v1/proposals/{proposal_id}/votes/",
        "/api/v1/proposals/{proposal_id}/cancel/",
        "/api/v1/parameters/",
        "/api/v1/rules/",
        "/api/v1/rules/{proposal_type}/",
        "/api/v1/audit/",
        "/api/v1/audit/verify/",
        "/api/v1/audit/checkpoints/",
    }


def test_seconds_left_counts_down_to_the_close(client_as, proposal):
    body = client_as(None).get(f"/api/v1/proposals/{proposal.pk}/").json()
    expected = (proposal.voting_ends_at - timezone.now()).total_seconds()
    assert abs(body["seconds_left"] - expected) < 60
    assert dt.datetime.fromisoformat(body["voting_ends_at"].replace("Z", "+00:00")) == proposal.voting_ends_at


def test_proposals_as_served_match_the_generated_schema_in_every_state(client_as):
    """`outcome` is null until voting closes (it was "" where the schema said passed|defeated, not nullable)."""
    from governance.services import proposal_advance, proposal_cancel
    from tests.governance.factories import operator, parameter_proposal
    from tests.openapi import response_check, schema_generated

    now = timezone.now()
    active = parameter_proposal(now=now, title="Active")
    canceled = parameter_proposal(now=now, title="Canceled", parameter="max_tokens_per_request", value=1024)
    proposal_cancel(proposal=canceled, actor=operator(), reason="superseded")
    closed = parameter_proposal(
        now=now - dt.timedelta(days=30), title="Closed", parameter="request_timeout_seconds", value=60
    )
    proposal_advance(proposal_id=closed.pk, now=now)

    schema = schema_generated()
    client = client_as(None)
    listing = client.get("/api/v1/proposals/")
    response_check(schema, path="/api/v1/proposals/", method="GET", response=listing)
    outcomes = {p["title"]: (p["state"], p["outcome"]) for p in listing.json()["results"]}
    assert outcomes["Active"] == ("active", None)
    assert outcomes["Canceled"] == ("canceled", None)
    assert outcomes["Closed"][1] == "defeated"
    for proposal in (active, canceled, closed):
        detail = client.get(f"/api/v1/proposals/{proposal.pk}/")
        response_check(schema, path="/api/v1/proposals/{proposal_id}/", method="GET", response=detail)
