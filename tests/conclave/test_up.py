"""`manage.py up` runs the web app, a Celery worker and beat in one process.

Each test starts the real command as a subprocess on a free port with its own
data directory, talks to it over HTTP, then stops it with a signal. The
database and broker are whatever the suite runs on (embedded by default,
PostgreSQL + Redis when DATABASE_URL and CELERY_BROKER_URL are set).

On Redis, `up` gets a database of its own (UP_REDIS_DB) on the same server,
so its worker cannot pick up tasks other tests left in the suite's queues.

The deadlines below only bound how long a broken server can hang the suite;
they are not performance assertions.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.processes import REPO_ROOT, CapturedProcess

UP_REDIS_DB = 13
START_DEADLINE_SECONDS = 120.0
STOP_DEADLINE_SECONDS = 30.0


def _up_environment(data_dir: Path) -> dict[str, str]:
    env = os.environ.copy()
    # The test process carries settings_test's variables; `up` must run the
    # real settings, as a person starting it would.
    for name in ("DJANGO_SETTINGS_MODULE", "SECRET_KEY", "CONCLAVE_ENV", "DEBUG", "CELERY_RESULT_BACKEND"):
        env.pop(name, None)
    env["CONCLAVE_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    broker = urlsplit(env.get("CELERY_BROKER_URL", ""))
    if broker.scheme in ("redis", "rediss"):
        env["CELERY_BROKER_URL"] = urlunsplit(broker._replace(path=f"/{UP_REDIS_DB}"))
    return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class UpProcess(CapturedProcess):
    """A `manage.py up` subprocess whose combined output is collected as it runs."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None):
        self.port = _free_port()
        super().__init__(
            [sys.executable, "manage.py", "up", "--port", str(self.port), *args], env=env or _up_environment(data_dir)
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._reader.join(5)
                pytest.fail(f"`up` exited with {self.process.returncode} before serving:\n{self.output}")
            try:
                if httpx.get(f"{self.url}/api/schema/", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"`up` did not serve /api/schema/ within {START_DEADLINE_SECONDS:.0f} s:\n{self.output}")

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"`up` still running {STOP_DEADLINE_SECONDS:.0f} s after {signal.Signals(signum).name}:\n{self.output}"
            )
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def start_up(tmp_path):
    started: list[UpProcess] = []

    def start(*args: str) -> UpProcess:
        up = UpProcess(tmp_path / f"data-{len(started)}", *args)
        started.append(up)
        return up

    yield start
    for up in started:
        up.kill()


def test_up_serves_the_site_runs_worker_and_beat_and_stops_on_sigint(start_up):
    up = start_up()
    up.wait_until_serving()

    assert httpx.get(f"{up.url}/admin/login/", timeout=10).status_code == 200
    output = up.output
    assert f"Conclave is running at http://127.0.0.1:{up.port}/" in output
    # `up` sends a task through the broker to its own worker before it
    # reports ready, and prints the round trip it measured.
    assert "worker  ready:" in output
    assert "test task round trip" in output
    assert "beat    ready:" in output

    assert up.stop(signal.SIGINT) == 0
    assert "Stopped." in up.output


def test_up_stops_cleanly_on_sigterm(start_up):
    up = start_up()
    up.wait_until_serving()

    assert up.stop(signal.SIGTERM) == 0
    assert "Stopped." in up.output
    assert "Traceback" not in up.output


def test_up_without_worker_and_beat_serves_only_the_web_app(start_up):
    up = start_up("--no-worker", "--no-beat")
    up.wait_until_serving()

    output = up.output
    assert "worker  off (--no-worker)" in output
    assert "beat    off (--no-beat)" in output
    assert "test task round trip" not in output
    assert up.stop(signal.SIGTERM) == 0


def test_up_serves_the_static_files_from_a_data_dir_collectstatic_never_ran_into(start_up):
    up = start_up("--no-worker", "--no-beat")
    up.wait_until_serving()

    home = httpx.get(f"{up.url}/", timeout=10)
    assert home.status_code == 200 and "/static/css/conclave.css" in home.text
    for path in (
        "/static/css/conclave.css",
        "/static/vendor/htmx.org/dist/htmx.min.js",
        "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
    ):
        assert httpx.get(f"{up.url}{path}", timeout=10).status_code == 200, path
    assert up.stop(signal.SIGTERM) == 0


def test_up_answers_concurrent_first_schema_requests(start_up):
    """drf-spectacular's first schema generation in a process is not thread-safe; `up` serves them in turn."""
    up = start_up("--no-worker", "--no-beat")
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{up.url}/health/live", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    statuses: list[int] = []

    def fetch() -> None:
        statuses.append(httpx.get(f"{up.url}/api/schema/", timeout=120).status_code)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 4, up.output
    assert up.stop(signal.SIGTERM) == 0
    assert "Traceback" not in up.output


def test_up_refuses_a_port_in_use_with_a_clear_message(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "manage.py", "up", "--port", str(port)],
            cwd=REPO_ROOT,
            env=_up_environment(tmp_path / "data"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_DEADLINE_SECONDS,
        )

    assert result.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


# --- Generations under a raised queue_size ---------------------------------------------------------


def _embedded_environment(data_dir: Path) -> dict[str, str]:
    """`up`'s environment on the embedded defaults: SQLite and everything in `data_dir`, whatever the suite runs on."""
    env = _up_environment(data_dir)
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "INFERENCE_STATE_URL"):
        env.pop(name, None)
    # One llama.cpp thread per generation: the suite's machine is small and shared.
    env["INFERENCE_THREADS"] = "1"
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_DEADLINE_SECONDS,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_queued_generations_leave_web_threads_for_the_rest_of_the_site(tmp_path):
    """queue_size=10 with 8 web threads: generations past 8 - 2 reserved are refused, the site answers."""
    env = _embedded_environment(tmp_path / "data")
    _manage(env, "bootstrap")
    _manage(
        env,
        "shell",
        "-c",
        "from governance.services import parameter_ensure\n"
        "p = parameter_ensure('queue_size'); p.value = 10; p.save(update_fields=['value', 'updated_at'])",
    )
    up = UpProcess(tmp_path / "data", "--threads", "8", "--reserved-threads", "2", env=env)
    try:
        up.wait_until_serving()
        assert "at most 6 generations held at once (2 threads kept for the rest of the site)" in up.output
        statuses: list[int] = []
        refusals: list[httpx.Response] = []
        site: dict[str, int] = {}

        def generate() -> None:
            response = httpx.post(
                f"{up.url}/generate",
                # SmolLM2's end-of-text tokens banned: every generation runs its 64 tokens.
                json={"prompt": "Once upon a time", "max_tokens": 64, "logit_bias": {"0": -100, "2": -100}},
                timeout=START_DEADLINE_SECONDS,
            )
            statuses.append(response.status_code)
            if response.status_code == 503:
                refusals.append(response)

        clients = [threading.Thread(target=generate) for _ in range(30)]
        for client in clients:
            client.start()
        # While generations run and wait, the rest of the site is served.
        site["live"] = httpx.get(f"{up.url}/health/live", timeout=START_DEADLINE_SECONDS).status_code
        site["approved"] = httpx.get(f"{up.url}/api/v1/approved/", timeout=START_DEADLINE_SECONDS).status_code
        site["generations still out"] = 30 - len(statuses)
        for client in clients:
            client.join(START_DEADLINE_SECONDS)

        assert site.pop("generations still out") > 0
        assert site == {"live": 200, "approved": 200}
        assert len(statuses) == 30
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.count(200) >= 1
        # 2 running + 10 waiting would need 12 of the 8 threads; at most 6 are
        # held, and the rest are refused at once instead of waiting for a thread.
        assert statuses.count(503) >= 1
        for refused in refusals:
            assert int(refused.headers["Retry-After"]) >= 1
            assert refused.json()["error"]["code"] == "queue_full"
        assert any("at most 6 generations at once" in r.json()["error"]["message"] for r in refusals)
    finally:
        up.kill()
