"""The small interface every pinning backend implements."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class PinError(Exception):
    """Pinning failed; the bytes stay staged and a retry can try again."""


class ObjectNotFound(Exception):
    pass


@dataclass(frozen=True)
class StagedFile:
    """A file to pin: its name inside the manifest, where its bytes are, its CID."""

    name: str
    path: Path
    cid: str
    size: int


@dataclass(frozen=True)
class ObjectInfo:
    cid: str
    size: int
    is_directory: bool
    entries: tuple[tuple[str, str, int], ...] = ()  # (name, cid, size) for a directory


class PinningBackend(Protocol):
    name: str

    def pin_files(self, files: list[StagedFile], *, root_cid: str | None) -> None:
        """Add and pin every file; with `root_cid`, also the directory wrapping them.

        Raises PinError if the backend's CIDs differ from the ones given.
        """

    def pin_bytes(self, data: bytes, *, cid: str) -> None:
        """Add and pin a small document whose CID is already known."""

    def is_pinned(self, cid: str) -> bool: ...

    def stat(self, cid: str, subpath: str = "") -> ObjectInfo:
        """Describe `cid` or `cid/subpath`; raise ObjectNotFound if it is not held."""

    def read(self, cid: str, *, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Stream a file's bytes (a file CID, not a directory) in chunks."""
