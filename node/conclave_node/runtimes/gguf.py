"""Read a GGUF file's scalar metadata without loading the model.

Enough of the GGUF v2/v3 layout to size a model before deciding to load it
(layer count, widths, trained context); arrays such as the vocabulary are
skipped, not decoded.
"""

import struct
from pathlib import Path

_SCALARS = {
    0: "<B",  # uint8
    1: "<b",  # int8
    2: "<H",  # uint16
    3: "<h",  # int16
    4: "<I",  # uint32
    5: "<i",  # int32
    6: "<f",  # float32
    7: "<?",  # bool
    10: "<Q",  # uint64
    11: "<q",  # int64
    12: "<d",  # float64
}
_STRING = 8
_ARRAY = 9


class GGUFError(ValueError):
    pass


def gguf_metadata(path: Path) -> dict[str, object]:
    """Scalar and string metadata of a GGUF file (arrays are left out)."""
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise GGUFError(f"{path.name} is not a GGUF file")
        (version,) = struct.unpack("<I", handle.read(4))
        if version not in (2, 3):
            raise GGUFError(f"{path.name}: unsupported GGUF version {version}")
        _tensors, count = struct.unpack("<QQ", handle.read(16))
        metadata: dict[str, object] = {}
        for _ in range(count):
            key = _read_string(handle)
            (value_type,) = struct.unpack("<I", handle.read(4))
            if value_type == _ARRAY:
                _skip_array(handle)
            else:
                metadata[key] = _read_value(handle, value_type)
        return metadata


def _read_string(handle) -> str:
    (length,) = struct.unpack("<Q", handle.read(8))
    return handle.read(length).decode("utf-8", errors="replace")


def _read_value(handle, value_type: int):
    if value_type == _STRING:
        return _read_string(handle)
    fmt = _SCALARS.get(value_type)
    if fmt is None:
        raise GGUFError(f"unknown GGUF value type {value_type}")
    (value,) = struct.unpack(fmt, handle.read(struct.calcsize(fmt)))
    return value


def _skip_array(handle) -> None:
    (item_type,) = struct.unpack("<I", handle.read(4))
    (length,) = struct.unpack("<Q", handle.read(8))
    if item_type == _STRING:
        for _ in range(length):
            (size,) = struct.unpack("<Q", handle.read(8))
            handle.seek(size, 1)
    elif item_type == _ARRAY:
        for _ in range(length):
            _skip_array(handle)
    else:
        fmt = _SCALARS.get(item_type)
        if fmt is None:
            raise GGUFError(f"unknown GGUF array item type {item_type}")
        handle.seek(struct.calcsize(fmt) * length, 1)


def kv_cache_bytes(metadata: dict[str, object], n_ctx: int) -> int:
    """Bytes of an f16 key/value cache of `n_ctx` tokens for this model."""
    arch = metadata.get("general.architecture", "llama")
    layers = int(metadata.get(f"{arch}.block_count", 0) or 0)
    width = int(metadata.get(f"{arch}.embedding_length", 0) or 0)
    heads = int(metadata.get(f"{arch}.attention.head_count", 0) or 0)
    kv_heads = int(metadata.get(f"{arch}.attention.head_count_kv", heads) or heads)
    key_width = metadata.get(f"{arch}.attention.key_length")
    value_width = metadata.get(f"{arch}.attention.value_length")
    head_width = width // heads if heads else 0
    per_token = layers * kv_heads * (int(key_width or head_width) + int(value_width or head_width)) * 2
    return per_token * n_ctx
