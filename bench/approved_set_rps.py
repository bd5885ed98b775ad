"""GET /api/v1/approved/ requests/s (200 and 304) against the same JSON as a static file.

All three are served by one waitress process (same threads) on loopback and
loaded with wrk, in one run. Needs Debian's `wrk` (apt-get install wrk).

Usage: python bench/approved_set_rps.py [--seconds 10] [--connections 16] [--threads 4]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import REPO_ROOT, free_port


def wrk(url: str, seconds: int, connections: int, header: str | None = None) -> float:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url]
    if header:
        command[1:1] = ["-H", header]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses", output):
        raise SystemExit(f"wrk saw errors for {url}:\n{output}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    data_dir = Path(tempfile.mkdtemp(prefix="conclave-bench-"))
    env = {
        **os.environ,
        "CONCLAVE_DATA_DIR": str(data_dir),
        "DJANGO_SETTINGS_MODULE": "conclave.settings",
        "THROTTLE_API_ANON_RATE": "off",
    }  # one anonymous load generator: no per-client rate
    env.pop("DATABASE_URL", None) if "--keep-db" not in sys.argv else None
    python = sys.executable
    subprocess.run([python, "manage.py", "bootstrap"], cwd=REPO_ROOT, env=env, check=True, capture_output=True)
    subprocess.run([python, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=REPO_ROOT, env=env, check=True)
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
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/v1/approved/") as response:
                    body = response.read()
                    etag = response.headers["ETag"]
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        # The same bytes as a static file, served by WhiteNoise in the same process.
        static_dir = data_dir / "staticfiles" / "bench"
        static_dir.mkdir(parents=True, exist_ok=True)
        (static_dir / "approved.json").write_bytes(body)
        server.terminate()
        server.wait()
        server = subprocess.Popen(
            server.args, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/static/bench/approved.json").read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        manifests = len(json.loads(body)["manifests"])
        rows = [
            (
                "static file (WhiteNoise, same server)",
                wrk(f"{base}/static/bench/approved.json", args.seconds, args.connections),
            ),
            ("GET /api/v1/approved/ → 200", wrk(f"{base}/api/v1/approved/", args.seconds, args.connections)),
            (
                "GET /api/v1/approved/ + If-None-Match → 304",
                wrk(f"{base}/api/v1/approved/", args.seconds, args.connections, header=f"If-None-Match: {etag}"),
            ),
        ]
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
    static = rows[0][1]
    print(
        f"Approved set: {len(body):,} bytes, {manifests} manifests. waitress --threads={args.threads}, "
        f"wrk -t2 -c{args.connections} -d{args.seconds}s, loopback, SQLite.\n"
    )
    print("| what | requests/s | vs static file |")
    print("|---|---:|---:|")
    for label, rps in rows:
        print(f"| {label} | {rps:,.0f} | {rps / static:.2f}x |")


if __name__ == "__main__":
    main()
