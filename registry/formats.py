"""Checking that registered files are what they claim to be: ONNX or GGUF weights, a tokenizer.

Registration refuses bytes that are not a model before it records or pins
anything. An ONNX file must load in onnxruntime (which parses the protobuf
and checks the graph); a GGUF file must have a well-formed header, metadata
and tensor table, with every tensor's data inside the file (parsed here in
Python: a hostile file never reaches llama.cpp's loader in the web
process); a tokenizer.json must load in `tokenizers`.
"""

import struct
from pathlib import Path

from registry.models import FileRole, ModelFormat

GGUF_VERSIONS = (2, 3)
GGUF_DEFAULT_ALIGNMENT = 32
# Bounds that no real model comes near; past them the file is refused
# rather than read further.
_MAX_TENSORS = 1_000_000
_MAX_KV = 100_000
_MAX_STRING = 64 * 1024 * 1024
_MAX_DIMS = 8

# ggml tensor types: (elements per block, bytes per block), as ggml's own
# type traits give them (tests/registry/test_formats.py compares them with
# the installed libggml).
GGML_TYPE_SIZES = {
    0: (1, 4),  # f32
    1: (1, 2),  # f16
    2: (32, 18),  # q4_0
    3: (32, 20),  # q4_1
    6: (32, 22),  # q5_0
    7: (32, 24),  # q5_1
    8: (32, 34),  # q8_0
    9: (32, 36),  # q8_1
    10: (256, 84),  # q2_K
    11: (256, 110),  # q3_K
    12: (256, 144),  # q4_K
    13: (256, 176),  # q5_K
    14: (256, 210),  # q6_K
    15: (256, 292),  # q8_K
    16: (256, 66),  # iq2_xxs
    17: (256, 74),  # iq2_xs
    18: (256, 98),  # iq3_xxs
    19: (256, 50),  # iq1_s
    20: (32, 18),  # iq4_nl
    21: (256, 110),  # iq3_s
    22: (256, 82),  # iq2_s
    23: (256, 136),  # iq4_xs
    24: (1, 1),  # i8
    25: (1, 2),  # i16
    26: (1, 4),  # i32
    27: (1, 8),  # i64
    28: (1, 8),  # f64
    29: (256, 56),  # iq1_m
    30: (1, 2),  # bf16
    34: (256, 54),  # tq1_0
    35: (256, 66),  # tq2_0
    39: (32, 17),  # mxfp4
}
# GGUF metadata value types: fixed sizes, and the two variable ones.
_VALUE_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


class FileFormatInvalid(ValueError):
    pass


class _Reader:
    def __init__(self, handle, size: int):
        self.handle = handle
        self.size = size

    def take(self, count: int) -> bytes:
        data = self.handle.read(count)
        if len(data) != count:
            raise FileFormatInvalid(f"ends early (at byte {self.handle.tell()} of {self.size})")
        return data

    def skip(self, count: int) -> None:
        if self.handle.tell() + count > self.size:
            raise FileFormatInvalid(f"ends early (a value runs past byte {self.size})")
        self.handle.seek(count, 1)

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self) -> bytes:
        length = self.u64()
        if length > _MAX_STRING:
            raise FileFormatInvalid(f"holds a string of {length} bytes")
        return self.take(length)

    def value(self, value_type: int, *, depth: int = 0):
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            if depth > 0:
                raise FileFormatInvalid("nests arrays in its metadata")
            item_type, count = self.u32(), self.u64()
            if item_type in _VALUE_SIZES:
                self.skip(_VALUE_SIZES[item_type] * count)
            elif item_type == _STRING:
                for _ in range(count):
                    self.string()
            else:
                raise FileFormatInvalid(f"has a metadata array of unknown type {item_type}")
            return None
        size = _VALUE_SIZES.get(value_type)
        if size is None:
            raise FileFormatInvalid(f"has a metadata value of unknown type {value_type}")
        return self.take(size)


def gguf_check(path: Path) -> None:
    """Parse a GGUF file's header, metadata and tensor table; every tensor must lie inside the file."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        reader = _Reader(handle, size)
        if reader.take(4) != b"GGUF":
            raise FileFormatInvalid("does not start with the GGUF magic")
        version = reader.u32()
        if version not in GGUF_VERSIONS:
            raise FileFormatInvalid(f"is GGUF version {version}; versions {GGUF_VERSIONS} are read")
        tensor_count, kv_count = reader.u64(), reader.u64()
        if not 0 < tensor_count <= _MAX_TENSORS:
            raise FileFormatInvalid(f"declares {tensor_count} tensors")
        if kv_count > _MAX_KV:
            raise FileFormatInvalid(f"declares {kv_count} metadata entries")
        alignment = GGUF_DEFAULT_ALIGNMENT
        keys = set()
        for _ in range(kv_count):
            key = reader.string().decode("utf-8", errors="replace")
            value_type = reader.u32()
            value = reader.value(value_type)
            keys.add(key)
            if key == "general.alignment" and value_type == 4:
                alignment = struct.unpack("<I", value)[0]
        if "general.architecture" not in keys:
            raise FileFormatInvalid("has no general.architecture in its metadata")
        if alignment == 0 or alignment & (alignment - 1):
            raise FileFormatInvalid(f"has an alignment of {alignment}, not a power of two")
        tensors = []
        for _ in range(tensor_count):
            name = reader.string().decode("utf-8", errors="replace")
            n_dims = reader.u32()
            if not 0 < n_dims <= _MAX_DIMS:
                raise FileFormatInvalid(f"tensor {name!r} has {n_dims} dimensions")
            elements = 1
            for _ in range(n_dims):
                elements *= reader.u64()
            tensor_type, offset = reader.u32(), reader.u64()
            if tensor_type not in GGML_TYPE_SIZES:
                raise FileFormatInvalid(f"tensor {name!r} has unknown type {tensor_type}")
            block, block_bytes = GGML_TYPE_SIZES[tensor_type]
            if elements % block:
                raise FileFormatInvalid(f"tensor {name!r} has {elements} elements, not whole blocks of {block}")
            tensors.append((name, offset, elements // block * block_bytes))
        data_start = -(-handle.tell() // alignment) * alignment
    for name, offset, nbytes in tensors:
        if data_start + offset + nbytes > size:
            raise FileFormatInvalid(
                f"tensor {name!r} needs bytes up to {data_start + offset + nbytes}, but the file has {size}"
            )


def onnx_check(path: Path) -> None:
    """Load the file in onnxruntime (CPU, no graph optimisation): it parses and checks the model."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    try:
        onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types for bad models
        raise FileFormatInvalid(f"does not load as an ONNX model ({_first_line(exc)})") from exc


def tokenizer_check(path: Path) -> None:
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception
        raise FileFormatInvalid(f"does not load as a tokenizer ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def model_file_check(*, name: str, role: str, fmt: str, path: Path) -> None:
    """Raise FileFormatInvalid if the file is not what its role and the model's format say."""
    if role == FileRole.WEIGHTS and fmt == ModelFormat.ONNX:
        onnx_check(path)
    elif role == FileRole.WEIGHTS and fmt == ModelFormat.GGUF:
        gguf_check(path)
    elif role == FileRole.TOKENIZER:
        tokenizer_check(path)
