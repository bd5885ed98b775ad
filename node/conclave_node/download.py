"""Downloading one signed file: resumable, capped at its signed size, checked by sha256 and CID.

Sources are tried in order (configured IPFS gateways, then the platform's).
Bytes go to `<downloads>/<sha256>.part`; a dropped connection keeps them and
the next attempt (in this run or the next) asks only for the rest with
`Range: bytes=<have>-`. Reading stops at the signed size whatever the source
sends (TUF's endless-data attack), and a source that announces more is
refused before any byte is read. A file is accepted only when its sha256 and
its UnixFS CID (recomputed with aleph-cid, Kubo's chunking) both match the
signed values: a CID alone is not the file's sha256, and the sha256 alone
does not prove the IPFS identity the set lists.

A source that sends slower than `min_rate_bytes_per_second`, measured over
each `rate_window_seconds`, is abandoned for the next one (TUF's slow
retrieval attack); what it sent is kept and the next source resumes after it.
"""

import hashlib
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aleph_cid import CidHasher

from conclave_node.errors import DownloadFailed, EndlessData, MetadataFormatError, NodeError, TamperedArtifact
from conclave_node.metadata import SignedFile

_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class _Interrupted(Exception):
    """The transfer stopped early; the part file keeps what arrived."""


class _SourceUnusable(Exception):
    """This source cannot serve the file (404, 5xx, a bad redirect): try the next one."""


class _TooSlow(Exception):
    """This source sends slower than the minimum rate: try the next one (the part file keeps what arrived)."""


@dataclass
class FetchStats:
    downloaded: int = 0
    resumed_bytes: int = 0
    requests: int = 0
    refusals: list[str] = field(default_factory=list)


class FileFetcher:
    def __init__(
        self,
        client: httpx.Client,
        *,
        downloads_dir: Path,
        attempts: int = 3,
        on_bytes: Callable[[int], None] | None = None,
        min_rate_bytes_per_second: float = 0.0,
        rate_window_seconds: float = 30.0,
    ):
        self.client = client
        self.downloads_dir = downloads_dir
        self.attempts = max(1, attempts)
        self.min_rate = max(0.0, min_rate_bytes_per_second)
        self.rate_window = max(0.001, rate_window_seconds)
        self.on_bytes = on_bytes or (lambda n: None)
        self.stats = FetchStats()

    def part_path(self, file: SignedFile) -> Path:
        return self.downloads_dir / f"{file.sha256}.part"

    def fetch(self, file: SignedFile, urls: list[str]) -> Path:
        """Return the path of a fully verified copy of `file`, or raise what went wrong."""
        self.downloads_dir.mkdir(parents=True, exist_ok=True)
        part = self.part_path(file)
        failures: list[NodeError | str] = []
        for url in urls:
            attempts = 0
            while attempts < self.attempts:
                attempts += 1
                resumed = part.exists() and part.stat().st_size > 0
                try:
                    self._transfer(url, file, part)
                    return part
                except _Interrupted as exc:
                    failures.append(f"{url}: {exc}")
                except (_SourceUnusable, _TooSlow) as exc:
                    failures.append(f"{url}: {exc}")
                    break
                except EndlessData as exc:
                    part.unlink(missing_ok=True)
                    self.stats.refusals.append(exc.message)
                    failures.append(exc)
                    break
                except TamperedArtifact as exc:
                    part.unlink(missing_ok=True)
                    self.stats.refusals.append(exc.message)
                    failures.append(exc)
                    # Bytes kept from an earlier source may be the bad ones: retry this one from zero.
                    if not resumed:
                        break
        raise _worst(file, failures)

    def _transfer(self, url: str, file: SignedFile, part: Path) -> None:
        offset = part.stat().st_size if part.exists() else 0
        if offset > file.size:
            part.unlink()
            offset = 0
        digest = _Digest(file.cid)
        try:
            if offset:
                digest.feed_file(part)
            if offset < file.size:
                self._receive(url, file, part, offset, digest)
            digest.verify(file, url)
        finally:
            digest.close()

    def _receive(self, url: str, file: SignedFile, part: Path, offset: int, digest: "_Digest") -> None:
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        self.stats.requests += 1
        try:
            with self.client.stream("GET", url, headers=headers) as response:
                if response.status_code == 206 and offset:
                    start = _range_start(response, file, url)
                    if start != offset:
                        raise _SourceUnusable(f"asked for bytes from {offset}, got a range from {start}")
                    self.stats.resumed_bytes += offset
                    mode = "ab"
                elif response.status_code == 200:
                    if offset:
                        # The source ignored Range: start over.
                        digest.reset()
                        offset = 0
                    mode = "wb"
                else:
                    raise _SourceUnusable(f"HTTP {response.status_code}")
                announced = response.headers.get("Content-Length")
                if announced is not None and announced.isdigit() and int(announced) > file.size - offset:
                    raise EndlessData(
                        f"{file.path}: {url} announced {int(announced):,} bytes where {file.size - offset:,} "
                        f"remain of the signed {file.size:,}; refusing to read it"
                    )
                remaining = file.size - offset
                window_start, window_bytes = time.monotonic(), 0
                with open(part, mode) as out:
                    for chunk in response.iter_bytes():
                        if len(chunk) > remaining:
                            chunk = chunk[:remaining]
                        out.write(chunk)
                        digest.update(chunk)
                        remaining -= len(chunk)
                        self.stats.downloaded += len(chunk)
                        self.on_bytes(len(chunk))
                        if remaining == 0:
                            # Stop at the signed size: whatever else the source sends is never read.
                            break
                        window_bytes += len(chunk)
                        elapsed = time.monotonic() - window_start
                        if self.min_rate and elapsed >= self.rate_window:
                            if window_bytes / elapsed < self.min_rate:
                                raise _TooSlow(
                                    f"sent {window_bytes:,} bytes in {elapsed:.1f} s, under the minimum of "
                                    f"{self.min_rate:,.0f} bytes/s; abandoned with {file.size - remaining:,} of "
                                    f"{file.size:,} bytes kept"
                                )
                            window_start, window_bytes = time.monotonic(), 0
                    out.flush()
                    os.fsync(out.fileno())
        except httpx.TransportError as exc:
            raise _Interrupted(f"{type(exc).__name__}: {exc}") from exc
        if remaining:
            raise _Interrupted(f"the connection ended {remaining:,} bytes short of the signed {file.size:,}")


class _Digest:
    """sha256 and the UnixFS CID of the same bytes, computed on a thread beside the download.

    Both hashers release the GIL, so hashing overlaps with receiving and
    writing instead of adding to it.
    """

    def __init__(self, expected_cid: str):
        self.expected_cid = expected_cid
        self._thread: threading.Thread | None = None
        self.reset()

    def reset(self) -> None:
        self.close()
        self.sha256 = hashlib.sha256()
        try:
            self.cid = CidHasher.for_expected(self.expected_cid)
        except ValueError as exc:
            raise MetadataFormatError(f"cannot check CID {self.expected_cid!r}: {exc}") from exc
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=64)

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self.sha256.update(chunk)
            self.cid.update(chunk)

    def update(self, chunk: bytes) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="conclave-node-hash", daemon=True)
            self._thread.start()
        self._queue.put(chunk)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def feed_file(self, path: Path) -> None:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                self.update(chunk)

    def verify(self, file: SignedFile, url: str) -> None:
        self.close()
        digest = self.sha256.hexdigest()
        if digest != file.sha256:
            raise TamperedArtifact(
                f"{file.path}: sha256 of the bytes from {url} is {digest[:16]}…, the signed set says "
                f"{file.sha256[:16]}…"
            )
        computed = self.cid.finalize()
        if computed != file.cid:
            raise TamperedArtifact(
                f"{file.path}: CID of the bytes from {url} is {computed}, the signed set says {file.cid}"
            )


def _range_start(response: httpx.Response, file: SignedFile, url: str) -> int:
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    if match is None:
        raise _SourceUnusable("a 206 response without a usable Content-Range")
    start, _end, total = match.groups()
    if total != "*" and int(total) != file.size:
        if int(total) > file.size:
            raise EndlessData(f"{file.path}: {url} serves {int(total):,} bytes where {file.size:,} are signed")
        raise TamperedArtifact(f"{file.path}: {url} serves {int(total):,} bytes where {file.size:,} are signed")
    return int(start)


def _worst(file: SignedFile, failures: list) -> NodeError:
    for kind in (TamperedArtifact, EndlessData):
        refused = [f for f in failures if isinstance(f, kind)]
        if refused:
            return kind("; ".join(f.message for f in refused))
    detail = "; ".join(str(f) for f in failures[-4:]) or "no source configured"
    return DownloadFailed(f"{file.path}: no source delivered it ({detail})")
