"""The offline CAR reader: files and folders as aleph-cid (Kubo's layout) writes them, every block checked."""

import os

import pytest
from aleph_cid import compute_cid, write_folder_car

from conclave_node.car import CarError, CarReader


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "folder"
    (root / "sub").mkdir(parents=True)
    (root / "small.json").write_bytes(b'{"a":1}')
    (root / "sub" / "big.bin").write_bytes(os.urandom(700_000))  # three 256 KiB chunks: a linked file
    (root / "empty").write_bytes(b"")
    return root


@pytest.mark.parametrize("cid_version", [0, 1])
def test_files_and_folders_read_back_exactly(folder, tmp_path, cid_version):
    car = tmp_path / "out.car"
    root = write_folder_car(folder, car, cid_version=cid_version, follow_symlinks=False)
    reader = CarReader(car)
    assert reader.root == root
    entries = reader.list_directory(root)
    assert sorted(entries) == ["empty", "small.json", "sub"]
    assert reader.read_file(entries["small.json"]) == b'{"a":1}'
    assert reader.read_file(entries["empty"]) == b""
    big = reader.read_file(reader.list_directory(entries["sub"])["big.bin"])
    assert big == (folder / "sub" / "big.bin").read_bytes()
    if cid_version == 0:
        assert entries["small.json"] == compute_cid(b'{"a":1}')


def test_a_block_whose_bytes_are_not_its_cids_is_refused(folder, tmp_path):
    car = tmp_path / "out.car"
    write_folder_car(folder, car, cid_version=0, follow_symlinks=False)
    data = bytearray(car.read_bytes())
    at = data.find(b'{"a":1}')
    data[at + 2] = ord("b")
    car.write_bytes(bytes(data))
    reader = CarReader(car)
    entries = reader.list_directory(reader.root)
    with pytest.raises(CarError, match="does not hash to its CID"):
        reader.read_file(entries["small.json"])


def test_a_missing_block_is_named(folder, tmp_path):
    car = tmp_path / "out.car"
    write_folder_car(folder, car, cid_version=0, follow_symlinks=False)
    with pytest.raises(CarError, match="is not in"):
        CarReader(car).read_file(compute_cid(b"not in this car"))
