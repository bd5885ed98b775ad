"""Run the whole product in one process: the web app, a Celery worker and beat.

The embedded default broker (``memory://``) exists only inside one process, so
the worker that serves inference and benchmark tasks has to live in the
process that enqueues them: this one. With CELERY_BROKER_URL pointing at Redis
the same command works unchanged, and ``--no-worker --no-beat`` leaves the
queues to separate ``celery -A conclave worker`` / ``beat`` processes.
"""

import logging
import os
import resource
import signal
import socket
import sys
import threading
import time
import uuid

from celery.beat import EmbeddedService
from celery.result import _set_task_join_will_block
from celery.worker import WorkController
from celery.worker import state as worker_state
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.core.wsgi import get_wsgi_application
from kombu import Exchange, Queue
from waitress import wasyncore

from conclave.celery import app as celery_app
from conclave.env import env_int
from core.web_server import REFUSALS_MAX, server_create
from inference.serving.web import web_thread_budget

logger = logging.getLogger("conclave.up")

WORKER_QUEUES = ("default", "inference", "benchmark")
WORKER_READY_TIMEOUT_SECONDS = 30.0
SELF_CHECK_TIMEOUT_SECONDS = 10.0
SHUTDOWN_GRACE_SECONDS = 5.0
SELF_CHECK_QUEUE_EXPIRES_SECONDS = 300.0
# File descriptors kept for everything but client connections (database,
# broker, model files, logs, the refused connections being answered).
FILES_RESERVED = 256
# Per-task INFO lines ("received", "succeeded in") would log twice per request.
_PER_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


class WorkerThread:
    """A Celery worker (WorkController, threads pool) running in a thread of this process."""

    def __init__(self, app, *, queues, concurrency: int | None, hostname: str, loglevel: str = "WARNING"):
        self.app = app
        self.hostname = hostname
        self.queues = list(queues)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="celery-worker", daemon=True)
        self.controller = WorkController(
            app=app,
            hostname=hostname,
            pool="threads",
            concurrency=concurrency,
            queues=self.queues,
            loglevel=loglevel,
            ready_callback=lambda consumer: self._ready.set(),
            # Mingle, gossip and heartbeats exist to coordinate a fleet of
            # worker processes; this one is alone in its process.
            without_mingle=True,
            without_gossip=True,
            without_heartbeat=True,
        )
        self.crashed: BaseException | None = None

    @property
    def concurrency(self) -> int:
        return self.controller.concurrency

    def _run(self) -> None:
        try:
            self.controller.start()
        except BaseException as exc:  # noqa: B036 - reported by start()/stop()
            self.crashed = exc
            logger.exception("Celery worker thread stopped with an error")

    def start(self, timeout: float = WORKER_READY_TIMEOUT_SECONDS) -> None:
        worker_state.should_stop = None
        worker_state.should_terminate = None
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise CommandError(
                    f"The Celery worker did not become ready within {timeout:.0f} s "
                    f"(broker {self.app.connection_for_read().as_uri()}): is the broker reachable?"
                )
        # A worker marks the whole process as "inside a task", which forbids
        # AsyncResult.get(); here the web threads beside it must be able to
        # wait on results, as celery.contrib.testing's embedded worker allows.
        _set_task_join_will_block(False)

    def stop(self, timeout: float = SHUTDOWN_GRACE_SECONDS) -> bool:
        """Warm shutdown (running tasks finish) within `timeout`, then cold; True when stopped."""
        if not self._thread.is_alive():
            return True
        worker_state.should_stop = 0
        self._thread.join(timeout)
        if self._thread.is_alive():
            worker_state.should_terminate = 0
            self._thread.join(2.0)
        stopped = not self._thread.is_alive()
        if stopped:
            worker_state.should_stop = None
            worker_state.should_terminate = None
        return stopped


@celery_app.task(name="conclave.up.self_check")
def self_check(token: str) -> str:
    return token


def worker_self_check(app, *, queue: str, timeout: float = SELF_CHECK_TIMEOUT_SECONDS) -> float:
    """Send one task through the broker to this process's worker and wait for its result.

    Returns the round trip in seconds. The queue is private to this process so
    that, on a shared Redis broker, no other worker can answer in its place.
    """
    token = uuid.uuid4().hex
    started = time.perf_counter()
    result = self_check.apply_async(args=[token], queue=queue)
    try:
        # A polled result store (stock cache+memory://) would otherwise add
        # its 0.5 s default interval to the trip this measures.
        answer = result.get(timeout=timeout, interval=0.001)
    except Exception as exc:
        raise CommandError(f"The Celery worker did not run a test task within {timeout:.0f} s: {exc!r}") from exc
    elapsed = time.perf_counter() - started
    result.forget()
    if answer != token:
        raise CommandError(f"The Celery worker answered the test task with {answer!r}, expected {token!r}")
    return elapsed


def self_check_queue_add(app, hostname: str) -> str:
    """Declare this process's private self-check queue; it expires once nobody consumes it."""
    name = f"conclave.up.self-check.{hostname}"
    app.amqp.queues.add(Queue(name, Exchange(name), routing_key=name, expires=SELF_CHECK_QUEUE_EXPIRES_SECONDS))
    return name


def self_check_queue_delete(app, name: str) -> None:
    """Remove the private self-check queue from a shared broker now (best effort)."""
    if app.conf.broker_url.startswith("memory://"):
        return
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
            # Kombu deletes the bindings a channel knows of: declare first.
            queue = app.amqp.queues[name].bind(connection.default_channel)
            queue.declare()
            queue.delete()
    except Exception as exc:  # noqa: BLE001 - the queue expires by itself anyway
        logger.warning("Could not delete queue %s: %r", name, exc)


def _broker_label(app) -> str:
    if app.conf.broker_url.startswith("memory://"):
        transport = app.conf.broker_transport or "memory"
        return f"in-process ({transport}): tasks run only in this process"
    return app.connection_for_read().as_uri()  # masks any password


class Command(BaseCommand):
    help = (
        "Run Conclave in one process: the web app and API under waitress, an embedded "
        "Celery worker and Celery beat. Applies migrations first. Ctrl-C or SIGTERM stops it."
    )
    requires_system_checks = []  # migrate runs the checks

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
        parser.add_argument(
            "--port", type=int, default=8000, help="Port to listen on (default 8000; 0 picks a free one)."
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=env_int("WEB_THREADS", 8),
            help="Web server threads (default 8, or WEB_THREADS).",
        )
        parser.add_argument(
            "--reserved-threads",
            type=int,
            default=env_int("WEB_RESERVED_THREADS", 2),
            help=(
                "Web threads generations may never take, kept for the rest of the site: at most THREADS less "
                "this many generations are held at once, running or waiting (default 2, or WEB_RESERVED_THREADS)."
            ),
        )
        parser.add_argument(
            "--connection-limit",
            type=int,
            default=env_int("WEB_CONNECTION_LIMIT", 1000),
            help=(
                "Open client connections; past it the idlest keep-alive connection is closed, or the new one "
                "answered 503 (default 1000, or WEB_CONNECTION_LIMIT)."
            ),
        )
        parser.add_argument(
            "--queue-limit",
            type=int,
            default=env_int("WEB_QUEUE_LIMIT", 100),
            help="Requests that may wait for a web thread; past it, 503 at once (default 100, or WEB_QUEUE_LIMIT).",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            # Running generations hold their worker thread for their whole
            # length, so two CPUs still need more threads than two, or two
            # generations would block every embedding request.
            default=env_int("CELERY_WORKER_CONCURRENCY", 8),
            help="Celery worker threads (default 8, or CELERY_WORKER_CONCURRENCY).",
        )
        parser.add_argument("--no-worker", action="store_true", help="Run no Celery worker in this process.")
        parser.add_argument("--no-beat", action="store_true", help="Run no Celery beat in this process.")

    def handle(self, *args, **options):
        if options["threads"] < 1:
            raise CommandError("--threads must be at least 1")
        if not 0 <= options["reserved_threads"] < options["threads"]:
            raise CommandError("--reserved-threads must be at least 0 and fewer than --threads")
        if options["connection_limit"] < 1 or options["queue_limit"] < 1:
            raise CommandError("--connection-limit and --queue-limit must be at least 1")
        connection_limit = self._files_allow(options["connection_limit"])
        if options["concurrency"] is not None and options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1")
        if options["verbosity"] < 2:
            for name in _PER_TASK_LOGGERS:
                logging.getLogger(name).setLevel(logging.WARNING)

        def interrupt(signum, frame):
            # Unwinds the main thread wherever it is (waitress's loop turns it
            # into a clean return); the finally block below stops the rest.
            raise KeyboardInterrupt

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, interrupt)

        socket_map: dict = {}
        server = worker = beat = None
        self_check_queue = None
        try:
            try:
                server = server_create(
                    get_wsgi_application(),
                    map=socket_map,
                    host=options["host"],
                    port=options["port"],
                    threads=options["threads"],
                    connection_limit=connection_limit,
                    queue_limit=options["queue_limit"],
                )
            except OSError as exc:
                raise CommandError(
                    f"Cannot listen on {options['host']}:{options['port']} ({exc.strerror or exc}); "
                    "choose another --port or stop what is using it"
                ) from exc
            # Listening first makes a taken port fail at once; connections
            # that arrive meanwhile wait in the backlog until the loop runs.
            call_command("migrate", interactive=False, verbosity=0)
            generations = web_thread_budget.configure(threads=options["threads"], reserved=options["reserved_threads"])
            lines = [
                f"  web     {options['threads']} threads; at most {generations} generations held at once "
                f"({options['reserved_threads']} threads kept for the rest of the site), "
                f"{connection_limit} connections, {options['queue_limit']} requests waiting for a thread"
            ]
            if not options["no_worker"]:
                hostname = f"up-{os.getpid()}@{socket.gethostname()}"
                self_check_queue = self_check_queue_add(celery_app, hostname)
                worker = WorkerThread(
                    celery_app,
                    queues=[*WORKER_QUEUES, self_check_queue],
                    concurrency=options["concurrency"],
                    hostname=hostname,
                )
                worker.start()
                trip = worker_self_check(celery_app, queue=self_check_queue)
                lines.append(
                    f"  worker  ready: {hostname}, queues {', '.join(WORKER_QUEUES)}, "
                    f"{worker.concurrency} threads; test task round trip {trip * 1000:.1f} ms"
                )
            else:
                lines.append("  worker  off (--no-worker): tasks wait for a `celery -A conclave worker`")
            if not options["no_beat"]:
                schedule_file = settings.DATA_DIR / "celerybeat-schedule"
                beat = EmbeddedService(celery_app, thread=True, schedule_filename=str(schedule_file))
                beat.start()
                lines.append(
                    f"  beat    ready: {len(celery_app.conf.beat_schedule)} periodic tasks, schedule in {schedule_file}"
                )
            else:
                lines.append("  beat    off (--no-beat)")
            lines.append(f"  broker  {_broker_label(celery_app)}")
            lines.append(f"  data    {settings.DATA_DIR}")
            self.stdout.write(f"Conclave is running at {self._url(server)}")
            for line in lines:
                self.stdout.write(line)
            self.stdout.write("Press Ctrl-C to stop.")
            sys.stdout.flush()
            server.run()
        except KeyboardInterrupt:
            pass
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, signal.SIG_IGN)
            clean = self._shut_down(server, socket_map, beat, worker, self_check_queue)
        if not clean:
            # A task still running after the grace period holds a pool thread
            # that interpreter shutdown would wait on forever.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    def _files_allow(self, connection_limit: int) -> int:
        """Raise the open-files limit to fit `connection_limit` connections, or lower the limit to fit."""
        needed = connection_limit + REFUSALS_MAX + FILES_RESERVED
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass
        if soft != resource.RLIM_INFINITY and soft < needed:
            allowed = max(1, soft - REFUSALS_MAX - FILES_RESERVED)
            logger.warning(
                "open-files limit %d fits %d connections, not --connection-limit %d: using %d",
                soft,
                allowed,
                connection_limit,
                allowed,
            )
            return allowed
        return connection_limit

    def _shut_down(self, server, socket_map, beat, worker, self_check_queue) -> bool:
        self.stdout.write("Stopping…")
        sys.stdout.flush()
        if server is not None:
            server.task_dispatcher.shutdown(timeout=SHUTDOWN_GRACE_SECONDS)
            wasyncore.close_all(socket_map)
        if beat is not None:
            beat.service.stop(wait=False)
            beat.join(SHUTDOWN_GRACE_SECONDS)
        clean = True
        if worker is not None:
            clean = worker.stop()
            if not clean:
                logger.warning(
                    "The Celery worker did not stop within %.0f s; leaving its tasks", SHUTDOWN_GRACE_SECONDS
                )
            self_check_queue_delete(celery_app, self_check_queue)
        self.stdout.write("Stopped.")
        sys.stdout.flush()
        return clean

    @staticmethod
    def _url(server) -> str:
        listen = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]
        host, port = listen[0]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/"
