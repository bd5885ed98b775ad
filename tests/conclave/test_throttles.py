"""Per-client request rates: 429 with Retry-After in the error shape, per address or per account, lean path included."""

import uuid

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def rates(settings):
    """Low rates for the scopes under test (the suite runs with none)."""

    def set_rates(**scopes):
        settings.THROTTLE_RATES = {**dict.fromkeys(settings.THROTTLE_RATES), **scopes}

    return set_rates


def _address() -> str:
    """An address no other test used: counters live in the cache for a minute."""
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


def _assert_throttled(response) -> None:
    assert response.status_code == 429, response.content
    assert 0 < int(response["Retry-After"]) <= 60
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "throttled")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/embed", {"text": "hello"}),  # the lean path
        ("/v1/embeddings", {"input": "hello"}),  # the lean path
        ("/generate", {"prompt": "hello", "max_tokens": 1}),  # DRF
        ("/api/v1/ask", {"query": "hello"}),  # DRF
    ],
)
def test_anonymous_inference_over_its_rate_is_a_429_with_retry_after(rates, path, body):
    rates(inference_anon="3/min")
    client = APIClient(REMOTE_ADDR=_address())
    answers = [client.post(path, body, format="json") for _ in range(3)]
    assert all(a.status_code != 429 for a in answers), [a.status_code for a in answers]
    _assert_throttled(client.post(path, body, format="json"))
    # Another client still has its whole allowance.
    assert APIClient(REMOTE_ADDR=_address()).post(path, body, format="json").status_code != 429


def test_a_request_the_lean_path_hands_to_drf_is_counted_once(rates):
    rates(inference_anon="2/min")
    client = APIClient(REMOTE_ADDR=_address())
    # Well-formed JSON the lean checks refuse (no texts): DRF answers it.
    assert client.post("/embed", {"texts": []}, format="json").status_code == 400
    assert client.post("/embed", {"texts": []}, format="json").status_code == 400
    _assert_throttled(client.post("/embed", {"text": "a"}, format="json"))


def test_inference_with_required_tokens_is_counted_per_account(rates, settings, token_for):
    settings.INFERENCE_REQUIRE_AUTH = True
    rates(inference_user="2/min")
    key = token_for(f"client-{uuid.uuid4().hex[:8]}", "contributor")
    cache.delete_many([f"throttle_inference_user_user-{n}" for n in range(1, 1000)])
    first, second = APIClient(REMOTE_ADDR=_address()), APIClient(REMOTE_ADDR=_address())
    for client in (first, second):
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert first.post("/embed", {"text": "a"}, format="json").status_code != 429
    assert second.post("/embed", {"text": "a"}, format="json").status_code != 429
    # The same account from a third address: its allowance is spent.
    third = APIClient(REMOTE_ADDR=_address())
    third.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    _assert_throttled(third.post("/v1/embeddings", {"input": "a"}, format="json"))


def test_the_api_has_separate_rates_for_anonymous_and_authenticated_clients(rates, client_as):
    rates(api_anon="2/min", api_user="3/min")
    address = _address()
    anonymous = APIClient(REMOTE_ADDR=address)
    assert [anonymous.get("/api/v1/manifests/").status_code for _ in range(2)] == [200, 200]
    _assert_throttled(anonymous.get("/api/v1/manifests/"))
    signed_in = client_as("contributor", f"reader-{uuid.uuid4().hex[:8]}")
    cache.delete_many([f"throttle_api_user_user-{n}" for n in range(1, 1000)])
    assert [signed_in.get("/api/v1/proposals/", REMOTE_ADDR=address).status_code for _ in range(3)] == [200] * 3
    _assert_throttled(signed_in.get("/api/v1/proposals/", REMOTE_ADDR=address))


def test_rates_come_from_the_environment_and_off_switches_a_scope_off(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from conclave.env import env_rate

    monkeypatch.setenv("THROTTLE_X", "off")
    assert env_rate("THROTTLE_X", "60/min") is None
    monkeypatch.setenv("THROTTLE_X", "10/hour")
    assert env_rate("THROTTLE_X", "60/min") == "10/hour"
    monkeypatch.delenv("THROTTLE_X")
    assert env_rate("THROTTLE_X", "60/min") == "60/min"
    monkeypatch.setenv("THROTTLE_X", "fast")
    with pytest.raises(ImproperlyConfigured, match="THROTTLE_X"):
        env_rate("THROTTLE_X", "60/min")


def test_an_unreachable_cache_lets_requests_through_instead_of_failing_them(rates, settings):
    import socket

    with socket.socket() as probe:  # a port nothing listens on: the cache's Redis is down
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": f"redis://127.0.0.1:{port}/0"}
    }
    rates(api_anon="3/min")
    client = APIClient(REMOTE_ADDR=_address())
    answers = [client.get("/api/v1/parameters/") for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
