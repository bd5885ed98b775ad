"""`conclave-node serve` against the raw libraries and llama-cpp-python's own OpenAI server.

    .venv/bin/python bench/node_serve.py [--rounds 5] [--threads 2] [--duration 5]
        [--llama-server-python /tmp/llama-server-venv/bin/python]

One run, same model files (the installed packs), the same model threads
everywhere. The node is a real `conclave-node serve` process over a node
home built here with the node's own code: bench keys sign a root and an
approved set listing the two packs (MiniLM-L6 int8 ONNX, SmolLM2-135M GGUF),
installed as `pull` installs, so the serving path is the one a node runs.

Per round (paired; the machine's speed drifts, so each ratio is the median
of the per-round ratios):

* embeddings: raw onnxruntime + tokenizers in this process (one sentence per
  call, tokenised at its own length; batches of 32 as the better of one call
  on every thread and one call per thread side by side: `inference_overhead`'s
  baseline), then the node's `/embed` under `wrk` (1 connection for p50, 32
  for throughput, the same sentences);
* chat: `/v1/chat/completions` of the node and of `python -m llama_cpp.server
  --model FILE --n_threads T` (llama-cpp-python[server], installed in a
  separate virtualenv: not a project dependency), 128 tokens, greedy, every
  end-of-generation token banned so both make the same number of tokens,
  alternating which goes first; raw `create_completion` in this process as
  a reference.

The load generator (wrk, or this process for chat) runs on the same CPUs as
the servers; the machine's load average is printed before and after.
"""

import argparse
import datetime as dt
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference_overhead import (  # noqa: E402 - the shared baselines
    CHAT,
    MINILM,
    SMOLLM,
    TOKENIZER,
    CpuMeter,
    RawGenerator,
    _wrk,
    raw_embedding,
)

GENERATION_TOKENS = 128


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _load() -> str:
    return Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else "?"


# --- A node home signed by bench keys ----------------------------------------------------------


def node_home_build(folder: Path):
    """A node initialised with a bench root and the two packs installed as approved set v1."""
    from aleph_cid import compute_cid
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from conclave_node.agent import NodeAgent
    from conclave_node.install import install_set, switch_current
    from conclave_node.metadata import (
        canonical,
        key_id,
        public_key_document,
        sign_envelope,
        timestamp,
        verify_signed_set,
        verify_trust_root,
    )
    from conclave_node.state import NodeHome

    now = dt.datetime.now(dt.UTC)
    root_key, online_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    documents = {
        key_id(public_key_document(k.public_key())): public_key_document(k.public_key()) for k in (root_key, online_key)
    }
    root_id, online_id = list(documents)
    root = sign_envelope(
        {
            "_type": "root",
            "spec_version": "1.0",
            "version": 1,
            "expires": timestamp(now + dt.timedelta(days=30)),
            "consistent_snapshot": False,
            "keys": documents,
            "roles": {
                "root": {"keyids": [root_id], "threshold": 1},
                "approved_set": {"keyids": [online_id], "threshold": 1},
            },
        },
        [root_key],
    )
    root_path = folder / "root.json"
    root_path.write_bytes(canonical(root))
    home = NodeHome(folder / "node")
    NodeAgent(home).init(server="http://127.0.0.1:9", trust_root=root_path)

    packs = [
        (
            "all-MiniLM-L6-v2",
            "embedding",
            "onnx",
            [("model.onnx", "weights", MINILM), ("tokenizer.json", "tokenizer", TOKENIZER)],
        ),
        ("SmolLM2-135M-Instruct", "generative", "gguf", [("SmolLM2-135M-Instruct.Q4_1.gguf", "weights", SMOLLM)]),
    ]
    manifests, sources = [], {}
    for name, kind, fmt, files in packs:
        entries = []
        for path, role, source in files:
            data = Path(source).read_bytes()
            entries.append(
                {
                    "path": path,
                    "role": role,
                    "size_bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "cid": compute_cid(data),
                }
            )
            sources[(f"{name}@bench", path)] = Path(source)
        manifests.append(
            {
                "model_name": name,
                "version": "bench",
                "kind": kind,
                "format": fmt,
                "files": entries,
                "adoption_date": timestamp(now),
            }
        )
    signed = {
        "_type": "approved_set",
        "spec_version": "1.0",
        "version": 1,
        "expires": timestamp(now + dt.timedelta(days=1)),
        "approved_set": {"version": 1},
        "manifests": manifests,
        "parameters": {
            "max_tokens_per_request": 512,
            "max_concurrent_requests": 2,
            "request_timeout_seconds": 120,
            "memory_limit_mb": 4096,
            "queue_size": 64,
        },
    }
    envelope = sign_envelope(signed, [online_key])
    signed_set = verify_signed_set(envelope, root=verify_trust_root(root), now=now)
    models_dir = home.models_dir(home.load_config())
    installed = install_set(
        models_dir=models_dir, signed_set=signed_set, envelope=canonical(envelope), files=sources, reused=set(sources)
    )
    switch_current(models_dir=models_dir, installed=installed, previous=None)
    state = home.load_state()
    state.installed = installed
    home.save_state(state)
    return home


# --- Servers ---------------------------------------------------------------------------------------


def _wait(url: str, process: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited ({process.returncode}); see {log}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{what} did not become ready; see {log}")


def node_start(home, *, port: int, threads: int, log: Path, embed_lanes: int = 1) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "conclave_node",
        "--home",
        str(home.path),
        "serve",
        "--port",
        str(port),
        "--threads",
        str(threads),
        "--embed-lanes",
        str(embed_lanes),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    _wait(f"http://127.0.0.1:{port}/health", process, "conclave-node serve", log)
    return process


def llama_server_start(python: str, *, port: int, threads: int, log: Path) -> subprocess.Popen:
    command = [
        python,
        "-m",
        "llama_cpp.server",
        "--model",
        SMOLLM,
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--n_ctx",
        "2048",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    _wait(f"http://127.0.0.1:{port}/v1/models", process, "llama_cpp.server", log)
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


# --- Measures ----------------------------------------------------------------------------------------


def end_of_generation_bias() -> dict[str, float]:
    import llama_cpp

    from conclave_node.runtimes.generation import end_of_generation_token_ids

    llm = llama_cpp.Llama(SMOLLM, vocab_only=True, verbose=False)
    try:
        return {str(token): -100.0 for token in end_of_generation_token_ids(llm)}
    finally:
        llm.close()


def chat_tokens_per_second(client: httpx.Client, bias: dict) -> float:
    body = {
        "model": "SmolLM2-135M-Instruct",
        "messages": CHAT,
        "max_tokens": GENERATION_TOKENS,
        "temperature": 0,
        "logit_bias": bias,
    }
    started = time.perf_counter()
    response = client.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    tokens = response.json()["usage"]["completion_tokens"]
    elapsed = time.perf_counter() - started
    if tokens != GENERATION_TOKENS:
        raise SystemExit(f"{client.base_url} made {tokens} tokens, not {GENERATION_TOKENS}")
    return tokens / elapsed


def node_embedding(base: str, *, duration: float, pids: list[int]) -> dict:
    _wrk(base, connections=1, threads=1, duration=1)  # warm-up
    p50 = _wrk(base, connections=1, threads=1, duration=duration)["p50_ms"]
    with CpuMeter(pids) as meter:
        load = _wrk(base, connections=32, threads=2, duration=duration)
    result = {"embed_p50_ms": p50, "embed_sentences_per_sec_c32": load["rps"]}
    if meter.available:
        result.update(
            embed_cpu_ms_per_sentence_c32=meter.servers * 1000 / load["requests"],
            load_generator_cpu_ms_per_request_c32=meter.load_generator * 1000 / load["requests"],
            machine_busy_c32=meter.machine_busy,
        )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of each wrk run")
    parser.add_argument(
        "--embed-lanes", type=int, default=1, help="the node's `serve --embed-lanes` (embedding calls side by side)"
    )
    parser.add_argument("--samples", type=int, default=400, help="raw single-sentence calls per round")
    parser.add_argument("--parts", default="embed,chat", help="embed, chat or both (default)")
    parser.add_argument(
        "--llama-server-python",
        default="/tmp/llama-server-venv/bin/python",
        help="a Python with llama-cpp-python[server] installed (outside the project)",
    )
    args = parser.parse_args()

    print(f"load average before: {_load()}", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="node-serve-bench-"))
    home = node_home_build(folder)
    node_port, llama_port = _free_port(), _free_port()
    parts = set(args.parts.split(","))
    node = node_start(home, port=node_port, threads=args.threads, log=folder / "node.log", embed_lanes=args.embed_lanes)
    llama = None
    if "chat" in parts:
        llama = llama_server_start(
            args.llama_server_python, port=llama_port, threads=args.threads, log=folder / "llama_server.log"
        )
        raw_generator = RawGenerator(args.threads)
    node_base, llama_base = f"http://127.0.0.1:{node_port}", f"http://127.0.0.1:{llama_port}"
    bias = end_of_generation_bias()
    int_bias = {int(k): v for k, v in bias.items()}
    rounds = []
    try:
        with (
            httpx.Client(base_url=node_base, timeout=300) as node_client,
            httpx.Client(base_url=llama_base, timeout=300) as llama_client,
        ):
            if "chat" in parts:
                chat_tokens_per_second(node_client, bias)
                chat_tokens_per_second(llama_client, bias)
            for index in range(args.rounds):
                raw, served = {}, {}
                if "embed" in parts:
                    raw = raw_embedding(threads=args.threads, n=args.samples, duration=args.duration)
                    served = node_embedding(node_base, duration=args.duration, pids=[node.pid])
                pairs = [(chat_tokens_per_second, node_client), (chat_tokens_per_second, llama_client)]
                if index % 2:
                    pairs.reverse()
                chat = {}
                for _ in range(3 if "chat" in parts else 0):
                    for function, client in pairs:
                        chat.setdefault(str(client.base_url), []).append(function(client, bias))
                    started = time.perf_counter()
                    out = raw_generator.llm.create_chat_completion(
                        messages=CHAT, max_tokens=GENERATION_TOKENS, temperature=0.0, logit_bias=int_bias
                    )
                    chat.setdefault("raw", []).append(
                        out["usage"]["completion_tokens"] / (time.perf_counter() - started)
                    )
                entry = {
                    "round": index + 1,
                    "load_average": _load(),
                    "raw": {
                        k: raw[k]
                        for k in (
                            "embed_p50_ms",
                            "embed_p50_ms_one_thread",
                            f"embed_p50_ms_{args.threads}_threads",
                            "embed_sentences_per_sec_c32",
                            "embed_cpu_ms_per_sentence_c32",
                            "embed_c32_best_of",
                        )
                        if k in raw
                    },
                    "node": served,
                }
                if chat:
                    entry["chat_tokens_per_sec"] = {
                        "node": statistics.median(chat[str(node_client.base_url)]),
                        "llama_cpp_server": statistics.median(chat[str(llama_client.base_url)]),
                        "raw_create_chat_completion": statistics.median(chat["raw"]),
                    }
                rounds.append(entry)
                print(json.dumps(entry), flush=True)
    finally:
        stop(node)
        if llama is not None:
            stop(llama)
    print(f"load average after: {_load()}", flush=True)

    def med(values):
        return statistics.median(values)

    print()
    print("| measure | baseline | node | node ÷ baseline | target |")
    print("|---|---:|---:|---:|---|")
    if "embed" in parts:
        p50 = [(r["raw"]["embed_p50_ms"], r["node"]["embed_p50_ms"]) for r in rounds]
        c32 = [(r["raw"]["embed_sentences_per_sec_c32"], r["node"]["embed_sentences_per_sec_c32"]) for r in rounds]
        print(
            f"| `/embed` p50 at concurrency 1 (ms) vs raw onnxruntime | {med([a for a, _ in p50]):.2f} | "
            f"{med([b for _, b in p50]):.2f} | {med([b / a for a, b in p50]):.2f}× | ≤ 1.5× |"
        )
        print(
            f"| embeddings/s at concurrency 32 vs raw batched | {med([a for a, _ in c32]):.1f} | "
            f"{med([b for _, b in c32]):.1f} | {med([b / a for a, b in c32]):.2f}× | ≥ 0.8× |"
        )
    if "chat" in parts:
        chat = [(r["chat_tokens_per_sec"]["llama_cpp_server"], r["chat_tokens_per_sec"]["node"]) for r in rounds]
        print(
            f"| `/v1/chat/completions` tokens/s vs `llama_cpp.server` | {med([a for a, _ in chat]):.1f} | "
            f"{med([b for _, b in chat]):.1f} | {med([b / a for a, b in chat]):.2f}× | ≥ 1.0× |"
        )
        raw_chat = med([r["chat_tokens_per_sec"]["raw_create_chat_completion"] for r in rounds])
        print(f"\nraw create_chat_completion in the bench process: {raw_chat:.1f} tokens/s")
    if "embed" in parts:
        print(
            f"raw single-sentence p50 by session: one thread "
            f"{med([r['raw']['embed_p50_ms_one_thread'] for r in rounds]):.2f} ms, {args.threads} threads "
            f"{med([r['raw'][f'embed_p50_ms_{args.threads}_threads'] for r in rounds]):.2f} ms"
        )
    cpu = [(r["raw"], r["node"]) for r in rounds if "embed_cpu_ms_per_sentence_c32" in r["node"]]
    if cpu:
        print(
            f"during the concurrency-32 runs: CPU ms per sentence raw "
            f"{med([a['embed_cpu_ms_per_sentence_c32'] for a, _ in cpu]):.2f} · node "
            f"{med([b['embed_cpu_ms_per_sentence_c32'] for _, b in cpu]):.2f}; wrk "
            f"{med([b['load_generator_cpu_ms_per_request_c32'] for _, b in cpu]):.3f} ms/request; machine busy "
            f"{med([b['machine_busy_c32'] for _, b in cpu]) * 100:.0f} %"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
