"""Writes of the inference app: latency samples, benchmark runs and their metrics, knowledge, answers."""

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import rfc8785
from aleph_cid import compute_cid
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from conclave.errors import DomainError, NotFound, ValidationFailed
from inference import benchmarks, dispatch
from inference.errors import ModelLoadRefused
from inference.loading import runtime_load
from inference.metrics import answer_cache_observe
from inference.models import (
    AnswerCacheEntry,
    BenchmarkRun,
    BenchmarkStatus,
    KnowledgeDocument,
    LatencySample,
    vector_to_bytes,
)
from inference.runtimes.embedding import EmbeddingRuntime, onnx_providers
from inference.runtimes.generation import GenerationRuntime
from inference.selectors import answer_cache_lookup, knowledge_search, limits_current
from registry.models import Manifest, ModelKind, empty_metrics

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
    from inference.coordination import coordination

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


# --- Manifest metrics -----------------------------------------------------------------------


def manifest_metrics_update(*, manifest: Manifest, metrics: dict) -> Manifest:
    """Merge benchmark `metrics` into the manifest, refresh its document CID, pin the new document.

    Metrics are not identity fields: a benchmark may fill them in at any
    status. The manifest's canonical document (and so `manifest_cid`)
    includes them, so it is recomputed and pinned after the commit.
    """
    from registry.selectors import manifest_document

    with transaction.atomic():
        locked = Manifest.objects.select_for_update().get(pk=manifest.pk)
        locked.metrics = {**empty_metrics(), **(locked.metrics or {}), **metrics}
        locked.save(update_fields=["metrics", "updated_at"])
        document = rfc8785.dumps(manifest_document(locked))
        locked.manifest_cid = compute_cid(document)
        Manifest.objects.filter(pk=locked.pk).update(manifest_cid=locked.manifest_cid)
        transaction.on_commit(lambda: _manifest_document_pin(locked.pk))
    return locked


def _manifest_document_pin(manifest_id: int) -> None:
    from registry.ipfs import PinError
    from registry.services import manifest_pin

    try:
        manifest_pin(manifest=Manifest.objects.get(pk=manifest_id))
    except (PinError, Manifest.DoesNotExist) as exc:
        # The registry's retry beat pins failed manifests again.
        logger.warning("could not pin the updated document of manifest %s: %s", manifest_id, exc)


# --- Benchmarks -------------------------------------------------------------------------------


def benchmark_request(*, manifest: Manifest, actor=None, run_task: bool = True) -> BenchmarkRun:
    """Record a queued benchmark of `manifest` and enqueue it on the `benchmark` queue after commit."""
    with transaction.atomic():
        run = BenchmarkRun(manifest=manifest, requested_by=actor if getattr(actor, "pk", None) else None, stage="queued")
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
            BenchmarkRun.objects.filter(pk=self.run.pk).update(progress=fraction, stage=stage[:200])
            self.written = (fraction, stage)


def benchmark_execute(
    *, benchmark_run_id: int, worker: str = "", progress: Callable[[float, str], None] | None = None
) -> BenchmarkRun:
    """Run a queued benchmark: load the model (candidates too), measure, record, copy into metrics."""
    from governance.selectors import runtime_parameter
    from inference.model_cache import model_cache

    run = BenchmarkRun.objects.select_related("manifest").filter(pk=benchmark_run_id).first()
    if run is None:
        raise NotFound(f"Benchmark run {benchmark_run_id} does not exist.")
    if run.status in (BenchmarkStatus.SUCCEEDED, BenchmarkStatus.FAILED):
        return run
    manifest = run.manifest
    run.status = BenchmarkStatus.RUNNING
    run.started_at = timezone.now()
    run.worker = worker[:200]
    run.hardware = benchmarks.hardware_info()
    run.library_versions = benchmarks.library_versions()
    run.parameters = _benchmark_parameters()
    run.stage = "loading the model"
    run.save(update_fields=["status", "started_at", "worker", "hardware", "library_versions", "parameters", "stage"])
    report = _ProgressWriter(run, progress)
    report(0.0, "loading the model")
    runtime = None
    try:
        with benchmarks.RssSampler() as rss:
            used = sum(m.memory_bytes for m in model_cache().models.values())
            loaded = runtime_load(manifest, used_bytes=used, limit_mb=runtime_parameter("memory_limit_mb"))
            runtime = loaded.runtime
            report(0.05, "model loaded")
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
        BenchmarkRun.objects.filter(pk=run.pk).update(
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
    with transaction.atomic():
        BenchmarkRun.objects.filter(pk=run.pk).update(
            status=BenchmarkStatus.SUCCEEDED, results=results, progress=1.0, stage="done", finished_at=timezone.now()
        )
        run.refresh_from_db()
        metrics = {
            **results,
            "benchmark_run_id": run.pk,
            "benchmarked_at": run.finished_at.isoformat().replace("+00:00", "Z"),
            "hardware": f"{run.hardware.get('processor')} ({run.hardware.get('cpus')} CPUs)",
        }
        manifest_metrics_update(manifest=manifest, metrics=metrics)
    report(1.0, "done")
    return run


# --- Knowledge store --------------------------------------------------------------------------

KNOWLEDGE_EMBED_TIMEOUT_SECONDS = 5.0


def _embed_best_effort(text: str) -> tuple[bytes | None, str]:
    try:
        result = dispatch.embeddings_create(
            texts=[text], model=None, endpoint="knowledge", timeout=KNOWLEDGE_EMBED_TIMEOUT_SECONDS
        )
    except DomainError as exc:
        logger.info("knowledge document stored without an embedding: %s", exc)
        return None, ""
    return vector_to_bytes(result.vectors[0]), result.model


def _knowledge_text(document: KnowledgeDocument) -> str:
    return f"{document.title}\n{document.content}"


def knowledge_document_create(*, title: str, content: str, source: str = "", actor=None) -> KnowledgeDocument:
    """Store a document and, when an embedding model answers, its embedding (else keyword search only)."""
    document = KnowledgeDocument(
        title=title.strip(), content=content.strip(), source=source.strip(), created_by=actor if getattr(actor, "pk", None) else None
    )
    document.full_clean(exclude=["embedding", "embedding_model"])
    embedding, model = _embed_best_effort(_knowledge_text(document))
    document.embedding, document.embedding_model = embedding, model
    with transaction.atomic():
        document.save()
    return document


def knowledge_document_update(*, document: KnowledgeDocument, title: str, content: str, source: str) -> KnowledgeDocument:
    document.title, document.content, document.source = title.strip(), content.strip(), source.strip()
    document.full_clean(exclude=["embedding", "embedding_model", "created_by"])
    embedding, model = _embed_best_effort(_knowledge_text(document))
    document.embedding, document.embedding_model = embedding, model
    with transaction.atomic():
        document.save()
    return document


def knowledge_documents_embed_missing(*, limit: int = 200) -> int:
    """Embed documents stored while no embedding model answered; returns how many were embedded."""
    done = 0
    for document in KnowledgeDocument.objects.filter(embedding__isnull=True)[:limit]:
        embedding, model = _embed_best_effort(_knowledge_text(document))
        if embedding is None:
            break
        KnowledgeDocument.objects.filter(pk=document.pk).update(embedding=embedding, embedding_model=model)
        done += 1
    return done


# --- /api/v1/ask: the degradation tree -----------------------------------------------------------

ASK_SYSTEM_PROMPT = "You are a concise assistant. Answer in at most three sentences."


@dataclass
class AskAnswer:
    answer: str
    path: str  # cache | knowledge | generated | unavailable
    search: str = "none"  # hybrid | keyword | none
    similarity: float | None = None
    documents: list[dict] = field(default_factory=list)
    model: str = ""
    reason: str = ""
    steps: list[dict] = field(default_factory=list)
    latency_ms: float = 0.0


def ask_answer(*, query: str) -> AskAnswer:
    """Answer a query by the cheapest path that works, saying which one did.

    1. semantic cache: a past answered query whose embedding is close enough;
    2. knowledge store: hybrid keyword + embedding search, keyword search
       alone when the embedding model is down;
    3. generation under a deadline, then cached;
    4. an explicit "LLM unavailable" answer with the reason.
    """
    query = query.strip()
    if not query:
        raise ValidationFailed("Ask something.", fields={"query": ["Required."]})
    started = time.perf_counter()
    steps: list[dict] = []

    def finish(answer: AskAnswer) -> AskAnswer:
        answer.steps = steps
        answer.latency_ms = round((time.perf_counter() - started) * 1000, 2)
        return answer

    vector, embedding_model = None, ""
    try:
        embedded = dispatch.embeddings_create(
            texts=[query], model=None, endpoint="ask", timeout=settings.INFERENCE_ASK_TIMEOUT_SECONDS
        )
        vector, embedding_model = embedded.vectors[0], embedded.model
        steps.append({"step": "embed", "ok": True, "model": embedding_model})
    except DomainError as exc:
        steps.append({"step": "embed", "ok": False, "reason": exc.message})

    if vector is not None:
        lookup_started = time.perf_counter()
        cached = answer_cache_lookup(
            vector, embedding_model=embedding_model, threshold=settings.INFERENCE_ASK_CACHE_THRESHOLD
        )
        answer_cache_observe(hit=cached is not None)
        dispatch.answer_cache_sample_record(
            model=embedding_model, hit=cached is not None, lookup_ms=(time.perf_counter() - lookup_started) * 1000
        )
        if cached is not None:
            entry, similarity = cached
            AnswerCacheEntry.objects.filter(pk=entry.pk).update(hits=entry.hits + 1, last_hit_at=timezone.now())
            steps.append({"step": "cache", "ok": True, "similarity": round(similarity, 4)})
            return finish(AskAnswer(answer=entry.answer, path="cache", similarity=round(similarity, 4), model=entry.model))
        steps.append({"step": "cache", "ok": False})

    hits = knowledge_search(query, query_vector=vector, embedding_model=embedding_model or None)
    search = "hybrid" if vector is not None else "keyword"
    documents = [
        {"id": h.document.pk, "title": h.document.title, "source": h.document.source, "score": round(h.score, 4)}
        for h in hits
    ]
    if hits and hits[0].score >= settings.INFERENCE_ASK_KNOWLEDGE_THRESHOLD:
        best = hits[0]
        steps.append({"step": "knowledge", "ok": True, "search": search, "score": round(best.score, 4)})
        return finish(
            AskAnswer(answer=best.document.content, path="knowledge", search=search, similarity=round(best.score, 4), documents=documents)
        )
    steps.append({"step": "knowledge", "ok": False, "search": search, "best_score": round(hits[0].score, 4) if hits else None})

    messages = [{"role": "system", "content": ASK_SYSTEM_PROMPT}]
    context = "\n\n".join(f"{h.document.title}: {h.document.content[:600]}" for h in hits[:2])
    if context:
        messages[0]["content"] += f"\nThese notes may help:\n{context}"
    messages.append({"role": "user", "content": query})
    try:
        generated = dispatch.generation_run(
            dispatch.GenerationRequest(
                mode="chat",
                endpoint="ask",
                messages=messages,
                max_tokens=min(settings.INFERENCE_ASK_MAX_TOKENS, limits_current()["max_tokens_per_request"]),
                temperature=0.2,
                timeout=settings.INFERENCE_ASK_TIMEOUT_SECONDS,
            )
        )
    except DomainError as exc:
        steps.append({"step": "generate", "ok": False, "reason": exc.message})
        return finish(
            AskAnswer(
                answer=f"LLM unavailable: {exc.message}",
                path="unavailable",
                search=search,
                documents=documents,
                reason=exc.message,
            )
        )
    steps.append({"step": "generate", "ok": True, "model": generated.model, "finish_reason": generated.finish_reason})
    if vector is not None and generated.text.strip():
        AnswerCacheEntry.objects.create(
            query=query,
            query_embedding=vector_to_bytes(vector),
            embedding_model=embedding_model,
            answer=generated.text.strip(),
            model=generated.model,
        )
    return finish(
        AskAnswer(answer=generated.text.strip(), path="generated", search=search, documents=documents, model=generated.model)
    )
