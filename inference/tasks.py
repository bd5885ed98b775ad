"""Celery tasks: serving on the `inference` queue, benchmarks on `benchmark` (routes in settings).

Serving tasks carry the request itself (there is nothing in the database to
load) and answer through the request's reply channel, not the result
backend. They are acknowledged on receipt and expire at the request's
deadline: a request nobody waits for any more is never run late.
"""

import logging

from celery import shared_task, signals
from celery.bootsteps import CLOSE, TERMINATE
from django.conf import settings
from django.db import connection

from inference import services
from inference.serving import worker as serving_worker

logger = logging.getLogger(__name__)


@shared_task(name="inference.tasks.serve_embed", bind=True, ignore_result=True, acks_late=False)
def serve_embed(self, request_id: str, manifest_id: int, texts: list[str], enqueued_at: float, deadline: float) -> None:
    serving_worker.embedding_execute(
        request_id=request_id,
        manifest_id=manifest_id,
        texts=texts,
        enqueued_at=enqueued_at,
        deadline=deadline,
        worker=self.request.hostname or "",
    )


@shared_task(name="inference.tasks.serve_generate", bind=True, ignore_result=True, acks_late=False)
def serve_generate(self, request_id: str, spec: dict) -> None:
    serving_worker.generation_execute(request_id=request_id, spec=spec, worker=self.request.hostname or "")


@shared_task(name="inference.tasks.benchmark_manifest", bind=True, acks_late=False)
def benchmark_manifest(self, benchmark_run_id: int) -> int:
    """Run one queued benchmark.

    Acknowledged on receipt, not after the run (the suite's default): with
    Redis, a message a dead worker held is redelivered only after the
    transport's visibility timeout (an hour by default; shorter would hand a
    long benchmark to a second worker while the first still runs), and a
    benchmark that kills its worker (a model too big for its memory) would
    come back for ever. The run's heartbeat bounds it instead: beat's
    `stalled_benchmarks_fail` fails a run whose worker stopped beating, and a
    new run may then be queued.
    """
    run = services.benchmark_execute(benchmark_run_id=benchmark_run_id, worker=self.request.hostname or "")
    return run.pk


@shared_task(name="inference.tasks.stalled_benchmarks_fail")
def stalled_benchmarks_fail() -> list[int]:
    return services.benchmark_runs_stalled_fail()


@shared_task(name="inference.tasks.latency_samples_flush")
def latency_samples_flush() -> int:
    return services.latency_samples_flush()


@signals.task_postrun.connect
def _close_task_connection(sender=None, **kwargs):
    """Close the database connection a serving or benchmark task opened (rarely: a model swap).

    Worker threads keep their connections for CONN_MAX_AGE otherwise; a
    serving thread that needed one once would hold a PostgreSQL session idle.
    """
    if sender is not None and sender.name.startswith(("inference.tasks.serve_", "inference.tasks.benchmark_")):
        if connection.connection is not None:
            connection.close()


# --- The model sync loop of each worker process -------------------------------------------

_syncs: dict[int, object] = {}


def _consumes_inference(worker) -> bool:
    selected = worker.app.amqp.queues.consume_from
    names = set(selected) if selected else set(worker.app.amqp.queues)
    return "inference" in names


_heartbeats: dict[int, serving_worker.WorkerHeartbeat] = {}


@signals.worker_init.connect
def _model_sync_start(sender=None, **kwargs):
    from inference.serving.model_cache import ModelSync

    if sender is None or not _consumes_inference(sender):
        return
    heartbeat = serving_worker.WorkerHeartbeat(
        hostname=sender.hostname,
        interval=max(0.1, settings.INFERENCE_WORKER_HEARTBEAT_SECONDS),
        lost_after=settings.INFERENCE_WORKER_LOST_SECONDS,
    )
    _heartbeats[id(sender)] = heartbeat
    heartbeat.start()
    interval = settings.INFERENCE_WORKER_SYNC_SECONDS
    if interval <= 0:
        return
    sync = ModelSync(hostname=sender.hostname, interval=interval, alive=lambda: _worker_alive(sender))
    _syncs[id(sender)] = sync
    sync.start()


def _worker_alive(worker) -> bool:
    blueprint = getattr(worker, "blueprint", None)
    return blueprint is None or blueprint.state not in (CLOSE, TERMINATE)


def _model_sync_stop(worker) -> None:
    sync = _syncs.pop(id(worker), None)
    if sync is not None:
        sync.stop()
    heartbeat = _heartbeats.pop(id(worker), None)
    if heartbeat is not None:
        heartbeat.stop()


@signals.worker_shutdown.connect
def _on_worker_shutdown(sender=None, **kwargs):
    _model_sync_stop(sender)


def _on_test_worker_stopped(sender=None, worker=None, **kwargs):
    # celery.contrib.testing stops its worker cold, without worker_shutdown.
    if worker is not None:
        _model_sync_stop(worker)


try:
    from celery.contrib.testing.worker import test_worker_stopped

    test_worker_stopped.connect(_on_test_worker_stopped, weak=False)
except ImportError:  # pragma: no cover - celery always ships it
    pass
