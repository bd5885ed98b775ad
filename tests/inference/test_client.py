"""conclave_node.client's health probe, per-call timeouts and metrics, against a running server (live_server)."""

import httpx
import pytest

from conclave_node.client import CircuitBreaker, ConclaveClient, ConclaveError, ConclaveUnavailable
from inference.models import LatencySample
from inference.services import latency_samples_flush
from inference.serving.shared_state import coordination
from tests.inference.conftest import wait_for
from tests.inference.test_stop_reason import _bias

pytestmark = pytest.mark.django_db(transaction=True)


class CountingTransport(httpx.HTTPTransport):
    """httpx's own transport, counting the requests that really go out."""

    def __init__(self):
        super().__init__()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request):
        self.sent.append(request)
        return super().handle_request(request)


def test_is_healthy_asks_once_and_answers_a_boolean(live_server, approved):
    # No worker runs: /health is 503 (unavailable). A retrying client still asks once, and says False.
    transport = CountingTransport()
    with ConclaveClient(live_server.url, retries=3, sleep=lambda s: None, transport=transport) as client:
        assert client.is_healthy() is False
        assert len(transport.sent) == 1 and transport.sent[0].url.path == "/health"
        assert client.breaker.state == "closed" and client.stats.calls == 0  # a probe, not a call
    with ConclaveClient("http://127.0.0.1:9", retries=3, sleep=lambda s: None) as nobody:
        assert nobody.is_healthy(timeout=2) is False


def test_is_healthy_is_true_once_a_worker_has_loaded_the_approved_models(live_server, approved, syncing_worker):
    with ConclaveClient(live_server.url) as client:
        assert wait_for(client.is_healthy, timeout=60)


def test_a_per_call_timeout_bounds_the_call_and_stays_out_of_the_request_body(live_server, served):
    transport = CountingTransport()
    with ConclaveClient(live_server.url, timeout=60, retries=0, transport=transport) as client:
        with pytest.raises(ConclaveUnavailable, match="ReadTimeout"):
            # No end token: the generation runs far past 0.2 s on any CPU.
            client.generate("Once upon a time", max_tokens=500, logit_bias=_bias(-100), timeout=0.2)
        with pytest.raises(ConclaveUnavailable, match="ReadTimeout"):
            client.chat(
                [{"role": "user", "content": "Tell a long story."}], max_tokens=500, logit_bias=_bias(-100), timeout=0.2
            )
        assert len(client.embed(["a", "b"], timeout=30)) == 2
    for request in transport.sent:
        assert b'"timeout"' not in request.content
    # The server finishes the generations it had started; wait so nothing runs on after this test.
    assert wait_for(
        lambda: (
            latency_samples_flush() >= 0
            and LatencySample.objects.filter(endpoint__in=["generate", "chat_completions"]).count() == 2
        ),
        timeout=120,
    )
    assert wait_for(lambda: coordination().load() == (0, 0), timeout=30)


def test_metrics_give_latency_and_success_rate_next_to_the_counts(live_server, served):
    breaker = CircuitBreaker(failure_threshold=5)
    with ConclaveClient(live_server.url, breaker=breaker, retries=0) as client:
        assert client.metrics()["success_rate"] is None and client.metrics()["latency_ms"]["count"] == 0
        client.embed("one")
        client.embed(["two", "three"])
        with pytest.raises(ConclaveError):
            client.generate("Hi", max_tokens=10_000)  # over the governed limit: 400
        metrics = client.metrics()
    assert (metrics["calls"], metrics["successes"], metrics["client_errors"], metrics["failures"]) == (3, 2, 1, 0)
    assert metrics["success_rate"] == pytest.approx(2 / 3, abs=1e-4)
    latency = metrics["latency_ms"]
    assert latency["count"] == 3 and 0 < latency["p50"] <= latency["p95"] <= latency["max"]
    assert metrics["circuit_breaker"] == {
        "state": "closed",
        "consecutive_failures": 0,
        "failure_threshold": 5,
        "reset_timeout_seconds": 30.0,
    }
