"""A broker or shared-state outage: JSON 503s with Retry-After, and reconnection waits that stay short.

These run on both passes against a Redis address where nothing listens (a
real refused connection, nothing mocked). The outage of a running Redis
server, with real worker processes, is tests/inference/test_faults.py.
"""

import socket

import pytest
from rest_framework.test import APIClient

from conclave.celery import BrokerConnection, app


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_reconnection_waits_never_exceed_the_transport_bound():
    waits = []
    connection = BrokerConnection(
        f"redis://127.0.0.1:{_closed_port()}/0",
        transport="conclave.brokers.redis:Transport",
        transport_options={"interval_max": 0.05},
    )
    with pytest.raises(Exception):  # noqa: B017 - kombu re-raises the transport's own error
        # kombu's defaults (what a worker's consumer asks for) would wait 2, 4, 6 s.
        connection.ensure_connection(lambda exc, interval: waits.append(interval), max_retries=4)
    assert waits and max(waits) <= 0.05


def test_the_celery_app_builds_bounded_connections(settings):
    assert isinstance(app.connection_for_read(), BrokerConnection)
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["interval_max"] <= 5
    assert settings.CELERY_BROKER_CONNECTION_MAX_RETRIES is None  # a worker waits for its broker for ever


@pytest.fixture
def state_unreachable(settings):
    """The serving state points at a Redis address where nothing listens."""
    settings.INFERENCE_STATE_URL = f"redis://127.0.0.1:{_closed_port()}/0"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/embed", {"text": "Hi"}),
        ("post", "/generate", {"prompt": "Hi", "max_tokens": 2}),
        ("get", "/metrics", None),
        ("get", "/metrics/prometheus", None),
    ],
)
def test_an_unreachable_shared_state_is_a_json_503_with_retry_after(state_unreachable, method, path, body):
    from tests.inference.conftest import defaults_adopt

    defaults_adopt()
    response = getattr(APIClient(), method)(path, body, format="json")
    assert response.status_code == 503, response.content
    assert response["Content-Type"].startswith("application/json")
    assert int(response["Retry-After"]) > 0
    error = response.json()["error"]
    assert error["code"] == "broker_unavailable" and error["type"] == "unavailable_error"


@pytest.mark.django_db
def test_health_names_the_unreachable_shared_state(state_unreachable):
    response = APIClient().get("/health")
    assert response.status_code == 503 and int(response["Retry-After"]) > 0
    body = response.json()
    assert body["status"] == "unavailable" and "Redis" in body["errors"]["shared_state"]
