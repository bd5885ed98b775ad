"""/api/v1/ask through a real worker: generation, the semantic cache, hybrid knowledge search."""

import pytest
from rest_framework.test import APIClient

from inference.models import AnswerCacheEntry

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _short_answers(settings):
    settings.INFERENCE_ASK_MAX_TOKENS = 8


def ask(query: str) -> dict:
    response = APIClient().post("/api/v1/ask", {"query": query}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_a_generated_answer_is_cached_and_served_from_the_cache_next_time(served):
    first = ask("What colour is the sky on a clear day?")
    assert first["path"] == "generated"
    assert first["answer"] and first["model"].startswith("SmolLM2")
    assert AnswerCacheEntry.objects.count() == 1
    again = ask("What colour is the sky on a clear day?")
    assert again["path"] == "cache"
    assert again["answer"] == first["answer"]
    assert again["similarity"] >= 0.99
    assert AnswerCacheEntry.objects.get().hits == 1
    metrics = APIClient().get("/metrics").json()
    assert metrics["cache_hits"] >= 1 and metrics["cache_misses"] >= 1


def test_a_matching_document_answers_through_hybrid_search(served, client_as):
    created = client_as("contributor").post(
        "/api/v1/knowledge/",
        {
            "title": "How nodes verify models",
            "content": "Nodes download model files from IPFS and check every file's sha256 against the signed approved "
            "set.",
            "source": "docs/nodes.md",
        },
        format="json",
    )
    assert created.status_code == 201 and created.json()["embedded"] is True
    answer = ask("How do nodes verify downloaded model files?")
    assert answer["path"] == "knowledge"
    assert answer["search"] == "hybrid"
    assert "sha256" in answer["answer"]
    assert answer["documents"][0]["source"] == "docs/nodes.md"


def test_an_empty_query_is_a_400(served):
    response = APIClient().post("/api/v1/ask", {"query": ""}, format="json")
    assert response.status_code == 400
    assert "query" in response.json()["error"]["fields"]
