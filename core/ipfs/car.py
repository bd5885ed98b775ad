"""CARv1 export of the embedded store, for `ipfs dag import` on any Kubo node."""

import tempfile
from pathlib import Path

from aleph_cid import read_carv1_root, write_folder_car

from core.ipfs.cid import _b58decode
from core.ipfs.embedded import EmbeddedStore


def car_export(store: EmbeddedStore, cid: str, car_path: Path) -> str:
    """Write `cid` (a directory or a single file) and all its blocks to `car_path`.

    Returns the CAR's root, which is `cid` itself: importing it pins exactly
    the object the registry refers to.
    """
    info = store.stat(cid)
    with tempfile.TemporaryDirectory(dir=car_path.parent) as tmp:
        folder = Path(tmp) / "root"
        folder.mkdir()
        store.materialize(cid, folder)
        root = write_folder_car(folder, car_path, cid_version=0, follow_symlinks=False)
    if info.is_directory:
        if root != cid:
            raise ValueError(f"CAR root {root} differs from the stored directory {cid}")
        return root
    # aleph-cid packs folders; a lone file comes wrapped in a directory whose
    # blocks include the file's own. Point the header's root at the file.
    _replace_v0_root(car_path, old=root, new=cid)
    if read_carv1_root(car_path) != cid:
        raise ValueError(f"rewriting the CAR root to {cid} failed")
    return cid


def _read_varint(handle) -> tuple[int, int]:
    value = shift = used = 0
    while True:
        byte = handle.read(1)[0]
        used += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, used
        shift += 7


def _replace_v0_root(car_path: Path, *, old: str, new: str) -> None:
    old_bytes = b"\x00" + _b58decode(old)
    new_bytes = b"\x00" + _b58decode(new)
    if len(old_bytes) != len(new_bytes):
        raise ValueError("only CIDv0 roots of equal length can be swapped in place")
    with open(car_path, "r+b") as handle:
        length, used = _read_varint(handle)
        header = handle.read(length)
        position = header.find(old_bytes)
        if position < 0 or header.count(old_bytes) != 1:
            raise ValueError("the CAR header does not name the expected root once")
        handle.seek(used + position)
        handle.write(new_bytes)
