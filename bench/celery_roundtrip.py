"""Round trip of a trivial Celery task, `echo.delay(x).get()`, per broker.

    .venv/bin/python bench/celery_roundtrip.py [-n 500] [--redis-url redis://127.0.0.1:6379/14]

Measures, in one run, the latency a request pays to hand work to a worker and
get the answer back:

* embedded: the in-memory broker and result store with the worker in a thread
  of the same process, exactly as `manage.py up` runs it, at the transport
  polling interval the settings use and at 1 ms;
* redis: Redis broker + Redis result backend, worker in a thread of the same
  process, and worker in a separate process (how docker-compose runs it),
  with the platform's transport (conclave/brokers/redis.py) and with Kombu's
  stock one.

Each case runs in a fresh interpreter (settings are read once per process)
with its own data directory. Prints a markdown table; see bench/README.md.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
WARMUP = 20
IDLE_SECONDS = 3.0
QUEUE = "default"


def _django_setup() -> None:
    sys.path.insert(0, str(REPO_ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "conclave.settings")
    import django

    django.setup()


def _echo_task():
    from conclave.celery import app

    @app.task(name="bench.echo")
    def echo(value):
        return value

    return app, echo


def _worker(app):
    from conclave.management.commands.up import WorkerThread

    return WorkerThread(app, queues=[QUEUE], concurrency=2, hostname=f"bench-{os.getpid()}@localhost")


def _configure(app, conf: dict) -> None:
    """Apply a case's Celery settings before any connection or result backend exists."""
    for key, value in conf.items():
        app.conf[key] = value


def serve_worker() -> None:
    """Run a worker in this process until stdin closes (the separate-process case)."""
    _django_setup()
    app, _ = _echo_task()
    worker = _worker(app)
    worker.start()
    print("READY", flush=True)
    sys.stdin.read()
    worker.stop()


def measure(n: int, *, worker_here: bool, conf: dict, get_interval: float | None) -> dict:
    _django_setup()
    app, echo = _echo_task()
    _configure(app, conf)
    get_options = {"timeout": 10} if get_interval is None else {"timeout": 10, "interval": get_interval}
    worker = separate = None
    if worker_here:
        worker = _worker(app)
        worker.start()
    else:
        separate = subprocess.Popen(
            [sys.executable, __file__, "--serve-worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if separate.stdout.readline().strip() != "READY":
            raise SystemExit("the separate worker did not start")
    try:
        for i in range(WARMUP):
            warmup = echo.delay(i)
            warmup.get(**get_options)
            warmup.forget()
        samples = []
        for i in range(n):
            started = time.perf_counter()
            result = echo.apply_async(args=[i], queue=QUEUE)
            value = result.get(**get_options)
            samples.append(time.perf_counter() - started)
            assert value == i, (value, i)
            result.forget()
        idle_cpu = None
        if worker_here:
            cpu_before, wall_before = time.process_time(), time.perf_counter()
            time.sleep(IDLE_SECONDS)
            idle_cpu = (time.process_time() - cpu_before) / (time.perf_counter() - wall_before)
    finally:
        if worker is not None:
            worker.stop()
        if separate is not None:
            separate.stdin.close()
            separate.wait(30)
    samples.sort()
    return {
        "n": n,
        "p50_ms": statistics.median(samples) * 1000,
        "p90_ms": samples[int(0.90 * (n - 1))] * 1000,
        "p99_ms": samples[int(0.99 * (n - 1))] * 1000,
        "max_ms": samples[-1] * 1000,
        "idle_cpu": idle_cpu,
        "transport": type(app.connection_for_read().transport).__module__,
        "backend": type(app.backend).__qualname__,
    }


STOCK_MEMORY = {"broker_transport": "memory", "result_backend": "cache+memory://"}
WOKEN_MEMORY = {
    "broker_transport": "conclave.brokers.embedded:Transport",
    "result_backend": "conclave.brokers.embedded:ResultBackend+memory://",
    "broker_transport_options": {},
}

CASES = [
    # label, broker, worker in this process, Celery settings, AsyncResult.get() interval (None: Celery's 0.5 s)
    ("embedded, `conclave.brokers.embedded` (woken on arrival), plain `.get()`", "embedded", True, WOKEN_MEMORY, None),
    (
        "embedded, Kombu `memory://` polling 10 ms + `cache+memory://`, `.get(interval=0.001)`",
        "embedded",
        True,
        {**STOCK_MEMORY, "broker_transport_options": {"polling_interval": 0.01}},
        0.001,
    ),
    (
        "embedded, Kombu `memory://` polling 1 ms + `cache+memory://`, `.get(interval=0.001)`",
        "embedded",
        True,
        {**STOCK_MEMORY, "broker_transport_options": {"polling_interval": 0.001}},
        0.001,
    ),
    (
        "embedded, Kombu `memory://` polling 10 ms + `cache+memory://`, plain `.get()`",
        "embedded",
        True,
        {**STOCK_MEMORY, "broker_transport_options": {"polling_interval": 0.01}},
        None,
    ),
    ("Redis broker + result backend, worker thread in the same process", "redis", True, {}, None),
    ("Redis broker + result backend, worker in a separate process", "redis", False, {}, None),
    (
        "Redis, Kombu's stock transport (a Redis client built per message), worker in a separate process",
        "redis-stock",
        False,
        {},
        None,
    ),
]


def run_case(case, n: int, redis_url: str) -> dict:
    label, broker, worker_here, conf, get_interval = case
    env = {
        k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "DATABASE_URL")
    }
    env["DJANGO_SETTINGS_MODULE"] = "conclave.settings"
    env["LOG_LEVEL"] = "WARNING"
    env["CONCLAVE_DATA_DIR"] = tempfile.mkdtemp(prefix="conclave-bench-")
    if broker.startswith("redis"):
        env["CELERY_BROKER_URL"] = redis_url
    if broker == "redis-stock":
        env["CELERY_BROKER_TRANSPORT"] = "redis"
    # A polled result store with Celery's default 0.5 s interval: a few samples show it.
    slow = broker == "embedded" and get_interval is None and conf is not WOKEN_MEMORY
    count = min(n, 20) if slow else n
    spec = json.dumps({"worker_here": worker_here, "conf": conf, "get_interval": get_interval})
    args = [sys.executable, __file__, "--case", spec, "-n", str(count)]
    completed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    if completed.returncode != 0:
        raise SystemExit(f"case {label!r} failed:\n{completed.stderr}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    result["label"] = label
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="round trips per case (default 500)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--serve-worker", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()

    if options.serve_worker:
        serve_worker()
        return
    if options.case:
        print(json.dumps(measure(options.n, **json.loads(options.case))))
        return

    import celery
    import kombu

    print(
        f"Celery {celery.__version__}, Kombu {kombu.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; trivial echo task, threads pool (2); {options.n} round trips per case "
        f"after {WARMUP} warm-up; idle CPU = worker process CPU use over {IDLE_SECONDS:.0f} s with no tasks.\n"
    )
    print("| case | n | p50 ms | p90 ms | p99 ms | max ms | idle CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for case in CASES:
        r = run_case(case, options.n, options.redis_url)
        idle = f"{r['idle_cpu'] * 100:.1f} %" if r["idle_cpu"] is not None else "—"
        print(
            f"| {r['label']} | {r['n']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['max_ms']:.2f} | {idle} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
