"""Real manifests for tests: real bytes written to a temp folder, real CIDs, pinned."""

import os
import tempfile
from pathlib import Path

from registry.models import FileRole, Manifest
from registry.services import manifest_register
from registry.staging import FileSource


def model_files(*, fmt: str, content: bytes, folder: Path | None = None) -> list[FileSource]:
    folder = Path(folder or tempfile.mkdtemp(prefix="conclave-model-"))
    weights = folder / ("model.onnx" if fmt == "onnx" else "model.gguf")
    weights.write_bytes(content)
    sources = [FileSource.single(weights.name, FileRole.WEIGHTS, weights)]
    if fmt == "onnx":
        tokenizer = folder / "tokenizer.json"
        tokenizer.write_bytes(b'{"version": "1.0", "model": {"type": "WordPiece"}}')
        sources.append(FileSource.single("tokenizer.json", FileRole.TOKENIZER, tokenizer))
    return sources


def register_test_manifest(
    *,
    name: str = "test-model",
    version: str = "1",
    kind: str = "embedding",
    fmt: str = "onnx",
    license: str = "Apache-2.0",
    size: int | None = None,
    content: bytes | None = None,
    actor=None,
    pin: str = "sync",
) -> Manifest:
    """Register (and by default pin) a small model whose bytes are unique to its name and version."""
    if content is None:
        seed = f"{name}@{version}".encode()
        content = (seed * ((size or 4096) // len(seed) + 1))[: size or 4096] if size else seed + os.urandom(64)
    manifest, _ = manifest_register(
        model_name=name,
        version=version,
        kind=kind,
        fmt=fmt,
        license=license,
        files=model_files(fmt=fmt, content=content),
        source={"type": "test"},
        actor=actor,
        pin=pin,
    )
    return manifest
