"""`conclave-node watch`: new sets are installed, started and probed; a set that cannot start is rolled back.

Real processes throughout: the live platform publishes the sets (the real
model packs, and a broken model registered through the real registration
path), `conclave-node watch --once` runs as a child process and starts the
new models in its own child (`conclave-node probe`), and a running
`conclave-node serve` follows what watch leaves current.
"""

import json
import subprocess
import sys

import pytest

from registry.packs import PACKS, pack_sources
from registry.services import manifest_approve, manifest_pin, manifest_register
from registry.staging import FileSource
from tests.inference.conftest import EMBEDDING_CANDIDATE, EMBEDDING_DEFAULT, pack_register
from tests.node.serving import ServeProcess, installed_node, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def watch_once(node_home) -> tuple[int, dict, str]:
    done = subprocess.run(
        [sys.executable, "-m", "conclave_node", "--home", str(node_home.path), "watch", "--once", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, json.loads(lines[-1]) if lines else {}, done.stderr


def current_set(node_home) -> str:
    return (node_home.path / "models" / "current").resolve().name


def register_broken_embedding(tmp_path):
    """MiniLM's real tokenizer beside the first half of its real ONNX file: it signs and verifies, and cannot load.

    The registry's format check refuses such a file today, so it is
    registered without that check: it stands for any set that verifies and
    still fails to start on a node (a runtime the node lacks, a file the
    check let through), and for sets registered before the check existed.
    """
    pack = next(p for p in PACKS if p.model_name == EMBEDDING_DEFAULT)
    sources = {source.name: source for source in pack_sources(pack)}
    weights = sources["model.onnx"].parts[0].read_bytes()
    truncated = tmp_path / "model.onnx"
    truncated.write_bytes(weights[: len(weights) // 2])
    manifest, _ = manifest_register(
        model_name="minilm-truncated",
        version="1",
        kind="embedding",
        fmt="onnx",
        license="Apache-2.0",
        files=[FileSource.single("model.onnx", "weights", truncated), sources["tokenizer.json"]],
        source={"type": "test", "note": "half of the real weights"},
        pin="none",
        formats_check=False,
    )
    manifest = manifest_pin(manifest=manifest)
    return manifest_approve(manifest=manifest, actor=None, reason="a model that verifies but cannot start")


def test_watch_installs_a_new_set_that_starts_and_a_running_serve_picks_it_up_without_restart(
    live_server, make_node, node_home
):
    installed_node(live_server, make_node)
    serve = ServeProcess(node_home).wait_ready()
    try:
        with serve.client() as client:
            assert client.get("/health").json()["approved_set_version"] == 1
            code, report, _ = watch_once(node_home)
            assert (code, report["outcome"]) == (0, "up_to_date")

            manifest_approve(manifest=pack_register(EMBEDDING_CANDIDATE), actor=None, reason="a second embedding model")
            code, report, stderr = watch_once(node_home)
            assert code == 0, stderr
            assert (report["outcome"], report["probe"], report["approved_set_version"]) == ("installed", "passed", 2)
            assert current_set(node_home) == "v2"

            health = wait_until(lambda: (h := client.get("/health").json())["approved_set_version"] == 2 and h)
            assert health["status"] == "healthy"
            models = {m["id"] for m in client.get("/v1/models").json()["data"]}
            assert EMBEDDING_CANDIDATE in models
            answer = client.post("/embed", json={"text": "new model", "model": EMBEDDING_CANDIDATE})
            assert answer.status_code == 200 and answer.json()["model"].startswith(EMBEDDING_CANDIDATE + "@")
        assert serve.process.poll() is None
    finally:
        serve.stop()


def test_a_set_that_fails_to_start_is_rolled_back_by_watch_and_not_installed_again(
    live_server, make_node, node_home, tmp_path
):
    installed_node(live_server, make_node)
    serve = ServeProcess(node_home).wait_ready()
    try:
        register_broken_embedding(tmp_path)
        code, report, stderr = watch_once(node_home)
        assert code == 24, stderr
        assert (report["outcome"], report["probe"], report["approved_set_version"]) == ("rolled_back", "failed", 2)
        assert "minilm-truncated@1" in report["reason"]
        assert current_set(node_home) == "v1"
        refused = json.loads((node_home.path / "watch.json").read_text())["refused"]
        assert "minilm-truncated@1" in refused["2"]["reason"]

        code, report, _ = watch_once(node_home)
        assert (code, report["outcome"]) == (0, "declined")
        assert current_set(node_home) == "v1"

        with serve.client() as client:
            health = wait_until(lambda: (h := client.get("/health").json())["status"] == "healthy" and h)
            assert health["approved_set_version"] == 1
            assert client.post("/embed", json={"text": "still serving"}).status_code == 200
    finally:
        serve.stop()
