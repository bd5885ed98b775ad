"""The embedded pinning backend: a real store on disk, no mocks."""

from pathlib import Path

import pytest
from aleph_cid import compute_cid, hash_folder, read_carv1_root, write_folder_car

from core.ipfs.base import ObjectNotFound, PinError, StagedFile
from core.ipfs.embedded import CHUNK, EmbeddedStore

HELLO_CID = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
MODEL = bytes(range(256)) * 1200  # 300 KiB: spans more than one read chunk
FILES = {"model.onnx": MODEL, "tokenizer.json": b'{"vocab": {"hello": 1}}\n', "README.md": b"hello world\n"}


@pytest.fixture
def store(tmp_path) -> EmbeddedStore:
    return EmbeddedStore(tmp_path / "store")


def _stage(folder: Path, files: dict[str, bytes]) -> list[StagedFile]:
    folder.mkdir(parents=True, exist_ok=True)
    staged = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        staged.append(StagedFile(name=name, path=folder / name, cid=compute_cid(data), size=len(data)))
    return staged


def _staged_folder(tmp_path: Path) -> tuple[list[StagedFile], str]:
    folder = tmp_path / "staging"
    staged = _stage(folder, FILES)
    return staged, hash_folder(folder, cid_version=0, follow_symlinks=False)


def test_known_vector_hello_world(store):
    assert compute_cid(b"hello world\n") == HELLO_CID

    store.pin_bytes(b"hello world\n", cid=HELLO_CID)

    assert store.is_pinned(HELLO_CID)
    assert b"".join(store.read(HELLO_CID)) == b"hello world\n"


def test_pin_files_with_root_pins_the_directory(store, tmp_path):
    staged, root = _staged_folder(tmp_path)

    store.pin_files(staged, root_cid=root)

    assert store.is_pinned(root)
    # Only the root is pinned, as Kubo pins only the wrapping directory.
    assert not store.is_pinned(staged[0].cid)
    info = store.stat(root)
    assert info.is_directory
    assert info.cid == root
    assert info.entries == tuple(sorted((f.name, f.cid, f.size) for f in staged))
    assert info.size == sum(len(data) for data in FILES.values())


def test_pin_files_without_root_pins_each_file(store, tmp_path):
    staged = _stage(tmp_path / "staging", {"a.bin": b"alpha", "b.bin": b"beta"})

    store.pin_files(staged, root_cid=None)

    for file in staged:
        assert store.is_pinned(file.cid)
        info = store.stat(file.cid)
        assert (info.cid, info.size, info.is_directory, info.entries) == (file.cid, file.size, False, ())


def test_stat_of_a_directory_entry_describes_the_file(store, tmp_path):
    staged, root = _staged_folder(tmp_path)
    store.pin_files(staged, root_cid=root)

    info = store.stat(root, "model.onnx")

    assert (info.cid, info.size, info.is_directory) == (compute_cid(MODEL), len(MODEL), False)


def test_unknown_objects_are_not_found(store, tmp_path):
    staged, root = _staged_folder(tmp_path)
    store.pin_files(staged, root_cid=root)
    unknown = compute_cid(b"never stored")

    assert not store.is_pinned(unknown)
    with pytest.raises(ObjectNotFound):
        store.stat(unknown)
    with pytest.raises(ObjectNotFound):
        store.stat(root, "missing.bin")
    with pytest.raises(ObjectNotFound):
        store.stat(staged[0].cid, "anything")  # a file has no entries
    with pytest.raises(ObjectNotFound):
        store.read(unknown)


def test_reads_stream_whole_and_ranged(store, tmp_path):
    staged, root = _staged_folder(tmp_path)
    store.pin_files(staged, root_cid=root)
    cid = compute_cid(MODEL)

    chunks = list(store.read(cid))
    assert len(chunks) > 1
    assert all(len(chunk) <= CHUNK for chunk in chunks)
    assert b"".join(chunks) == MODEL
    assert b"".join(store.read(cid, start=1000, length=70_000)) == MODEL[1000:71_000]
    assert b"".join(store.read(cid, start=CHUNK - 3, length=10)) == MODEL[CHUNK - 3 : CHUNK + 7]
    assert b"".join(store.read(cid, start=len(MODEL) - 5)) == MODEL[-5:]
    assert b"".join(store.read(cid, start=len(MODEL) + 10)) == b""
    assert b"".join(store.read(cid, length=0)) == b""


def test_pin_bytes_refuses_a_wrong_cid(store):
    with pytest.raises(PinError, match="document CID mismatch"):
        store.pin_bytes(b"hello world!\n", cid=HELLO_CID)
    assert not store.is_pinned(HELLO_CID)


def test_pinning_again_is_idempotent(store, tmp_path):
    staged, root = _staged_folder(tmp_path)

    store.pin_files(staged, root_cid=root)
    store.pin_files(staged, root_cid=root)
    store.pin_bytes(b"hello world\n", cid=HELLO_CID)
    store.pin_bytes(b"hello world\n", cid=HELLO_CID)

    assert store.is_pinned(root)
    assert store.pinned_roots() == sorted([root, HELLO_CID])
    assert b"".join(store.read(compute_cid(MODEL))) == MODEL


def test_re_pin_works_after_the_staged_copy_is_gone(store, tmp_path):
    """Once held, a blob is not read from staging again (the staging folder is discarded after pinning)."""
    staged, root = _staged_folder(tmp_path)
    store.pin_files(staged, root_cid=root)
    for file in staged:
        file.path.unlink()

    store.pin_files(staged, root_cid=root)

    assert b"".join(store.read(compute_cid(MODEL))) == MODEL


def test_missing_staged_file_raises_pin_error(store, tmp_path):
    staged = _stage(tmp_path / "staging", {"model.onnx": MODEL})
    staged[0].path.unlink()

    with pytest.raises(PinError, match="staged bytes for model.onnx"):
        store.pin_files(staged, root_cid=None)
    assert not store.is_pinned(staged[0].cid)


def test_unpin_drops_the_pin_but_not_the_bytes(store):
    store.pin_bytes(b"hello world\n", cid=HELLO_CID)

    store.unpin(HELLO_CID)

    assert not store.is_pinned(HELLO_CID)
    assert b"".join(store.read(HELLO_CID)) == b"hello world\n"


def test_materialized_directory_exports_a_car_with_the_same_root(store, tmp_path):
    staged, root = _staged_folder(tmp_path)
    store.pin_files(staged, root_cid=root)
    folder = tmp_path / "export"
    folder.mkdir()
    car = tmp_path / "model.car"

    store.materialize(root, folder)

    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    assert (folder / "model.onnx").read_bytes() == MODEL
    assert write_folder_car(folder, car, cid_version=0) == root
    assert read_carv1_root(car) == root
