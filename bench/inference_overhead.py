"""What serving through Conclave costs over calling the model libraries directly.

    .venv/bin/python bench/inference_overhead.py [--configs embedded,postgres-redis] [--threads 2]

One run, same model files (the installed packs) and the same CPU threads for
the model everywhere:

* raw baselines in this process: onnxruntime + tokenizers for MiniLM-L6
  (one sentence per call; batches of 32, the better of one call at a time
  on every thread and one call per thread side by side; the better p50 of
  the two sessions), llama-cpp-python for SmolLM2-135M
  (`create_completion`, greedy, end-of-text banned so every run makes the
  same number of tokens);
* the same work over HTTP against a running server, in a fresh data dir:
  - `embedded`: `manage.py up` (web, worker threads and the embedded broker
    in one process, SQLite);
  - `postgres-redis`: `manage.py up --no-worker` on PostgreSQL + Redis, and a
    separate `celery worker` process (threads pool) consuming `inference`.

Measures `/embed` p50 at concurrency 1, embedding throughput at concurrency
32 (single-sentence requests, batched by the worker), and tokens/s of
`/generate` and `/v1/chat/completions`. The embedding load comes from `wrk`
when it is installed (asyncio + httpx otherwise); either runs on the same
machine and takes CPU from the server, which the raw baselines do not pay.
Rounds are paired: each server round runs right after a raw round, and
within a round raw and served generations alternate, one of each three
times, so the two sides see the same machine (this VM's speed drifts by tens
of percent within minutes). Each ratio reported is the median over `--rounds` pairs of
server ÷ raw, and the figures beside it are the medians of each side. The
wrk load cycles through the same sentences the raw baseline embeds. Prints
a markdown table; every round is printed as JSON as it is taken. A second
table (Linux, with wrk) says where the CPU went during the concurrency-32
runs: CPU time per sentence of the raw loops against the server processes',
the load generator's per request, and how busy the machine was.
"""

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from _common import MINILM, SMOLLM, TOKENIZER, free_port

REPO = Path(__file__).resolve().parents[1]
MANAGE = [sys.executable, str(REPO / "manage.py")]
SENTENCES = [
    "A man is playing a guitar on stage.",
    "The train to Berlin leaves at nine in the morning.",
    "Children are playing football in the park after school.",
    "The company reported higher profits this quarter.",
    "Rain is expected across the north tomorrow afternoon.",
    "She is learning to play the piano with a new teacher.",
    "The museum opens at ten every morning except Monday.",
    "Two men are fixing a car in the garage.",
]
PROMPT = "Once upon a time, in a small village by the sea,"
CHAT = [{"role": "user", "content": "Tell me a story about a lighthouse keeper."}]
GENERATION_TOKENS = 128
BAN_END = {0: -100.0, 2: -100.0}  # SmolLM2's <|endoftext|> and <|im_end|>


# --- Raw libraries ------------------------------------------------------------------------------


def raw_embedding_session(threads: int):
    """`embed(texts) -> vectors`: tokenizers + an onnxruntime session on `threads` threads, as the server runs it."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(TOKENIZER)
    tokenizer.enable_truncation(max_length=256)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # As the server runs it (INFERENCE_ONNX_SPINNING off).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(MINILM, sess_options=options, providers=["CPUExecutionProvider"])

    def embed(texts):
        encodings = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (states,) = session.run(["last_hidden_state"], feed)
        pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    return embed


def raw_embedding(*, threads: int, n: int, duration: float) -> dict:
    # Two ways to spend `threads` CPU threads: one call at a time on all of
    # them (what the server's batching thread does), or `threads` calls side
    # by side on one each (faster here). The raw figure is the better of the two.
    session, lane_session = raw_embedding_session(threads), raw_embedding_session(1)

    for i in range(20):
        session([SENTENCES[i % len(SENTENCES)]])
        lane_session([SENTENCES[i % len(SENTENCES)]])
    singles = {session: [], lane_session: []}
    for i in range(n):
        for on, samples in singles.items():
            started = time.perf_counter()
            on([SENTENCES[i % len(SENTENCES)]])
            samples.append(time.perf_counter() - started)
    batch = [SENTENCES[i % len(SENTENCES)] for i in range(32)]

    def batches_per_second(on, callers: int) -> float:
        done = [0] * callers
        stop = time.perf_counter() + duration

        def loop(caller: int) -> None:
            while time.perf_counter() < stop:
                on(batch)
                done[caller] += 32

        started, cpu_started = time.perf_counter(), time.process_time()
        workers = [threading.Thread(target=loop, args=(c,)) for c in range(callers)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        cpu_ms_per_sentence = (time.process_time() - cpu_started) * 1000 / sum(done)
        return sum(done) / (time.perf_counter() - started), cpu_ms_per_sentence

    # Each way with the tokenizer's own thread pool on (its default) and off (what
    # `conclave-node serve` runs with): the baseline is the fastest of the four.
    runs = {}
    for parallelism in ("true", "false"):
        with tokenizers_parallelism(parallelism):
            runs["one_call", parallelism] = batches_per_second(session, 1)
            runs["side_by_side", parallelism] = batches_per_second(lane_session, threads)
    best = max(runs, key=lambda key: runs[key][0])

    return {
        "embed_p50_ms": min(statistics.median(samples) for samples in singles.values()) * 1000,
        # Each session's own single-sentence p50: what a one-thread lane pays against all the threads.
        "embed_p50_ms_one_thread": statistics.median(singles[lane_session]) * 1000,
        f"embed_p50_ms_{threads}_threads": statistics.median(singles[session]) * 1000,
        "embed_sentences_per_sec_c32": runs[best][0],
        # CPU of the faster configuration, per sentence (this process does nothing else meanwhile).
        "embed_cpu_ms_per_sentence_c32": runs[best][1],
        "embed_c32_best_of": f"{best[0]}, TOKENIZERS_PARALLELISM={best[1]}",
        "embed_batch32_one_call_per_sec": max(runs["one_call", p][0] for p in ("true", "false")),
        "embed_batch32_side_by_side_per_sec": max(runs["side_by_side", p][0] for p in ("true", "false")),
    }


@contextlib.contextmanager
def tokenizers_parallelism(value: str):
    """`tokenizers` reads TOKENIZERS_PARALLELISM at each batch call, so it can be switched in-process."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


class RawGenerator:
    """llama-cpp-python on this process's main thread, the generation baseline."""

    def __init__(self, threads: int):
        import llama_cpp
        from jinja2 import Environment

        self.llm = llama_cpp.Llama(
            model_path=SMOLLM, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False
        )
        template = self.llm.metadata["tokenizer.chat_template"]
        self.chat_prompt = (
            Environment(trim_blocks=True, lstrip_blocks=True)
            .from_string(template)
            .render(messages=CHAT, add_generation_prompt=True)
        )
        self.llm.create_completion(PROMPT, max_tokens=8, temperature=0.0)

    def tokens_per_second(self, prompt: str) -> float:
        started = time.perf_counter()
        out = self.llm.create_completion(prompt, max_tokens=GENERATION_TOKENS, temperature=0.0, logit_bias=BAN_END)
        return out["usage"]["completion_tokens"] / (time.perf_counter() - started)


# --- Servers --------------------------------------------------------------------------------------


def _env(config: str, *, threads: int, data_dir: str, redis_url: str, database_url: str) -> dict:
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="conclave.settings",
        CONCLAVE_DATA_DIR=data_dir,
        INFERENCE_THREADS=str(threads),
        LOG_LEVEL="WARNING",
        SECRET_KEY="bench-only",
        # The load generator is one anonymous client: no per-client rates.
        THROTTLE_INFERENCE_ANON_RATE="off",
        THROTTLE_API_ANON_RATE="off",
    )
    if config == "postgres-redis":
        env.update(DATABASE_URL=database_url, CELERY_BROKER_URL=redis_url)
    return env


def _postgres_reset(database_url: str) -> None:
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    admin = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def start_servers(config: str, env: dict, port: int) -> list[subprocess.Popen]:
    log = open(Path(env["CONCLAVE_DATA_DIR"]) / "server.log", "w")  # noqa: SIM115 - kept open while it runs
    subprocess.run([*MANAGE, "bootstrap"], env=env, check=True, cwd=REPO, stdout=log, stderr=log, timeout=600)
    processes = []
    if config == "embedded":
        command = [*MANAGE, "up", "--port", str(port), "--threads", "48", "--concurrency", "40", "--no-beat"]
    else:
        command = [*MANAGE, "up", "--port", str(port), "--threads", "48", "--no-worker", "--no-beat"]
        worker = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "conclave",
            "worker",
            "-P",
            "threads",
            "-c",
            "40",
            "-Q",
            "inference",
            "-l",
            "WARNING",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "-n",
            f"bench-{port}@%h",
        ]
        processes.append(subprocess.Popen(worker, env=env, cwd=REPO, stdout=log, stderr=log))
    processes.append(subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=log))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                return processes
        except httpx.HTTPError:
            pass
        if any(p.poll() is not None for p in processes):
            break
        time.sleep(0.5)
    stop_servers(processes)
    raise SystemExit(f"{config}: the server did not become ready; see {log.name}")


def stop_servers(processes: list[subprocess.Popen]) -> None:
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


# --- Over HTTP ----------------------------------------------------------------------------------


def http_embed_p50(base: str, n: int) -> float:
    with httpx.Client(base_url=base, timeout=30) as client:
        for i in range(20):
            client.post("/embed", json={"text": SENTENCES[i % len(SENTENCES)]}).raise_for_status()
        samples = []
        for i in range(n):
            started = time.perf_counter()
            client.post("/embed", json={"text": SENTENCES[i % len(SENTENCES)]}).raise_for_status()
            samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


async def _embed_load(base: str, concurrency: int, duration: float) -> float:
    done = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        stop = time.perf_counter() + duration

        async def loop(offset: int):
            nonlocal done
            i = offset
            while time.perf_counter() < stop:
                response = await client.post("/embed", json={"text": SENTENCES[i % len(SENTENCES)]})
                response.raise_for_status()
                done += 1
                i += 1

        await asyncio.gather(*(loop(i) for i in range(concurrency)))  # warm-up round
        done, started = 0, time.perf_counter()
        stop = started + duration
        await asyncio.gather(*(loop(i) for i in range(concurrency)))
        return done / (time.perf_counter() - started)


def http_tokens_per_second(client: httpx.Client, path: str, body: dict) -> float:
    started = time.perf_counter()
    response = client.post(path, json=body)
    response.raise_for_status()
    data = response.json()
    tokens = data["tokens_generated"] if "tokens_generated" in data else data["usage"]["completion_tokens"]
    return tokens / (time.perf_counter() - started)


def generation_pairs(raw: RawGenerator, base: str, *, runs: int = 3) -> tuple[dict, dict]:
    """Tokens/s of raw and served generations, one after the other `runs` times; medians of each."""
    bias = {str(k): v for k, v in BAN_END.items()}
    cases = {
        "generate_tokens_per_sec": (
            PROMPT,
            "/generate",
            {"prompt": PROMPT, "max_tokens": GENERATION_TOKENS, "temperature": 0, "logit_bias": bias},
        ),
        "chat_tokens_per_sec": (
            raw.chat_prompt,
            "/v1/chat/completions",
            {"messages": CHAT, "max_tokens": GENERATION_TOKENS, "temperature": 0, "logit_bias": bias},
        ),
    }
    raws, served = {}, {}
    with httpx.Client(base_url=base, timeout=120) as client:
        client.post("/generate", json={"prompt": PROMPT, "max_tokens": 8}).raise_for_status()
        for key, (prompt, path, body) in cases.items():
            raw_runs, served_runs = [], []
            for _ in range(runs):
                raw_runs.append(raw.tokens_per_second(prompt))
                served_runs.append(http_tokens_per_second(client, path, body))
            raws[key], served[key] = statistics.median(raw_runs), statistics.median(served_runs)
    return raws, served


def _wrk_script() -> str:
    """Each wrk connection cycles through SENTENCES, the texts the raw baseline embeds."""
    bodies = ", ".join("[[" + json.dumps({"text": text}) + "]]" for text in SENTENCES)
    return f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {{{bodies}}}
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, bodies[(i % #bodies) + 1])
end
"""


def _wrk(base: str, *, connections: int, threads: int, duration: float) -> dict:
    """Run wrk (a C load generator, far lighter than Python clients) against /embed."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_wrk_script())
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "-s",
        script.name,
        f"{base}/embed",
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    if "Non-2xx" in output:
        raise SystemExit(f"wrk saw errors:\n{output}")
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p50 = next(line.split()[1] for line in output.splitlines() if line.strip().startswith("50%"))
    number = p50.rstrip("usm")
    rate = next(line.split()[1] for line in output.splitlines() if line.startswith("Requests/sec"))
    requests = next(int(line.split()[0]) for line in output.splitlines() if " requests in " in line)
    return {"p50_ms": float(number) * units[p50[len(number) :]], "rps": float(rate), "requests": requests}


class CpuMeter:
    """CPU seconds the server processes, the load generator and the whole machine spend meanwhile (Linux /proc)."""

    TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.available = Path("/proc/stat").exists()

    def _servers(self) -> float:
        ticks = 0
        for pid in self.pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / self.TICK

    @staticmethod
    def _machine() -> tuple[float, float]:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        idle = values[3] + values[4]  # idle, iowait
        return (sum(values) - idle) / CpuMeter.TICK, sum(values) / CpuMeter.TICK

    @staticmethod
    def _children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # children waited for: the load generator
        return usage.ru_utime + usage.ru_stime

    def __enter__(self):
        if self.available:
            self._start = (self._servers(), self._children(), self._machine())
        return self

    def __exit__(self, *exc):
        if not self.available or exc[0] is not None:
            return
        servers0, children0, (busy0, total0) = self._start
        busy, total = self._machine()
        self.servers = self._servers() - servers0
        self.load_generator = self._children() - children0
        self.machine_busy = (busy - busy0) / max(total - total0, 1e-9)


def _batch_size_totals(base: str) -> tuple[float, float]:
    """(requests, texts) so far in the server's embedding batch-size histogram, over every model."""
    from prometheus_client.parser import text_string_to_metric_families

    name = "conclave_inference_embedding_batch_size"
    totals = {f"{name}_count": 0.0, f"{name}_sum": 0.0}
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics/prometheus", timeout=10).text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals[f"{name}_count"], totals[f"{name}_sum"]


def server_embedding(base: str, *, n: int, duration: float, pids: list[int]) -> dict:
    if shutil.which("wrk"):
        http_embed_p50(base, 20)  # warm-up
        p50 = _wrk(base, connections=1, threads=1, duration=duration)["p50_ms"]
        requests0, texts0 = _batch_size_totals(base)
        with CpuMeter(pids) as meter:
            load = _wrk(base, connections=32, threads=2, duration=duration)
        requests, texts = _batch_size_totals(base)
        embed = {
            "embed_p50_ms": p50,
            "embed_sentences_per_sec_c32": load["rps"],
            "load_generator": "wrk",
            # Each request counts the batch it ran in: the mean batch a request saw.
            "embed_batch_size_c32": (texts - texts0) / max(requests - requests0, 1),
        }
        if meter.available:
            embed.update(
                embed_cpu_ms_per_sentence_c32=meter.servers * 1000 / load["requests"],
                load_generator_cpu_ms_per_request_c32=meter.load_generator * 1000 / load["requests"],
                machine_busy_c32=meter.machine_busy,
            )
    else:
        embed = {
            "embed_p50_ms": http_embed_p50(base, n),
            "embed_sentences_per_sec_c32": asyncio.run(_embed_load(base, 32, duration)),
            "load_generator": "httpx",
        }
    return embed


# --- Report -------------------------------------------------------------------------------------------


ROWS = [
    ("`/embed` p50 at concurrency 1 (ms)", "embed_p50_ms", "≤ 2× raw"),
    ("embeddings/s at concurrency 32", "embed_sentences_per_sec_c32", "≥ 0.8× raw batched"),
    ("`/generate` tokens/s", "generate_tokens_per_sec", "≥ 0.95× raw"),
    ("`/v1/chat/completions` tokens/s", "chat_tokens_per_sec", "≥ 0.95× raw"),
]


def paired(pairs: list[tuple[dict, dict]], key: str) -> tuple[float, float, float]:
    """Medians of the raw and the server figures, and the median of the per-pair ratios server ÷ raw."""
    raws = [raw[key] for raw, _ in pairs]
    served = [server[key] for _, server in pairs]
    ratios = [s / r for r, s in zip(raws, served, strict=True)]
    return statistics.median(raws), statistics.median(served), statistics.median(ratios)


def cpu_report(results: dict[str, list[tuple[dict, dict]]]) -> str:
    """Where the CPU went in the concurrency-32 runs (medians; Linux only)."""

    def cells(key: str, show) -> str:
        row = []
        for pairs in results.values():
            values = [server[key] for _, server in pairs if key in server]
            row.append(show(statistics.median(values)) if values else "—")
        return " | ".join(row)

    key = "embed_cpu_ms_per_sentence_c32"
    per_sentence = []
    for pairs in results.values():
        if all(key in raw and key in server for raw, server in pairs):
            raw, served, ratio = paired(pairs, key)
            per_sentence.append(f"{raw:.2f} · {served:.2f} ({ratio:.2f}×)")
        else:
            per_sentence.append("—")
    return "\n".join(
        [
            "| during the concurrency-32 runs | " + " | ".join(results) + " |",
            "|---|" + "---:|" * len(results),
            "| CPU ms per sentence: raw (bench process) · server (its processes) | " + " | ".join(per_sentence) + " |",
            "| load generator CPU ms per request | "
            + cells("load_generator_cpu_ms_per_request_c32", "{:.2f}".format)
            + " |",
            "| machine busy (all CPUs) | " + cells("machine_busy_c32", lambda v: f"{v * 100:.0f} %") + " |",
            "| texts in the batch a request ran in (mean) | " + cells("embed_batch_size_c32", "{:.1f}".format) + " |",
        ]
    )


def report(results: dict[str, list[tuple[dict, dict]]]) -> str:
    header = "| measure | " + " | ".join(f"raw · {name} (ratio)" for name in results) + " | target |"
    lines = [header, "|---|" + "---:|" * len(results) + "---|"]
    for label, key, target in ROWS:
        cells = []
        for pairs in results.values():
            raw, served, ratio = paired(pairs, key)
            cells.append(f"{raw:.1f} · {served:.1f} ({ratio:.2f}×)")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="embedded,postgres-redis")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="model threads (INFERENCE_THREADS)")
    parser.add_argument("-n", type=int, default=300, help="sequential /embed requests for the p50")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of each throughput run")
    parser.add_argument(
        "--rounds", type=int, default=5, help="raw/server pairs per configuration; medians are reported"
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/11", help="a Redis database nothing else uses: it is flushed"
    )
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/conclave_bench_inference")
    options = parser.parse_args()

    results: dict[str, list[tuple[dict, dict]]] = {}
    generator = RawGenerator(options.threads)
    for config in options.configs.split(","):
        data_dir = tempfile.mkdtemp(prefix=f"conclave-bench-{config}-")
        env = _env(
            config,
            threads=options.threads,
            data_dir=data_dir,
            redis_url=options.redis_url,
            database_url=options.database_url,
        )
        if config == "postgres-redis":
            _postgres_reset(options.database_url)
            import redis

            redis.Redis.from_url(options.redis_url).flushdb()
        port = free_port()
        processes = start_servers(config, env, port)
        pairs = results[config] = []
        try:
            for _ in range(options.rounds):
                base = f"http://127.0.0.1:{port}"
                raw = raw_embedding(threads=options.threads, n=options.n, duration=options.duration)
                served = server_embedding(base, n=options.n, duration=options.duration, pids=[p.pid for p in processes])
                raw_generation, served_generation = generation_pairs(generator, base)
                raw.update(raw_generation)
                served.update(served_generation)
                print("raw round:", json.dumps(raw), flush=True)
                print(f"{config} round:", json.dumps(served), flush=True)
                pairs.append((raw, served))
        finally:
            stop_servers(processes)
    print()
    print(
        f"model threads: {options.threads}; CPUs: {os.cpu_count()}; Python {sys.version.split()[0]}; pairs: "
        f"{options.rounds}"
    )
    print(report(results))
    print()
    print(cpu_report(results))


if __name__ == "__main__":
    main()
