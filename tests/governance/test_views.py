"""The HTMX pages and partials, with and without JavaScript, and CSRF on every form."""

import re

import pytest
from django.test import Client

from governance.models import Proposal, ProposalType, Vote
from governance.services import proposal_cancel, proposal_create, vote_cast
from tests.governance.factories import operator, person, set_rules
from tests.registry.factories import register_test_manifest

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def alice():
    return person("alice")


@pytest.fixture
def proposal(alice):
    return proposal_create(
        author=alice,
        proposal_type=ProposalType.PARAMETER_CHANGE,
        title="Bigger queue",
        payload={"parameter": "queue_size", "value": 8, "reason": "bursts at noon"},
    )


def signed_in(user, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def csrf_token(client: Client, url: str) -> str:
    page = client.get(url)
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)


# --- List -----------------------------------------------------------------------------------


def test_list_page_shows_proposals_with_state_and_tally(client, proposal, alice):
    vote_cast(proposal=proposal, voter=alice, choice="for")
    page = client.get("/governance/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<html" in html and "Bigger queue" in html
    assert 'class="state state-active"' in html
    assert "1 / 0 / 0" in html
    assert 'hx-get="/governance/"' in html


def test_list_filters_and_htmx_gets_only_the_rows(client, proposal):
    assert "Bigger queue" not in client.get("/governance/?state=executed").content.decode()
    assert "Bigger queue" not in client.get("/governance/?type=model-adoption").content.decode()
    assert "Bigger queue" in client.get("/governance/?state=active&type=parameter-change").content.decode()
    fragment = client.get("/governance/?state=active", **HX).content.decode()
    assert "<html" not in fragment
    assert fragment.lstrip().startswith('<div id="proposal-rows">') and "Bigger queue" in fragment


def test_list_ignores_unknown_filter_values(client, proposal):
    page = client.get("/governance/?state=sleeping")
    assert page.status_code == 200 and "Bigger queue" in page.content.decode()


# --- Detail and tally -------------------------------------------------------------------------------


def test_detail_page_shows_payload_checks_tally_time_left_and_history(client, proposal, alice):
    vote_cast(proposal=proposal, voter=alice, choice="for", reason="queue fills at noon")
    vote_cast(proposal=proposal, voter=alice, choice="abstain")
    html = client.get(f"/governance/proposals/{proposal.pk}/").content.decode()
    assert "Bigger queue" in html
    assert "5 → <strong>8</strong>" in html  # payload: current value → proposed
    assert "✓ bounds" in html  # content check
    assert 'hx-trigger="every 5s"' in html  # live tally
    assert "voting closes in" in html  # time left
    assert "<progress" in html  # quorum progress
    assert "Sign in</a> to vote" in html  # anonymous: no vote buttons
    assert 'name="choice"' not in html
    history = html.split("Vote history")[1]
    assert "abstain" in history and "queue fills at noon" in history
    assert f"object_id={proposal.pk}" in html  # link to its audit trail


def test_detail_of_unknown_proposal_is_404(client):
    assert client.get("/governance/proposals/999/").status_code == 404


def test_tally_partial_polls_while_active_and_stops_when_over(client, proposal):
    fragment = client.get(f"/governance/proposals/{proposal.pk}/tally/", **HX).content.decode()
    assert fragment.lstrip().startswith('<div id="tally"') and 'hx-trigger="every 5s"' in fragment
    proposal_cancel(proposal=proposal, actor=operator(), reason="duplicate")
    fragment = client.get(f"/governance/proposals/{proposal.pk}/tally/", **HX).content.decode()
    assert "hx-trigger" not in fragment and "Canceled" in fragment


# --- Voting ---------------------------------------------------------------------------------------------


def test_vote_without_javascript_is_a_plain_post_and_redirect(proposal, alice):
    client = signed_in(alice)
    page = client.get(f"/governance/proposals/{proposal.pk}/").content.decode()
    assert f'action="/governance/proposals/{proposal.pk}/vote/"' in page and 'name="choice"' in page
    response = client.post(f"/governance/proposals/{proposal.pk}/vote/", {"choice": "for", "reason": "yes"})
    assert response.status_code == 302 and response["Location"] == f"/governance/proposals/{proposal.pk}/"
    page = client.get(response["Location"]).content.decode()
    assert "Your vote (for) is recorded." in page
    assert "Your counted vote: <strong>for</strong>" in page
    assert Vote.objects.get().choice == "for"


def test_vote_with_htmx_swaps_the_voting_fragment(proposal, alice):
    client = signed_in(alice)
    response = client.post(f"/governance/proposals/{proposal.pk}/vote/", {"choice": "against"}, **HX)
    assert response.status_code == 200
    fragment = response.content.decode()
    assert fragment.lstrip().startswith('<section id="voting"')
    assert "<dt>Against</dt><dd>1</dd>" in fragment
    assert "Your vote (against) is recorded." in fragment
    assert "Change my vote" in fragment


def test_vote_errors_show_inline(proposal, alice):
    client = signed_in(alice)
    response = client.post(f"/governance/proposals/{proposal.pk}/vote/", {"choice": "maybe"})
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    response = client.post(f"/governance/proposals/{proposal.pk}/vote/", {"choice": "maybe"}, **HX)
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert Vote.objects.count() == 0


def test_vote_outside_the_window_is_refused_with_the_reason(alice):
    set_rules(voting_delay_seconds=3600)
    pending = proposal_create(
        author=alice,
        proposal_type=ProposalType.PARAMETER_CHANGE,
        title="Later",
        payload={"parameter": "memory_limit_mb", "value": 4096, "reason": "r"},
    )
    response = signed_in(alice).post(f"/governance/proposals/{pending.pk}/vote/", {"choice": "for"})
    assert response.status_code == 409
    assert "not open for voting yet" in response.content.decode()


def test_vote_needs_sign_in_and_a_voting_role(proposal):
    response = Client().post(f"/governance/proposals/{proposal.pk}/vote/", {"choice": "for"})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    node = signed_in(person("node-1", "node"))
    assert node.post(f"/governance/proposals/{proposal.pk}/vote/", {"choice": "for"}).status_code == 403
    assert 'name="choice"' not in node.get(f"/governance/proposals/{proposal.pk}/").content.decode()
    assert Vote.objects.count() == 0


# --- Creating -----------------------------------------------------------------------------------------------


def test_new_proposal_pages_need_a_contributor(client, alice):
    assert client.get("/governance/proposals/new/").status_code == 302
    assert signed_in(person("node-1", "node")).get("/governance/proposals/new/parameter-change/").status_code == 403
    client = signed_in(alice)
    assert client.get("/governance/proposals/new/").status_code == 200
    for kind in ProposalType.values:
        page = client.get(f"/governance/proposals/new/{kind}/")
        assert page.status_code == 200 and 'name="title"' in page.content.decode()
    assert client.get("/governance/proposals/new/coup/").status_code == 404


def test_create_form_shows_inline_errors(alice):
    client = signed_in(alice)
    url = "/governance/proposals/new/parameter-change/"
    response = client.post(url, {"title": "", "parameter": "queue_size", "value": "100000", "reason": "r"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "This field is required." in html
    # The form is valid in shape; the service refuses the bounds, shown beside the value field.
    response = client.post(url, {"title": "Huge", "parameter": "queue_size", "value": "100000", "reason": "r"})
    assert response.status_code == 400
    value_field = response.content.decode().split('name="value"')[1].split("</div>")[0]
    assert "must be between 0 and 1000" in value_field
    assert Proposal.objects.count() == 0


def test_create_form_lists_failed_content_checks(alice):
    candidate = register_test_manifest(name="gemma-like", license="Gemma-Terms")
    response = signed_in(alice).post(
        "/governance/proposals/new/model-adoption/",
        {"title": "Adopt it", "candidate": candidate.pk, "reason": "good"},
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "Failed content checks" in html and "Gemma-Terms" in html


def test_create_form_success_redirects_to_the_proposal(alice):
    client = signed_in(alice)
    response = client.post(
        "/governance/proposals/new/parameter-change/",
        {"title": "Longer timeout", "parameter": "request_timeout_seconds", "value": "60", "reason": "slow GPUs"},
    )
    proposal = Proposal.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/governance/proposals/{proposal.pk}/"
    assert proposal.payload["value"] == 60 and proposal.author == alice


def test_create_form_with_htmx_redirects_by_header_and_swaps_errors(alice):
    client = signed_in(alice)
    url = "/governance/proposals/new/parameter-change/"
    response = client.post(url, {"title": "", "parameter": "queue_size", "value": "6", "reason": "r"}, **HX)
    assert response.status_code == 200
    assert (
        response.content.decode().lstrip().startswith("<form")
        and "This field is required." in response.content.decode()
    )
    response = client.post(url, {"title": "Six", "parameter": "queue_size", "value": "6", "reason": "r"}, **HX)
    assert response.status_code == 204
    assert response["HX-Redirect"] == f"/governance/proposals/{Proposal.objects.get().pk}/"


# --- Cancel, parameters ------------------------------------------------------------------------------------------


def test_cancel_form_for_operators_only(proposal, alice):
    assert signed_in(alice).post(f"/governance/proposals/{proposal.pk}/cancel/", {"reason": "x"}).status_code == 403
    client = signed_in(operator())
    assert "Cancel proposal" in client.get(f"/governance/proposals/{proposal.pk}/").content.decode()
    response = client.post(f"/governance/proposals/{proposal.pk}/cancel/", {"reason": ""})
    assert response.status_code == 400 and "This field is required." in response.content.decode()
    response = client.post(f"/governance/proposals/{proposal.pk}/cancel/", {"reason": "duplicate"})
    assert response.status_code == 302
    html = client.get(f"/governance/proposals/{proposal.pk}/").content.decode()
    assert "duplicate" in html and "Cancel proposal" not in html


def test_parameters_page_shows_values_and_rules(client):
    html = client.get("/governance/parameters/").content.decode()
    assert "max_tokens_per_request" in html and "<strong>512</strong>" in html
    assert "Rules per proposal type" in html and "Model adoption" in html


# --- CSRF -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form_page", "action", "data", "user_role"),
    [
        ("/governance/proposals/{id}/", "/governance/proposals/{id}/vote/", {"choice": "for"}, "contributor"),
        ("/governance/proposals/{id}/", "/governance/proposals/{id}/cancel/", {"reason": "dup"}, "operator"),
        (
            "/governance/proposals/new/parameter-change/",
            "/governance/proposals/new/parameter-change/",
            {"title": "T", "parameter": "memory_limit_mb", "value": "4096", "reason": "r"},
            "contributor",
        ),
    ],
)
def test_forms_enforce_csrf(proposal, form_page, action, data, user_role):
    client = signed_in(person(f"csrf-{user_role}", user_role), csrf=True)
    url = action.format(id=proposal.pk)
    assert client.post(url, data).status_code == 403
    token = csrf_token(client, form_page.format(id=proposal.pk))
    response = client.post(url, {**data, "csrfmiddlewaretoken": token})
    assert response.status_code == 302, response.content.decode()[:500]


def test_htmx_requests_carry_the_csrf_header(proposal):
    client = signed_in(person("carol"), csrf=True)
    page = client.get(f"/governance/proposals/{proposal.pk}/").content.decode()
    token = re.search(r'hx-headers=\'\{"X-CSRFToken": "([^"]+)"\}\'', page).group(1)
    response = client.post(
        f"/governance/proposals/{proposal.pk}/vote/", {"choice": "for"}, HTTP_X_CSRFTOKEN=token, **HX
    )
    assert response.status_code == 200
    assert Vote.objects.count() == 1


def test_a_check_that_can_change_is_shown_as_it_is_now_with_when_it_was_first_run(alice):
    from registry.services import manifest_metrics_record

    candidate = register_test_manifest(name="mini", version="2")
    proposal = proposal_create(
        author=alice,
        proposal_type=ProposalType.MODEL_ADOPTION,
        title="Adopt mini 2",
        payload={"candidate": candidate.pk, "reason": "smaller"},
    )
    (recorded,) = [check for check in proposal.checks if check["name"] == "benchmark"]
    assert recorded["detail"] == "not yet benchmarked"
    url = f"/governance/proposals/{proposal.pk}/"

    def benchmark_check(html: str) -> str:
        return re.search(r'<li [^>]*data-check="benchmark">(.*?)</li>', html, re.S).group(1)

    before = benchmark_check(Client().get(url).content.decode())
    assert "not yet benchmarked" in before and "first run" in before

    manifest_metrics_record(
        manifest=candidate,
        metrics={
            "avg_tokens_per_sec": 321.5,
            "memory_usage_mb": 40.0,
            "quality_score": 0.81,
            "latency_ms": {"p50": 3.2},
        },
    )
    after = benchmark_check(Client().get(url).content.decode())
    assert "✓ benchmark" in after and "avg_tokens_per_sec=321.5" in after and "latency p50=3.2 ms" in after
    created = proposal.created_at.strftime("%Y-%m-%d %H:%M")
    assert (
        f'first run <time datetime="{proposal.created_at.isoformat()}">{created} UTC</time>, when it said: not yet '
        "benchmarked" in after
    )
    # What was recorded at creation stays as it was (the audit trail and the API keep it).
    proposal.refresh_from_db()
    assert [c["detail"] for c in proposal.checks if c["name"] == "benchmark"] == ["not yet benchmarked"]
