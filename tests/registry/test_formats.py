"""Registration refuses files that are not what they claim: real bad files fail, real model packs pass."""

import ctypes
import struct
from pathlib import Path

import llama_cpp
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from registry.formats import GGML_TYPE_SIZES, FileFormatInvalid, gguf_check, model_file_check
from registry.models import Manifest
from registry.packs import PACKS, pack_sources
from tests.registry.factories import TOKENIZER_JSON, onnx_model_bytes

pytestmark = pytest.mark.django_db


def _smollm2() -> Path:
    return next(s for p in PACKS if p.model_name == "SmolLM2-135M-Instruct" for s in pack_sources(p)).parts[0]


def _gguf_header_then_zeros() -> bytes:
    return b"GGUF" + struct.pack("<I", 3) + bytes(4096)


def _upload(client, *, fmt: str, files: list[tuple[str, bytes]], name: str = "bad"):
    return client.post(
        "/api/v1/manifests/",
        {
            "model_name": name,
            "version": "1",
            "kind": "embedding" if fmt == "onnx" else "generative",
            "format": fmt,
            "license": "MIT",
            "files": [SimpleUploadedFile(file_name, content) for file_name, content in files],
        },
        format="multipart",
    )


# --- Through the API -------------------------------------------------------------------------


def test_bytes_that_are_not_onnx_and_an_empty_tokenizer_are_refused_naming_both(client_as, settings):
    response = _upload(
        client_as("operator"), fmt="onnx", files=[("model.onnx", b"not-onnx"), ("tokenizer.json", b"{}")]
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_file_format"
    messages = error["fields"]["files"]
    assert any(m.startswith("model.onnx: does not load as an ONNX model") for m in messages)
    assert any(m.startswith("tokenizer.json: does not load as a tokenizer") for m in messages)
    assert Manifest.objects.count() == 0
    # Nothing of the refused upload stays staged.
    staging = Path(settings.REGISTRY_STAGING_DIR)
    assert not staging.exists() or not any(staging.iterdir())


def test_a_gguf_header_followed_by_zeros_is_refused(client_as):
    response = _upload(client_as("operator"), fmt="gguf", files=[("model.gguf", _gguf_header_then_zeros())])
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["files"][0].startswith("model.gguf: ")
    assert Manifest.objects.count() == 0


def test_a_truncated_real_gguf_is_refused_naming_the_tensor_past_the_end(client_as):
    head = _smollm2().read_bytes()[: 2 * 1024 * 1024]
    response = _upload(client_as("operator"), fmt="gguf", files=[("model.gguf", head)])
    assert response.status_code == 400
    assert "but the file has 2097152" in response.json()["error"]["fields"]["files"][0]


def test_a_real_small_onnx_model_and_tokenizer_register(client_as):
    response = _upload(
        client_as("operator"),
        fmt="onnx",
        files=[("model.onnx", onnx_model_bytes("ok")), ("tokenizer.json", TOKENIZER_JSON)],
        name="tiny",
    )
    assert response.status_code == 201, response.content


# --- The checks on their own -----------------------------------------------------------------


@pytest.mark.parametrize("pack", [p for p in PACKS if p.model_name != "gemma-3-270m"], ids=lambda p: p.model_name)
def test_every_installed_model_pack_passes(pack):
    for source in pack_sources(pack):
        model_file_check(name=source.name, role=source.role, fmt=pack.fmt, path=source.parts[0])


def test_the_gemma_pack_assembled_from_its_chunks_passes(tmp_path):
    pack = next(p for p in PACKS if p.model_name == "gemma-3-270m")
    source = pack_sources(pack)[0]
    whole = tmp_path / source.name
    with open(whole, "wb") as out:
        for part in source.parts:
            out.write(part.read_bytes())
    gguf_check(whole)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "ends early"),
        (b"GGML" + bytes(100), "magic"),
        (b"GGUF" + struct.pack("<I", 1) + bytes(100), "version 1"),
        (b"GGUF" + struct.pack("<I", 3) + struct.pack("<QQ", 0, 0), "0 tensors"),
        # One metadata entry whose string length claims far more than the file holds.
        (b"GGUF" + struct.pack("<I", 3) + struct.pack("<QQ", 1, 1) + struct.pack("<Q", 2**40), "string of"),
    ],
)
def test_malformed_gguf_files_are_refused_with_the_reason(tmp_path, content, reason):
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(FileFormatInvalid, match=reason):
        gguf_check(path)


def test_the_ggml_type_table_matches_the_installed_ggml():
    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_type_size.restype = ctypes.c_size_t
    lib.ggml_blck_size.restype = ctypes.c_int64
    for type_id, (block, size) in GGML_TYPE_SIZES.items():
        assert (lib.ggml_blck_size(type_id), lib.ggml_type_size(type_id)) == (block, size), type_id
