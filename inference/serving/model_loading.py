"""From a manifest to a loaded runtime: local files, sha256 checks, memory estimates.

The bytes come from the pinning backend. The embedded store already keeps
each file under its CID on local disk; with Kubo they are downloaded once
into DATA_DIR/models/<sha256> (checked as they arrive). Either way every
file's sha256 and size are checked against the manifest right before the
model is loaded: a worker never runs bytes the manifest does not name.
"""

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from conclave_node.runtimes.embedding import EmbeddingRuntime
from conclave_node.runtimes.generation import GenerationRuntime
from conclave_node.runtimes.gguf import GGUFError, gguf_metadata, kv_cache_bytes
from core.ipfs import ObjectNotFound, PinError, pinning_backend
from inference.errors import ModelLoadRefused
from registry.models import FileRole, Manifest, ModelFormat

MB = 1024 * 1024
_HASH_CHUNK = 4 * MB
# onnxruntime keeps optimized copies of the weights (int8 graphs get float
# copies) plus an activation arena: measured 0.23 GB for MiniLM int8 (23 MB).
ONNX_WEIGHTS_FACTOR = 4
ONNX_OVERHEAD_BYTES = 128 * MB
# llama.cpp's compute buffers beside weights and the KV cache.
GGUF_OVERHEAD_BYTES = 48 * MB


@dataclass(frozen=True)
class ModelFiles:
    weights: Path
    tokenizer: Path | None
    total_bytes: int


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _download(backend, record, target: Path) -> None:
    """Fetch one file from the backend into `target`, checking its sha256 and size as it arrives."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in backend.read(record.cid):
                size += len(chunk)
                if size > record.size_bytes:
                    raise ModelLoadRefused(
                        f"{record.path}: the backend sent more than the declared {record.size_bytes} bytes"
                    )
                digest.update(chunk)
                out.write(chunk)
        if size != record.size_bytes or digest.hexdigest() != record.sha256:
            raise ModelLoadRefused(f"{record.path}: downloaded bytes do not match the manifest's size and sha256")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def manifest_files_local(manifest: Manifest, *, verify: bool = True) -> ModelFiles:
    """Local paths of the manifest's files, each checked against its sha256 and size."""
    backend = pinning_backend()
    paths: dict[str, Path] = {}
    total = 0
    records = list(manifest.files.all())
    if not records:
        raise ModelLoadRefused(f"{manifest} lists no files")
    for record in records:
        blob_path = getattr(backend, "blob_path", None)
        downloaded = False
        if blob_path is not None:
            path = Path(blob_path(record.cid))
        else:
            path = Path(settings.DATA_DIR) / "models" / record.sha256 / Path(record.path).name
            if not path.exists():
                try:
                    _download(backend, record, path)
                except (ObjectNotFound, PinError, OSError) as exc:
                    raise ModelLoadRefused(f"{record.path}: cannot fetch the pinned bytes ({exc})") from exc
                downloaded = True
        if not path.exists():
            raise ModelLoadRefused(f"{record.path} ({record.cid}) is not in the pinning backend")
        if verify and not downloaded:
            if path.stat().st_size != record.size_bytes or _sha256_of(path) != record.sha256:
                raise ModelLoadRefused(
                    f"{record.path}: the local bytes do not match the manifest's sha256; refusing to load"
                )
        paths[record.role if record.role != FileRole.AUXILIARY else record.path] = path
        total += record.size_bytes
    weights = paths.get(FileRole.WEIGHTS)
    if weights is None:
        raise ModelLoadRefused(f"{manifest} has no weights file")
    return ModelFiles(weights=weights, tokenizer=paths.get(FileRole.TOKENIZER), total_bytes=total)


def memory_estimate_bytes(manifest: Manifest, files: ModelFiles, *, n_ctx: int) -> int:
    """What loading the model will take, before loading it (conservative)."""
    if manifest.format == ModelFormat.GGUF:
        try:
            metadata = gguf_metadata(files.weights)
        except (GGUFError, OSError) as exc:
            raise ModelLoadRefused(f"{manifest}: unreadable GGUF header ({exc})") from exc
        return files.total_bytes + kv_cache_bytes(metadata, n_ctx) + GGUF_OVERHEAD_BYTES
    return files.total_bytes * ONNX_WEIGHTS_FACTOR + ONNX_OVERHEAD_BYTES


def memory_check(*, manifest: Manifest, needed_bytes: int, used_bytes: int, limit_mb: int) -> None:
    if used_bytes + needed_bytes > limit_mb * MB:
        raise ModelLoadRefused(
            f"Loading {manifest} needs about {needed_bytes / MB:,.0f} MB; models already loaded use "
            f"{used_bytes / MB:,.0f} MB, and memory_limit_mb is {limit_mb}. Refusing to load it."
        )


@dataclass
class LoadedRuntime:
    runtime: EmbeddingRuntime | GenerationRuntime
    memory_bytes: int
    load_seconds: float


def runtime_load(manifest: Manifest, *, used_bytes: int, limit_mb: int) -> LoadedRuntime:
    """Verify the manifest's bytes, check the memory limit, then load the runtime."""
    started = time.perf_counter()
    files = manifest_files_local(manifest)
    n_ctx = settings.INFERENCE_N_CTX
    needed = memory_estimate_bytes(manifest, files, n_ctx=n_ctx)
    memory_check(manifest=manifest, needed_bytes=needed, used_bytes=used_bytes, limit_mb=limit_mb)
    try:
        if manifest.format == ModelFormat.ONNX:
            if files.tokenizer is None:
                raise ModelLoadRefused(f"{manifest} has no tokenizer.json beside its ONNX weights")
            runtime = EmbeddingRuntime(
                model_path=files.weights,
                tokenizer_path=files.tokenizer,
                threads=settings.INFERENCE_THREADS,
                providers=settings.INFERENCE_ONNX_PROVIDERS or None,
                max_tokens=settings.INFERENCE_EMBED_MAX_TOKENS,
                spinning=settings.INFERENCE_ONNX_SPINNING,
            )
            runtime.warm_up()
        else:
            runtime = GenerationRuntime(
                model_path=files.weights,
                n_ctx=n_ctx,
                threads=settings.INFERENCE_THREADS,
                n_gpu_layers=settings.INFERENCE_N_GPU_LAYERS,
            )
    except ModelLoadRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - the runtimes raise many kinds
        raise ModelLoadRefused(f"{manifest} failed to load: {exc}") from exc
    return LoadedRuntime(runtime=runtime, memory_bytes=needed, load_seconds=time.perf_counter() - started)


def process_rss_mb() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
