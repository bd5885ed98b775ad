"""A local content-addressed store: the embedded IPFS backend.

Layout under IPFS_STORE_DIR:
  blobs/<cid>        the bytes of each file, named by their UnixFS CID
  dirs/<cid>.json    each directory: {name: {"cid": ..., "size": ...}}
  pins/<cid>         an empty marker per pinned root

Bytes arrive already hashed (registration computes every CID while it
stages), so pinning here is a rename, and nothing is read twice.
`manage.py ipfs_export` turns any root into a CAR file for Kubo.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from aleph_cid import CidHasher, compute_cid

from core.ipfs.base import ObjectInfo, ObjectNotFound, PinError, StagedFile

CHUNK = 256 * 1024


class EmbeddedStore:
    name = "embedded"

    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.dirs = self.root / "dirs"
        self.pins = self.root / "pins"
        for folder in (self.blobs, self.dirs, self.pins):
            folder.mkdir(parents=True, exist_ok=True)

    # -- writing -------------------------------------------------------------
    def pin_files(self, files: list[StagedFile], *, root_cid: str | None) -> None:
        for staged in files:
            self._store_blob(staged)
        if root_cid is not None:
            entries = {f.name: {"cid": f.cid, "size": f.size} for f in files}
            self._atomic_write(self.dirs / f"{root_cid}.json", json.dumps(entries, sort_keys=True).encode())
            self._mark_pinned(root_cid)
        else:
            for staged in files:
                self._mark_pinned(staged.cid)

    def pin_bytes(self, data: bytes, *, cid: str) -> None:
        actual = compute_cid(data)
        if actual != cid:
            raise PinError(f"document CID mismatch: expected {cid}, computed {actual}")
        target = self.blobs / cid
        if not target.exists():
            self._atomic_write(target, data)
        self._mark_pinned(cid)

    def _store_blob(self, staged: StagedFile) -> None:
        target = self.blobs / staged.cid
        if target.exists():
            return
        if not staged.path.exists():
            raise PinError(f"staged bytes for {staged.name} ({staged.cid}) are missing")
        try:
            os.link(staged.path, target)
        except FileExistsError:
            return
        except OSError:
            # Another filesystem: copy, checking the CID as the bytes go by.
            self._copy_verified(staged, target)

    def _copy_verified(self, staged: StagedFile, target: Path) -> None:
        hasher = CidHasher.for_expected(staged.cid)
        fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out, open(staged.path, "rb") as src:
                while chunk := src.read(CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            actual = hasher.finalize()
            if actual != staged.cid:
                raise PinError(f"{staged.name}: CID mismatch, expected {staged.cid}, computed {actual}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _atomic_write(self, target: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _mark_pinned(self, cid: str) -> None:
        (self.pins / cid).touch()

    def unpin(self, cid: str) -> None:
        (self.pins / cid).unlink(missing_ok=True)

    # -- reading -------------------------------------------------------------
    def is_pinned(self, cid: str) -> bool:
        return (self.pins / cid).exists() and self._exists(cid)

    def _exists(self, cid: str) -> bool:
        return (self.blobs / cid).exists() or (self.dirs / f"{cid}.json").exists()

    def _directory(self, cid: str) -> dict | None:
        path = self.dirs / f"{cid}.json"
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def stat(self, cid: str, subpath: str = "") -> ObjectInfo:
        directory = self._directory(cid)
        if subpath:
            if directory is None:
                raise ObjectNotFound(f"{cid} is not a directory")
            entry = directory.get(subpath)
            if entry is None:
                raise ObjectNotFound(f"{cid} has no entry {subpath!r}")
            return self.stat(entry["cid"])
        if directory is not None:
            entries = tuple(sorted((name, e["cid"], e["size"]) for name, e in directory.items()))
            return ObjectInfo(cid=cid, size=sum(e[2] for e in entries), is_directory=True, entries=entries)
        blob = self.blobs / cid
        if not blob.exists():
            raise ObjectNotFound(cid)
        return ObjectInfo(cid=cid, size=blob.stat().st_size, is_directory=False)

    def read(self, cid: str, *, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        blob = self.blobs / cid
        try:
            handle = open(blob, "rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(cid) from exc
        return _iter_file(handle, start, length)

    def blob_path(self, cid: str) -> Path:
        return self.blobs / cid

    def pinned_roots(self) -> list[str]:
        return sorted(p.name for p in self.pins.iterdir() if not p.name.startswith("."))

    def materialize(self, cid: str, folder: Path) -> None:
        """Lay out `cid`'s files in `folder` (hard links, else copies) for CAR export."""
        info = self.stat(cid)
        entries = info.entries if info.is_directory else ((cid, cid, info.size),)
        for name, file_cid, _size in entries:
            source = self.blobs / file_cid
            target = folder / name
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)


def _iter_file(handle, start: int, length: int | None) -> Iterator[bytes]:
    with handle:
        handle.seek(start)
        remaining = length
        while remaining is None or remaining > 0:
            size = CHUNK if remaining is None else min(CHUNK, remaining)
            chunk = handle.read(size)
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
