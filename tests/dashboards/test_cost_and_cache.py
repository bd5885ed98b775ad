"""Cost per query (CPU ms per request) rolled up like latency, and the answer cache's hit rate."""

import pytest

from dashboards.selectors.latency import overview
from dashboards.services import metrics_rollup
from inference.models import ANSWER_CACHE_ENDPOINT
from tests.dashboards.factories import HOUR, MINUTE, T0, sample, samples_add

pytestmark = pytest.mark.django_db


def test_cpu_per_request_is_rolled_up_like_latency_and_reads_the_same_from_rollups_or_samples():
    end = T0 + HOUR
    cpu = [2.0, 4.0, 8.0, 16.0, 32.0]
    samples_add([sample(at=T0 + MINUTE * (i * 10 + 1), cpu_ms=value) for i, value in enumerate(cpu)])
    samples_add([sample(at=T0 + MINUTE * 55, cpu_ms=None)])  # a refused request costs no model time
    raw = overview(window="1h", end=end)["models"][0]["latency_ms"]["cpu"]
    metrics_rollup(now=end)
    rolled = overview(window="1h", end=end)["models"][0]["latency_ms"]["cpu"]

    assert rolled == raw
    assert rolled["count"] == 5 and rolled["mean"] == pytest.approx(12.4, rel=0.01)
    assert rolled["p50"] == pytest.approx(8.0, rel=0.01) and rolled["max"] == 32.0


def test_the_answer_cache_hit_rate_counts_lookups_not_served_requests():
    end = T0 + HOUR
    lookups = [
        sample(at=T0 + MINUTE * i, endpoint=ANSWER_CACHE_ENDPOINT, outcome=outcome, model="mini@1")
        for i, outcome in enumerate(["hit", "miss", "hit", "hit"], start=1)
    ]
    samples_add([*lookups, sample(at=T0 + MINUTE * 9, endpoint="embed", model="mini@1")])
    metrics_rollup(now=end)

    result = overview(window="1h", end=end)
    assert result["answer_cache"] == {"lookups": 4, "hits": 3, "hit_rate": 0.75}
    (model,) = result["models"]
    assert model["requests"] == 1 and model["endpoints"] == ["embed"]


def test_the_overview_page_shows_the_cache_hit_rate_and_the_cpu_row(client):
    samples_add(
        [sample(at=T0 + MINUTE, endpoint=ANSWER_CACHE_ENDPOINT, outcome="hit"), sample(at=T0 + MINUTE, cpu_ms=3.0)]
    )
    html = client.get("/dashboards/", {"end": (T0 + HOUR).isoformat(), "metric": "cpu"}).content.decode()
    assert 'id="cache-hit-rate">100.00 %' in html or 'id="cache-hit-rate">100.00%' in html
    assert "CPU per request (cost)" in html
    api = client.get("/api/v1/metrics/overview/", {"end": (T0 + HOUR).isoformat()}).json()
    assert api["answer_cache"]["hit_rate"] == 1.0 and api["models"][0]["latency_ms"]["cpu"]["count"] == 1
