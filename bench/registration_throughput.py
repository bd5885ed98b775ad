"""Registration throughput (sha256 + Kubo CID + staged copy, one pass) against `sha256sum`.

Usage: python bench/registration_throughput.py [--size-mb 1024] [--dir /tmp]
Prints a markdown table; every figure comes from this one run on this machine.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "conclave.settings")

from aleph_cid import CidHasher  # noqa: E402

from registry.staging import CHUNK_BYTES, FileSource, stage_files  # noqa: E402


def timed(label, fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return label, min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="conclave-bench-", dir=args.dir))
    source = work / "model.gguf"
    size = args.size_mb * 1024 * 1024
    with open(source, "wb") as out:
        block = os.urandom(CHUNK_BYTES)
        for _ in range(size // CHUNK_BYTES):
            out.write(block)
    # Warm the page cache so every contender reads from memory alike.
    subprocess.run(["cat", str(source)], stdout=subprocess.DEVNULL, check=True)

    def sha256sum():
        subprocess.run(["sha256sum", str(source)], stdout=subprocess.DEVNULL, check=True)

    def hash_only():
        sha, cid = hashlib.sha256(), CidHasher.for_ipfs()
        with open(source, "rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                sha.update(chunk)
                cid.update(chunk)
        cid.finalize()

    def register_pass():
        staging = work / "staging"
        stage_files([FileSource.single("model.gguf", "weights", source)], staging_dir=staging)
        shutil.rmtree(staging)

    rows = [
        timed("`sha256sum` (coreutils)", sha256sum, args.repeats),
        timed("sha256 + CID, one pass (no copy)", hash_only, args.repeats),
        timed("registration pass: sha256 + CID + staged copy", register_pass, args.repeats),
    ]
    baseline = rows[0][1]
    print(f"File: {args.size_mb} MiB of random bytes, page cache warm, best of {args.repeats}.\n")
    print("| what | seconds | MB/s | time vs sha256sum |")
    print("|---|---:|---:|---:|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} | {size / seconds / 1e6:.0f} | {seconds / baseline:.2f}x |")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
