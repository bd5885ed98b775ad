"""The routing hop: the platform's serving endpoints sending requests to `conclave-node serve`, against the node direct.

    .venv/bin/python bench/routing.py [--rounds 3] [--threads 1] [--nodes 3] [--duration 5] [--requests 200]

One run on this machine, same model files everywhere. The platform is
`manage.py up` (embedded: SQLite, in-process broker) in a fresh data dir
after `manage.py bootstrap` (the default packs adopted), with
INFERENCE_ROUTING=federated. The nodes are real `conclave-node serve`
processes (`--threads T` each) over one node home initialised from that
platform's signed set (`signing_keys export-root`, `conclave-node init`,
`pull`), joined with `nodes.services.serving_node_join` (as `serve --join`
does) and a heartbeat timeout long enough for the run.

Measures, per round (paired, medians over `--rounds`):

* `/embed` p50 at concurrency 1 (one sentence per request, `--requests` of
  them after 20 warm-up requests): through the platform with one node
  joined, and that node called directly;
* `/v1/chat/completions` tokens/s (128 tokens, greedy, end-of-generation
  tokens banned so both make the same number): through the platform, and
  the node directly;
* aggregate embeddings/s at concurrency 32 (asyncio + httpx, single-sentence
  requests, `--duration` seconds) through the platform with 1, 2, ... up to
  `--nodes` nodes joined;
* a killed node: under load at concurrency 8 over every node, the last one
  joined is SIGKILLed; measured are the requests the clients lost (retried on
  another node, so none should be), how many requests the router still sent
  to the dead node, and the time from the kill to the last of them before
  its breaker opened (its count in `conclave_routing_requests_total`, read
  from `/metrics/prometheus` every 20 ms; later single trials of the
  half-open breaker, one per INFERENCE_ROUTING_BREAKER_COOLDOWN_SECONDS, are
  counted apart).

Every process shares this machine's CPUs: the platform's web process (its
embedded worker idles: federated sends nothing to it), every node (each
with `--threads` model threads) and the load generator. Say how many cores
the machine has when quoting the aggregate figures (printed at the top).
Prints a markdown table, and every round as JSON as it is taken.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import free_port  # noqa: E402
from inference_overhead import (  # noqa: E402 - the shared helpers
    MANAGE,
    REPO,
    _embed_load,
    _env,
    http_embed_p50,
    start_servers,
    stop_servers,
)
from node_serve import chat_tokens_per_second, end_of_generation_bias, node_start, stop  # noqa: E402

JOIN = """
from accounts.services import user_grant_role
from nodes.services import serving_node_heartbeat, serving_node_join
from registry.models import Manifest, ManifestStatus
cids = list(Manifest.objects.filter(status=ManifestStatus.APPROVED).values_list("manifest_cid", flat=True))
node = user_grant_role(username={name!r}, role="node")
serving_node_join(node=node, url={url!r}, secret="bench-secret-" + "x" * 32, models=cids, hardware={{}})
serving_node_heartbeat(node=node, running=0, waiting=0, queue_capacity=256)
"""


def manage(env: dict, *args: str) -> str:
    return subprocess.run(
        [*MANAGE, *args], env=env, cwd=REPO, check=True, capture_output=True, text=True, timeout=600
    ).stdout


def node_home_from(platform: str, env: dict, folder: Path) -> Path:
    """A node home initialised from the platform's trust root and pulled, as an operator does."""
    root = folder / "root.json"
    manage(env, "signing_keys", "export-root", "-o", str(root))
    home = folder / "node"
    node_env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    node = [sys.executable, "-m", "conclave_node", "--home", str(home)]
    subprocess.run([*node, "init", "--server", platform, "--trust-root", str(root)], env=node_env, check=True)
    subprocess.run([*node, "pull"], env=node_env, check=True, timeout=600)
    return home


class _Home:
    def __init__(self, path: Path):
        self.path = path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="model threads of each node")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; load {Path('/proc/loadavg').read_text().strip()}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="conclave-bench-routing-"))
    (work / "data").mkdir()
    env = _env("embedded", threads=args.threads, data_dir=str(work / "data"), redis_url="", database_url="")
    env.update(
        INFERENCE_ROUTING="federated",
        NODES_ALLOW_PRIVATE_URLS="true",
        NODES_HEARTBEAT_TIMEOUT_SECONDS="86400",
        # Every request of the hop measure goes to the node (no spot checks on the side).
        INFERENCE_SPOT_CHECK_SHARE="0",
    )
    port = free_port()
    platform = f"http://127.0.0.1:{port}"
    servers = start_servers("embedded", env, port)
    nodes: list = []
    try:
        home = _Home(node_home_from(platform, env, work))
        urls = []
        for index in range(args.nodes):
            node_port = free_port()
            nodes.append(node_start(home, port=node_port, threads=args.threads, log=work / f"node-{index}.log"))
            urls.append(f"http://127.0.0.1:{node_port}")
        manage(env, "shell", "-c", JOIN.format(name="bench-node-0", url=urls[0]))
        time.sleep(1.5)  # the platform re-reads the rotation at most every INFERENCE_SERVING_READS_CACHE_SECONDS
        bias = end_of_generation_bias()
        rounds = []
        for round_index in range(args.rounds):
            result = {
                "embed_p50_ms_node": http_embed_p50(urls[0], args.requests),
                "embed_p50_ms_platform": http_embed_p50(platform, args.requests),
            }
            with (
                httpx.Client(base_url=urls[0], timeout=300) as direct,
                httpx.Client(base_url=platform, timeout=300) as routed,
            ):
                chat_tokens_per_second(direct, bias)  # warm-up
                result["chat_tokens_per_sec_node"] = chat_tokens_per_second(direct, bias)
                result["chat_tokens_per_sec_platform"] = chat_tokens_per_second(routed, bias)
            print(json.dumps({"round": round_index, **result}), flush=True)
            rounds.append(result)
        aggregate = {}
        for count in range(1, args.nodes + 1):
            if count > 1:
                manage(env, "shell", "-c", JOIN.format(name=f"bench-node-{count - 1}", url=urls[count - 1]))
                time.sleep(1.5)
            aggregate[count] = asyncio.run(_embed_load(platform, 32, args.duration))
            print(json.dumps({"nodes": count, "embeddings_per_sec_c32": aggregate[count]}), flush=True)
        killed = asyncio.run(_killed_node(platform, nodes[-1], f"bench-node-{args.nodes - 1}", args.duration))
        print(json.dumps({"killed_node": killed}), flush=True)
    finally:
        for process in nodes:
            stop(process)
        stop_servers(servers)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    p50_node, p50_platform = med("embed_p50_ms_node"), med("embed_p50_ms_platform")
    tps_node, tps_platform = med("chat_tokens_per_sec_node"), med("chat_tokens_per_sec_platform")
    print()
    print(f"| measure (median of {args.rounds} rounds) | node direct | through the platform | ratio |")
    print("|---|---|---|---|")
    hop = p50_platform / p50_node
    print(f"| `/embed` p50, concurrency 1 (ms) | {p50_node:.2f} | {p50_platform:.2f} | {hop:.2f}× |")
    print(
        f"| `/v1/chat/completions` tokens/s (128 tokens) | {tps_node:.1f} | {tps_platform:.1f} | "
        f"{tps_platform / tps_node:.2f}× |"
    )
    print()
    cpus = os.cpu_count()
    print(f"| nodes joined (each `--threads {args.threads}`, one machine of {cpus} CPUs) | embeddings/s, c32 |")
    print("|---|---|")
    for count, rate in aggregate.items():
        print(f"| {count} | {rate:.1f} |")
    print()
    print(f"Killed node (SIGKILL under load at concurrency 8 over {args.nodes} nodes):")
    print(
        f"requests lost by clients {killed['client_errors']} of {killed['requests']}; "
        f"sent to the dead node {killed['routed_to_dead_before_breaker']} within "
        f"{killed['left_after_ms']:.0f} ms of the kill (then its breaker was open), "
        f"plus {killed['half_open_trials']} half-open trial(s) in the next {args.duration:g} s"
    )
    return 0


def _dead_node_count(text: str, node: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("conclave_routing_requests_total{") and f'node="{node}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _killed_node(platform: str, process, name: str, duration: float) -> dict:
    """SIGKILL `process` (joined as `name`) under load; what the clients and the router saw."""
    import signal as signals

    requests = errors = 0
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(base_url=platform, timeout=60, limits=limits) as client:
        stop_at = time.perf_counter() + 2 * duration
        changes: list[tuple[float, float]] = []
        killed_at: list[float] = []

        async def load(offset: int):
            nonlocal requests, errors
            i = offset
            while time.perf_counter() < stop_at:
                response = await client.post("/embed", json={"text": f"sentence {i} about the weather"})
                requests += 1
                errors += response.status_code != 200
                i += 1

        async def watch():
            last = None
            while time.perf_counter() < stop_at:
                text = (await client.get("/metrics/prometheus")).text
                count = _dead_node_count(text, name)
                if last is not None and count != last and killed_at:
                    changes.append((time.perf_counter(), count - last))
                last = count
                await asyncio.sleep(0.02)

        async def kill():
            await asyncio.sleep(duration / 2)
            killed_at.append(time.perf_counter())
            process.send_signal(signals.SIGKILL)

        await asyncio.gather(*(load(i) for i in range(8)), watch(), kill())
    # The first burst after the kill is the traffic that reached the dead node before its breaker
    # opened; later single increments a cooldown apart are the half-open breaker's trials.
    burst, trials, end = 0.0, 0, killed_at[0]
    for at, added in changes:
        if at - end < 1.0:
            burst += added
            end = at
        else:
            trials += 1
    return {
        "requests": requests,
        "client_errors": errors,
        "routed_to_dead_before_breaker": int(burst),
        "left_after_ms": (end - killed_at[0]) * 1000,
        "half_open_trials": trials,
    }


if __name__ == "__main__":
    raise SystemExit(main())
