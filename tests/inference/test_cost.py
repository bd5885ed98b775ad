"""What a request cost the worker (CPU ms, measured around the model run) and the answer cache's lookups, in the
samples."""

import pytest
from rest_framework.test import APIClient

from dashboards.selectors.latency import overview
from inference.models import ANSWER_CACHE_ENDPOINT, LatencySample
from inference.services import latency_samples_flush
from tests.inference.test_stop_reason import _bias

pytestmark = pytest.mark.django_db(transaction=True)


def test_served_requests_record_the_cpu_time_the_worker_spent_on_them(served):
    client = APIClient()
    assert client.post("/embed", {"texts": ["one", "two", "three"]}, format="json").status_code == 200
    generated = client.post("/generate", {"prompt": "Hi", "max_tokens": 4, "logit_bias": _bias(-100)}, format="json")
    assert generated.status_code == 200 and generated.json()["tokens_generated"] == 4
    latency_samples_flush()

    embed = LatencySample.objects.get(endpoint="embed")
    generate = LatencySample.objects.get(endpoint="generate")
    assert embed.cpu_ms is not None and embed.cpu_ms > 0
    assert generate.cpu_ms is not None and generate.cpu_ms > 0
    cost = {m["model"]: m["latency_ms"]["cpu"]["count"] for m in overview(window="15m")["models"]}
    assert set(cost.values()) == {1}


def test_ask_records_each_cache_lookup_as_a_hit_or_a_miss(served, settings):
    settings.INFERENCE_ASK_MAX_TOKENS = 8
    client = APIClient()
    first = client.post("/api/v1/ask", {"query": "What colour is the sky on a clear day?"}, format="json").json()
    again = client.post("/api/v1/ask", {"query": "What colour is the sky on a clear day?"}, format="json").json()
    assert (first["path"], again["path"]) == ("generated", "cache")
    latency_samples_flush()

    lookups = LatencySample.objects.filter(endpoint=ANSWER_CACHE_ENDPOINT).order_by("created_at", "id")
    assert [s.outcome for s in lookups] == ["miss", "hit"]
    assert overview(window="15m")["answer_cache"] == {"lookups": 2, "hits": 1, "hit_rate": 0.5}
