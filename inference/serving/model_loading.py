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
from conclave_node.runtimes.gguf import GGUFError
from conclave_node.runtimes.memory import MB, model_memory_estimate_bytes
from core.ipfs import ObjectNotFound, PinError, pinning_backend
from inference.errors import ModelLoadRefused
from registry.models import FileRole, Manifest, ModelFormat

_HASH_CHUNK = 4 * MB


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
    """What loading the model will take, before loading it (conservative; one context per worker)."""
    try:
        return model_memory_estimate_bytes(
            model_format=manifest.format, weights=files.weights, total_bytes=files.total_bytes, n_ctx=n_ctx
        )
    except (GGUFError, OSError, ValueError) as exc:
        raise ModelLoadRefused(f"{manifest}: unreadable GGUF header ({exc})") from exc


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
