"""The home page at `/` and the serving status card it shares with the dashboards."""

import pytest
from django.urls import reverse

from inference.serving.shared_state import coordination

pytestmark = pytest.mark.django_db


def _worker_status(*, loading: bool = False, errors: dict | None = None) -> dict:
    """What an inference worker publishes for /health (inference.serving.model_cache.worker_status's shape)."""
    return {
        "models": [{"name": "mini", "version": "2", "kind": "embedding"}],
        "loading": loading,
        "errors": errors or {},
        "memory_mb": 321.5,
        "backend": {"embedding": "onnxruntime (CPUExecutionProvider)", "generation": "llama.cpp (CPU)"},
    }


@pytest.fixture
def worker_status():
    """Publish a worker's status in the shared coordination state; removed after the test."""
    for stale in coordination().statuses():  # no worker reports unless the test says so
        coordination().status_remove(stale)
    published = []

    def publish(name: str, **kwargs) -> None:
        coordination().status_publish(name, _worker_status(**kwargs), ttl=60)
        published.append(name)

    yield publish
    for name in published:
        coordination().status_remove(name)


def test_home_page_says_what_conclave_is_with_the_approved_set_open_proposals_and_links(story, client):
    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "Conclave is where a community-run AI network decides" in html
    # The approved set: the model adopted by proposal, with its CIDs; the retired genesis model is gone.
    successor = story.successor
    assert successor.ipfs_cid in html and successor.manifest_cid in html
    assert (
        f'href="{reverse("governance:proposal-detail", args=[story.adoption.pk])}">proposal #{story.adoption.pk}</a>'
        in html
    )
    assert story.original.manifest_cid not in html
    # The open proposal, its time left and a vote button.
    detail = reverse("governance:proposal-detail", args=[story.open_proposal.pk])
    assert "More tokens" in html and "voting closes in" in html
    assert f'<a class="button" href="{detail}#voting">Vote</a>' in html
    # Live parts reload themselves with HTMX.
    assert f'hx-get="{reverse("dashboards:status-card")}"' in html
    assert f'hx-get="{reverse("dashboards:home-proposals")}"' in html
    for link in ("/dashboards/", "/api/docs/", "/admin/", "/governance/"):
        assert f'href="{link}"' in html


def test_home_page_before_bootstrap_says_how_to_approve_the_defaults(client):
    html = client.get("/").content.decode()
    assert "manage.py bootstrap" in html and "No proposal is open for a vote" in html


def test_the_open_proposals_partial_lists_what_is_open_and_only_that(story, client):
    html = client.get(reverse("dashboards:home-proposals")).content.decode()
    assert "More tokens" in html
    assert story.adoption.title not in html  # executed


def test_status_card_is_offline_without_a_worker_online_with_every_model_loaded_else_degraded(
    story, client, worker_status
):
    url = reverse("dashboards:status-card")
    offline = client.get(url).content.decode()
    assert 'data-state="offline"' in offline and "No inference worker is running" in offline

    worker_status("w1")
    online = client.get(url).content.decode()
    assert 'data-state="online"' in online
    assert "<dd>mini</dd>" in online and "<dd>onnxruntime</dd>" in online and "321.5 MB" in online

    worker_status("w1", loading=True)
    assert 'data-state="degraded"' in client.get(url).content.decode()

    # The overview dashboard carries the same card.
    assert 'id="status-card"' in client.get(reverse("dashboards:overview")).content.decode()
