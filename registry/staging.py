"""Streaming a model's files once: sha256, Kubo-compatible CID and a staged copy.

The staged copy is what gets pinned later, so the bytes pinned are exactly
the bytes hashed even if the source changes afterwards.
"""

import hashlib
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aleph_cid import CidHasher, hash_folder

CHUNK_BYTES = 1024 * 1024
# A copy in progress: `.incoming-<machine>-<pid>-<process start>-<random>`.
INCOMING_PREFIX = ".incoming-"


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
    work = staging_dir / incoming_name()
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


# --- Who is writing an `.incoming-*` copy ------------------------------------------------


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def machine_id() -> str:
    """This host (or container) in this boot: its process ids mean something only here."""
    return hashlib.sha256(f"{socket.gethostname()}/{_boot_id()}".encode()).hexdigest()[:12]


def process_start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, Linux), or None when no such process runs.

    With the pid it names one process even after the pid is reused. Where
    /proc is missing it answers 0 for a running process.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except FileNotFoundError:
        return None
    except (OSError, IndexError, ValueError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0


def incoming_name() -> str:
    pid = os.getpid()
    return f"{INCOMING_PREFIX}{machine_id()}-{pid}-{process_start_ticks(pid) or 0}-{uuid.uuid4().hex}"


def incoming_writer_gone(name: str) -> bool | None:
    """Whether the process that was writing the `.incoming-*` copy `name` has ended.

    True: it ran on this machine and no longer runs (its pid is gone or now
    belongs to a process started at another time). False: it still runs.
    None: it cannot be told from here (another machine or container, or a
    name from before writers were recorded).
    """
    parts = name.removeprefix(INCOMING_PREFIX).split("-")
    if len(parts) != 4 or parts[0] != machine_id():
        return None
    try:
        pid, started = int(parts[1]), int(parts[2])
    except ValueError:
        return None
    now = process_start_ticks(pid)
    if now is None:
        return True
    return bool(started and now and started != now)


def last_write(path: Path) -> float:
    """The newest modification time of `path` and, for a folder, of what is directly in it."""
    latest = path.stat().st_mtime
    if path.is_dir():
        for child in path.iterdir():
            try:
                latest = max(latest, child.stat().st_mtime)
            except FileNotFoundError:
                continue
    return latest
