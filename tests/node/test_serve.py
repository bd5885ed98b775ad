"""`conclave-node serve`: the installed set, served by a real process with the platform's contract and limits.

Every test initialises a node from the live platform's real signed set,
pulls the real model packs, and starts `conclave-node serve` as a child
process on 127.0.0.1. Assertions are about shapes, status codes and limits,
never about what a model happens to say or how fast the host is.
"""

import base64
import json
import threading

import numpy as np
import pytest

from conclave.node.limits import Limits
from tests.inference.conftest import GENERATIVE_DEFAULT, no_end_bias, parameter_set
from tests.node.serving import ServeProcess, installed_node, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def served(live_server, make_node, node_home):
    agent, manifests = installed_node(live_server, make_node)
    process = ServeProcess(node_home, importtime=True).wait_ready()
    yield process
    process.stop()


def sse_events(response) -> list:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            try:
                events.append(data if data == "[DONE]" else json.loads(data))
            except ValueError as exc:
                raise AssertionError(repr(line)) from exc
    return events


def test_serve_answers_every_endpoint_with_the_platforms_shapes_and_never_imports_django(served):
    with served.client() as client:
        health = client.get("/health")
        assert health.status_code == 200, health.text
        body = health.json()
        assert body["status"] == "healthy"
        assert body["model"].startswith(GENERATIVE_DEFAULT + "@")
        assert {m["kind"] for m in body["models"]} == {"embedding", "generative"}
        assert body["memory_mb"] > 0 and body["uptime_seconds"] >= 0 and body["backend"]["onnxruntime"]
        assert body["limits"]["signed"] is True
        assert client.get("/health/live").json()["status"] == "alive"

        one = client.post("/embed", json={"text": "The network serves what governance approved."}).json()
        assert len(one["embedding"]) == 384 and one["tokens"] > 0 and one["model"].startswith("all-MiniLM-L6-v2@")
        assert np.linalg.norm(one["embedding"]) == pytest.approx(1.0, abs=1e-3)
        many = client.post("/embed", json={"texts": ["a", "b c d"]}).json()
        assert np.asarray(many["embeddings"]).shape == (2, 384)

        openai = client.post("/v1/embeddings", json={"input": ["x", "y"], "encoding_format": "base64"}).json()
        assert openai["object"] == "list" and [d["index"] for d in openai["data"]] == [0, 1]
        decoded = np.frombuffer(base64.b64decode(openai["data"][0]["embedding"]), dtype="<f4")
        assert decoded.shape == (384,)
        assert openai["usage"]["prompt_tokens"] == openai["usage"]["total_tokens"] > 0

        models = client.get("/v1/models").json()
        assert models["object"] == "list"
        assert {m["id"] for m in models["data"]} == {"all-MiniLM-L6-v2", GENERATIVE_DEFAULT}

        generated = client.post("/generate", json={"prompt": "Hello", "max_tokens": 4, "temperature": 0}).json()
        assert set(generated) >= {"text", "model", "tokens_generated", "prompt_tokens", "latency_ms", "stop_reason", "usage"}
        assert 1 <= generated["tokens_generated"] <= 4

        chat = client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4, "temperature": 0,
        }).json()
        assert chat["object"] == "chat.completion"
        assert chat["choices"][0]["message"]["role"] == "assistant"
        assert chat["choices"][0]["finish_reason"] in ("stop", "length")
        assert chat["usage"]["completion_tokens"] <= 4 and "timings" in chat

        completion = client.post("/v1/completions", json={"prompt": "Once", "max_tokens": 3}).json()
        assert completion["object"] == "text_completion" and completion["usage"]["completion_tokens"] <= 3

        with client.stream("POST", "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Count"}], "max_tokens": 5, "stream": True,
            "logit_bias": no_end_bias(),
        }) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse_events(response)
        assert events[-1] == "[DONE]"
        assert events[0]["choices"][0]["delta"]["role"] == "assistant"
        final = events[-2]
        assert final["choices"][0]["finish_reason"] == "length"
        assert final["usage"]["completion_tokens"] == 5
        assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[1:-2])

        with client.stream("POST", "/generate", json={"prompt": "Hi", "max_tokens": 3, "stream": True,
                                                      "logit_bias": no_end_bias()}) as response:
            native = sse_events(response)
        assert native[-1] == "[DONE]" and native[-2]["tokens_generated"] == 3

        metrics = client.get("/metrics").json()
        assert metrics["requests_total"] >= 8 and metrics["memory_usage_mb"] > 0
        prometheus = client.get("/metrics/prometheus")
        assert "conclave_node_e2e_request_latency_seconds_bucket" in prometheus.text
        assert 'conclave_node_requests_total{endpoint="embed",status="200"}' in prometheus.text

        bad = client.post("/embed", content=b"{not json")
        assert bad.status_code == 400 and set(bad.json()["error"]) == {"message", "type", "code"}
        unknown = client.post("/embed", json={"text": "x", "model": "nope"})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
        assert client.get("/nowhere").status_code == 404

    served.stop()
    imported = {line.split("|")[-1].strip() for line in served.lines if line.startswith("import time:")}
    assert {"onnxruntime", "llama_cpp", "orjson"} <= imported, "the importtime log is not being read"
    # llama-cpp-python loads diskcache, whose optional Django backend would import Django.
    assert "diskcache" in imported
    assert not [name for name in imported if name.split(".")[0] in ("django", "celery", "rest_framework")]


def test_limits_come_from_the_signed_set(served):
    with served.client() as client:
        limits = client.get("/health").json()["limits"]
    assert {k: v for k, v in limits.items() if k != "signed"} == {
        k: v for k, v in Limits().as_dict().items() if k != "signed"
    }


def test_node_defaults_equal_the_governance_defaults():
    from governance.models import PARAMETER_DEFINITIONS

    defaults = Limits().as_dict()
    assert {d.name: d.default for d in PARAMETER_DEFINITIONS} == {k: v for k, v in defaults.items() if k != "signed"}


def test_max_tokens_over_the_governed_limit_is_refused_naming_it(served):
    with served.client() as client:
        limit = client.get("/health").json()["limits"]["max_tokens_per_request"]
        for path, body in (
            ("/generate", {"prompt": "x", "max_tokens": limit + 1}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": limit + 1}),
            ("/v1/completions", {"prompt": "x", "max_tokens": limit + 1}),
        ):
            response = client.post(path, json=body)
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["code"] == "max_tokens_exceeded"
            assert "max_tokens_per_request" in error["message"]
