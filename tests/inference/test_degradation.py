"""Graceful degradation with no inference worker at all (the worker stopped or never started)."""

import pytest
from rest_framework.test import APIClient

from inference.models import KnowledgeDocument
from inference.serving.shared_state import coordination

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _impatient(settings):
    # No worker will ever pick a request up: do not wait 10 s to find out.
    settings.INFERENCE_PICKUP_TIMEOUT_SECONDS = 0.3


def test_health_without_a_worker_is_503_unavailable_no_worker(approved):
    response = APIClient().get("/health")
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["reason"]) == ("unavailable", "no_worker")
    # The roadmap's fields are there even when nothing serves.
    assert (body["model"], body["backend"], body["memory_mb"]) == ("all-MiniLM-L6-v2", "onnxruntime", 0.0)
    assert APIClient().get("/health/live").status_code == 200


def test_requests_without_a_worker_are_503_and_free_their_slot(approved):
    embed = APIClient().post("/embed", {"text": "anyone there?"}, format="json")
    assert embed.status_code == 503 and embed.json()["error"]["code"] == "worker_unavailable"
    generate = APIClient().post("/generate", {"prompt": "Hi", "max_tokens": 2}, format="json")
    assert generate.status_code == 503 and "Retry-After" in generate
    assert coordination().load() == (0, 0)


def test_ask_falls_back_to_keyword_search_when_the_embedding_model_is_down(approved, client_as):
    created = client_as("contributor").post(
        "/api/v1/knowledge/",
        {
            "title": "Quorum rules",
            "content": "A proposal passes when quorum is reached and for votes exceed against votes.",
        },
        format="json",
    )
    assert created.status_code == 201
    assert created.json()["embedded"] is False  # stored anyway, for keyword search
    answer = APIClient().post("/api/v1/ask", {"query": "When does a proposal reach quorum?"}, format="json").json()
    assert answer["path"] == "knowledge"
    assert answer["search"] == "keyword"
    assert "quorum" in answer["answer"]
    assert [s["step"] for s in answer["steps"]] == ["embed", "knowledge"]


def test_ask_says_llm_unavailable_with_the_reason_when_nothing_can_answer(approved):
    answer = APIClient().post("/api/v1/ask", {"query": "Write a poem about the sea."}, format="json")
    assert answer.status_code == 200
    body = answer.json()
    assert body["path"] == "unavailable"
    assert body["answer"].startswith("LLM unavailable:")
    assert "No inference worker" in body["reason"]
    assert coordination().load() == (0, 0)


def test_knowledge_writes_need_a_contributor(approved, client_as):
    body = {"title": "t", "content": "c"}
    assert APIClient().post("/api/v1/knowledge/", body, format="json").status_code in (401, 403)
    assert client_as("node").post("/api/v1/knowledge/", body, format="json").status_code == 403
    assert not KnowledgeDocument.objects.exists()
    assert APIClient().get("/api/v1/knowledge/").status_code == 200
