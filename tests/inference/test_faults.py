"""Faults on PostgreSQL + Redis with real processes: a worker killed mid-benchmark and
mid-generation, and the Redis server stopped and started again.

Everything runs as it does in production: the web side is `manage.py up
--no-worker --no-beat`, each worker is `celery -A conclave worker` in its own
process, and they share a Redis server of this module's own, started on a
free port (never the machine's shared Redis), and the suite's test database.
Workers are killed with SIGKILL; the Redis server too.

Skipped on the embedded pass (no CELERY_BROKER_URL): there the worker is a
thread of the web process, so a worker cannot die while the web side waits
on it, and there is no Redis to lose. The sweep of a dead worker's benchmark
run, which can matter there too (after a restart of `up`), is tested on both
passes in test_benchmark.py.

The waits below bound how long a broken build can hang the suite; they are
not performance assertions.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection

from inference.models import BenchmarkRun, BenchmarkStatus
from tests.inference.conftest import (
    EMBEDDING_CANDIDATE,
    defaults_adopt,
    no_end_bias,
    pack_register,
    parameter_set,
    wait_for,
)
from tests.processes import CapturedProcess

START_DEADLINE_SECONDS = 120.0
STATE_PREFIX = "conclave:inference:"

pytestmark = [
    pytest.mark.skipif(
        not settings.CELERY_BROKER_URL.startswith("redis://"),
        reason="embedded pass: the worker is a thread of the web process and there is no Redis to stop",
    ),
    pytest.mark.django_db(transaction=True),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A redis-server of this module's own; `kill` is an outage, `start` brings it back on the same port (empty)."""

    def __init__(self, directory: Path):
        self.port = _free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed; the fault tests start one of their own"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        assert wait_for(lambda: self._pings(client), timeout=30, interval=0.05), "redis-server did not start"

    @staticmethod
    def _pings(client) -> bool:
        try:
            return client.ping()
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)


class Process(CapturedProcess):
    """A subprocess of the stack, named in failure messages."""

    def __init__(self, args: list[str], env: dict[str, str], name: str):
        super().__init__(args, env=env)
        self.name = name

    def wait_for_output(self, text: str) -> None:
        found = wait_for(lambda: text in self.output or self.process.poll() is not None, timeout=START_DEADLINE_SECONDS)
        if not found or text not in self.output:
            pytest.fail(f"{self.name} did not print {text!r}:\n{self.output}")


class Stack:
    """The web process and workers of one module, on its own Redis and the suite's test database."""

    def __init__(self, directory: Path, redis_server: RedisServer, database_url: str):
        self.directory = directory
        self.redis = redis_server
        self.database_url = database_url
        self.ipfs_dir = directory / "ipfs"
        self.web: Process | None = None
        self.web_port = _free_port()
        self.workers: list[Process] = []

    def environment(self, data_dir: Path, **extra: str) -> dict[str, str]:
        env = os.environ.copy()
        for name in (
            "DJANGO_SETTINGS_MODULE",
            "SECRET_KEY",
            "CONCLAVE_ENV",
            "DEBUG",
            "CELERY_RESULT_BACKEND",
            "INFERENCE_STATE_URL",
        ):
            env.pop(name, None)
        env.update(
            CONCLAVE_DATA_DIR=str(data_dir),
            DATABASE_URL=self.database_url,
            CELERY_BROKER_URL=self.redis.url,
            IPFS_STORE_DIR=str(self.ipfs_dir),
            INFERENCE_THREADS="1",
            INFERENCE_STATE_PREFIX=STATE_PREFIX,
            PYTHONUNBUFFERED="1",
            **extra,
        )
        return env

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def web_start(self) -> None:
        env = self.environment(self.directory / "web")
        self.web = Process(
            [sys.executable, "manage.py", "up", "--no-worker", "--no-beat", "--port", str(self.web_port)], env, "web"
        )
        self.web.wait_for_output("Conclave is running at")

    def worker_start(self, name: str, **extra: str) -> Process:
        env = self.environment(self.directory / name, DJANGO_SETTINGS_MODULE="conclave.settings", **extra)
        worker = Process(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "conclave",
                "worker",
                "-P",
                "threads",
                "-c",
                "4",
                "-Q",
                "inference,benchmark,default",
                "-n",
                f"{name}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "INFO",
            ],
            env,
            name,
        )
        worker.hostname = f"{name}@{socket.gethostname()}"
        self.workers.append(worker)
        worker.wait_for_output(" ready.")
        return worker

    def state(self):
        from inference.serving.shared_state import RedisCoordination

        return RedisCoordination(self.redis.url, STATE_PREFIX)

    def send_task(self, name: str) -> None:
        from celery import Celery

        # The suite's CELERY_BROKER_URL (in the environment) overrides an app's
        # broker setting; an explicit connection does not.
        # Not the current app: shared tasks queued later in this process must keep finding theirs.
        with Celery("fault-test", set_as_current=False) as app, app.connection_for_write(self.redis.url) as broker:
            app.send_task(name, queue="default", connection=broker)

    def stop(self) -> None:
        for process in [*self.workers, self.web]:
            if process is not None:
                process.kill()
        self.workers.clear()


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker, tmp_path_factory):
    directory = tmp_path_factory.mktemp("faults")
    redis_server = RedisServer(directory)
    redis_server.start()
    with django_db_blocker.unblock():
        stack = Stack(directory, redis_server, _database_url())
    try:
        stack.web_start()
        yield stack
    finally:
        stack.stop()
        redis_server.kill()


@pytest.fixture(autouse=True)
def _shared_store(stack, settings):
    """The test registers models in the store the stack's processes read; each test starts its own workers."""
    settings.IPFS_STORE_DIR = stack.ipfs_dir
    if stack.redis.process.poll() is not None:
        stack.redis.start()
    yield
    for worker in stack.workers:
        worker.kill()
    stack.workers.clear()


def _ready(stack) -> bool:
    try:
        return httpx.get(f"{stack.url}/health", timeout=10).status_code == 200
    except httpx.TransportError:
        return False


# --- 1. A worker killed mid-benchmark -------------------------------------------------------


def test_a_benchmark_whose_worker_is_killed_is_failed_with_the_reason_and_a_new_run_finishes(stack, token_for):
    candidate = pack_register(EMBEDDING_CANDIDATE)
    headers = {"Authorization": f"Token {token_for('fault-operator', 'operator')}"}
    # Enough repeats that the run is still going when its worker is killed.
    doomed = stack.worker_start(
        "fault-bench-1", INFERENCE_BENCHMARK_REPEATS="1000000", INFERENCE_BENCHMARK_HEARTBEAT_SECONDS="0.5"
    )
    response = httpx.post(
        f"{stack.url}/api/v1/benchmarks/", json={"manifest": str(candidate)}, headers=headers, timeout=30
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    running = wait_for(
        lambda: (
            (r := BenchmarkRun.objects.get(pk=run_id)).status == BenchmarkStatus.RUNNING and r.progress >= 0.1 and r
        ),
        timeout=120,
    )
    assert running, f"the benchmark did not start:\n{doomed.output}"
    first_beat = running.heartbeat_at
    assert wait_for(lambda: BenchmarkRun.objects.get(pk=run_id).heartbeat_at > first_beat, timeout=30)

    doomed.kill()
    assert BenchmarkRun.objects.get(pk=run_id).status == BenchmarkStatus.RUNNING  # what was left behind

    # A restarted worker runs beat's sweep; the dead run's heartbeat is stale after 2 s.
    stack.worker_start(
        "fault-bench-2",
        INFERENCE_BENCHMARK_STALE_SECONDS="2",
        INFERENCE_BENCHMARK_HEARTBEAT_SECONDS="0.5",
        INFERENCE_BENCHMARK_REPEATS="2",
        INFERENCE_BENCHMARK_MAX_ITEMS="4",
    )

    def swept():
        stack.send_task("inference.tasks.stalled_benchmarks_fail")
        time.sleep(0.5)
        run = BenchmarkRun.objects.get(pk=run_id)
        return run.status != BenchmarkStatus.RUNNING and run

    failed = wait_for(swept, timeout=60)
    assert failed and failed.status == BenchmarkStatus.FAILED, stack.workers[-1].output
    assert "stopped sending heartbeats" in failed.error and doomed.hostname in failed.error
    assert failed.finished_at is not None

    response = httpx.post(
        f"{stack.url}/api/v1/benchmarks/", json={"manifest": str(candidate)}, headers=headers, timeout=30
    )
    assert response.status_code == 202, response.text
    again = wait_for(
        lambda: (
            (r := BenchmarkRun.objects.get(pk=response.json()["id"])).status
            in (BenchmarkStatus.SUCCEEDED, BenchmarkStatus.FAILED)
            and r
        ),
        timeout=120,
    )
    assert again and again.status == BenchmarkStatus.SUCCEEDED, again and again.error


# --- 3. A worker killed mid-generation ----------------------------------------------------------


def _long_generation_worker(stack, name: str):
    """A ready worker, with limits that let one generation run 1500 tokens: long enough to break it mid-way."""
    defaults_adopt()
    parameter_set("request_timeout_seconds", 300)
    parameter_set("max_tokens_per_request", 1500)
    worker = stack.worker_start(name)
    assert wait_for(lambda: _ready(stack), timeout=120), worker.output
    return worker


def test_a_generation_whose_worker_is_killed_is_answered_503_worker_lost_and_health_follows(stack):
    worker = _long_generation_worker(stack, "fault-gen-1")
    answer: dict = {}

    def generate():
        # Every end-of-generation token banned: it generates all 1500 tokens, long enough to be killed.
        body = {"prompt": "Once upon a time", "max_tokens": 1500, "temperature": 0, "logit_bias": no_end_bias()}
        answer["response"] = httpx.post(f"{stack.url}/v1/completions", json=body, timeout=600)

    requester = threading.Thread(target=generate)
    requester.start()
    state = stack.state()
    generating = wait_for(lambda: state.heartbeats().get(worker.hostname, {}).get("generating"), timeout=120)
    assert generating, worker.output

    worker.kill()
    requester.join(timeout=600)
    response = answer["response"]
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "worker_lost"
    assert worker.hostname in response.json()["error"]["message"]
    assert int(response.headers["Retry-After"]) > 0

    # /health judges workers by the same heartbeat: no longer ready.
    health = httpx.get(f"{stack.url}/health", timeout=10)
    assert health.status_code == 503 and worker.hostname not in health.json()["workers"], health.text


def _stream_until_first_text(stack, on_first_text) -> list[dict]:
    """Stream a long completion; call `on_first_text` once text flows; return every event, in order."""
    body = {
        "prompt": "Once upon a time",
        "max_tokens": 1500,
        "temperature": 0,
        "logit_bias": no_end_bias(),
        "stream": True,
    }
    events: list[dict] = []
    with httpx.stream("POST", f"{stack.url}/v1/completions", json=body, timeout=600) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                events.append({"done": True})
                break
            event = json.loads(data)
            events.append(event)
            if len(events) == 1 and "choices" in event:
                on_first_text()
    return events


def test_a_streamed_generation_whose_worker_is_killed_ends_with_a_worker_lost_event(stack):
    worker = _long_generation_worker(stack, "fault-stream-1")

    events = _stream_until_first_text(stack, worker.kill)

    errors = [event["error"] for event in events if "error" in event]
    assert errors and errors[-1]["code"] == "worker_lost", events[-3:]
    assert errors[-1]["type"] == "unavailable_error" and worker.hostname in errors[-1]["message"]
    assert events[-1] == {"done": True}  # the stream is closed properly, not cut


# --- 4. Redis down, then back ------------------------------------------------------------------


def _embed(stack) -> httpx.Response:
    return httpx.post(f"{stack.url}/embed", json={"text": "is it back?"}, timeout=60)


def test_redis_down_is_answered_503_in_the_json_error_shape_and_serving_recovers_when_it_returns(stack):
    defaults_adopt()
    worker = stack.worker_start("fault-redis-1")
    assert wait_for(lambda: _ready(stack), timeout=120), worker.output
    assert _embed(stack).status_code == 200

    stack.redis.kill()
    requests = [
        ("POST", "/embed", {"text": "anyone there?"}),
        ("POST", "/generate", {"prompt": "Hi", "max_tokens": 4}),
        ("POST", "/v1/embeddings", {"input": "anyone there?"}),
        ("GET", "/health", None),
        ("GET", "/metrics", None),
        ("GET", "/metrics/prometheus", None),
    ]
    for method, path, body in requests:
        response = httpx.request(method, f"{stack.url}{path}", json=body, timeout=60)
        assert response.status_code == 503, f"{method} {path}: {response.status_code} {response.text[:300]}"
        assert response.headers["content-type"].startswith("application/json"), path
        assert int(response.headers["Retry-After"]) > 0, path
        payload = response.json()
        if path == "/health":
            assert payload["status"] == "unavailable" and "Redis" in json.dumps(payload["errors"]), payload
        else:
            assert payload["error"]["code"] == "broker_unavailable" and payload["error"]["type"] == "unavailable_error"

    # Down long enough for the worker to try reconnecting a few times.
    reconnects = re.compile(r"Trying again in ([\d.]+) seconds?")
    assert wait_for(lambda: len(reconnects.findall(worker.output)) >= 3, timeout=60), worker.output
    stack.redis.start()

    assert wait_for(lambda: _embed(stack).status_code == 200, timeout=60), worker.output
    generated = httpx.post(f"{stack.url}/generate", json={"prompt": "Hi", "max_tokens": 4}, timeout=60)
    assert generated.status_code == 200, generated.text
    assert wait_for(lambda: _ready(stack), timeout=30)
    # The worker's reconnection waits stay bounded (kombu's default grows them to 30 s).
    waits = [float(w) for w in reconnects.findall(worker.output)]
    assert max(waits) <= settings.CELERY_BROKER_TRANSPORT_OPTIONS["interval_max"], waits


def test_redis_lost_mid_stream_ends_the_stream_with_an_error_event_and_the_server_keeps_answering(stack):
    worker = _long_generation_worker(stack, "fault-redis-stream-1")

    events = _stream_until_first_text(stack, stack.redis.kill)

    errors = [event["error"] for event in events if "error" in event]
    assert errors and errors[-1]["code"] == "broker_unavailable", events[-3:]
    assert errors[-1]["type"] == "unavailable_error"
    assert events[-1] == {"done": True}
    # The web process is not stuck: it answers the next request (503 while Redis is away), then serves again.
    assert _embed(stack).status_code == 503
    stack.redis.start()
    assert wait_for(lambda: _embed(stack).status_code == 200, timeout=60), worker.output
