"""Latency samples of served requests, benchmark runs, and the /ask knowledge store and answer cache."""

import numpy as np
from django.conf import settings
from django.db import models

# The "endpoint" of /ask's semantic-cache lookups in latency samples: one
# sample per lookup, outcome `hit` or `miss` (the dashboards' cache hit rate).
ANSWER_CACHE_ENDPOINT = "answer_cache"


class LatencySample(models.Model):
    """One served (or refused) request: what it cost and how it ended.

    Written in bulk from a buffer (see inference.services.latency_samples_flush),
    never on the request's own path; the dashboards roll these up.
    """

    created_at = models.DateTimeField(db_index=True)
    manifest = models.ForeignKey(
        "registry.Manifest", null=True, blank=True, on_delete=models.SET_NULL, related_name="latency_samples"
    )
    model = models.CharField(max_length=200, blank=True)
    endpoint = models.CharField(max_length=32)
    status = models.PositiveSmallIntegerField()
    # ok | eos_token | stop_sequence | max_tokens | timeout | cancelled | queue_full | limit | error | unavailable
    outcome = models.CharField(max_length=32)
    queue_ms = models.FloatField(null=True, blank=True)
    inference_ms = models.FloatField(null=True, blank=True)
    # CPU time the worker's model thread spent on this request (its share of a batch).
    cpu_ms = models.FloatField(null=True, blank=True)
    e2e_ms = models.FloatField()
    time_to_first_token_ms = models.FloatField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    batch_size = models.PositiveIntegerField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["model", "created_at"], name="latency_model_time")]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.model} {self.status} {self.e2e_ms:.1f} ms"


class BenchmarkStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class BenchmarkRun(models.Model):
    """One benchmark of one manifest on one worker, with everything needed to compare runs."""

    manifest = models.ForeignKey("registry.Manifest", on_delete=models.CASCADE, related_name="benchmark_runs")
    status = models.CharField(
        max_length=16, choices=BenchmarkStatus.choices, default=BenchmarkStatus.QUEUED, db_index=True
    )
    progress = models.FloatField(default=0.0)
    stage = models.CharField(max_length=200, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    worker = models.CharField(max_length=200, blank=True)
    hardware = models.JSONField(default=dict, blank=True)
    library_versions = models.JSONField(default=dict, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    results = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Stamped by the worker every INFERENCE_BENCHMARK_HEARTBEAT_SECONDS while
    # the run is running; a run whose heartbeat stopped is failed by a sweep.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The CID of the finished run's evidence document (conclave_node.benchmarks.evidence_document), pinned
    # with its evaluation set; empty while unfinished, or when the store refused the pin.
    evidence_cid = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(progress__gte=0.0) & models.Q(progress__lte=1.0), name="benchmark_progress_fraction"
            ),
        ]

    def __str__(self) -> str:
        return f"benchmark #{self.pk} of manifest {self.manifest_id} ({self.status})"


def vector_to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def vector_from_bytes(data: bytes | memoryview | None) -> np.ndarray | None:
    if not data:
        return None
    return np.frombuffer(bytes(data), dtype="<f4")


class KnowledgeDocument(models.Model):
    """A document kept in the platform that /api/v1/ask can answer from."""

    title = models.CharField(max_length=300)
    content = models.TextField()
    source = models.CharField(max_length=500, blank=True)
    # float32 little-endian, L2-normalized; empty until an embedding model was reachable.
    embedding = models.BinaryField(null=True, blank=True, editable=False)
    embedding_model = models.CharField(max_length=200, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return self.title


class AnswerCacheEntry(models.Model):
    """A generated answer to a past query, reused for queries whose embedding is close enough."""

    query = models.TextField()
    query_embedding = models.BinaryField()
    embedding_model = models.CharField(max_length=200, db_index=True)
    answer = models.TextField()
    model = models.CharField(max_length=200, blank=True)
    hits = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    last_hit_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "answer cache entries"

    def __str__(self) -> str:
        return self.query[:80]
