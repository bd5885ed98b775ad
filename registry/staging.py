"""Streaming a model's files once: sha256, Kubo-compatible CID and a staged copy.

The staged copy is what gets pinned later, so the bytes pinned are exactly
the bytes hashed even if the source changes afterwards.
"""

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aleph_cid import CidHasher, hash_folder

CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class FileSource:
    """A file to register. `parts` are read in order (a model split into chunks)."""

    name: str
    role: str
    parts: tuple[Path, ...]

    @classmethod
    def single(cls, name: str, role: str, path: Path | str) -> "FileSource":
        return cls(name=name, role=role, parts=(Path(path),))

    @property
    def size(self) -> int:
        return sum(part.stat().st_size for part in self.parts)


@dataclass(frozen=True)
class StagedModelFile:
    name: str
    role: str
    size: int
    sha256: str
    cid: str


@dataclass(frozen=True)
class StagedModel:
    folder: Path
    files: tuple[StagedModelFile, ...]
    root_cid: str


ProgressCallback = Callable[[int], None]


def stage_files(
    sources: Sequence[FileSource],
    *,
    staging_dir: Path,
    progress: ProgressCallback | None = None,
) -> StagedModel:
    """Copy every source into a fresh staging folder, hashing as the bytes pass.

    Returns the folder (named by the root CID) and each file's size, sha256
    and CID. On any error the partial folder is removed and the error
    propagates: nothing is left behind.
    """
    staging_dir.mkdir(parents=True, exist_ok=True)
    work = staging_dir / f".incoming-{uuid.uuid4().hex}"
    work.mkdir()
    try:
        staged = tuple(_stage_one(source, work, progress) for source in sources)
        root_cid = staged[0].cid if len(staged) == 1 else hash_folder(work, cid_version=0, follow_symlinks=False)
        final = staging_dir / root_cid
        if final.exists():
            shutil.rmtree(work)
        else:
            os.replace(work, final)
        return StagedModel(folder=final, files=staged, root_cid=root_cid)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _stage_one(source: FileSource, work: Path, progress: ProgressCallback | None) -> StagedModelFile:
    sha = hashlib.sha256()
    cid = CidHasher.for_ipfs()
    size = 0
    with open(work / source.name, "wb") as out:
        for part in source.parts:
            with open(part, "rb") as handle:
                while chunk := handle.read(CHUNK_BYTES):
                    sha.update(chunk)
                    cid.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
    return StagedModelFile(name=source.name, role=source.role, size=size, sha256=sha.hexdigest(), cid=cid.finalize())


def discard_staged(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
