"""`conclave-node pull` of the default set against a plain HTTP download of the same bytes.

Bootstraps a throwaway platform (MiniLM-L6 int8 + tokenizer and SmolLM2-135M:
about 120 MB approved), serves it with waitress on loopback, then per round:

- plain: GET every file of the set from the platform's gateway and write it
  to disk with httpx (no signature, no hashes);
- node: a fresh `conclave-node` home, `pull`: root chain, signed set
  (threshold, expiry, rollback checks), every file streamed to disk with
  sha256 and CID computed on the way, atomic install;
- node, up to date: a second `pull` on that home (304 and expiry re-check).

Prints the median of each and the overhead ratio node / plain.

Usage: python bench/node_pull.py [--rounds 5] [--threads 4]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _common import REPO_ROOT, free_port

sys.path.insert(0, str(REPO_ROOT))

from conclave_node.agent import NodeAgent  # noqa: E402
from conclave_node.state import NodeHome  # noqa: E402


def wait_until_up(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=5).status_code < 500:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the server at {url} did not come up")
        time.sleep(0.2)


def plain_download(base: str, files: list[dict], folder: Path) -> float:
    folder.mkdir(parents=True)
    started = time.perf_counter()
    with httpx.Client(timeout=60) as client:
        for index, file in enumerate(files):
            with client.stream("GET", f"{base}/ipfs/{file['cid']}") as response:
                response.raise_for_status()
                with open(folder / f"{index}-{file['path']}", "wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
    return time.perf_counter() - started


def node_pull(base: str, trust_root: Path, home: Path) -> tuple[float, float, int]:
    agent = NodeAgent(NodeHome(home))
    agent.init(server=base, trust_root=trust_root)
    started = time.perf_counter()
    result = agent.pull()
    first = time.perf_counter() - started
    assert result.outcome == "installed", result
    started = time.perf_counter()
    again = agent.pull()
    second = time.perf_counter() - started
    assert again.outcome == "up_to_date" and again.not_modified, again
    return first, second, result.downloaded_bytes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="conclave-bench-pull-"))
    data_dir = work / "data"
    env = {
        **os.environ,
        "CONCLAVE_DATA_DIR": str(data_dir),
        "DJANGO_SETTINGS_MODULE": "conclave.settings",
        "THROTTLE_API_ANON_RATE": "off",
    }  # one anonymous load generator: no per-client rate
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "SIGNING_ROOT_KEYS", "SIGNING_ONLINE_KEYS"):
        env.pop(name, None)
    python = sys.executable
    print("bootstrapping a throwaway platform (registers and pins the model packs)...", file=sys.stderr)
    subprocess.run([python, "manage.py", "bootstrap"], cwd=REPO_ROOT, env=env, check=True, capture_output=True)
    trust_root = work / "root.json"
    subprocess.run(
        [python, "manage.py", "signing_keys", "init"], cwd=REPO_ROOT, env=env, check=True, capture_output=True
    )
    subprocess.run(
        [python, "manage.py", "signing_keys", "export-root", "-o", str(trust_root)],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = subprocess.Popen(
        [
            python,
            "-m",
            "waitress",
            f"--port={port}",
            "--host=127.0.0.1",
            f"--threads={args.threads}",
            "conclave.wsgi:application",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/api/v1/keys/")
        signed = httpx.get(f"{base}/api/v1/approved/signed/", timeout=30).json()["signed"]
        files = [f for m in signed["manifests"] for f in m["files"]]
        total = sum(f["size_bytes"] for f in files)
        models = [f"{m['model_name']}@{m['version']}" for m in signed["manifests"]]
        plain, node, up_to_date = [], [], []
        for round_index in range(args.rounds):
            # Alternate the order so neither always runs on a warmer page cache.
            order = ("plain", "node") if round_index % 2 == 0 else ("node", "plain")
            for which in order:
                if which == "plain":
                    plain.append(plain_download(base, files, work / f"plain-{round_index}"))
                    shutil.rmtree(work / f"plain-{round_index}")
                else:
                    first, second, downloaded = node_pull(base, trust_root, work / f"node-{round_index}")
                    assert downloaded == total, (downloaded, total)
                    node.append(first)
                    up_to_date.append(second)
                    shutil.rmtree(work / f"node-{round_index}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    plain_s, node_s, again_s = (statistics.median(v) for v in (plain, node, up_to_date))
    print(
        f"Default set: {', '.join(models)}; {len(files)} files, {total:,} bytes. waitress --threads={args.threads}, "
        f"loopback, SQLite, embedded IPFS store; median of {args.rounds} rounds.\n"
    )
    print("| what | seconds | MB/s | vs plain download |")
    print("|---|---:|---:|---:|")
    for label, seconds in (
        ("plain HTTP download (httpx, no checks)", plain_s),
        ("conclave-node pull (signatures + sha256 + CID + atomic install)", node_s),
        ("conclave-node pull, already up to date (304)", again_s),
    ):
        mb_s = f"{total / seconds / 1e6:,.0f}" if seconds > 0.05 else "-"
        print(f"| {label} | {seconds:.3f} | {mb_s} | {seconds / plain_s:.2f}x |")
    print(f"\nOverhead ratio (node pull / plain download): {node_s / plain_s:.2f}x")
    print(json.dumps({"plain_s": plain, "node_s": node, "up_to_date_s": up_to_date}), file=sys.stderr)


if __name__ == "__main__":
    main()
