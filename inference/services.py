"""Writes of the inference app: latency samples, benchmark runs and their metrics, knowledge, answers."""

import datetime as dt
import functools
import logging
import threading
from collections.abc import Callable

from aleph_cid import compute_cid
from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from conclave_node.benchmarks import evidence_document
from conclave_node.runtimes.embedding import EmbeddingRuntime, onnx_providers
from conclave_node.runtimes.generation import GenerationRuntime
from core.errors import DomainError, NotFound
from core.ipfs import PinError, pinning_backend
from inference import benchmarks
from inference.errors import ModelLoadRefused
from inference.models import (
    BenchmarkRun,
    BenchmarkStatus,
    LatencySample,
)
from inference.serving.model_loading import runtime_load
from registry.models import Manifest, ModelKind
from registry.services import manifest_metrics_record

logger = logging.getLogger(__name__)

# --- Latency samples ------------------------------------------------------------------------

_SAMPLE_FIELDS = (
    "model",
    "endpoint",
    "status",
    "outcome",
    "queue_ms",
    "inference_ms",
    "cpu_ms",
    "e2e_ms",
    "time_to_first_token_ms",
    "prompt_tokens",
    "completion_tokens",
    "batch_size",
    "worker",
)


def latency_samples_flush(*, limit: int = 10_000) -> int:
    """Write the buffered latency samples to the database in one bulk insert; returns how many."""
    from inference.serving.shared_state import coordination

    samples = coordination().samples_take(limit)
    if not samples:
        return 0
    manifest_ids = {s["manifest_id"] for s in samples if s.get("manifest_id")}
    existing = set(Manifest.objects.filter(pk__in=manifest_ids).values_list("pk", flat=True)) if manifest_ids else set()
    rows = []
    for sample in samples:
        values = {name: sample.get(name) for name in _SAMPLE_FIELDS}
        values["model"] = (values["model"] or "")[:200]
        values["worker"] = (values["worker"] or "")[:200]
        values["prompt_tokens"] = values["prompt_tokens"] or 0
        values["completion_tokens"] = values["completion_tokens"] or 0
        rows.append(
            LatencySample(
                created_at=dt.datetime.fromisoformat(sample["created_at"]),
                manifest_id=sample.get("manifest_id") if sample.get("manifest_id") in existing else None,
                **values,
            )
        )
    LatencySample.objects.bulk_create(rows, batch_size=500)
    return len(rows)


# --- Benchmarks -------------------------------------------------------------------------------


def benchmark_request(*, manifest: Manifest, actor=None, run_task: bool = True) -> BenchmarkRun:
    """Record a queued benchmark of `manifest` and enqueue it on the `benchmark` queue after commit."""
    with transaction.atomic():
        run = BenchmarkRun(
            manifest=manifest, requested_by=actor if getattr(actor, "pk", None) else None, stage="queued"
        )
        run.full_clean()
        run.save()
        if run_task:
            transaction.on_commit(lambda: _benchmark_enqueue(run.pk))
    return run


def benchmark_ensure(*, manifest: Manifest, actor=None) -> BenchmarkRun | None:
    """Queue a benchmark of `manifest` unless it has one already (finished, queued or running).

    Called when a model-adoption proposal is created, so voters see the
    candidate's numbers beside the approved model's without anyone asking.
    """
    with transaction.atomic():
        Manifest.objects.select_for_update().filter(pk=manifest.pk).first()
        if BenchmarkRun.objects.filter(
            manifest=manifest,
            status__in=[BenchmarkStatus.QUEUED, BenchmarkStatus.RUNNING, BenchmarkStatus.SUCCEEDED],
        ).exists():
            return None
        return benchmark_request(manifest=manifest, actor=actor)


def _benchmark_enqueue(run_id: int) -> None:
    from inference.tasks import benchmark_manifest

    benchmark_manifest.delay(run_id)


def _benchmark_parameters() -> dict:
    return {
        "threads": settings.INFERENCE_THREADS,
        "n_ctx": settings.INFERENCE_N_CTX,
        "n_gpu_layers": settings.INFERENCE_N_GPU_LAYERS,
        "onnx_providers": onnx_providers(settings.INFERENCE_ONNX_PROVIDERS or None),
        "embed_max_tokens": settings.INFERENCE_EMBED_MAX_TOKENS,
        "repeats": settings.INFERENCE_BENCHMARK_REPEATS,
        "generation_tokens": settings.INFERENCE_BENCHMARK_GENERATION_TOKENS,
        "evalset_max_items": settings.INFERENCE_BENCHMARK_MAX_ITEMS,
    }


class _ProgressWriter:
    """Writes progress to the run row at most every few percent, and tells the caller."""

    def __init__(self, run: BenchmarkRun, callback: Callable[[float, str], None] | None):
        self.run = run
        self.callback = callback
        self.written = (-1.0, "")

    def __call__(self, fraction: float, stage: str) -> None:
        fraction = min(1.0, max(0.0, fraction))
        if self.callback is not None:
            self.callback(fraction, stage)
        if stage != self.written[1] or fraction - self.written[0] >= 0.05:
            BenchmarkRun.objects.filter(pk=self.run.pk, status=BenchmarkStatus.RUNNING).update(
                progress=fraction, stage=stage[:200], heartbeat_at=timezone.now()
            )
            self.written = (fraction, stage)


class _RunHeartbeat:
    """Stamps a running benchmark's `heartbeat_at` every `interval` seconds, from a thread of its own.

    A model load or one long generation can keep the progress still for a
    while; the heartbeat says the worker is alive all the same. When the
    worker dies the stamps stop, and `benchmark_runs_stalled_fail` fails the
    run.
    """

    def __init__(self, run_id: int, interval: float):
        self.run_id = run_id
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"benchmark-{run_id}-heartbeat", daemon=True)

    def __enter__(self) -> "_RunHeartbeat":
        # Inside the caller's transaction the run is invisible to the sweep,
        # and a second connection's update would wait on the caller's lock.
        if self.interval > 0 and not connection.in_atomic_block:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval + 10)

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    BenchmarkRun.objects.filter(pk=self.run_id, status=BenchmarkStatus.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except Exception:  # noqa: BLE001 - a missed beat must not end the benchmark
                    logger.warning("could not stamp the heartbeat of benchmark %s", self.run_id, exc_info=True)
        finally:
            connection.close()


def benchmark_execute(
    *, benchmark_run_id: int, worker: str = "", progress: Callable[[float, str], None] | None = None
) -> BenchmarkRun:
    """Run a queued benchmark: load the model (candidates too), measure, record, copy into metrics."""
    from governance.selectors import runtime_parameter
    from inference.serving.model_cache import model_cache

    run = BenchmarkRun.objects.select_related("manifest").filter(pk=benchmark_run_id).first()
    if run is None:
        raise NotFound(f"Benchmark run {benchmark_run_id} does not exist.")
    manifest = run.manifest
    run.status = BenchmarkStatus.RUNNING
    run.started_at = timezone.now()
    run.worker = worker[:200]
    run.hardware = benchmarks.hardware_info()
    run.library_versions = benchmarks.library_versions()
    run.parameters = _benchmark_parameters()
    run.stage = "loading the model"
    run.heartbeat_at = run.started_at
    # The claim: only a queued run starts, once. A message sent again by the
    # sweep (its first one thought lost) finds the run taken and does nothing.
    claimed = BenchmarkRun.objects.filter(pk=run.pk, status=BenchmarkStatus.QUEUED).update(
        status=run.status,
        started_at=run.started_at,
        worker=run.worker,
        hardware=run.hardware,
        library_versions=run.library_versions,
        parameters=run.parameters,
        stage=run.stage,
        heartbeat_at=run.heartbeat_at,
    )
    if not claimed:
        return BenchmarkRun.objects.select_related("manifest").get(pk=run.pk)
    report = _ProgressWriter(run, progress)
    report(0.0, "loading the model")
    runtime = None
    try:
        with _RunHeartbeat(run.pk, settings.INFERENCE_BENCHMARK_HEARTBEAT_SECONDS), benchmarks.RssSampler() as rss:
            used = sum(m.memory_bytes for m in model_cache().models.values())
            loaded = runtime_load(manifest, used_bytes=used, limit_mb=runtime_parameter("memory_limit_mb"))
            runtime = loaded.runtime
            report(0.05, "model loaded")
            evalset = benchmarks.evalset_for(runtime)
            if isinstance(runtime, EmbeddingRuntime):
                results = benchmarks.embedding_benchmark(
                    runtime,
                    repeats=settings.INFERENCE_BENCHMARK_REPEATS,
                    max_items=settings.INFERENCE_BENCHMARK_MAX_ITEMS,
                    progress=report,
                )
            else:
                results = benchmarks.generation_benchmark(
                    runtime,
                    max_tokens=settings.INFERENCE_BENCHMARK_GENERATION_TOKENS,
                    max_items=settings.INFERENCE_BENCHMARK_MAX_ITEMS,
                    progress=report,
                )
    except Exception as exc:  # noqa: BLE001 - a failed run records why instead of staying "running"
        if not isinstance(exc, ModelLoadRefused | DomainError):
            logger.exception("benchmark %s of %s failed", run.pk, manifest)
        BenchmarkRun.objects.filter(pk=run.pk, status=BenchmarkStatus.RUNNING).update(
            status=BenchmarkStatus.FAILED, error=str(exc)[:4000], finished_at=timezone.now(), stage="failed"
        )
        run.refresh_from_db()
        return run
    finally:
        if isinstance(runtime, GenerationRuntime):
            runtime.close()
    results["load_seconds"] = round(loaded.load_seconds, 3)
    results["memory_usage_mb"] = rss.peak_delta_mb
    results["memory_estimate_mb"] = round(loaded.memory_bytes / 2**20, 1)
    if manifest.kind == ModelKind.EMBEDDING:
        results["avg_tokens_per_sec"] = results["tokens_per_sec_batch_32"]
    finished_at = timezone.now()
    evidence_cid = _benchmark_evidence_pin(run, results=results, evalset=evalset, finished_at=finished_at)
    with transaction.atomic():
        finished = BenchmarkRun.objects.filter(pk=run.pk, status=BenchmarkStatus.RUNNING).update(
            status=BenchmarkStatus.SUCCEEDED,
            results=results,
            progress=1.0,
            stage="done",
            finished_at=finished_at,
            evidence_cid=evidence_cid,
        )
        run.refresh_from_db()
        if not finished:
            # Failed meanwhile by the stalled-run sweep: its verdict stands.
            return run
        metrics = {
            **results,
            "benchmark_run_id": run.pk,
            "benchmarked_at": run.finished_at.isoformat().replace("+00:00", "Z"),
            "hardware": f"{run.hardware.get('processor')} ({run.hardware.get('cpus')} CPUs)",
            # Every finished run's evidence, so the adoption that follows names what informed its vote.
            "evidence_cids": list(
                BenchmarkRun.objects.filter(manifest=manifest, status=BenchmarkStatus.SUCCEEDED)
                .exclude(evidence_cid="")
                .order_by("finished_at", "pk")
                .values_list("evidence_cid", flat=True)
            ),
        }
        manifest_metrics_record(manifest=manifest, metrics=metrics, actor=run.requested_by)
    report(1.0, "done")
    return run


def _timestamp(value: dt.datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _benchmark_evidence_pin(run: BenchmarkRun, *, results: dict, evalset, finished_at: dt.datetime) -> str:
    """Pin the run's evaluation set and its evidence document; return the evidence CID ("" if the store refused).

    Pinned before the transaction that records the CID, like audit
    checkpoints: a refused pin leaves no CID pointing at nothing, and the
    run still counts (a verifier then reports the adoption it informed as
    lacking evidence).
    """
    manifest = run.manifest
    evalset_bytes = evalset.read_bytes()
    evalset_cid = compute_cid(evalset_bytes)
    data = evidence_document(
        run_id=run.pk,
        manifest={
            "name": str(manifest),
            "model_name": manifest.model_name,
            "version": manifest.version,
            "kind": manifest.kind,
            "format": manifest.format,
            "sha256": manifest.sha256,
            "ipfs_cid": manifest.ipfs_cid,
            "manifest_cid": manifest.manifest_cid,
        },
        worker=run.worker,
        hardware=run.hardware,
        library_versions=run.library_versions,
        parameters=run.parameters,
        evaluation_set={
            "name": evalset.name,
            "cid": evalset_cid,
            "items": len(benchmarks.evalset_parse(evalset_bytes)),
        },
        results=results,
        started_at=_timestamp(run.started_at),
        finished_at=_timestamp(finished_at),
    )
    cid = compute_cid(data)
    backend = pinning_backend()
    try:
        backend.pin_bytes(evalset_bytes, cid=evalset_cid)
        backend.pin_bytes(data, cid=cid)
    except PinError as exc:
        logger.warning("benchmark %s: its evidence could not be pinned, none recorded: %s", run.pk, exc)
        return ""
    return cid


def benchmark_runs_stalled_fail(*, stale_seconds: float | None = None) -> list[int]:
    """Fail running benchmarks whose heartbeat stopped, resend queued ones nobody took; returns the failed ids.

    A worker that dies mid-benchmark (killed, out of memory, its machine
    gone) leaves its run `running`, and `benchmark_ensure` would never queue
    another one for that model. Its message is not redelivered: the task is
    acknowledged on receipt (see inference.tasks.benchmark_manifest). A run
    whose last heartbeat is older than `stale_seconds`
    (INFERENCE_BENCHMARK_STALE_SECONDS) is failed with the reason, and a new
    run of the model may then be queued.

    A queued run's message can be lost too (the broker restarted without
    persisting it, or was down when the run was recorded). A run queued for
    longer than INFERENCE_BENCHMARK_RESEND_SECONDS since its message was last
    sent (`heartbeat_at` of a queued run) is sent again; a duplicate is
    harmless, since only a queued run can be claimed. One queued for longer
    than INFERENCE_BENCHMARK_QUEUED_MAX_SECONDS is failed: no worker of the
    benchmark queue took it.
    """
    stale = settings.INFERENCE_BENCHMARK_STALE_SECONDS if stale_seconds is None else stale_seconds
    now = timezone.now()
    cutoff = now - dt.timedelta(seconds=stale)
    failed = []
    resend = []
    with transaction.atomic():
        stalled = (
            BenchmarkRun.objects.select_for_update(skip_locked=True)
            .annotate(last_beat=Coalesce("heartbeat_at", "started_at", "created_at"))
            .filter(status=BenchmarkStatus.RUNNING, last_beat__lt=cutoff)
        )
        for run in stalled:
            silent = (now - run.last_beat).total_seconds()
            run.status = BenchmarkStatus.FAILED
            run.stage = "failed"
            run.finished_at = now
            run.error = (
                f"The worker running this benchmark ({run.worker or 'unknown'}) stopped sending heartbeats "
                f"{silent:.0f} s ago (INFERENCE_BENCHMARK_STALE_SECONDS={stale:g}): it stopped or died. "
                "Queue a new run."
            )
            run.save(update_fields=["status", "stage", "finished_at", "error"])
            failed.append(run.pk)
        queued_max = settings.INFERENCE_BENCHMARK_QUEUED_MAX_SECONDS
        abandoned = BenchmarkRun.objects.select_for_update(skip_locked=True).filter(
            status=BenchmarkStatus.QUEUED, created_at__lt=now - dt.timedelta(seconds=queued_max)
        )
        for run in abandoned:
            run.status = BenchmarkStatus.FAILED
            run.stage = "failed"
            run.finished_at = now
            run.error = (
                f"No worker of the benchmark queue took this run in {queued_max:g} s "
                "(INFERENCE_BENCHMARK_QUEUED_MAX_SECONDS): start one (`celery worker -Q benchmark`) "
                "and queue a new run."
            )
            run.save(update_fields=["status", "stage", "finished_at", "error"])
            failed.append(run.pk)
        unsent_since = now - dt.timedelta(seconds=settings.INFERENCE_BENCHMARK_RESEND_SECONDS)
        waiting = (
            BenchmarkRun.objects.select_for_update(skip_locked=True)
            .annotate(last_sent=Coalesce("heartbeat_at", "created_at"))
            .filter(status=BenchmarkStatus.QUEUED, last_sent__lt=unsent_since)
        )
        for run in waiting:
            run.heartbeat_at = now
            run.save(update_fields=["heartbeat_at"])
            resend.append(run.pk)
            transaction.on_commit(functools.partial(_benchmark_enqueue, run.pk))
    if failed:
        logger.warning("failed %d benchmark runs whose worker stopped or never came: %s", len(failed), failed)
    if resend:
        logger.warning("sent again the messages of %d queued benchmark runs: %s", len(resend), resend)
    return failed
