"""The models a worker process keeps warm: the approved set, and nothing else.

The cache compares the approved set's head (version, CID: one indexed query)
with the one it was built from whenever a request names a manifest it has
not loaded, and every few seconds in the worker's background sync. When an
adoption or a retirement has been executed the head differs, and the cache
loads the newly approved manifests and drops the retired ones: a hot swap,
with no restart. The web process resolves each request against the database,
so a retired model stops being asked for at once. A manifest that is not approved is never served from here
(benchmarks load candidates on their own, see inference.benchmarks).
"""

import logging
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import close_old_connections, connection

from conclave_node.runtimes.embedding import EmbeddingRuntime
from conclave_node.runtimes.generation import GenerationRuntime
from inference.errors import ModelLoadRefused, ModelNotFound, ModelUnavailable
from inference.serving.batching import EmbeddingBatcher
from inference.serving.model_loading import runtime_load
from registry.models import Manifest

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    manifest_id: int
    name: str
    version: str
    kind: str
    sha256: str
    runtime: EmbeddingRuntime | GenerationRuntime
    memory_bytes: int
    load_seconds: float
    adoption_date: float = 0.0
    batcher: EmbeddingBatcher | None = None
    loaded_at: float = field(default_factory=time.time)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def describe(self) -> dict:
        return {
            "id": self.manifest_id,
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "sha256": self.sha256,
            "memory_mb": round(self.memory_bytes / 2**20, 1),
            "load_seconds": round(self.load_seconds, 3),
        }


class ModelCache:
    def __init__(self):
        self.models: dict[int, LoadedModel] = {}
        self.errors: dict[int, str] = {}
        self.head: tuple[int, str] | None = None
        self.loading = False
        self.started_at = time.time()
        self._sync_lock = threading.Lock()

    # --- keeping current -------------------------------------------------------------
    def ensure_current(self) -> None:
        from registry.selectors import approved_set_current_head

        if approved_set_current_head() != self.head:
            self.sync()

    def sync(self) -> bool:
        """Load what the approved set names and drop what it no longer names; True if anything changed."""
        from governance.selectors import runtime_parameter
        from registry.selectors import approved_manifests, approved_set_current_head

        with self._sync_lock:
            head = approved_set_current_head()
            if head == self.head:
                return False
            self.loading = True
            try:
                wanted = {m.pk: m for m in approved_manifests()}
                stale = [
                    pk for pk, model in self.models.items() if pk not in wanted or model.sha256 != wanted[pk].sha256
                ]
                for manifest_id in stale:
                    self._rekey_or_unload(manifest_id, wanted)
                self.errors = {pk: error for pk, error in self.errors.items() if pk in wanted}
                limit_mb = runtime_parameter("memory_limit_mb")
                for manifest in wanted.values():
                    if manifest.pk in self.models:
                        continue
                    try:
                        self.models[manifest.pk] = self._load(manifest, limit_mb=limit_mb)
                        self.errors.pop(manifest.pk, None)
                    except ModelLoadRefused as exc:
                        logger.error("not serving %s: %s", manifest, exc)
                        self.errors[manifest.pk] = str(exc)
                self.head = head
            finally:
                self.loading = False
            return True

    def _load(self, manifest: Manifest, *, limit_mb: int) -> LoadedModel:
        used = sum(model.memory_bytes for model in self.models.values())
        loaded = runtime_load(manifest, used_bytes=used, limit_mb=limit_mb)
        model = LoadedModel(
            manifest_id=manifest.pk,
            name=manifest.model_name,
            version=manifest.version,
            kind=manifest.kind,
            sha256=manifest.sha256,
            runtime=loaded.runtime,
            memory_bytes=loaded.memory_bytes,
            load_seconds=loaded.load_seconds,
            adoption_date=manifest.adoption_date.timestamp() if manifest.adoption_date else 0.0,
        )
        if isinstance(loaded.runtime, EmbeddingRuntime):
            model.batcher = EmbeddingBatcher(
                loaded.runtime,
                max_batch=settings.INFERENCE_EMBED_BATCH_SIZE,
                wait_ms=settings.INFERENCE_EMBED_BATCH_WAIT_MS,
                name=model.label,
            )
        logger.info("loaded %s (%s) in %.2f s", model.label, model.kind, model.load_seconds)
        return model

    def _rekey_or_unload(self, manifest_id: int, wanted: dict[int, Manifest]) -> None:
        """Keep a loaded runtime whose exact bytes (sha256) another approved manifest names; else unload it."""
        model = self.models[manifest_id]
        for manifest in wanted.values():
            if manifest.sha256 == model.sha256 and manifest.kind == model.kind and manifest.pk not in self.models:
                del self.models[manifest_id]
                model.manifest_id, model.name, model.version = manifest.pk, manifest.model_name, manifest.version
                model.adoption_date = manifest.adoption_date.timestamp() if manifest.adoption_date else 0.0
                self.models[manifest.pk] = model
                return
        self._unload(manifest_id)

    def _unload(self, manifest_id: int) -> None:
        model = self.models.pop(manifest_id)
        if model.batcher is not None:
            model.batcher.stop()
        if isinstance(model.runtime, GenerationRuntime):
            model.runtime.close()
        logger.info("unloaded %s", model.label)

    def clear(self) -> None:
        with self._sync_lock:
            for manifest_id in list(self.models):
                self._unload(manifest_id)
            self.errors = {}
            self.head = None

    # --- lookups -----------------------------------------------------------------------
    def get(self, *, kind: str, manifest_id: int | None = None) -> LoadedModel:
        """A loaded, currently approved model of `kind` (the newest adopted one by default).

        A request names the manifest the web process found approved a moment
        ago. When it is loaded here, it is served without another query (a
        serving task then never opens a database connection); when it is not,
        the approved set has changed: sync first.
        """
        if manifest_id is not None:
            model = self.models.get(manifest_id)
            if model is not None and model.kind == kind and self.head is not None:
                return model
        self.ensure_current()
        if manifest_id is not None:
            model = self.models.get(manifest_id)
            if model is not None and model.kind == kind:
                return model
            if manifest_id in self.errors:
                raise ModelUnavailable(self.errors[manifest_id])
            raise ModelNotFound(f"Model {manifest_id} is not an approved {kind} model (it may have just been retired).")
        candidates = [m for m in self.models.values() if m.kind == kind]
        if not candidates:
            if self.errors:
                raise ModelUnavailable("; ".join(self.errors.values()))
            raise ModelNotFound(f"No approved {kind} model is loaded.")
        return max(candidates, key=lambda m: (m.adoption_date, m.manifest_id))

    def status(self) -> dict:
        return {
            "loading": self.loading,
            "approved_set_version": self.head[0] if self.head else None,
            "models": [model.describe() for model in self.models.values()],
            "errors": dict(self.errors),
            "started_at": self.started_at,
        }


_cache = ModelCache()


def model_cache() -> ModelCache:
    return _cache


class ModelSync:
    """A worker's background loop: follow the approved set and report status for /health."""

    def __init__(self, *, hostname: str, interval: float, alive=None):
        self.hostname = hostname
        self.interval = interval
        self.alive = alive or (lambda: True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference-model-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        from inference.serving.shared_state import coordination
        from registry.selectors import approved_set_current_head

        cache = model_cache()
        # The worker's heartbeat extends the status while the process lives
        # (a long model load included); a dead worker's status expires with it.
        ttl = settings.INFERENCE_WORKER_LOST_SECONDS
        while not self._stop.is_set() and self.alive():
            try:
                if approved_set_current_head() != cache.head:
                    coordination().status_publish(self.hostname, {**worker_status(cache), "loading": True}, ttl=ttl)
                    cache.ensure_current()
                coordination().status_publish(self.hostname, worker_status(cache), ttl=ttl)
            except Exception:  # noqa: BLE001 - a sync failure must not kill the loop
                logger.exception("model sync failed")
            finally:
                close_old_connections()
            self._stop.wait(self.interval)
        try:
            coordination().status_remove(self.hostname)
        except Exception:  # noqa: BLE001
            logger.warning("could not remove worker status for %s", self.hostname)
        connection.close()


def worker_status(cache: ModelCache) -> dict:
    from conclave_node.runtimes.embedding import onnx_providers
    from conclave_node.runtimes.generation import gpu_offload_supported
    from conclave_node.runtimes.memory import process_rss_mb

    status = cache.status()
    status["memory_mb"] = round(process_rss_mb(), 1)
    status["backend"] = {
        "embedding": f"onnxruntime ({', '.join(onnx_providers(settings.INFERENCE_ONNX_PROVIDERS or None))})",
        "generation": "llama.cpp (" + ("GPU offload" if gpu_offload_supported() else "CPU") + ")",
    }
    status["reported_at"] = time.time()
    return status
