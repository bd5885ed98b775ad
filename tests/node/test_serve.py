"""`conclave-node serve`: the installed set, served by a real process with the platform's contract and limits.

Every test initialises a node from the live platform's real signed set,
pulls the real model packs, and starts `conclave-node serve` as a child
process on 127.0.0.1. Assertions are about shapes, status codes and limits,
never about what a model happens to say or how fast the host is.
"""

import base64
import json

import numpy as np
import pytest

from conclave_node.limits import Limits
from tests.inference.conftest import GENERATIVE_DEFAULT, no_end_bias
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
            data = line[len("data: ") :]
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
        assert set(generated) >= {
            "text",
            "model",
            "tokens_generated",
            "prompt_tokens",
            "latency_ms",
            "stop_reason",
            "usage",
        }
        assert generated["stop_reason"] in {"eos_token", "stop_sequence", "max_tokens"}  # the platform's words
        assert 1 <= generated["tokens_generated"] <= 4

        chat = client.post(
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": "Say hi"}],
                "max_tokens": 4,
                "temperature": 0,
            },
        ).json()
        assert chat["object"] == "chat.completion"
        assert chat["choices"][0]["message"]["role"] == "assistant"
        assert chat["choices"][0]["finish_reason"] in ("stop", "length")
        assert chat["usage"]["completion_tokens"] <= 4 and "timings" in chat

        completion = client.post("/v1/completions", json={"prompt": "Once", "max_tokens": 3}).json()
        assert completion["object"] == "text_completion" and completion["usage"]["completion_tokens"] <= 3

        with client.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": "Count"}],
                "max_tokens": 5,
                "stream": True,
                "logit_bias": no_end_bias(),
            },
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse_events(response)
        assert events[-1] == "[DONE]"
        assert events[0]["choices"][0]["delta"]["role"] == "assistant"
        final = events[-2]
        assert final["choices"][0]["finish_reason"] == "length"
        assert final["usage"]["completion_tokens"] == 5
        assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[1:-2])

        with client.stream(
            "POST", "/generate", json={"prompt": "Hi", "max_tokens": 3, "stream": True, "logit_bias": no_end_bias()}
        ) as response:
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


def test_a_logit_bias_token_outside_the_models_vocabulary_is_a_400_naming_it(served):
    with served.client() as client:
        for path, body in (
            ("/generate", {"prompt": "x", "max_tokens": 2, "logit_bias": {"10000000": -100}}),
            (
                "/v1/chat/completions",
                {
                    "messages": [{"role": "user", "content": "x"}],
                    "max_tokens": 2,
                    "logit_bias": {"10000000": -100},
                    "stream": True,
                },
            ),
        ):
            response = client.post(path, json=body)
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["code"] == "logit_bias_out_of_range"
            assert "10000000" in error["message"] and "vocabulary" in error["message"]


# --- Governed limits, from the signed set ---------------------------------------------------


def serve_with(live_server, make_node, node_home, **parameters) -> ServeProcess:
    installed_node(live_server, make_node, parameters)
    return ServeProcess(node_home).wait_ready()


def metric(client, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(client.get("/metrics/prometheus").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def long_chat(max_tokens: int, **extra) -> dict:
    """A chat that cannot end before `max_tokens`: every end-of-generation token is banned."""
    return {
        "messages": [{"role": "user", "content": "Write a long story."}],
        "max_tokens": max_tokens,
        "logit_bias": no_end_bias(),
        **extra,
    }


def raw_request(url: str, path: str, body: dict):
    """A request on a plain socket, so the test can hang up while it runs."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    sock = socket.create_connection((parsed.hostname, parsed.port))
    data = json.dumps(body).encode()
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return sock


def test_queue_full_is_503_with_retry_after_and_a_client_that_hangs_up_stops_its_generation(
    live_server, make_node, node_home
):
    process = serve_with(
        live_server, make_node, node_home, max_concurrent_requests=1, queue_size=0, max_tokens_per_request=2000
    )
    try:
        with process.client() as client:
            assert client.get("/health").json()["limits"]["max_concurrent_requests"] == 1
            running = raw_request(process.url, "/v1/chat/completions", long_chat(1900))
            assert wait_until(lambda: client.get("/health").json()["requests_running"] == 1)

            refused = client.post("/v1/chat/completions", json=long_chat(5))
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "queue_full"
            assert "max_concurrent_requests" in refused.json()["error"]["message"]
            assert int(refused.headers["Retry-After"]) >= 1

            running.close()
            assert wait_until(lambda: client.get("/health").json()["requests_running"] == 0)
            assert metric(client, "conclave_node_requests_total", endpoint="chat_completions", status="499") == 1
            # Stopped when the client left, long before its 1900 tokens.
            assert metric(client, "conclave_node_generation_tokens_total") < 1900
            assert client.post("/v1/chat/completions", json=long_chat(2)).status_code == 200
    finally:
        process.stop()


def test_a_generation_past_the_governed_deadline_is_stopped_with_504(live_server, make_node, node_home):
    process = serve_with(live_server, make_node, node_home, request_timeout_seconds=1, max_tokens_per_request=2000)
    try:
        with process.client() as client:
            response = client.post(
                "/generate", json={"prompt": "Once upon a time", "max_tokens": 2000, "logit_bias": no_end_bias()}
            )
            assert response.status_code == 504, response.text
            error = response.json()["error"]
            assert (error["code"], error["type"]) == ("timeout", "timeout_error")
            assert "request_timeout_seconds=1" in error["message"]
            assert client.get("/health").json()["requests_running"] == 0
            assert metric(client, "conclave_node_generation_tokens_total") < 2000

            with client.stream("POST", "/v1/chat/completions", json=long_chat(1900, stream=True)) as streamed:
                assert streamed.status_code == 200
                events = sse_events(streamed)
            assert events[-1] == "[DONE]"
            assert events[-2]["error"]["code"] == "timeout"
            assert metric(client, "conclave_node_requests_total", endpoint="chat_completions", status="504") == 1
    finally:
        process.stop()


def test_a_set_over_the_governed_memory_limit_is_not_loaded(live_server, make_node, node_home):
    process = serve_with(live_server, make_node, node_home, memory_limit_mb=256)
    try:
        with process.client() as client:
            health = client.get("/health")
            assert health.status_code == 503
            assert "memory_limit_mb=256" in " ".join(health.json()["errors"].values())
            refused = client.post("/embed", json={"text": "x"})
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_unavailable"
    finally:
        process.stop()


def test_a_parameter_change_executed_on_the_platform_reaches_every_running_node_and_each_enforces_it(
    live_server, make_node, node_home, trust_root_file, tmp_path, token_for, settings
):
    """Three joined nodes from the platform's real signed set; one executed parameter-change; each node pulls it
    (as `watch` would), applies it without a restart, refuses a request over the new limit, and tells the
    platform in its heartbeat which signed set it now serves."""
    from conclave_node.agent import NodeAgent
    from conclave_node.state import NodeHome
    from governance.services import proposals_advance, vote_cast
    from nodes.models import ServingNode
    from tests.governance.factories import T0, parameter_proposal, person

    settings.NODES_ALLOW_PRIVATE_URLS = True
    settings.NODES_HEARTBEAT_SECONDS = 1
    first, _ = installed_node(live_server, make_node, token=token_for("node-1", "node"))
    agents = [(first, node_home)]
    for index in (2, 3):
        home = NodeHome(tmp_path / f"node-{index}")
        agent = NodeAgent(home)
        agent.init(
            server=live_server.url, trust_root=trust_root_file(), force=True, token=token_for(f"node-{index}", "node")
        )
        assert agent.pull().outcome == "installed"
        agents.append((agent, home))
    processes = [ServeProcess(home, extra=["--join"]) for _, home in agents]
    try:
        for process in processes:
            process.wait_ready()
        assert wait_until(lambda: ServingNode.objects.count() == 3, timeout=60)
        secrets = {serving.url: serving.secret for serving in ServingNode.objects.all()}
        clients = [process.client(headers={"Authorization": f"Bearer {secrets[process.url]}"}) for process in processes]
        before = [client.get("/health").json() for client in clients]
        assert {health["limits"]["max_tokens_per_request"] for health in before} == {512}
        for client in clients:
            assert client.post("/generate", json={"prompt": "Hi", "max_tokens": 9}).status_code == 200

        alice = person("alice")
        proposal = parameter_proposal(author=alice, parameter="max_tokens_per_request", value=8, now=T0)
        vote_cast(proposal=proposal, voter=alice, choice="for", now=T0)
        proposals_advance(now=proposal.execution_eta)

        for (agent, home), health in zip(agents, before, strict=True):
            pulled = agent.pull()
            assert pulled.outcome == "up_to_date" and pulled.signed_version > health["signed_version"]
            cached = json.loads((home.path / "metadata" / "approved_set.json").read_bytes())
            assert cached["signed"]["parameters"]["max_tokens_per_request"] == 8

        for client in clients:
            assert wait_until(lambda c=client: c.get("/health").json()["limits"]["max_tokens_per_request"] == 8)
            refused = client.post("/generate", json={"prompt": "Hi", "max_tokens": 9})
            assert refused.status_code == 400
            assert "max_tokens_per_request=8" in refused.json()["error"]["message"]
            assert client.post("/generate", json={"prompt": "Hi", "max_tokens": 8}).status_code == 200
            client.close()
        assert all(process.process.poll() is None for process in processes), "a node restarted"
        signed_now = agents[0][0].status()["signed_version"]
        assert wait_until(
            lambda: set(ServingNode.objects.values_list("signed_set_version", flat=True)) == {signed_now}, timeout=60
        )
    finally:
        for process in processes:
            process.stop()


def test_limits_whose_signatures_do_not_verify_are_not_applied(live_server, make_node, node_home):
    from conclave_node.state import write_atomic

    installed_node(live_server, make_node)
    process = ServeProcess(node_home).wait_ready()
    try:
        document = node_home.path / "models" / "current" / "approved_set.json"
        envelope = json.loads(document.read_bytes())
        envelope["signed"]["parameters"]["max_tokens_per_request"] = 8000
        write_atomic(document.resolve(), json.dumps(envelope).encode())
        with process.client() as client:
            health = wait_until(lambda: (h := client.get("/health").json())["errors"] and h)
            assert "does not verify" in " ".join(health["errors"].values())
            assert health["limits"]["max_tokens_per_request"] == 512
            assert client.post("/generate", json={"prompt": "x", "max_tokens": 513}).status_code == 400
    finally:
        process.stop()


def test_a_node_with_nothing_installed_serves_503_until_a_set_is_pulled_then_serves_it(
    live_server, make_node, node_home
):
    from tests.inference.conftest import defaults_adopt

    agent = make_node(live_server.url)
    process = ServeProcess(node_home).wait_ready()
    try:
        with process.client() as client:
            health = client.get("/health")
            assert health.status_code == 503 and health.json()["status"] == "unavailable"
            assert "conclave-node pull" in " ".join(health.json()["errors"].values())
            refused = client.post("/embed", json={"text": "x"})
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_unavailable"
            assert "Retry-After" in refused.headers

            defaults_adopt()
            assert agent.pull().outcome == "installed"
            assert wait_until(lambda: client.get("/health").json()["status"] == "healthy")
            assert client.post("/embed", json={"text": "x"}).status_code == 200
    finally:
        process.stop()


def test_with_two_embedding_lanes_concurrent_requests_get_the_models_vectors(live_server, make_node, node_home):
    import concurrent.futures

    from tests.inference.test_runtimes import SENTENCES, raw_embedding

    installed_node(live_server, make_node)
    process = ServeProcess(node_home, extra=["--embed-lanes", "2"], threads=2).wait_ready()
    try:
        with process.client() as client:

            def embed(i: int):
                response = client.post("/embed", json={"text": SENTENCES[i % len(SENTENCES)]})
                assert response.status_code == 200, response.text
                return i, np.asarray(response.json()["embedding"])

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(embed, range(24)))
    finally:
        process.stop()

    for i, vector in answers:
        assert float(np.dot(vector, raw_embedding(SENTENCES[i % len(SENTENCES)]))) >= 0.999
