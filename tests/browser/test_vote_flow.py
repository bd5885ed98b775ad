"""Sign in, open a proposal, vote, and watch the tally change without a page reload."""

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.services import token_issue
from governance.models import ProposalType
from governance.services import proposal_create
from tests.browser.conftest import assert_panel_matches_api, screenshot, wait_for_js
from tests.governance.factories import person

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "a-long-test-password"


def contributor(username: str):
    user = person(username)
    user.set_password(PASSWORD)
    user.save(update_fields=["password"])
    return user


def tally_count(page, label: str) -> str:
    return page.locator("#tally .counts div", has=page.locator("dt", has_text=label)).locator("dd").inner_text()


def test_sign_in_vote_and_see_the_tally_change_without_a_reload(page, live_server):
    alice = contributor("alice")
    person("bob")
    proposal = proposal_create(
        author=alice,
        proposal_type=ProposalType.PARAMETER_CHANGE,
        title="Raise the queue to 8",
        payload={"parameter": "queue_size", "value": 8, "reason": "bursts of requests"},
        now=timezone.now(),
    )
    detail = f"/governance/proposals/{proposal.pk}/"

    page.goto(f"{page.base_url}/accounts/login/?next={detail}")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{detail}")
    assert tally_count(page, "For") == "0"

    # A marker on the window survives only if the page is never reloaded.
    page.evaluate("window.__stillTheSamePage = true")
    page.get_by_label("For", exact=True).check()
    page.get_by_label("Reason").fill("bursts are real")
    page.get_by_role("button", name="Vote").click()
    wait_for_js(page, "document.querySelector('#tally').textContent.includes('1 of')")
    assert tally_count(page, "For") == "1"
    assert page.evaluate("window.__stillTheSamePage") is True
    assert "Your counted vote" in page.locator("#voting").inner_text()

    # Someone else votes through the API: the polled tally picks it up, still without a reload.
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_issue(username='bob', role='contributor').key}")
    assert client.post(f"/api/v1/proposals/{proposal.pk}/votes/", {"choice": "against"}, format="json").status_code in (
        200,
        201,
    )
    wait_for_js(
        page,
        """() => [...document.querySelectorAll('#tally .counts div')]
                 .some(d => d.querySelector('dt').textContent === 'Against' && d.querySelector('dd').textContent ===
                 '1')""",
        timeout=15_000,
    )
    assert page.evaluate("window.__stillTheSamePage") is True
    screenshot(page, "vote-flow-proposal")

    # The governance dashboard shows the same tally as its JSON.
    page.goto(f"{page.base_url}/dashboards/governance/")
    card = page.locator(f'[data-proposal="{proposal.pk}"]')
    assert card.locator('[data-api$=".tally.for"]').inner_text() == "1"
    assert card.locator('[data-api$=".tally.against"]').inner_text() == "1"
    assert_panel_matches_api(page, "#governance-panel")
    screenshot(page, "vote-flow-governance-dashboard")
    assert page.js_errors == []
    assert get_user_model().objects.filter(username="alice").exists()
