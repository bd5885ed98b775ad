"""`conclave-node serve --join`: a real node process joins the live platform, heartbeats, and serves only it.

The platform is pytest-django's live server (node URLs on 127.0.0.1 are
allowed, heartbeats are short); the node is initialised from its real signed
set with a node token, pulls the real model packs and runs `conclave-node
serve --join` as a child process. Waits have generous timeouts: they bound a
hung run, they do not measure the host.
"""

import os
import subprocess
import sys
import threading

import httpx
import pytest

from conclave_node.errors import ConfigError
from tests.inference.conftest import EMBEDDING_DEFAULT, GENERATIVE_DEFAULT
from tests.node.serving import ServeProcess, installed_node, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# How long a killed node may take to leave the rotation, and a restarted one to come back: generous bounds.
ROTATION_WAIT_SECONDS = 60


@pytest.fixture
def federation(settings):
    settings.NODES_ALLOW_PRIVATE_URLS = True
    settings.NODES_HEARTBEAT_SECONDS = 1
    settings.NODES_HEARTBEAT_TIMEOUT_SECONDS = 3


def routable(manifest_cid: str | None = None):
    from nodes.selectors import serving_nodes_routable

    return serving_nodes_routable(manifest_cid=manifest_cid)


def secret_of(name: str) -> str:
    from nodes.models import ServingNode

    return ServingNode.objects.get(account__username=name).secret


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def test_a_joined_node_is_in_the_rotation_serves_only_with_its_secret_leaves_when_killed_and_comes_back(
    live_server, make_node, node_home, token_for, federation
):
    _, manifests = installed_node(live_server, make_node, token=token_for("node-a", "node"))
    cids = {name: manifest.manifest_cid for name, manifest in manifests.items()}
    process = ServeProcess(node_home, extra=["--join"]).wait_ready()
    try:
        joined = wait_until(lambda: routable(cids[EMBEDDING_DEFAULT]), timeout=ROTATION_WAIT_SECONDS)
        assert joined, "the node did not join:\n" + "\n".join(process.log()[-20:])
        (node,) = joined
        assert node.name == "node-a" and node.url == process.url
        assert node.models == tuple(sorted(cids.values()))
        assert [n.name for n in routable(cids[GENERATIVE_DEFAULT])] == ["node-a"]
        with process.client() as client:
            limits = client.get("/health").json()["limits"]
            assert node.queue_capacity == limits["max_concurrent_requests"] + limits["queue_size"]
            assert node.hardware["cores"] == os.cpu_count() and node.hardware["gpu"] is False
            assert node.has_room

            # Only the platform, which holds the secret, reaches the models.
            assert client.get("/health").status_code == 200
            assert client.get("/health/live").status_code == 200
            for method, path, body in (
                ("POST", "/embed", {"text": "x"}),
                ("POST", "/v1/embeddings", {"input": "x"}),
                ("POST", "/generate", {"prompt": "x", "max_tokens": 1}),
                ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1}),
                ("GET", "/v1/models", None),
                ("GET", "/metrics", None),
                ("GET", "/metrics/prometheus", None),
            ):
                for headers in ({}, bearer("not-the-secret" * 4), {"Authorization": f"Token {node.secret}"}):
                    refused = client.request(method, path, json=body, headers=headers)
                    assert refused.status_code == 401, (path, refused.text)
                    assert refused.json()["error"]["code"] == "unauthorized"
                    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
                allowed = client.request(method, path, json=body, headers=bearer(node.secret))
                assert allowed.status_code == 200, (path, allowed.text)

        # The platform forgot the node (409 not_joined on its next beat): it joins again by itself.
        from nodes.models import ServingNode

        ServingNode.objects.all().delete()
        assert wait_until(lambda: routable(cids[EMBEDDING_DEFAULT]), timeout=ROTATION_WAIT_SECONDS)
        # The node logs before it joins again, but its log reaches the test through a pipe and a reader thread.
        assert wait_until(lambda: any("not_joined" in line for line in process.log()), timeout=60)

        process.process.kill()
        process.stop()
        assert wait_until(lambda: not routable(), timeout=ROTATION_WAIT_SECONDS), "a killed node stayed in rotation"
    finally:
        process.stop()

    again = ServeProcess(node_home, extra=["--join"]).wait_ready()
    try:
        back = wait_until(lambda: routable(cids[EMBEDDING_DEFAULT]), timeout=ROTATION_WAIT_SECONDS)
        assert back and back[0].url == again.url
        assert back[0].secret != node.secret, "each start announces a fresh secret"
        with again.client() as client:
            assert client.post("/embed", json={"text": "x"}, headers=bearer(node.secret)).status_code == 401
            assert client.post("/embed", json={"text": "x"}, headers=bearer(back[0].secret)).status_code == 200
    finally:
        again.stop()


def test_a_node_keeps_serving_while_the_platform_is_unreachable_and_says_so_once(
    live_server, make_node, node_home, token_for, federation, tmp_path
):
    import json
    import socket

    installed_node(live_server, make_node, token=token_for("node-b", "node"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    config = json.loads(node_home.config_path.read_text())
    node_home.config_path.write_text(json.dumps({**config, "server": dead}))
    secret = "s" * 40
    (tmp_path / "secret").write_text(secret + "\n")
    process = ServeProcess(node_home, extra=["--join", "--secret-file", str(tmp_path / "secret")]).wait_ready()
    try:
        assert wait_until(lambda: any("cannot reach the platform" in line for line in process.log()), timeout=60)
        with process.client() as client:
            # Several retries later: still serving, and the outage was logged once.
            assert wait_until(lambda: client.get("/metrics", headers=bearer(secret)).status_code == 200)
            assert client.post("/embed", json={"text": "x"}, headers=bearer(secret)).status_code == 200
            assert client.post("/embed", json={"text": "x"}).status_code == 401
        assert sum("cannot reach the platform" in line for line in process.log()) == 1
        assert process.process.poll() is None
    finally:
        process.stop()
    assert not routable()


def test_join_without_a_node_token_is_refused_before_serving(live_server, make_node, node_home):
    make_node(live_server.url)
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "CONCLAVE_NODE_TOKEN")}
    result = subprocess.run(
        [sys.executable, "-m", "conclave_node", "--home", str(node_home.path), "serve", "--port", "0", "--join"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == ConfigError.exit_code, result.stderr
    assert "node token" in result.stderr


@pytest.mark.parametrize("content", ["too short", "x" * 129, "has spaces " * 4])
def test_a_secret_file_with_a_bad_secret_is_refused(live_server, make_node, node_home, tmp_path, content):
    make_node(live_server.url)
    (tmp_path / "secret").write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "conclave_node", "--home", str(node_home.path), "serve", "--port", "0"]
        + ["--secret-file", str(tmp_path / "secret")],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        timeout=120,
    )
    assert result.returncode == ConfigError.exit_code, result.stderr
    assert "32 to 128" in result.stderr


def test_without_join_the_node_is_open_for_local_use(live_server, make_node, node_home):
    installed_node(live_server, make_node)
    process = ServeProcess(node_home).wait_ready()
    try:
        with process.client() as client:
            assert client.post("/embed", json={"text": "x"}).status_code == 200
            assert client.get("/metrics").status_code == 200
    finally:
        process.stop()
    assert not routable()


def test_the_heartbeat_carries_the_load_of_running_generations(
    live_server, make_node, node_home, token_for, federation
):
    from tests.inference.conftest import no_end_bias

    installed_node(
        live_server,
        make_node,
        {"max_concurrent_requests": 1, "queue_size": 2, "max_tokens_per_request": 2000},
        token=token_for("node-c", "node"),
    )
    process = ServeProcess(node_home, extra=["--join"]).wait_ready()
    try:
        (node,) = wait_until(routable, timeout=ROTATION_WAIT_SECONDS)
        assert node.queue_capacity == 3
        long = {
            "messages": [{"role": "user", "content": "Write a long story."}],
            "max_tokens": 1900,
            "logit_bias": no_end_bias(),
        }

        def generate() -> None:
            try:
                with httpx.Client(base_url=process.url, timeout=120, headers=bearer(node.secret)) as client:
                    client.post("/v1/chat/completions", json=long)
            except httpx.HTTPError:
                pass  # the node is stopped mid-generation at the end of the test

        threading.Thread(target=generate, daemon=True).start()
        busy = wait_until(lambda: (n := routable()) and n[0].running == 1 and n[0], timeout=ROTATION_WAIT_SECONDS)
        assert busy and busy.waiting == 0 and busy.has_room
    finally:
        process.stop()


def test_a_node_announces_the_new_manifest_cid_after_a_benchmark_changes_it_and_the_set_is_re_signed(
    live_server, make_node, node_home, token_for, federation
):
    from registry.services import manifest_metrics_record

    agent, manifests = installed_node(live_server, make_node, token=token_for("node-d", "node"))
    embedding = manifests[EMBEDDING_DEFAULT]
    process = ServeProcess(node_home, extra=["--join"]).wait_ready()
    try:
        assert wait_until(lambda: routable(embedding.manifest_cid), timeout=ROTATION_WAIT_SECONDS)
        updated = manifest_metrics_record(manifest=embedding, metrics={"avg_latency_ms": 3.5})
        assert updated.manifest_cid != embedding.manifest_cid

        # The next pull (what `watch` does on its interval) gets the set signed anew with the new CID.
        assert agent.pull().outcome == "up_to_date"
        moved = wait_until(lambda: routable(updated.manifest_cid), timeout=ROTATION_WAIT_SECONDS)
        assert moved, "\n".join(process.log()[-20:])
        assert routable(embedding.manifest_cid) == []
        assert moved[0].models == tuple(sorted([updated.manifest_cid, manifests[GENERATIVE_DEFAULT].manifest_cid]))
        assert process.process.poll() is None
    finally:
        process.stop()


def test_a_node_joins_again_with_the_models_of_a_new_set_once_it_serves_it(
    live_server, make_node, node_home, token_for, federation
):
    from registry.services import manifest_approve
    from tests.inference.conftest import EMBEDDING_CANDIDATE, pack_register

    agent, manifests = installed_node(live_server, make_node, token=token_for("node-e", "node"))
    process = ServeProcess(node_home, extra=["--join"]).wait_ready()
    try:
        (before,) = wait_until(routable, timeout=ROTATION_WAIT_SECONDS)
        assert len(before.models) == 2
        candidate = manifest_approve(manifest=pack_register(EMBEDDING_CANDIDATE), actor=None, reason="a new model")
        assert agent.pull().outcome == "installed"
        after = wait_until(lambda: routable(candidate.manifest_cid), timeout=ROTATION_WAIT_SECONDS)
        assert after, "\n".join(process.log()[-20:])
        assert set(after[0].models) == {candidate.manifest_cid, *(m.manifest_cid for m in manifests.values())}
        # The node logs its join once the platform answered it, so the line may follow what the platform shows.
        assert wait_until(lambda: sum("joined " in line for line in process.log()) >= 2, timeout=60)
        assert sum("joined " in line for line in process.log()) == 2
        with process.client(headers=bearer(after[0].secret)) as client:
            answer = client.post("/embed", json={"text": "x", "model": EMBEDDING_CANDIDATE})
            assert answer.status_code == 200, answer.text
    finally:
        process.stop()


def test_a_join_the_platform_refuses_is_logged_with_its_reason_and_the_node_keeps_serving(
    live_server, make_node, node_home, token_for, federation, settings
):
    settings.NODES_ALLOW_PRIVATE_URLS = False
    installed_node(live_server, make_node, token=token_for("node-f", "node"))
    process = ServeProcess(node_home, extra=["--join"]).wait_ready()
    try:
        refusal = wait_until(lambda: [line for line in process.log() if "refused the join" in line], timeout=60)
        assert refusal and "HTTP 400" in refusal[0] and "NODES_ALLOW_PRIVATE_URLS" in refusal[0]
        assert not routable()
        with process.client() as client:
            assert client.get("/health").json()["status"] == "healthy"
        # Retried with a growing delay, logged once.
        settings.NODES_ALLOW_PRIVATE_URLS = True
        assert wait_until(routable, timeout=ROTATION_WAIT_SECONDS)
        assert sum("refused the join" in line for line in process.log()) == 1
    finally:
        process.stop()
