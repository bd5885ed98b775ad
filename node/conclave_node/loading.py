"""From an installed set folder to running models: the signed document re-checked, the limits, the runtimes.

The set's `approved_set.json` is verified again against the node's trusted
root (its signatures, not its expiry) before anything in it is believed,
so the limits a node enforces are the signed ones. Each model's files were
checked (size, sha256, CID) when the set was installed; here their sizes
are checked again, the memory limit is applied to what loading would take
(the platform workers' estimate), and each model is loaded with the same
runtimes as the platform's workers and answers one probe.
"""

import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conclave_node.batching import EmbeddingQueue
from conclave_node.errors import ModelLoadFailed, NodeError
from conclave_node.install import SET_METADATA
from conclave_node.limits import Limits, limits_from
from conclave_node.metadata import Root, SignedManifest, SignedSet, load_json, verify_signed_set
from conclave_node.runtimes.gguf import GGUFError
from conclave_node.runtimes.memory import MB, model_memory_estimate_bytes

# llama-cpp-python imports diskcache, whose package __init__ tries its
# optional Django cache backend, which imports Django wherever Django is
# installed (a developer's or the platform's environment). A node has no use
# for it: block that one module so a serving process never loads Django.
sys.modules.setdefault("diskcache.djangocache", None)

EMBEDDING, GENERATIVE = "embedding", "generative"
PROBE_TEXT = "Conclave node probe."


@dataclass(frozen=True)
class RuntimeOptions:
    threads: int = 2
    n_ctx: int = 2048
    n_gpu_layers: int = 0
    embed_max_tokens: int = 256
    embed_batch: int = 32
    # Embedding calls side by side, each on max(1, threads // embed_lanes) threads (one session each);
    # with more than one lane, also a session on all `threads` for a batch that runs alone.
    embed_lanes: int = 1
    onnx_providers: tuple[str, ...] = ()


@dataclass
class ServedModel:
    name: str
    version: str
    kind: str
    format: str
    manifest: SignedManifest
    runtime: object
    memory_bytes: int
    load_seconds: float
    embedder: EmbeddingQueue | None = None

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def close(self) -> None:
        """Stop the embedding lanes' threads and free the runtime."""
        if self.embedder is not None:
            self.embedder.close()
        close = getattr(self.runtime, "close", None)
        if close is not None:
            close()


@dataclass
class ServedSet:
    """One installed set, loaded: its signed document, its limits and its running models."""

    path: Path
    signed: SignedSet
    limits: Limits
    models: list[ServedModel]
    loaded_at: float = field(default_factory=time.time)
    _users: int = 0
    _retired: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def approved_set_version(self) -> int:
        return self.signed.approved_set_version

    def find(self, *, kind: str, requested: str | None) -> ServedModel | None:
        """The model a request names (`name` or `name@version`), or the kind's default (newest adoption)."""
        of_kind = [m for m in self.models if m.kind == kind]
        if requested:
            return next((m for m in of_kind if requested in (m.name, m.label)), None)
        return of_kind[0] if of_kind else None

    def acquire(self) -> bool:
        with self._lock:
            if self._retired:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            close = self._retired and self._users == 0
        if close:
            self._close()

    def retire(self) -> None:
        """Close the models once the last request using them is done."""
        with self._lock:
            self._retired = True
            close = self._users == 0
        if close:
            self._close()

    def _close(self) -> None:
        for model in self.models:
            model.close()


def signed_set_read(path: Path, *, root: Root) -> SignedSet:
    """The installed set's signed document, its signatures verified with the trusted root."""
    try:
        data = (path / SET_METADATA).read_bytes()
    except OSError as exc:
        raise ModelLoadFailed(f"cannot read {path / SET_METADATA}: {exc.strerror}") from exc
    return verify_signed_set(load_json(data, what=str(path / SET_METADATA)), root=root, now=None)


def _files(path: Path, manifest: SignedManifest) -> dict[str, Path]:
    folder = path / manifest.model_name / manifest.version
    found = {}
    for file in manifest.files:
        local = folder / file.path
        try:
            size = local.stat().st_size
        except OSError as exc:
            raise ModelLoadFailed(f"{manifest.key}: {file.path} is missing from {folder}") from exc
        if size != file.size:
            raise ModelLoadFailed(f"{manifest.key}: {file.path} has {size} bytes, the signed set says {file.size}")
        found[file.role or file.path] = local
    if "weights" not in found:
        raise ModelLoadFailed(f"{manifest.key} lists no weights file")
    return found


def embedding_threads(options: RuntimeOptions) -> tuple[int, int | None]:
    """Threads of each lane's session, and of the solo session (None: no solo, the lanes have them all)."""
    lane_threads = max(1, options.threads // max(1, options.embed_lanes))
    return lane_threads, (options.threads if options.threads > lane_threads else None)


def embedding_sessions(options: RuntimeOptions) -> int:
    """onnxruntime sessions an embedding model holds: one per lane, and a solo one when lanes split the threads."""
    _, solo_threads = embedding_threads(options)
    return max(1, options.embed_lanes) + (solo_threads is not None)


def memory_estimate_bytes(
    manifest: SignedManifest, files: dict[str, Path], *, options: RuntimeOptions, limits: Limits
) -> int:
    """What loading takes before loading it: weights, and for GGUF one key/value cache per concurrent generation."""
    try:
        return model_memory_estimate_bytes(
            model_format=manifest.format,
            weights=files["weights"],
            total_bytes=sum(file.size for file in manifest.files),
            n_ctx=options.n_ctx,
            contexts=limits.max_concurrent_requests,
            sessions=embedding_sessions(options),
        )
    except (GGUFError, OSError, ValueError) as exc:
        raise ModelLoadFailed(f"{manifest.key}: unreadable GGUF header ({exc})") from exc


def _adoption_order(manifest: SignedManifest) -> str:
    return str(manifest.document.get("adoption_date") or "")


def set_load(path: Path, *, root: Root, options: RuntimeOptions, probe: bool = True) -> ServedSet:
    """Load every model of the installed set at `path`; raise ModelLoadFailed naming the one that fails."""
    path = Path(path).resolve()
    try:
        signed = signed_set_read(path, root=root)
        limits = limits_from(signed.parameters)
    except ModelLoadFailed:
        raise
    except NodeError as exc:
        raise ModelLoadFailed(f"{path}: the installed set does not verify: {exc.message}") from exc
    manifests = sorted(signed.manifests, key=_adoption_order, reverse=True)
    planned = []
    needed = 0
    for manifest in manifests:
        if manifest.kind not in (EMBEDDING, GENERATIVE):
            continue
        files = _files(path, manifest)
        estimate = memory_estimate_bytes(manifest, files, options=options, limits=limits)
        needed += estimate
        planned.append((manifest, files, estimate))
    if needed > limits.memory_limit_mb * MB:
        raise ModelLoadFailed(
            f"approved set v{signed.approved_set_version} needs about {needed / MB:,.0f} MB to load, over "
            f"memory_limit_mb={limits.memory_limit_mb} (a limit set by governance); refusing to load it"
        )
    models: list[ServedModel] = []
    try:
        for manifest, files, estimate in planned:
            models.append(_model_load(manifest, files, estimate, options=options, probe=probe))
    except BaseException:
        for model in models:
            model.close()
        raise
    return ServedSet(path=path, signed=signed, limits=limits, models=models)


def _model_load(
    manifest: SignedManifest, files: dict[str, Path], estimate: int, *, options: RuntimeOptions, probe: bool
) -> ServedModel:
    started = time.perf_counter()
    try:
        embedder = None
        if manifest.kind == EMBEDDING:
            from conclave_node.runtimes.embedding import EmbeddingRuntime

            if "tokenizer" not in files:
                raise ModelLoadFailed(f"{manifest.key} has no tokenizer.json beside its ONNX weights")

            def session(threads: int) -> EmbeddingRuntime:
                return EmbeddingRuntime(
                    model_path=files["weights"],
                    tokenizer_path=files["tokenizer"],
                    threads=threads,
                    providers=list(options.onnx_providers) or None,
                    max_tokens=options.embed_max_tokens,
                )

            lane_threads, solo_threads = embedding_threads(options)
            runtime = session(lane_threads)
            embedder = EmbeddingQueue(
                runtime,
                max_batch=options.embed_batch,
                lanes=[session(lane_threads) for _ in range(max(1, options.embed_lanes) - 1)],
                solo=session(solo_threads) if solo_threads is not None else None,
            )
        else:
            from conclave_node.runtimes.generation import GenerationRuntime

            runtime = GenerationRuntime(
                model_path=files["weights"],
                n_ctx=options.n_ctx,
                threads=options.threads,
                n_gpu_layers=options.n_gpu_layers,
            )
        model = ServedModel(
            name=manifest.model_name,
            version=manifest.version,
            kind=manifest.kind,
            format=manifest.format,
            manifest=manifest,
            runtime=runtime,
            memory_bytes=estimate,
            load_seconds=0.0,
            embedder=embedder,
        )
        if probe:
            try:
                model_probe(model)
            except BaseException:
                model.close()
                raise
    except ModelLoadFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - the runtimes raise many kinds
        raise ModelLoadFailed(f"{manifest.key} failed to load: {type(exc).__name__}: {exc}") from exc
    model.load_seconds = time.perf_counter() - started
    return model


def model_probe(model: ServedModel) -> None:
    """One real request: a unit-length finite embedding, or one generated token."""
    if model.kind == EMBEDDING:
        vectors = model.runtime.embed([PROBE_TEXT]).vectors
        norm = float(np.linalg.norm(vectors[0])) if vectors.size else 0.0
        if (
            vectors.shape[0] != 1
            or not vectors.size
            or not np.isfinite(vectors).all()
            or not math.isclose(norm, 1.0, rel_tol=1e-3)
        ):
            raise ModelLoadFailed(
                f"{model.label} answered the probe with an unusable vector (shape {vectors.shape}, norm {norm:.3f})"
            )
        return
    runtime = model.runtime
    with runtime.context() as llm:
        tokens, _ = runtime.completion_prompt(llm, PROBE_TEXT)
        outcome = runtime.generate(llm, prompt_tokens=tokens, max_tokens=1, temperature=0.0)
    if outcome.prompt_tokens < 1:
        raise ModelLoadFailed(f"{model.label} answered the probe without reading the prompt")
