"""Reads of the inference app: which manifest serves a request, samples, benchmarks, knowledge."""

import re
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, IntegerField, Q, QuerySet, Value, When

from governance.models import PARAMETER_DEFINITIONS, GovernedParameter
from inference.errors import ModelNotFound
from inference.models import AnswerCacheEntry, BenchmarkRun, BenchmarkStatus, KnowledgeDocument, vector_from_bytes
from registry.models import ApprovedSet, Manifest, ManifestStatus, ModelKind

KIND_NOUN = {ModelKind.EMBEDDING: "embedding", ModelKind.GENERATIVE: "generative"}


class _CompiledRead:
    """A read on every request's path: the ORM compiles its SQL once, each call only executes it.

    Building a queryset's SQL costs more than running it on an indexed
    table; these reads run for every request, with the GIL held.
    """

    def __init__(self, build):
        self._build = build
        self._sql: tuple[str, tuple] | None = None

    def __call__(self) -> list[tuple]:
        if self._sql is None:
            self._sql = self._build().query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(*self._sql)
            return cursor.fetchall()


_head_read = _CompiledRead(lambda: ApprovedSet.objects.order_by("-version").values_list("version", "cid")[:1])
_limits_read = _CompiledRead(lambda: GovernedParameter.objects.values_list("name", "value"))


class _Fresh:
    """A value read from the database on the request path, reused for at most `seconds`.

    The approved set's head and the governed limits change a few times a
    month and are read on every request: two queries that cost more than
    the rest of the web side's work. A write in this process clears the
    value at once (`serving_reads_invalidate`, wired to the models'
    post_save/post_delete in `InferenceConfig.ready`); other processes see it
    within `seconds` (INFERENCE_SERVING_READS_CACHE_SECONDS; 0 reads every time).
    """

    def __init__(self, read):
        self._read = read
        self._value = None
        self._expires = 0.0
        self._clears = 0  # a read that a clear() overtook must not be kept

    def __call__(self):
        now = time.monotonic()
        if now >= self._expires:
            clears = self._clears
            value = self._read()
            if clears == self._clears:
                self._value, self._expires = value, now + settings.INFERENCE_SERVING_READS_CACHE_SECONDS
            return value
        return self._value

    def clear(self) -> None:
        self._clears += 1
        self._expires = 0.0


def _head_fetch() -> tuple[int, str] | None:
    rows = _head_read()
    return tuple(rows[0]) if rows else None


def _limits_fetch() -> dict[str, int]:
    values = {definition.name: definition.default for definition in PARAMETER_DEFINITIONS}
    values.update(_limits_read())
    return values


_head_fresh = _Fresh(_head_fetch)
_limits_fresh = _Fresh(_limits_fetch)


def serving_reads_clear() -> None:
    _head_fresh.clear()
    _limits_fresh.clear()
    _approved_at.cache_clear()


def serving_reads_invalidate(**_) -> None:
    """The approved set or a governed parameter changed: read them again (now, and after the commit)."""
    serving_reads_clear()
    transaction.on_commit(serving_reads_clear)


def approved_head() -> tuple[int, str] | None:
    """(version, CID) of the current approved set (as registry.selectors.approved_set_current_head)."""
    return _head_fresh()


def limits_current() -> dict[str, int]:
    """The governed limits now (as governance.selectors.runtime_parameters), read per request."""
    return dict(_limits_fresh())


@lru_cache(maxsize=4)
def _approved_at(version: int, cid: str) -> tuple[Manifest, ...]:
    queryset = Manifest.objects.filter(status=ManifestStatus.APPROVED).only(
        "id",
        "model_name",
        "version",
        "kind",
        "format",
        "sha256",
        "adoption_date",
        "created_at",
        "license",
        "manifest_cid",
    )
    return tuple(queryset.order_by("kind", "-adoption_date", "-id"))


def served_manifests(kind: str | None = None) -> list[Manifest]:
    """Approved manifests, newest adoption first within each kind.

    Every approval or retirement publishes a new approved set, so the list is
    cached per approved-set head: a request costs one indexed lookup of the
    head, not a query over manifests.
    """
    head = approved_head()
    if head is None:
        return []
    manifests = _approved_at(*head)
    return [m for m in manifests if m.kind == kind] if kind else list(manifests)


def model_label(manifest: Manifest) -> str:
    return f"{manifest.model_name}@{manifest.version}"


def serving_manifest(*, kind: str, requested: str | None) -> Manifest:
    """The approved manifest of `kind` a request names (`name` or `name@version`), or the default one.

    The default is the most recently adopted approved manifest of the kind.
    """
    manifests = served_manifests(kind)
    if requested:
        for manifest in manifests:
            if requested in (manifest.model_name, model_label(manifest)):
                return manifest
        other = [m for m in served_manifests() if requested in (m.model_name, model_label(m))]
        if other:
            raise ModelNotFound(
                f"{requested!r} is an approved {other[0].kind} model; this endpoint needs an {KIND_NOUN[kind]} model "
                f"({', '.join(model_label(m) for m in manifests) or 'none approved'})."
            )
        raise ModelNotFound(
            f"No approved {KIND_NOUN[kind]} model is called {requested!r}; approved: "
            f"{', '.join(model_label(m) for m in manifests) or 'none'}. Only models adopted by governance are served."
        )
    if not manifests:
        raise ModelNotFound(f"No {KIND_NOUN[kind]} model is approved yet.")
    return manifests[0]


def manifest_find(reference: str) -> Manifest:
    """A manifest by id or by `name@version` (any status: benchmarks take candidates)."""
    if reference.isdigit():
        manifest = Manifest.objects.filter(pk=int(reference)).first()
    elif "@" in reference:
        name, _, version = reference.rpartition("@")
        manifest = Manifest.objects.filter(model_name=name, version=version).first()
    else:
        manifest = Manifest.objects.filter(model_name=reference).order_by("-created_at").first()
    if manifest is None:
        raise ModelNotFound(f"No manifest {reference!r}; give its id or name@version.")
    return manifest


# --- Benchmarks -----------------------------------------------------------------------


def benchmark_runs(*, manifest_id: int | None = None) -> QuerySet[BenchmarkRun]:
    runs = BenchmarkRun.objects.select_related("manifest").order_by("-created_at", "-id")
    if manifest_id is not None:
        runs = runs.filter(manifest_id=manifest_id)
    return runs


def benchmark_latest(manifest: Manifest) -> BenchmarkRun | None:
    return (
        BenchmarkRun.objects.filter(manifest=manifest, status=BenchmarkStatus.SUCCEEDED)
        .order_by("-finished_at", "-id")
        .first()
    )


@dataclass(frozen=True)
class BenchmarkComparison:
    candidate: Manifest
    candidate_run: BenchmarkRun | None
    approved: Manifest | None
    approved_run: BenchmarkRun | None
    candidate_pending: BenchmarkRun | None = None
    approved_pending: BenchmarkRun | None = None

    @property
    def pending(self) -> bool:
        return self.candidate_pending is not None or self.approved_pending is not None

    @property
    def runs(self) -> tuple[BenchmarkRun | None, BenchmarkRun | None]:
        """The two runs shown, candidate first: those that inform a vote."""
        return self.candidate_run, self.approved_run


def _benchmark_pending(manifest: Manifest) -> BenchmarkRun | None:
    return (
        BenchmarkRun.objects.filter(manifest=manifest, status__in=[BenchmarkStatus.QUEUED, BenchmarkStatus.RUNNING])
        .order_by("-id")
        .first()
    )


def benchmark_comparison(manifest: Manifest) -> BenchmarkComparison:
    """A candidate's latest benchmark beside the approved model of its kind it would join or replace."""
    approved = (
        Manifest.objects.filter(status=ManifestStatus.APPROVED, kind=manifest.kind)
        .exclude(pk=manifest.pk)
        .order_by("-adoption_date", "-id")
        .first()
    )
    return BenchmarkComparison(
        candidate=manifest,
        candidate_run=benchmark_latest(manifest),
        approved=approved,
        approved_run=benchmark_latest(approved) if approved else None,
        candidate_pending=_benchmark_pending(manifest),
        approved_pending=_benchmark_pending(approved) if approved else None,
    )


# --- Knowledge store and answer cache ------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an and are as at be by can do does for from how i in is it its of on or that the this to was what when where "
    "which who why will with you your".split()
)


def query_terms(text: str, *, limit: int = 12) -> list[str]:
    terms: list[str] = []
    for word in _WORD.findall(text.lower()):
        if len(word) > 2 and word not in _STOPWORDS and word not in terms:
            terms.append(word)
    return terms[:limit]


@dataclass(frozen=True)
class KnowledgeHit:
    document: KnowledgeDocument
    score: float
    keyword_score: float
    vector_score: float | None


def knowledge_search(
    query: str, *, query_vector: np.ndarray | None, embedding_model: str | None, limit: int = 5
) -> list[KnowledgeHit]:
    """Hybrid search: keyword overlap (in the database) blended with embedding similarity.

    Without a query vector (the embedding model is down) the keyword score
    alone ranks the documents.
    """
    terms = query_terms(query)
    documents = KnowledgeDocument.objects.all()
    if terms:
        matches = sum(
            (
                Case(When(Q(title__icontains=t) | Q(content__icontains=t), then=Value(1)), default=Value(0))
                for t in terms
            ),
            Value(0),
        )
        documents = documents.annotate(term_matches=matches)
    else:
        documents = documents.annotate(term_matches=Value(0, output_field=IntegerField()))
    if query_vector is None:
        documents = documents.filter(term_matches__gt=0).order_by("-term_matches", "-updated_at")[:limit]
    hits = []
    for document in documents.iterator(chunk_size=500) if query_vector is not None else documents:
        keyword = document.term_matches / len(terms) if terms else 0.0
        vector_score = None
        if query_vector is not None and document.embedding_model == embedding_model:
            vector = vector_from_bytes(document.embedding)
            if vector is not None and vector.shape == query_vector.shape:
                vector_score = float(np.dot(vector, query_vector))
        score = keyword if vector_score is None else 0.6 * max(vector_score, 0.0) + 0.4 * keyword
        if score > 0:
            hits.append(KnowledgeHit(document=document, score=score, keyword_score=keyword, vector_score=vector_score))
    hits.sort(key=lambda hit: hit.score, reverse=True)
    return hits[:limit]


def answer_cache_lookup(
    query_vector: np.ndarray, *, embedding_model: str, threshold: float, window: int = 2000
) -> tuple[AnswerCacheEntry, float] | None:
    """The cached answer whose query is most similar to this one, if above `threshold`."""
    best: tuple[AnswerCacheEntry, float] | None = None
    entries = AnswerCacheEntry.objects.filter(embedding_model=embedding_model).order_by("-created_at")[:window]
    for entry in entries:
        vector = vector_from_bytes(entry.query_embedding)
        if vector is None or vector.shape != query_vector.shape:
            continue
        similarity = float(np.dot(vector, query_vector))
        if similarity >= threshold and (best is None or similarity > best[1]):
            best = (entry, similarity)
    return best


# --- Health ------------------------------------------------------------------------------------


# The roadmap's words for the fleet's state, in the order a problem outranks them.
HEALTHY, LOADING, DEGRADED, UNAVAILABLE = "healthy", "loading", "degraded", "unavailable"
# What the roadmap's single `backend` word says for each kind of model.
BACKEND_NAMES = {ModelKind.EMBEDDING: "onnxruntime", ModelKind.GENERATIVE: "llama.cpp"}


@dataclass(frozen=True)
class ServingHealth:
    ready: bool
    body: dict
    retry_after: int | None = None


def serving_health(*, process_started: float) -> ServingHealth:
    """Readiness of the serving fleet, from the status each worker reports.

    Ready (`healthy`) when at least one worker has every approved model
    loaded and none is loading; otherwise 503 with `status` `loading`,
    `degraded` (an approved model cannot be loaded: the reason is in
    `errors`) or `unavailable` (no worker reports, or the shared state
    cannot be reached; `reason` says which).

    The roadmap's fields come first: `status`, `model` and `backend` (the
    approved embedding model and its runtime, or the generative one where
    no embedding model is approved), `memory_mb`, `uptime_seconds`; the
    richer ones follow: every approved model, each runtime in `backends`,
    the workers and the load errors.
    """
    from inference.serving.shared_state import STATE_UNREACHABLE, coordination

    approved = {model_label(m): m for m in served_manifests()}
    primary = min(approved.values(), key=lambda m: (m.kind != ModelKind.EMBEDDING, m.pk), default=None)
    roadmap = {
        "model": primary.model_name if primary else None,
        "backend": BACKEND_NAMES.get(primary.kind) if primary else None,
    }
    try:
        statuses = coordination().statuses()
    except STATE_UNREACHABLE as exc:
        body = {
            "status": UNAVAILABLE,
            **roadmap,
            "memory_mb": 0.0,
            "uptime_seconds": round(time.time() - process_started, 1),
            "models": [
                {"name": m.model_name, "version": m.version, "kind": m.kind, "loaded": False} for m in approved.values()
            ],
            "backends": {},
            "workers": [],
            "errors": {"shared_state": f"The shared state (Redis) is unreachable: {type(exc).__name__}."},
            "reason": "shared_state_unreachable",
        }
        return ServingHealth(ready=False, body=body, retry_after=5)
    loaded: dict[str, dict] = {}
    errors: dict[str, str] = {}
    loading = False
    memory = 0.0
    backends = {}
    for worker, status in statuses.items():
        loading = loading or bool(status.get("loading"))
        memory += status.get("memory_mb") or 0.0
        backends = backends or status.get("backend") or {}
        for model in status.get("models", []):
            label = f"{model['name']}@{model['version']}"
            entry = loaded.setdefault(label, {**model, "workers": []})
            entry["workers"].append(worker)
        for manifest_id, error in (status.get("errors") or {}).items():
            errors[str(manifest_id)] = error
    missing = [label for label in approved if label not in loaded]
    if not statuses:
        state = UNAVAILABLE
    elif loading or (missing and not errors):
        state = LOADING
    elif missing:
        state = DEGRADED
    else:
        state = HEALTHY
    body = {
        "status": state,
        **roadmap,
        "memory_mb": round(memory, 1),
        "uptime_seconds": round(time.time() - process_started, 1),
        "models": [
            {"name": m.model_name, "version": m.version, "kind": m.kind, "loaded": model_label(m) in loaded}
            for m in approved.values()
        ],
        "backends": backends,
        "workers": sorted(statuses),
        "errors": errors,
    }
    if state == UNAVAILABLE:
        body["reason"] = "no_worker"
    return ServingHealth(ready=state == HEALTHY, body=body)
