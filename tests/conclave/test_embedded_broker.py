"""The embedded broker carries tasks and results between threads of one process.

A separate Celery app on `conclave.brokers.embedded` runs a real worker thread
(the same WorkerThread `manage.py up` uses), whatever broker the suite itself
runs on.
"""

import threading
import uuid

import pytest
from celery import Celery
from celery import _state as celery_state
from celery.exceptions import TimeoutError as CeleryTimeoutError

from conclave.brokers.embedded import _Arrivals
from conclave.management.commands.up import WorkerThread


@pytest.fixture(scope="module")
def embedded_app():
    queue = f"test-embedded-{uuid.uuid4().hex}"
    app = Celery(
        "embedded-test",
        broker="memory://localhost/",
        backend="conclave.brokers.embedded:ResultBackend+memory://",
        set_as_current=False,
    )
    app.conf.broker_transport = "conclave.brokers.embedded:Transport"
    app.conf.task_default_queue = queue

    @app.task(name="tests.embedded.echo", shared=False)
    def echo(value):
        return value

    @app.task(name="tests.embedded.fail", shared=False)
    def fail(message):
        raise ValueError(message)

    app.finalize()
    # The threads pool runs each task on the process's default app (in
    # `manage.py up` that is conclave's); make it this one while these run.
    previous_default = celery_state.default_app
    app.set_default()
    yield app, queue
    celery_state.set_default_app(previous_default)


@pytest.fixture(scope="module")
def worker(embedded_app):
    app, queue = embedded_app
    thread = WorkerThread(app, queues=[queue], concurrency=2, hostname=f"test-{uuid.uuid4().hex[:8]}@localhost")
    thread.start()
    yield thread
    assert thread.stop(), "the worker thread did not stop"


def test_a_task_makes_the_round_trip_through_the_worker_thread(embedded_app, worker):
    app, _ = embedded_app

    results = [app.tasks["tests.embedded.echo"].delay(i) for i in range(20)]

    assert [r.get(timeout=10) for r in results] == list(range(20))


def test_a_failing_task_raises_its_error_in_the_caller(embedded_app, worker):
    app, _ = embedded_app

    result = app.tasks["tests.embedded.fail"].delay("bad input")

    with pytest.raises(ValueError, match="bad input"):
        result.get(timeout=10)


def test_the_worker_uses_the_woken_transport(embedded_app, worker):
    app, _ = embedded_app

    assert type(worker.controller.consumer.connection.transport).__module__ == "conclave.brokers.embedded"
    assert type(app.backend).__module__ == "conclave.brokers.embedded"


def test_get_times_out_when_no_worker_consumes_the_queue(embedded_app, worker):
    app, _ = embedded_app

    result = app.tasks["tests.embedded.echo"].apply_async(args=["lost"], queue=f"nobody-{uuid.uuid4().hex}")

    with pytest.raises(CeleryTimeoutError):
        result.get(timeout=0.2)


def test_an_arrival_between_check_and_wait_is_not_missed():
    arrivals = _Arrivals()
    seen = arrivals.count()
    arrivals.mark()  # lands after the check, before the wait

    woke = threading.Event()

    def waiter():
        arrivals.wait_after(seen, timeout=60)
        woke.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    thread.join(30)

    assert woke.is_set()
