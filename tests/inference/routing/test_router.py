"""The platform routes requests to real `conclave-node serve` processes (INFERENCE_ROUTING=federated|hybrid).

Every node is a real process initialised from the live platform's real
signed set (tests/node/serving.py), on 127.0.0.1. The nodes join by
`nodes.services.serving_node_join`, as their `--join` would; the heartbeat
timeout is set long, so a node leaves the rotation here through its
breaker. The slow node and the dishonest node are real HTTP servers in this
test, in front of a real node: one delays every answer by SLOW_SECONDS, the
other returns perturbed embeddings. Assertions are about where requests
went (the router's Prometheus counter) and their status codes, never about
timings or what a model says.
"""

import http.server
import json
import threading
import time
import uuid

import httpx
import numpy as np
import pytest

from accounts.models import Role
from accounts.services import user_grant_role
from inference.metrics import REGISTRY
from inference.routing import records, router
from nodes.services import serving_node_heartbeat, serving_node_join
from tests.inference.conftest import EMBEDDING_DEFAULT, GENERATIVE_DEFAULT, no_end_bias
from tests.node.serving import ServeProcess, installed_node, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

SLOW_SECONDS = 0.25
TEXTS = [f"Sentence number {i} about the network." for i in range(16)]


@pytest.fixture(autouse=True)
def _routing(settings):
    settings.INFERENCE_ROUTING = "federated"
    settings.NODES_ALLOW_PRIVATE_URLS = True
    settings.NODES_HEARTBEAT_TIMEOUT_SECONDS = 3600
    settings.INFERENCE_SERVING_READS_CACHE_SECONDS = 0
    settings.INFERENCE_ROUTING_BREAKER_FAILURES = 2
    settings.INFERENCE_ROUTING_BREAKER_COOLDOWN_SECONDS = 1.0
    settings.INFERENCE_SPOT_CHECK_SHARE = 0.0
    router.routable_clear()
    yield
    router.routable_clear()


def routed(name: str, outcome: str = "ok") -> float:
    return REGISTRY.get_sample_value("conclave_routing_requests_total", {"node": name, "outcome": outcome}) or 0.0


class Fleet:
    """Node accounts joined at URLs (real processes or the test's own servers), models by manifest CID."""

    def __init__(self, manifests):
        self.models = [manifests[EMBEDDING_DEFAULT].manifest_cid, manifests[GENERATIVE_DEFAULT].manifest_cid]
        self.embedding_cid = self.models[0]
        self.accounts: dict[str, object] = {}
        self.prefix = uuid.uuid4().hex[:6]

    def join(self, short: str, url: str):
        name = f"{short}-{self.prefix}"
        account = self.accounts.get(name) or user_grant_role(username=name, role=Role.NODE)
        self.accounts[name] = account
        serving_node_join(node=account, url=url, secret="s" * 40, models=self.models, hardware={"cores": 1})
        serving_node_heartbeat(node=account, running=0, waiting=0, queue_capacity=64)
        router.routable_clear()
        return name

    def node_id(self, name: str) -> int:
        return self.accounts[name].pk


def load(base: str, *, threads: int, requests: int | None = None, stop: threading.Event | None = None, **kwargs):
    """Embedding requests from `threads` clients (each `requests` of them, or until `stop`); their status codes."""
    statuses: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=base, timeout=120) as http:
            sent = 0
            while (requests is None or sent < requests) and not (stop and stop.is_set()):
                text = TEXTS[sent % len(TEXTS)]
                response = http.post("/embed", json={"text": text}, **kwargs)
                with lock:
                    statuses.append(response.status_code)
                sent += 1

    # Daemons: a test that fails while they run must not leave them looping on its dead nodes.
    workers = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    return workers, statuses


def finish(workers) -> None:
    for worker in workers:
        worker.join(300)


class TestNodeServer(http.server.ThreadingHTTPServer):
    """A node the test runs: speaks the node API by forwarding to a real node, late (`delay`) or lying (`perturb`)."""

    daemon_threads = True
    __test__ = False

    def __init__(self, target: str, *, delay: float = 0.0, perturb: bool = False):
        self.target, self.delay, self.perturb = target, delay, perturb
        self.rng = np.random.default_rng(7)
        super().__init__(("127.0.0.1", 0), _Forward)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the platform cancelled the call (a hedge or a redundant copy lost the race)

    def do_GET(self):  # noqa: N802 - http.server's naming
        response = httpx.get(self.server.target + self.path, timeout=60)
        self._answer(response.status_code, response.content, response.headers.get("content-type", "text/plain"))

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(self.server.delay)
        response = httpx.post(
            self.server.target + self.path, content=body, headers={"Content-Type": "application/json"}, timeout=60
        )
        content = response.content
        if self.server.perturb and response.status_code == 200 and self.path.rstrip("/") == "/embed":
            answer = response.json()
            key = "embeddings" if "embeddings" in answer else "embedding"
            vectors = np.asarray(answer[key], dtype=float)
            vectors = vectors + self.server.rng.normal(scale=0.08, size=vectors.shape)
            vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
            answer[key] = vectors.tolist()
            content = json.dumps(answer).encode()
        self._answer(response.status_code, content, "application/json")


@pytest.fixture
def platform(live_server, make_node):
    agent, manifests = installed_node(live_server, make_node)
    return live_server.url, Fleet(manifests)


def test_requests_spread_over_three_nodes_a_killed_node_loses_none_and_leaves_and_a_restarted_one_returns(
    platform, node_home
):
    base, fleet = platform
    processes = [ServeProcess(node_home) for _ in range(3)]
    try:
        for process in processes:
            process.wait_ready()
        names = [fleet.join(f"node{i}", process.url) for i, process in enumerate(processes)]
        before = {name: routed(name) for name in names}

        workers, statuses = load(base, threads=3, requests=20)
        finish(workers)
        assert statuses == [200] * 60
        served = {name: routed(name) - before[name] for name in names}
        assert all(count > 0 for count in served.values()), served

        # The other endpoints go through the nodes too: OpenAI embeddings, chat (streamed and not), /generate.
        with httpx.Client(base_url=base, timeout=120) as http:
            openai = http.post("/v1/embeddings", json={"input": ["x", "y"]}).json()
            assert [d["index"] for d in openai["data"]] == [0, 1] and len(openai["data"][0]["embedding"]) == 384
            chat = {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4, "temperature": 0}
            answer = http.post("/v1/chat/completions", json=chat)
            assert answer.status_code == 200, answer.text
            assert answer.json()["usage"]["completion_tokens"] <= 4
            with http.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as response:
                assert response.status_code == 200
                events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            assert json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"
            assert json.loads(events[-2])["usage"]["completion_tokens"] <= 4
            generated = http.post("/generate", json={"prompt": "Once", "max_tokens": 3}).json()
            assert 1 <= generated["tokens_generated"] <= 3
            exposition = http.get("/metrics/prometheus").text
            assert f'conclave_routing_requests_total{{node="{names[0]}",outcome="ok"}}' in exposition

        # Under embedding load, a long generation runs on one node: SIGKILL that node. Every request is still
        # answered (the ones it had in flight are retried on another node, the generation from the start).
        stop = threading.Event()
        workers, statuses = load(base, threads=3, stop=stop)
        generated: list = []
        long = {"prompt": "Count", "max_tokens": 64, "logit_bias": no_end_bias()}

        def generate() -> None:
            with httpx.Client(base_url=base, timeout=120) as http:
                generated.append(http.post("/generate", json=long))

        generation = threading.Thread(target=generate)
        generation.start()

        def running_generation():
            for index, process in enumerate(processes):
                with process.client() as direct:
                    if direct.get("/metrics").json()["requests_running"]:
                        return index + 1
            return None

        victim = wait_until(running_generation, timeout=120, interval=0.02)
        assert victim, "the generation never ran on a node"
        victim -= 1
        retried = sum(routed(name, "retried") for name in names)
        processes[victim].process.kill()
        processes[victim].process.wait(30)
        killed_at, answered = routed(names[victim]), len(statuses)
        generation.join(120)
        assert wait_until(lambda: len(statuses) >= answered + 60, timeout=300)

        def victim_breaker() -> str:
            _, breakers = records.records_read([fleet.node_id(names[victim])], fleet.embedding_cid)
            return breakers[fleet.node_id(names[victim])].state

        # Out of the rotation once its breaker opens: that takes INFERENCE_ROUTING_BREAKER_FAILURES calls to
        # it, and how soon the score or a resample probe picks a node depends on its latencies, not on a
        # count of requests, so the load goes on until then.
        assert wait_until(lambda: victim_breaker() != "closed", timeout=120)
        stop.set()
        finish(workers)
        assert set(statuses) == {200}, statuses
        assert generated[0].status_code == 200, generated[0].text
        assert generated[0].json()["tokens_generated"] == 64
        assert routed(names[victim]) == killed_at  # nothing was answered by the dead node
        assert sum(routed(name, "retried") for name in names) > retried
        # Its calls that broke are counted: refused or reset as unreachable (breaker only), a cut answer as failed.
        assert routed(names[victim], "unreachable") + routed(names[victim], "failed") > 0
        assert victim_breaker() != "closed"  # still out of the rotation: nothing closed it

        # Restarted (a new port), it joins again and is back in the rotation once its breaker's trial succeeds.
        processes[victim] = ServeProcess(node_home).wait_ready()
        fleet.join(f"node{victim}", processes[victim].url)
        back = routed(names[victim])
        stop = threading.Event()
        workers, statuses = load(base, threads=3, stop=stop)
        # Its trial comes when the score or a resample probe (every INFERENCE_ROUTING_RESAMPLE_SECONDS)
        # picks it; the load goes on until it answered.
        assert wait_until(lambda: routed(names[victim]) > back, timeout=120)
        stop.set()
        finish(workers)
        assert set(statuses) == {200}
        assert victim_breaker() == "closed"
    finally:
        for process in processes:
            process.stop()


def warm(processes) -> None:
    """A node's first answers include its runtime's warm-up; long-running nodes are past it."""
    for process in processes:
        with process.client() as direct:
            for text in TEXTS:
                assert direct.post("/embed", json={"text": text}).status_code == 200


def test_a_slow_node_gets_a_smaller_share_than_the_fast_ones(platform, node_home, settings):
    """The slow node is a real HTTP server in front of a real node that waits SLOW_SECONDS before each answer."""
    base, fleet = platform
    processes = [ServeProcess(node_home).wait_ready() for _ in range(2)]
    warm(processes)
    slow = TestNodeServer(processes[0].url, delay=SLOW_SECONDS)
    try:
        fast = [fleet.join(f"fast{i}", process.url) for i, process in enumerate(processes)]
        slow_name = fleet.join("slow", slow.url)
        before = {name: routed(name) for name in [*fast, slow_name]}
        # Concurrent clients: a node's requests in flight count in its expected latency, so load spreads over
        # the fast nodes; the slow one is tried until it has enough samples, then loses on the score.
        settings.INFERENCE_ROUTING_RESAMPLE_SECONDS = 0.3
        workers, statuses = load(base, threads=4, requests=40)
        finish(workers)
        assert set(statuses) == {200}
        served = {name: routed(name) - before[name] for name in before}
        assert served[slow_name] < min(served[name] for name in fast), served
    finally:
        slow.close()
        for process in processes:
            process.stop()


def test_a_node_that_has_not_answered_by_its_p95_is_hedged_on_the_next_and_the_late_call_is_cancelled(
    platform, node_home, settings
):
    """Two nodes the test runs in front of one real node: the best one stalls once it has a p95."""
    base, fleet = platform
    process = ServeProcess(node_home).wait_ready()
    warm([process])
    best, second = TestNodeServer(process.url), TestNodeServer(process.url, delay=SLOW_SECONDS)
    settings.INFERENCE_ROUTING_HEDGE_MIN_SAMPLES = 5
    settings.INFERENCE_ROUTING_RESAMPLE_SECONDS = 0
    try:
        best_name, second_name = fleet.join("best", best.url), fleet.join("second", second.url)
        workers, statuses = load(base, threads=1, requests=12)
        finish(workers)
        assert set(statuses) == {200}
        best_id = fleet.node_id(best_name)
        views, _ = records.records_read([best_id], fleet.embedding_cid)
        assert len(views[best_id].latencies) >= 5  # its p95 is known

        best.delay = 30.0  # stalls: far past its p95, within the request's deadline
        before = {(n, o): routed(n, o) for n in (best_name, second_name) for o in ("ok", "hedged", "cancelled")}
        with httpx.Client(base_url=base, timeout=120) as http:
            response = http.post("/embed", json={"text": "hedged"})
        assert response.status_code == 200
        after = {key: routed(*key) - value for key, value in before.items()}
        assert after[(second_name, "hedged")] == 1 and after[(second_name, "ok")] == 1
        assert after[(best_name, "cancelled")] == 1 and after[(best_name, "ok")] == 0
    finally:
        best.close()
        second.close()
        process.stop()


def test_a_dishonest_node_is_outvoted_with_k_3_and_loses_fitness_through_spot_checks_until_it_gets_no_traffic(
    platform, node_home, settings
):
    """The dishonest node is a real HTTP server in front of a real node that perturbs the embeddings it returns."""
    base, fleet = platform
    processes = [ServeProcess(node_home).wait_ready() for _ in range(2)]
    liar = TestNodeServer(processes[0].url, perturb=True)
    try:
        honest = [fleet.join(f"honest{i}", process.url) for i, process in enumerate(processes)]
        liar_name = fleet.join("liar", liar.url)
        with httpx.Client(base_url=base, timeout=120) as http, processes[1].client() as direct:
            reference = np.asarray(direct.post("/embed", json={"texts": TEXTS[:2]}).json()["embeddings"])
            for _ in range(3):
                voted = http.post("/embed", json={"texts": TEXTS[:2]}, headers={"X-Conclave-Redundancy": "3"})
                assert voted.status_code == 200, voted.text
                vectors = np.asarray(voted.json()["embeddings"])
                cosines = np.sum(vectors * reference, axis=1) / np.linalg.norm(vectors, axis=1)
                assert cosines.min() > 0.99
            assert routed(liar_name, "outvoted") == 3
            assert http.post("/embed", json={"text": "x"}, headers={"X-Conclave-Redundancy": "9"}).status_code == 400

        settings.INFERENCE_SPOT_CHECK_SHARE = 1.0
        settings.INFERENCE_SPOT_CHECK_REFERENCE = "node"
        liar_id = fleet.node_id(liar_name)

        def liar_fitness() -> float:
            views, _ = records.records_read([liar_id], fleet.embedding_cid)
            return views[liar_id].fitness

        # Requests keep coming until spot checks have pushed the liar under the minimum fitness.
        stop = threading.Event()
        workers, statuses = load(base, threads=1, stop=stop)
        fallen = wait_until(lambda: liar_fitness() < settings.INFERENCE_ROUTING_MIN_FITNESS, timeout=240)
        stop.set()
        finish(workers)
        assert fallen and set(statuses) == {200}
        assert routed(liar_name, "spot_disagreed") > 0
        views, _ = records.records_read([fleet.node_id(n) for n in honest], fleet.embedding_cid)
        assert all(view.fitness >= settings.INFERENCE_ROUTING_MIN_FITNESS for view in views.values())

        time.sleep(1.0)  # spot checks still running finish
        liar_served = routed(liar_name)
        workers, statuses = load(base, threads=2, requests=15)
        finish(workers)
        assert set(statuses) == {200}
        assert routed(liar_name) == liar_served
    finally:
        liar.close()
        for process in processes:
            process.stop()


def test_federated_without_a_node_is_503_no_node_available_and_hybrid_falls_back_to_the_local_workers(
    approved, client, settings
):
    import datetime as dt

    from django.utils import timezone

    # A node whose last heartbeat is older than NODES_HEARTBEAT_TIMEOUT_SECONDS is out of the rotation.
    settings.NODES_HEARTBEAT_TIMEOUT_SECONDS = 6
    silent = user_grant_role(username="silent-node", role=Role.NODE)
    long_ago = timezone.now() - dt.timedelta(minutes=5)
    cids = [manifest.manifest_cid for manifest in approved.values()]
    serving_node_join(node=silent, url="http://127.0.0.1:9", secret="s" * 40, models=cids, now=long_ago)
    serving_node_heartbeat(node=silent, running=0, waiting=0, queue_capacity=8, now=long_ago)
    for path, body in (("/embed", {"text": "hello"}), ("/generate", {"prompt": "hi", "max_tokens": 2})):
        response = client.post(path, body, content_type="application/json")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "no_node_available" and response["Retry-After"]

    settings.INFERENCE_ROUTING = "hybrid"
    settings.INFERENCE_PICKUP_TIMEOUT_SECONDS = 0.5
    fallback = routed("local", "fallback")
    response = client.post("/embed", {"text": "hello"}, content_type="application/json")
    # No local worker runs in this test: the local path answers that no worker picked the request up.
    assert response.json()["error"]["code"] == "worker_unavailable"
    assert routed("local", "fallback") == fallback + 1


def test_a_spot_check_by_a_local_worker_judges_the_node_by_the_cosine(served, settings):
    """The trusted reference is the platform's own worker (the local embedding path), run for real."""
    from django.utils import timezone

    from inference.routing.policy import Breaker
    from inference.serving.web import embeddings_create
    from nodes.selectors import RoutableNode

    settings.INFERENCE_ROUTING = "local"
    manifest = served[EMBEDDING_DEFAULT]
    node = RoutableNode(
        node_id=424242,
        name="checked",
        url="http://127.0.0.1:9",
        secret="s" * 40,
        models=(manifest.manifest_cid,),
        running=0,
        waiting=0,
        queue_capacity=8,
        hardware={},
        last_heartbeat_at=timezone.now(),
        joined_at=timezone.now(),
    )
    checked = router.Choice(node=node, fitness=0.8, p50_ms=None, p95_ms=None, samples=0, breaker=Breaker())
    honest = embeddings_create(texts=TEXTS[:3], model=None, endpoint="embed").vectors
    lying = honest + np.random.default_rng(1).normal(scale=0.08, size=honest.shape)
    arguments = {
        "checked": checked,
        "references": None,
        "manifest_id": manifest.pk,
        "manifest_cid": manifest.manifest_cid,
        "label": f"{manifest.model_name}@{manifest.version}",
        "texts": TEXTS[:3],
    }
    assert router.spot_check_run(vectors=honest, **arguments) is True
    assert router.spot_check_run(vectors=lying, **arguments) is False
    views, _ = records.records_read([node.node_id], manifest.manifest_cid)
    assert views[node.node_id].spot_checks == 2 and views[node.node_id].spot_agreed == 1
    assert routed("checked", "spot_disagreed") >= 1
