"""Real manifests for tests: real bytes written to a temp folder, real CIDs, pinned."""

import os
import tempfile
from pathlib import Path

from registry.models import FileRole, Manifest
from registry.services import manifest_register
from registry.staging import FileSource

# A tokenizer.json that `tokenizers` loads: a two-word WordLevel vocabulary.
TOKENIZER_JSON = (
    b'{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,'
    b' "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,'
    b' "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "hello": 1}, "unk_token": "[UNK]"}}'
)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def onnx_model_bytes(tag: str = "", *, doc: bytes = b"") -> bytes:
    """A real, loadable ONNX model (one Identity node, float[1] in, float[1] out), written as protobuf here.

    `tag` and `doc` go into the model's producer name and doc string, so
    tests get distinct, valid models of the sizes they need.
    """
    tensor = _field(1, _field(1, 1) + _field(2, _field(1, _field(1, 1))))  # float, shape [1]
    graph = (
        _field(1, _field(1, b"x") + _field(2, b"y") + _field(3, b"identity") + _field(4, b"Identity"))
        + _field(2, b"g")
        + _field(11, _field(1, b"x") + _field(2, tensor))
        + _field(12, _field(1, b"y") + _field(2, tensor))
    )
    return (
        _field(1, 8)  # ir_version
        + _field(2, f"conclave-test {tag}".encode())
        + _field(6, doc)
        + _field(7, graph)
        + _field(8, _field(1, b"") + _field(2, 13))  # opset 13
    )


def model_files(*, fmt: str, content: bytes, folder: Path | None = None) -> list[FileSource]:
    folder = Path(folder or tempfile.mkdtemp(prefix="conclave-model-"))
    weights = folder / ("model.onnx" if fmt == "onnx" else "model.gguf")
    weights.write_bytes(content)
    sources = [FileSource.single(weights.name, FileRole.WEIGHTS, weights)]
    if fmt == "onnx":
        tokenizer = folder / "tokenizer.json"
        tokenizer.write_bytes(TOKENIZER_JSON)
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
    """Register (and by default pin) a small model whose bytes are unique to its name and version.

    The bytes are placeholders, not a loadable model (registry, gateway and
    node tests need exact sizes and unique CIDs, not weights), so the format
    check is off here; tests/registry/test_formats.py covers it with real
    files and real bad ones.
    """
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
        formats_check=False,
    )
    return manifest
