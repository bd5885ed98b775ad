"""Fixtures of the inference tests: the real model packs, a real worker, clean shared state.

Models are the packs installed from PyPI (MiniLM-L6 int8 ONNX, SmolLM2-135M
GGUF, the L3 ONNX candidate), registered and pinned in the test's own IPFS
store, and approved as a genesis adoption, as `manage.py bootstrap` does.
"""

import contextlib
import functools
import time
import uuid

import pytest

from tests.conftest import broker_queues_purge

EMBEDDING_DEFAULT = "all-MiniLM-L6-v2"
GENERATIVE_DEFAULT = "SmolLM2-135M-Instruct"
EMBEDDING_CANDIDATE = "paraphrase-MiniLM-L3-v2"
_SESSION_PREFIX = f"conclave:test-inference:{uuid.uuid4().hex[:8]}:"


def pack_register(model_name: str):
    """Register and pin one installed model pack; returns its manifest."""
    from accounts.models import Role
    from accounts.services import user_grant_role
    from registry.packs import PACKS, pack_declared_sha256, pack_source_info, pack_sources, pack_version
    from registry.services import manifest_pin, manifest_register

    pack = next(p for p in PACKS if p.model_name == model_name)
    actor = user_grant_role(username="operator", role=Role.OPERATOR)
    manifest, _ = manifest_register(
        model_name=pack.model_name,
        version=pack_version(pack),
        kind=pack.kind,
        fmt=pack.fmt,
        quantization=pack.quantization,
        license=pack.license,
        files=pack_sources(pack),
        source=pack_source_info(pack),
        actor=actor,
        pin="none",
        expected_sha256=pack_declared_sha256(pack),
    )
    return manifest_pin(manifest=manifest)


@functools.cache
def no_end_bias() -> dict[str, float]:
    """A logit bias that bans every end-of-generation token of the default generative model.

    Read from the model's own vocabulary: banning only `<|endoftext|>` and
    `<|im_end|>` left SmolLM2 free to end on `<reponame>`.
    """
    import llama_cpp

    from conclave_node.runtimes.generation import end_of_generation_token_ids
    from registry.packs import PACKS, pack_sources

    pack = next(p for p in PACKS if p.model_name == GENERATIVE_DEFAULT)
    (model_path,) = pack_sources(pack)[0].parts
    llm = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
    try:
        return {str(token): -100.0 for token in end_of_generation_token_ids(llm)}
    finally:
        llm.close()


def defaults_adopt() -> dict:
    """The two default models, registered, pinned and approved (genesis)."""
    from accounts.models import Role
    from accounts.services import user_grant_role
    from registry.services import genesis_adopt

    manifests = {name: pack_register(name) for name in (EMBEDDING_DEFAULT, GENERATIVE_DEFAULT)}
    actor = user_grant_role(username="operator", role=Role.OPERATOR)
    genesis_adopt(manifests=list(manifests.values()), actor=actor, reason="test genesis")
    for manifest in manifests.values():
        manifest.refresh_from_db()
    return manifests


def parameter_set(name: str, value: int) -> None:
    """Set a governed parameter's live value (what an executed parameter-change proposal does)."""
    from governance.services import parameter_ensure

    parameter = parameter_ensure(name)
    parameter.value = value
    parameter.save(update_fields=["value", "updated_at"])


def closing_connection(function):
    """A thread target that closes the thread's database connection when it ends.

    Each thread has its own connection; on PostgreSQL one left open keeps
    the test database from being dropped at the end of the run.
    """

    def run(*args, **kwargs):
        from django.db import connection

        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    return run


def wait_for(condition, timeout: float = 30.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return None


@pytest.fixture(autouse=True)
def _inference_state(settings):
    """Fresh shared state per test; a worker with model sync follows the approved set every 0.2 s."""
    from inference.serving.shared_state import coordination

    settings.INFERENCE_STATE_PREFIX = _SESSION_PREFIX
    # One thread per model call: llama.cpp's and onnxruntime's spinning
    # thread pools slow down badly when a busy 2-core machine oversubscribes them.
    settings.INFERENCE_THREADS = 1
    settings.INFERENCE_WORKER_SYNC_SECONDS = 0.2
    settings.INFERENCE_PICKUP_TIMEOUT_SECONDS = 10.0
    state = coordination()
    state.reset()
    broker_queues_purge()
    yield
    broker_queues_purge()
    state.reset()


@pytest.fixture(scope="module")
def inference_worker(celery_session_app):
    """A real worker (threads pool) on the configured broker, shared by a module's tests.

    The root `celery_worker` fixture starts one per test; stopping a worker
    takes seconds, which a module of serving tests would pay every time.
    This one has no background model sync (the tests that check the sync,
    hot swap and /health use `celery_worker`): each request checks the
    approved set itself.
    """
    with _serving_worker(celery_session_app, sync_seconds=0) as worker:
        yield worker


@pytest.fixture
def syncing_worker(celery_session_app, transactional_db, settings):
    """A real worker for one test, with the background model sync on (every 0.2 s)."""
    with _serving_worker(celery_session_app, sync_seconds=settings.INFERENCE_WORKER_SYNC_SECONDS) as worker:
        yield worker


@contextlib.contextmanager
def _serving_worker(app, *, sync_seconds: float):
    from celery.contrib.testing.worker import start_worker
    from celery.worker import state as worker_state
    from django.test import override_settings

    queues = app.amqp.queues
    # Selecting queues changes the app's shared selection; the root
    # `celery_worker` fixture (no selection) must find it as it was.
    selected = queues._consume_from
    with override_settings(INFERENCE_WORKER_SYNC_SECONDS=sync_seconds):
        # Only the serving queues: registry tasks enqueued by a test's
        # registrations must not run here once that test's database is gone.
        context = start_worker(
            app,
            pool="threads",
            concurrency=4,
            perform_ping_check=False,
            shutdown_timeout=30,
            loglevel="WARNING",
            queues=["inference", "benchmark"],
        )
        worker = context.__enter__()
    try:
        yield worker
    finally:
        # The consumer notices the stop flag between receive cycles and then
        # runs one more (celery.worker.loops.synloop): a message for each
        # cycle wakes it instead of waiting out two 2 s receive timeouts.
        worker_state.should_terminate = 0
        for _ in range(2):
            app.send_task("celery.ping", queue="inference")
        context.__exit__(None, None, None)
        queues._consume_from = selected


@pytest.fixture
def served(inference_worker, transactional_db):
    """The two default models approved and loaded in the worker's process."""
    from inference.serving.model_cache import model_cache

    manifests = defaults_adopt()
    model_cache().ensure_current()
    return manifests


@pytest.fixture
def approved(transactional_db):
    """The default models approved, without any worker."""
    return defaults_adopt()
