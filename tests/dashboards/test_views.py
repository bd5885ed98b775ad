"""The HTMX pages: each renders its panel, the panel polls its own URL, controls are labelled."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from conclave_node.sketch import LatencySketch
from inference.models import BenchmarkRun, BenchmarkStatus
from nodes.models import NodeReport
from tests.governance.factories import person

pytestmark = pytest.mark.django_db

PAGES = [
    ("dashboards:overview", "dashboards:overview-panel", "overview-panel"),
    ("dashboards:adoptions", "dashboards:adoptions-panel", "adoptions-panel"),
    ("dashboards:governance", "dashboards:governance-panel", "governance-panel"),
    ("dashboards:fleet", "dashboards:fleet-panel", "fleet-panel"),
]


@pytest.mark.parametrize("page, panel, panel_id", PAGES)
def test_each_page_renders_its_panel_which_polls_its_own_url(story, client, page, panel, panel_id):
    response = client.get(reverse(page))
    assert response.status_code == 200
    html = response.content.decode()
    assert f'id="{panel_id}"' in html
    # Polls, except while keyboard focus is inside the panel (a swap would lose the reader's place):
    # static/js/dashboards.js holds the poll of a panel marked data-hold-while-focused (no eval under the CSP).
    assert re.search(r"hx-trigger=\"every \d+s\" hx-swap=\"outerHTML\" data-hold-while-focused>", html)
    assert f'hx-get="{reverse(panel)}' in html
    assert 'data-api-url="/api/v1/metrics/' in html
    assert "vendor/htmx.org/dist/htmx.min.js" in html and "vendor/chart.js/dist/chart.umd.min.js" in html
    assert 'aria-current="page"' in html

    fragment = client.get(reverse(panel), HTTP_HX_REQUEST="true")
    assert fragment.status_code == 200
    assert fragment.content.decode().lstrip().startswith('<div id="' + panel_id)
    assert "<html" not in fragment.content.decode()


def test_overview_shows_each_model_with_its_percentiles_and_a_chart(story, client):
    html = client.get(reverse("dashboards:overview"), {"window": "24h", "metric": "ttft"}).content.decode()
    assert html.count('class="model-card"') == 2
    assert f'href="{reverse("dashboards:model", args=[story.successor.pk])}"' in html
    assert 'data-api="models.0.latency_ms.e2e.p95"' in html
    assert "data-chart=" in html and "Time to first token latency" in html
    # The window and chart selectors are labelled form controls that also work without JavaScript.
    assert '<label for="overview-window">Window</label>' in html
    assert '<select name="window" id="overview-window">' in html
    assert '<option value="24h" selected>' in html
    assert '<button type="submit">Show</button>' in html


def test_overview_with_a_bad_window_says_so(client, db):
    response = client.get(reverse("dashboards:overview"), {"window": "1y"})
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()


def test_overview_without_traffic_tells_how_to_get_some(client, db):
    html = client.get(reverse("dashboards:overview")).content.decode()
    assert "manage.py demo_traffic" in html


def test_adoption_history_links_proposals_manifests_and_audit_events(story, client):
    html = client.get(reverse("dashboards:adoptions")).content.decode()
    assert reverse("governance:proposal-detail", args=[story.adoption.pk]) in html
    assert story.successor.manifest_cid in html
    assert f"object_type=manifest&amp;object_id={story.successor.pk}" in html
    assert "mini@1 (replaced)" in html
    assert "queue_size" in html


def test_governance_panel_shows_tally_quorum_and_time_left(story, client):
    html = client.get(reverse("dashboards:governance-panel")).content.decode()
    assert f'data-proposal="{story.open_proposal.pk}"' in html
    assert re.search(r'<progress id="quorum-\d+" max="1" value="[\d.]+">', html)
    assert "closes in" in html and re.search(r"\d+ d \d+ h", html)


def test_fleet_panel_shows_benchmark_progress_bars(story, client):
    run = BenchmarkRun.objects.create(manifest=story.successor, status=BenchmarkStatus.RUNNING, progress=0.25)
    html = client.get(reverse("dashboards:fleet-panel")).content.decode()
    assert f'<progress id="bench-{run.pk}" max="1" value="0.25">' in html
    assert "25.00 %" in html


def _node_report(username: str, model: str, values: list[float], *, legacy: bool = False) -> None:
    node = get_user_model().objects.filter(username=username).first() or person(username, "node")
    sketch = LatencySketch()
    sketch.add_many(values)
    summary = sketch.as_dict()
    if legacy:  # a report stored before nodes sent sketches
        summary = {"unit": "ms", "bounds": [1, 2], "counts": [0, len(values), 0], "count": len(values), "sum": 1.0}
    NodeReport.objects.create(
        node=node,
        signed_set_version=3,
        approved_set_version=2,
        models=[model],
        summary={model: summary},
        received_at=timezone.now(),
    )


def test_fleet_page_shows_node_latency_for_the_network_or_one_node(client, db):
    _node_report("node-a", "mini@2", [1.0, 2.0, 3.0])
    _node_report("node-b", "mini@2", [10.0, 20.0])
    _node_report("node-b", "other@1", [5.0])
    _node_report("node-c", "mini@2", [1.5], legacy=True)
    html = client.get(reverse("dashboards:fleet")).content.decode()
    # Labelled controls that also work without JavaScript; HTMX swaps only the node latency panel.
    assert '<label for="node-latency-node">Nodes</label>' in html
    assert '<select name="node" id="node-latency-node">' in html
    assert '<option value="" selected>Whole network</option>' in html
    assert '<option value="node-b">node-b</option>' in html
    assert '<option value="mini@2" selected>mini@2</option>' in html
    assert f'hx-get="{reverse("dashboards:node-latency-panel")}" hx-target="#node-latency-panel"' in html
    panel = re.search(r'<div id="node-latency-panel".*?data-api-url="([^"]+)"', html, re.S)
    assert panel and panel.group(1).startswith("/api/v1/metrics/nodes/latency/?model=mini%402&amp;window=24h&amp;end=")
    assert re.search(r'data-api="reports" data-format="int">2<', html)
    assert re.search(r'data-api="unmergeable" data-format="int">1<', html)
    assert re.search(r'data-api="e2e.count" data-format="int">5<', html)
    assert re.search(r'data-api="e2e.max" data-format="ms">20.00<', html)

    fragment = client.get(
        reverse("dashboards:node-latency-panel"), {"model": "mini@2", "node": "node-a"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert fragment.lstrip().startswith('<div id="node-latency-panel"')
    assert "node=node-a" in fragment and "Node node-a" in fragment
    assert re.search(r'data-api="e2e.count" data-format="int">3<', fragment)
    assert re.search(r'data-api="unmergeable" data-format="int">0<', fragment)
    # The page's numbers are the API's for the URL the panel names.
    api_url = re.search(r'data-api-url="([^"]+)"', fragment).group(1).replace("&amp;", "&")
    body = client.get(api_url).json()
    assert (body["node"], body["reports"], body["unmergeable"], body["e2e"]["count"]) == ("node-a", 1, 0, 3)
    assert f'data-format="ms">{body["e2e"]["p50"]:.2f}<' in fragment

    assert client.get(reverse("dashboards:node-latency-panel"), {"node": "nobody"}).status_code == 400
    assert client.get(reverse("dashboards:fleet"), {"window": "1y"}).status_code == 400


def test_fleet_page_without_node_reports_says_how_to_send_one(client, db):
    html = client.get(reverse("dashboards:fleet")).content.decode()
    assert 'id="node-latency-panel"' in html
    assert "No node has reported latency yet" in html
    assert 'id="node-latency-node"' not in html


def test_model_page_lists_files_with_hashes_and_cids(story, client):
    html = client.get(reverse("dashboards:model", args=[story.successor.pk])).content.decode()
    for f in story.successor.files.all():
        assert f.sha256 in html and f.cid in html
    assert reverse("ipfs-gateway", args=[story.successor.files.first().cid]) in html
    assert client.get(reverse("dashboards:model", args=[424242])).status_code == 404


def test_dashboards_are_linked_from_the_site_navigation(client, db):
    html = client.get(reverse("governance:proposal-list")).content.decode()
    assert f'href="{reverse("dashboards:overview")}"' in html
