"""Workers follow the approved set: hot swap after an executed adoption, /health, the memory limit."""

import pytest
from django.db import transaction
from rest_framework.test import APIClient

from accounts.models import Role
from accounts.services import user_grant_role
from inference.serving.model_cache import model_cache
from registry.services import manifest_approve, manifest_retire
from tests.inference.conftest import (
    EMBEDDING_CANDIDATE,
    EMBEDDING_DEFAULT,
    GENERATIVE_DEFAULT,
    pack_register,
    parameter_set,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _health():
    return APIClient().get("/health")


def test_health_is_ready_once_a_worker_has_loaded_every_approved_model(approved, syncing_worker):
    live = APIClient().get("/health/live")
    assert live.status_code == 200
    ready = wait_for(lambda: (r := APIClient().get("/health")).status_code == 200 and r, timeout=60)
    assert ready, APIClient().get("/health").json()
    body = ready.json()
    # The roadmap's contract, to the letter ...
    assert body["status"] == "healthy"
    assert (body["model"], body["backend"]) == ("all-MiniLM-L6-v2", "onnxruntime")
    assert body["memory_mb"] > 0 and body["uptime_seconds"] >= 0
    # ... beside the richer fields.
    assert {m["name"] for m in body["models"]} == {EMBEDDING_DEFAULT, GENERATIVE_DEFAULT}
    assert all(m["loaded"] for m in body["models"])
    assert body["backends"]["embedding"].startswith("onnxruntime") and body["backends"]["generation"].startswith(
        "llama.cpp"
    )
    assert model_cache().models


def test_an_executed_adoption_swaps_the_model_without_restart(approved, syncing_worker):
    assert wait_for(lambda: _health().status_code == 200, timeout=60)
    before = APIClient().post("/embed", {"text": "swap me"}, format="json").json()
    assert before["model"].startswith(EMBEDDING_DEFAULT + "@")

    candidate = pack_register(EMBEDDING_CANDIDATE)
    operator = user_grant_role(username="operator", role=Role.OPERATOR)
    # What executing a model-adoption proposal that replaces the default does.
    with transaction.atomic():
        manifest_approve(manifest=candidate, actor=operator, reason="adopted by vote", proposal_id=None)
        manifest_retire(manifest=approved[EMBEDDING_DEFAULT], actor=operator, reason="replaced by vote")

    after = APIClient().post("/embed", {"text": "swap me"}, format="json")
    assert after.status_code == 200
    assert after.json()["model"].startswith(EMBEDDING_CANDIDATE + "@")
    retired = APIClient().post("/embed", {"text": "swap me", "model": EMBEDDING_DEFAULT}, format="json")
    assert retired.status_code == 404

    health = wait_for(lambda: (r := _health()).status_code == 200 and r, timeout=30)
    names = {m["name"] for m in health.json()["models"]}
    assert names == {EMBEDDING_CANDIDATE, GENERATIVE_DEFAULT}
    assert {m.name for m in model_cache().models.values()} == names


def test_a_load_over_the_memory_limit_is_refused_and_reported(approved, settings, syncing_worker):
    parameter_set("memory_limit_mb", 256)
    cache = model_cache()
    # Load again under the new limit here, so the test knows which load the
    # background sync (running beside it) can no longer redo: once the cache
    # holds the current head, nothing reloads until the approved set changes.
    cache.clear()
    cache.sync()
    (error,) = cache.errors.values()
    assert "memory_limit_mb is 256" in error
    # The defaults load in the approved set's order; the second one must be the one refused.
    refused_name = GENERATIVE_DEFAULT if f"Loading {GENERATIVE_DEFAULT}" in error else EMBEDDING_DEFAULT
    assert f"Loading {refused_name}" in error
    health = wait_for(
        lambda: (r := _health()).json()["status"] == "degraded" and list(r.json()["errors"].values()) == [error] and r,
        timeout=60,
    )
    assert health, _health().json()
    assert health.status_code == 503

    generate = APIClient().post("/generate", {"prompt": "Hi", "max_tokens": 2}, format="json")
    embed = APIClient().post("/embed", {"text": "still fine"}, format="json")
    refused, served = (generate, embed) if refused_name == GENERATIVE_DEFAULT else (embed, generate)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "model_unavailable"
    assert "memory_limit_mb" in refused.json()["error"]["message"]
    assert served.status_code == 200
    model_cache().clear()
