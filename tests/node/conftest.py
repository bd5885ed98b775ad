"""Fixtures for the signing and node-agent tests: key sets, a published approved set, a node.

The platform keys are 2-of-3 for both roles unless a test says otherwise,
so every threshold check has something to fail on.
"""

from dataclasses import dataclass
from pathlib import Path

import pytest

from conclave_node.agent import NodeAgent
from conclave_node.state import NodeHome
from registry.services import manifest_approve
from signing.keys import SigningKey, key_create
from signing.selectors import root_current
from signing.services import root_ensure
from tests.registry.factories import register_test_manifest


@dataclass
class KeySet:
    folder: Path
    root: list[SigningKey]
    online: list[SigningKey]

    def new_key(self, name: str) -> SigningKey:
        return key_create(self.folder / f"{name}.pem")


@pytest.fixture(autouse=True)
def _isolated_signing(settings, tmp_path):
    """Each test gets its own key folder and embedded (1-of-1) keys unless it asks for `platform_keys`."""
    settings.SIGNING_KEYS_DIR = str(tmp_path / "keys")
    settings.SIGNING_ROOT_KEYS = []
    settings.SIGNING_ONLINE_KEYS = []
    settings.SIGNING_ROOT_THRESHOLD = 1
    settings.SIGNING_ONLINE_THRESHOLD = 1


@pytest.fixture
def platform_keys(settings, tmp_path) -> KeySet:
    folder = tmp_path / "platform-keys"
    keys = KeySet(
        folder=folder,
        root=[key_create(folder / f"root-{i}.pem") for i in range(1, 4)],
        online=[key_create(folder / f"online-{i}.pem") for i in range(1, 4)],
    )
    settings.SIGNING_ROOT_KEYS = [str(k.path) for k in keys.root]
    settings.SIGNING_ONLINE_KEYS = [str(k.path) for k in keys.online]
    settings.SIGNING_ROOT_THRESHOLD = 2
    settings.SIGNING_ONLINE_THRESHOLD = 2
    return keys


def approve(
    name: str,
    *,
    version: str = "1",
    kind: str = "embedding",
    fmt: str = "onnx",
    size: int | None = None,
    content: bytes | None = None,
):
    manifest = register_test_manifest(name=name, version=version, kind=kind, fmt=fmt, size=size, content=content)
    return manifest_approve(manifest=manifest, actor=None, reason="test fixture")


@pytest.fixture
def two_models(db):
    """An embedding model (weights + tokenizer) and a generative one, approved: approved set v2."""
    embedding = approve("mini-embed", size=300_000)
    generative = approve("tiny-gen", kind="generative", fmt="gguf", size=700_000)
    return embedding, generative


@pytest.fixture
def trust_root_file(tmp_path) -> Path:
    def write() -> Path:
        row = root_current() or root_ensure()
        path = tmp_path / f"root-v{row.version}.json"
        path.write_bytes(bytes(row.document))
        return path

    return write


@pytest.fixture
def node_home(tmp_path) -> NodeHome:
    return NodeHome(tmp_path / "node")


@pytest.fixture
def make_node(node_home, trust_root_file):
    """Initialise a node against `server` (the live platform or a mirror in front of it)."""

    def make(server: str, *, clock=None, **options) -> NodeAgent:
        agent = NodeAgent(node_home, **({"clock": clock} if clock else {}))
        agent.init(server=server, trust_root=trust_root_file(), force=True, **options)
        return agent

    return make


@pytest.fixture
def serial_worker(celery_session_app, transactional_db):
    """A real worker running one task at a time, on a queue emptied of earlier tests' tasks.

    The SQLite test database is in memory with a shared cache, where a second
    writer gets "table is locked" at once instead of waiting; one task at a
    time (and a test thread that waits on results, not on the database)
    keeps the writes serial. On PostgreSQL + Redis it is simply a worker.
    """
    from celery.contrib.testing.worker import start_worker

    celery_session_app.control.purge()
    with start_worker(
        celery_session_app,
        pool="threads",
        concurrency=1,
        perform_ping_check=True,
        shutdown_timeout=30,
        loglevel="WARNING",
    ) as worker:
        yield worker


def drain(app) -> None:
    """Wait until the worker has run everything queued before now (the queue is FIFO, one task at a time)."""
    app.send_task("celery.ping").get(timeout=30)
