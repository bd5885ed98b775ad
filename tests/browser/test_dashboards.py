"""Every dashboard in a real browser: the numbers shown equal the JSON API's, charts are drawn,
controls work from the keyboard, text has enough contrast, and a phone-width screen is usable."""

import time

import pytest
from django.utils import timezone

from conclave_node.sketch import LatencySketch
from dashboards.services import metrics_rollup
from inference.models import BenchmarkRun, BenchmarkStatus
from nodes.models import NodeReport
from tests.browser.conftest import assert_panel_matches_api, screenshot, wait_for_js
from tests.dashboards.conftest import story_build
from tests.governance.factories import person

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"width": 375, "height": 740}

# WCAG 2 contrast ratio of each element's text against the nearest opaque background.
CONTRAST_JS = """(selector) => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const background = el => {
    for (let node = el; node; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  return [...document.querySelectorAll(selector)].filter(el => el.offsetParent !== null).map(el => {
    const a = lum(rgb(getComputedStyle(el).color).slice(0, 3)), b = lum(background(el));
    return {text: el.textContent.trim().slice(0, 40), ratio: (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)};
  });
}"""
TEXT = "h1, h2, h3, p, dt, dd, th, td, a, label, .badge, .meta, figcaption, button, select"


def assert_readable(page, name: str) -> None:
    low = [c for c in page.evaluate(CONTRAST_JS, TEXT) if c["text"] and c["ratio"] < 4.5]
    assert not low, f"{name}: text below 4.5:1 contrast: {low[:5]}"


def assert_fits_phone(page, name: str) -> None:
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(200)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    wide = page.evaluate("""() => [...document.querySelectorAll('body *')]
        .filter(el => el.getBoundingClientRect().right > window.innerWidth + 1)
        .slice(0, 8).map(el => el.tagName + '.' + el.className + ' ' + Math.round(el.getBoundingClientRect().right))""")
    assert overflow <= 0, f"{name} scrolls sideways by {overflow}px at phone width: {wide}"
    screenshot(page, f"dashboard-{name}-phone")
    page.set_viewport_size({"width": 1280, "height": 900})


DRAWN = "[...document.querySelectorAll('canvas[data-chart]')].filter(c => Chart.getChart(c) !== undefined).length"


def charts_drawn(page) -> int:
    """How many charts Chart.js drew, once every chart on the page is drawn (or after 5 s)."""
    try:
        wait_for_js(
            page,
            f"typeof Chart !== 'undefined' && {DRAWN} === document.querySelectorAll('canvas[data-chart]').length",
            timeout=5_000,
        )
    except Exception:  # noqa: BLE001 - the count below says what was drawn
        pass
    return page.evaluate(DRAWN)


@pytest.fixture
def history():
    story = story_build()
    BenchmarkRun.objects.create(manifest=story.successor, status=BenchmarkStatus.RUNNING, progress=0.6, stage="latency")
    BenchmarkRun.objects.create(
        manifest=story.successor,
        status=BenchmarkStatus.SUCCEEDED,
        progress=1.0,
        results={"latency_ms": {"p50": 4.2, "p95": 6.0, "p99": 7.5}, "avg_tokens_per_sec": 812.5, "quality_score": 0.8},
    )
    metrics_rollup(now=timezone.now())
    return story


def test_overview_numbers_equal_the_api_and_the_window_selector_works_from_the_keyboard(page, history):
    page.goto(f"{page.base_url}/dashboards/")
    page.wait_for_selector("#overview-panel .model-card")
    assert charts_drawn(page) == 1
    assert assert_panel_matches_api(page, "#overview-panel") >= 18
    screenshot(page, "dashboard-overview-1h")
    assert_readable(page, "overview")

    # Keyboard only: focus the window control, pick the next option; the panel swaps in place.
    page.evaluate("window.__stillTheSamePage = true")
    page.focus("#overview-window")
    page.keyboard.press("ArrowDown")  # 1 hour -> 24 hours
    wait_for_js(page, "document.querySelector('#overview-panel').dataset.apiUrl.includes('window=24h')")
    wait_for_js(page, "document.querySelectorAll('#overview-panel .model-card').length === 2")
    assert page.evaluate("window.__stillTheSamePage") is True
    assert charts_drawn(page) == 2
    assert assert_panel_matches_api(page, "#overview-panel") >= 36
    screenshot(page, "dashboard-overview-24h")
    assert_fits_phone(page, "overview")
    assert page.js_errors == []


def test_adoption_history_numbers_equal_the_api(page, history):
    page.goto(f"{page.base_url}/dashboards/adoptions/")
    page.wait_for_selector("#adoptions-panel .timeline-entry")
    assert assert_panel_matches_api(page, "#adoptions-panel") >= 10
    assert page.get_by_text("mini@1 (replaced)").count() == 1
    page.get_by_role("link", name=f"#{history.adoption.pk} Adopt mini 2").first.click()
    page.wait_for_url(f"**/governance/proposals/{history.adoption.pk}/")
    page.go_back()
    page.wait_for_selector("#adoptions-panel")
    screenshot(page, "dashboard-adoptions")
    assert_readable(page, "adoptions")
    assert_fits_phone(page, "adoptions")
    assert page.js_errors == []


def test_governance_and_fleet_numbers_equal_the_api(page, history):
    page.goto(f"{page.base_url}/dashboards/governance/")
    page.wait_for_selector(f'[data-proposal="{history.open_proposal.pk}"]')
    assert assert_panel_matches_api(page, "#governance-panel") >= 7
    # Votes per day; turnout per proposal only once a vote has ended (none has in this story).
    assert charts_drawn(page) == 1
    screenshot(page, "dashboard-governance")
    assert_readable(page, "governance")
    assert_fits_phone(page, "governance")

    page.goto(f"{page.base_url}/dashboards/fleet/")
    page.wait_for_selector("#fleet-panel")
    assert page.locator("#fleet-panel progress").count() == 1
    assert assert_panel_matches_api(page, "#fleet-panel") >= 2
    screenshot(page, "dashboard-fleet")
    assert_readable(page, "fleet")
    assert_fits_phone(page, "fleet")
    assert page.js_errors == []


def test_node_latency_shows_the_whole_network_or_one_node_picked_from_the_keyboard(page, history):
    for name, values in (("node-a", [2.0, 4.0, 8.0]), ("node-b", [30.0, 60.0]), ("node-c", [5.0, 7.0])):
        sketch = LatencySketch()
        sketch.add_many(values)
        NodeReport.objects.create(
            node=person(name, "node"),
            signed_set_version=3,
            approved_set_version=2,
            models=["mini@2"],
            summary={"mini@2": sketch.as_dict()},
            received_at=timezone.now(),
        )
    page.goto(f"{page.base_url}/dashboards/fleet/")
    page.wait_for_selector("#node-latency-panel [data-api]")
    assert assert_panel_matches_api(page, "#node-latency-panel") >= 8
    assert page.locator('#node-latency-panel [data-api="e2e.count"]').inner_text() == "7"

    # Keyboard only: focus the node control, pick the first node; only the panel swaps.
    page.evaluate("window.__stillTheSamePage = true")
    page.focus("#node-latency-node")
    page.keyboard.press("ArrowDown")  # Whole network -> node-a
    wait_for_js(page, "document.querySelector('#node-latency-panel').dataset.apiUrl.includes('node=node-a')")
    assert assert_panel_matches_api(page, "#node-latency-panel") >= 8
    assert page.locator('#node-latency-panel [data-api="e2e.count"]').inner_text() == "3"
    assert page.evaluate("window.__stillTheSamePage") is True
    screenshot(page, "dashboard-fleet-node-latency")
    assert_readable(page, "fleet node latency")
    assert_fits_phone(page, "fleet-node-latency")
    assert page.js_errors == []


def test_model_page_numbers_equal_the_api(page, history):
    page.goto(f"{page.base_url}/dashboards/models/{history.successor.pk}/")
    page.wait_for_selector("#model-panel")
    assert assert_panel_matches_api(page, "#model-panel") >= 15
    assert charts_drawn(page) == 1
    screenshot(page, "dashboard-model")
    assert_readable(page, "model")
    assert_fits_phone(page, "model")
    assert page.js_errors == []


def _clear_of_a_minute_boundary(seconds_needed: float = 35.0) -> None:
    """Wait for the next whole minute unless `seconds_needed` remain before it.

    A 15-minute window starts on a whole minute: when the clock passes one,
    the oldest minute's samples leave the window, and a count taken on each
    side of it differs by more than what the test added.
    """
    now = timezone.now()
    left = 60 - now.second - now.microsecond / 1e6
    if left < seconds_needed:
        time.sleep(left + 0.5)


def test_panels_refresh_themselves_without_a_reload(page, history, settings):
    """A new request shows up on the overview by the panel's own poll."""
    from tests.dashboards.factories import sample, samples_add

    _clear_of_a_minute_boundary()
    page.goto(f"{page.base_url}/dashboards/?window=15m")
    page.wait_for_selector("#overview-panel")
    page.evaluate("window.__stillTheSamePage = true")
    before = page.locator('[data-api="models.0.requests"]').inner_text()
    samples_add([sample(at=timezone.now(), model="mini@2", endpoint="embed")])
    wait_for_js(
        page,
        "(before) => document.querySelector('[data-api=\"models.0.requests\"]').textContent.trim() !== before",
        arg=before,
        timeout=25_000,  # a few polls, on a busy machine
    )
    assert int(page.locator('[data-api="models.0.requests"]').inner_text()) == int(before) + 1
    assert page.evaluate("window.__stillTheSamePage") is True


def test_a_panel_holds_its_poll_while_the_focus_is_inside_it(page, history):
    """The hold is a listener in dashboards.js (an hx-trigger filter would be eval, which the CSP refuses)."""
    page.goto(f"{page.base_url}/dashboards/?window=15m")
    page.wait_for_selector("#overview-panel")
    page.evaluate(
        """() => {
            window.__held = 0; window.__sent = 0;
            document.addEventListener('htmx:confirm', (e) => {
                if (e.detail.elt.id !== 'overview-panel') return;
                if (e.defaultPrevented) window.__held++; else window.__sent++;
            });
            const panel = document.querySelector('#overview-panel');
            panel.tabIndex = -1;
            panel.focus();
        }"""
    )
    wait_for_js(page, "window.__held >= 1", timeout=25_000)
    assert page.evaluate("window.__sent") == 0
    page.evaluate("document.activeElement.blur()")
    wait_for_js(page, "window.__sent >= 1", timeout=25_000)
    assert page.js_errors == []
