"""The home page and the serving status card in a real browser: what a newcomer sees at `/`."""

import pytest

from inference.serving.shared_state import coordination
from tests.browser.conftest import ARTIFACTS, screenshot
from tests.browser.test_dashboards import assert_fits_phone, assert_readable
from tests.dashboards.conftest import story_build

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def story(settings):
    settings.DASHBOARDS_REFRESH_SECONDS = 1  # the live parts poll every second here
    return story_build()


@pytest.fixture
def worker_status():
    """A worker's status for /health in the shared coordination state, as inference workers publish it."""
    for stale in coordination().statuses():  # no worker reports unless the test says so
        coordination().status_remove(stale)
    published = []

    def publish(name: str, status: dict) -> None:
        coordination().status_publish(name, status, ttl=60)
        published.append(name)

    yield publish
    for name in published:
        coordination().status_remove(name)


def test_home_page_shows_the_approved_set_open_proposals_and_leads_to_the_vote(page, story):
    page.goto(f"{page.base_url}/")
    assert page.title() == "Home · Conclave"
    assert page.get_by_role("heading", name="Conclave", exact=True).is_visible()
    assert page.locator("link[rel=stylesheet]").first.get_attribute("href") == "/static/css/conclave.css"
    assert page.evaluate("getComputedStyle(document.querySelector('.site-header')).display") != "inline"  # CSS applied
    assert page.evaluate("typeof htmx") == "object"

    row = page.locator("table.approved-models tr[data-model='mini']")
    assert row.count() == 1 and story.successor.ipfs_cid in row.inner_text()
    assert f"proposal #{story.adoption.pk}" in row.inner_text()
    open_item = page.locator(f"#home-proposals li[data-proposal='{story.open_proposal.pk}']")
    assert "voting closes in" in open_item.inner_text()
    for name in ("Dashboards", "API docs", "Admin"):
        assert page.get_by_role("link", name=name, exact=True).count() >= 1
    screenshot(page, "home")
    assert_readable(page, "home")
    assert_fits_phone(page, "home")

    open_item.get_by_role("link", name="Vote").click()
    page.wait_for_url(f"**/governance/proposals/{story.open_proposal.pk}/#voting")
    assert page.locator("#voting").is_visible()
    assert page.js_errors == []


def test_status_card_goes_from_offline_to_online_by_itself(page, story, worker_status):
    page.goto(f"{page.base_url}/")
    card = page.locator("#status-card")
    assert card.get_attribute("data-state") == "offline"
    assert "No inference worker is running" in card.inner_text()

    # A worker reports the approved model loaded: the card polls /dashboards/status/panel/ and turns online.
    worker_status(
        "worker-1",
        {
            "models": [{"name": "mini", "version": "2", "kind": "embedding"}],
            "loading": False,
            "errors": {},
            "memory_mb": 187.4,
            "backend": {"embedding": "onnxruntime (CPUExecutionProvider)", "generation": "llama.cpp (CPU)"},
        },
    )
    page.wait_for_selector("#status-card[data-state='online']", timeout=10_000)
    card = page.locator("#status-card")
    text = card.inner_text()
    assert "online" in text and "mini" in text and "187.4 MB" in text and "onnxruntime" in text
    screenshot(page, "home-status-online")
    # The card swaps itself every second: shoot its area of the page, not the element.
    page.screenshot(path=str(ARTIFACTS / "status-card.png"), clip=page.locator("#status-card").bounding_box())
    assert_readable(page, "status card")

    # The same card heads the overview dashboard.
    page.goto(f"{page.base_url}/dashboards/")
    assert page.locator("#status-card").get_attribute("data-state") == "online"
    assert page.js_errors == []
