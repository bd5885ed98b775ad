"""Against a running server (pytest-django's live_server) and a real worker: the official
`openai` client, a client that disconnects mid-stream, and the node client `conclave_node.client`."""

import httpx
import numpy as np
import openai
import pytest

from conclave_node.client import CircuitBreaker, CircuitOpen, ConclaveClient, ConclaveError, ConclaveUnavailable
from inference.models import LatencySample
from inference.services import latency_samples_flush
from inference.serving.shared_state import coordination
from tests.inference.conftest import EMBEDDING_DEFAULT, GENERATIVE_DEFAULT, no_end_bias, parameter_set, wait_for
from tests.inference.test_runtimes import raw_embedding

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def oai(live_server, served):
    return openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="not-needed", max_retries=0, timeout=60)


# --- The official openai client ----------------------------------------------------------------


def test_openai_client_chat_completion(oai):
    completion = oai.chat.completions.create(
        model=GENERATIVE_DEFAULT,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}],
        max_tokens=5,
        temperature=0,
    )
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens <= 5
    assert completion.model.startswith(GENERATIVE_DEFAULT)


def test_openai_client_text_completion(oai):
    completion = oai.completions.create(model=GENERATIVE_DEFAULT, prompt="1, 2, 3,", max_tokens=4, temperature=0)
    assert completion.choices[0].text
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens <= 4


def test_openai_client_streaming_chat(oai):
    stream = oai.chat.completions.create(
        model=GENERATIVE_DEFAULT,
        messages=[{"role": "user", "content": "Count from one to ten."}],
        max_tokens=6,
        stream=True,
        logit_bias=no_end_bias(),
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 6


def test_openai_client_embeddings_equal_raw_onnxruntime(oai):
    response = oai.embeddings.create(model=EMBEDDING_DEFAULT, input=["The cat sleeps.", "A dog barks."])
    assert [d.index for d in response.data] == [0, 1]
    assert response.usage.total_tokens > 0
    for item, text in zip(response.data, ["The cat sleeps.", "A dog barks."], strict=True):
        assert float(np.dot(item.embedding, raw_embedding(text))) >= 0.999


def test_openai_client_sees_limits_as_errors_and_models_as_a_list(oai):
    assert {m.id for m in oai.models.list()} == {EMBEDDING_DEFAULT, GENERATIVE_DEFAULT}
    with pytest.raises(openai.BadRequestError, match="max_tokens_per_request=512"):
        oai.chat.completions.create(
            model=GENERATIVE_DEFAULT, messages=[{"role": "user", "content": "Hi"}], max_tokens=600
        )
    with pytest.raises(openai.NotFoundError):
        oai.embeddings.create(model="unknown-model", input="x")


# --- A client that goes away ------------------------------------------------------------------------


def test_a_client_disconnecting_mid_stream_stops_the_generation(live_server, served):
    parameter_set("max_tokens_per_request", 1500)
    body = {
        "model": GENERATIVE_DEFAULT,
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
        "max_tokens": 1500,
        "stream": True,
        "logit_bias": no_end_bias(),
    }
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", f"{live_server.url}/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            received = [line for line, _ in zip(lines, range(6), strict=False) if line.startswith("data: ")]
            assert received
        # Leaving the block closes the connection with the generation still running.

    def cancelled_sample():
        latency_samples_flush()
        return LatencySample.objects.filter(endpoint="chat_completions", outcome="cancelled").first()

    sample = wait_for(cancelled_sample, timeout=30)
    assert sample is not None, "the server never recorded the cancelled generation"
    assert sample.status == 499
    # It stopped shortly after the client left, far short of the 1,500 asked for.
    assert 0 < sample.completion_tokens < 1000
    assert coordination().load() == (0, 0)


# --- conclave_node.client against the server -------------------------------------------------------------


def test_node_client_reuses_one_connection_and_embeds(live_server, served):
    with ConclaveClient(live_server.url, timeout=30) as client:
        vectors = client.embed(["one", "two"])
        single = client.embed("one")
        client.models()
        assert np.allclose(vectors[0], single, atol=1e-6)
        # Three calls, one kept-alive connection (httpx's pool, inspected directly).
        assert len(client._http._transport._pool.connections) == 1
        assert client.stats.attempts == 3 and client.stats.retries == 0


def test_node_client_generates_and_streams(live_server, served):
    with ConclaveClient(live_server.url, timeout=60) as client:
        result = client.generate("The capital of France is", max_tokens=4, temperature=0)
        assert result["tokens_generated"] <= 4
        pieces = list(client.generate_stream("One, two,", max_tokens=4, temperature=0))
        assert pieces
        with pytest.raises(ConclaveError) as refused:
            client.generate("Hi", max_tokens=10_000)
        assert refused.value.status == 400 and refused.value.code == "max_tokens_exceeded"
        assert client.stats.retries == 0  # a 400 is never retried


def test_node_client_retries_a_503_then_falls_back(live_server, approved):
    # No worker runs: /health answers 503 (unavailable, reason no_worker).
    delays = []
    with ConclaveClient(live_server.url, retries=3, backoff=0.01, sleep=delays.append) as client:
        answer = client.health(fallback=lambda error: {"status": "fallback", "because": error.status})
        assert answer == {"status": "fallback", "because": 503}
        assert client.stats.attempts == 4 and client.stats.retries == 3
        assert len(delays) == 3 and delays[0] < delays[1] < delays[2]  # exponential backoff


def test_node_client_breaker_opens_short_circuits_and_recovers(live_server, served):
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=10.0, clock=lambda: now[0])
    # A port nothing listens on: connection refused.
    dead = ConclaveClient(
        "http://127.0.0.1:9", retries=1, backoff=0.0, breaker=breaker, sleep=lambda s: None, timeout=2
    )
    for _ in range(2):
        with pytest.raises(ConclaveUnavailable):
            dead.health()
    assert breaker.state == "open"
    attempts = dead.stats.attempts
    used = dead.health(fallback=lambda error: "local answer")
    assert used == "local answer" and dead.stats.attempts == attempts  # no network while open
    with pytest.raises(CircuitOpen):
        dead.health()
    dead.close()

    now[0] += 11  # half-open: one trial call goes through; success closes the circuit
    with ConclaveClient(live_server.url, breaker=breaker, timeout=30) as alive:
        assert alive.models()
        assert breaker.state == "closed"


def test_node_client_times_out_and_uses_the_operation_fallback(live_server, served):
    with ConclaveClient(
        live_server.url,
        timeout=0.2,
        retries=0,
        fallbacks={"generate": lambda error: {"text": "", "fallback": str(error)}},
    ) as client:
        result = client.generate("Once upon a time", max_tokens=500, logit_bias=no_end_bias())
    assert "ReadTimeout" in result.get("fallback", ""), result
    # The server finishes the (non-streamed) generation it had started; wait
    # for it so nothing runs on after this test.
    assert wait_for(
        lambda: latency_samples_flush() or LatencySample.objects.filter(endpoint="generate").exists(), timeout=60
    )
    assert coordination().load() == (0, 0)
