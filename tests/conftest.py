"""Fixtures shared by the whole suite.

`celery_worker` starts a real Celery worker (a WorkController consuming from
the configured broker: the in-memory broker on embedded runs, Redis when
CELERY_BROKER_URL is set) in a thread of the test process.
"""

import os
import socket
from urllib.parse import urlparse

import pytest
from rest_framework.test import APIClient


def _require_services() -> None:
    """On CI the external services must be there: fail, never skip."""
    urls = [
        ("DATABASE_URL", os.environ.get("DATABASE_URL", "")),
        ("CELERY_BROKER_URL", os.environ.get("CELERY_BROKER_URL", "")),
    ]
    for name, url in urls:
        if not url:
            continue
        parsed = urlparse(url)
        if parsed.scheme.startswith("sqlite"):
            continue
        host = parsed.hostname or "127.0.0.1"
        port = parsed.port or {"postgres": 5432, "postgresql": 5432, "redis": 6379, "amqp": 5672}.get(parsed.scheme, 0)
        try:
            socket.create_connection((host, port), timeout=3).close()
        except OSError as exc:
            pytest.exit(f"{name}={url} is unreachable ({exc}); refusing to run the suite without it", returncode=3)


def pytest_configure(config):
    _require_services()


@pytest.fixture(scope="session")
def celery_session_app():
    import celery.contrib.testing.tasks  # noqa: F401  (registers celery.ping)

    from conclave.celery import app

    return app


def broker_queues_purge() -> None:
    """Drop tasks earlier tests left queued (pins, serving requests nobody waits for)."""
    from conclave.celery import app

    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for name in ("default", "inference", "benchmark"):
            try:
                channel.queue_purge(name)
            except Exception:  # noqa: BLE001 - a queue never declared has nothing to purge
                pass


@pytest.fixture
def celery_worker(celery_session_app, transactional_db):
    """A real worker thread; tests using it commit, so they need transactional_db.

    It starts on empty queues: tasks that earlier tests queued with no worker
    running (pins of big models) would otherwise run first, ahead of its ping.
    """
    from celery.contrib.testing.worker import start_worker

    broker_queues_purge()
    with start_worker(
        celery_session_app,
        pool="threads",
        concurrency=2,
        perform_ping_check=True,
        # The ping waits for the worker thread to start consuming; on a loaded
        # host that alone has taken over the default 10 s.
        ping_task_timeout=60,
        shutdown_timeout=30,
        loglevel="WARNING",
    ) as worker:
        yield worker


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def token_for(db):
    from accounts.services import token_issue

    def make(username: str, role: str) -> str:
        return token_issue(username=username, role=role).key

    return make


@pytest.fixture
def client_as(token_for):
    """An APIClient authenticated with a fresh token for the given role."""

    def make(role: str | None, username: str | None = None) -> APIClient:
        client = APIClient()
        if role is not None:
            key = token_for(username or f"{role}-user", role)
            client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return client

    return make


@pytest.fixture(autouse=True)
def _serving_reads_fresh():
    """Tables are emptied between tests without signals: forget the web side's cached reads."""
    from inference.selectors import serving_reads_clear

    serving_reads_clear()
    yield
    serving_reads_clear()


@pytest.fixture(autouse=True)
def _isolated_ipfs_store(settings, tmp_path):
    """Each test gets an empty embedded IPFS store and staging area."""
    settings.IPFS_STORE_DIR = tmp_path / "ipfs"
    settings.REGISTRY_STAGING_DIR = tmp_path / "staging"
    yield
