"""Settings of the inference app, read from the environment (imported by conclave.settings).

The hard limits (tokens per request, concurrency, queue, timeout, memory) are
governed parameters read from the database per request
(`governance.selectors.runtime_parameters`), not settings: only the knobs of
the runtimes and the plumbing live here.
"""

import os

from kombu import Exchange, Queue

from conclave.env import env_bool, env_float, env_int, env_list, env_str

# --- Runtimes -------------------------------------------------------------------
# CPU threads per model call (onnxruntime intra-op threads, llama.cpp n_threads).
INFERENCE_THREADS = env_int("INFERENCE_THREADS", os.cpu_count() or 1)
# Context window of a loaded GGUF model (prompt + generated tokens).
INFERENCE_N_CTX = env_int("INFERENCE_N_CTX", 2048)
# Layers llama.cpp offloads to a GPU; -1 = all of them when llama.cpp was built
# with GPU support (CMAKE_ARGS=-DGGML_CUDA=on), ignored on CPU builds.
INFERENCE_N_GPU_LAYERS = env_int("INFERENCE_N_GPU_LAYERS", -1)
# onnxruntime execution providers in order of preference; empty = CUDA when
# the installed onnxruntime has it, CPU otherwise.
INFERENCE_ONNX_PROVIDERS = env_list("INFERENCE_ONNX_PROVIDERS", [])
# onnxruntime's worker threads spin while waiting for work by default: on a
# machine shared with the web server and the worker's other threads, spinning
# steals the cores it waits for (measured here: 2.5x slower at batch 1).
INFERENCE_ONNX_SPINNING = env_bool("INFERENCE_ONNX_SPINNING", False)
# Sentences longer than this many tokens are truncated before embedding.
INFERENCE_EMBED_MAX_TOKENS = env_int("INFERENCE_EMBED_MAX_TOKENS", 256)
# Micro-batching of concurrent embedding requests inside a worker: one
# onnxruntime call takes up to BATCH_SIZE texts, waiting at most WAIT_MS for
# company while other requests are on their way.
INFERENCE_EMBED_BATCH_SIZE = env_int("INFERENCE_EMBED_BATCH_SIZE", 32)
INFERENCE_EMBED_BATCH_WAIT_MS = env_float("INFERENCE_EMBED_BATCH_WAIT_MS", 3.0)
# Embedding tasks a web process keeps in flight per model; requests arriving
# meanwhile wait and go together in the next task (dispatch.EmbeddingCoalescer).
INFERENCE_EMBED_TASKS_IN_FLIGHT = env_int("INFERENCE_EMBED_TASKS_IN_FLIGHT", 2)
# How long a web process reuses the approved set's head and the governed
# limits before reading them again. A change made in this process applies at
# once; one made elsewhere (another web process, the admin on another host)
# within this many seconds. 0 reads them on every request.
INFERENCE_SERVING_READS_CACHE_SECONDS = env_float("INFERENCE_SERVING_READS_CACHE_SECONDS", 1.0)
# Input bounds of one embedding request (413 beyond them).
INFERENCE_EMBED_MAX_INPUTS = env_int("INFERENCE_EMBED_MAX_INPUTS", 256)
INFERENCE_MAX_INPUT_CHARS = env_int("INFERENCE_MAX_INPUT_CHARS", 32_000)

# --- Serving --------------------------------------------------------------------
# Where the limits, reply channels and worker status live. Empty = the Redis
# of CELERY_BROKER_URL / CELERY_RESULT_BACKEND when there is one, else this
# process's memory (right for `manage.py up`, where web and worker share one
# process; wrong for several processes without Redis).
INFERENCE_STATE_URL = env_str("INFERENCE_STATE_URL", "")
INFERENCE_STATE_PREFIX = env_str("INFERENCE_STATE_PREFIX", "conclave:inference:")
# A request no worker has picked up within this many seconds is answered 503
# (no worker is consuming the `inference` queue).
INFERENCE_PICKUP_TIMEOUT_SECONDS = env_float("INFERENCE_PICKUP_TIMEOUT_SECONDS", 10.0)
# How often a worker re-reads the approved set (hot swap) and reports its
# status for /health; 0 turns the background loop off (models then load on
# the first request).
INFERENCE_WORKER_SYNC_SECONDS = env_float("INFERENCE_WORKER_SYNC_SECONDS", 2.0)
# Each worker process stamps a liveness heartbeat in the shared state this
# often; one silent for LOST seconds is lost: its running generations are
# answered 503 `worker_lost` and /health drops it. LOST must stay well above
# HEARTBEAT: a busy machine delays a beat now and then.
INFERENCE_WORKER_HEARTBEAT_SECONDS = env_float("INFERENCE_WORKER_HEARTBEAT_SECONDS", 1.0)
INFERENCE_WORKER_LOST_SECONDS = env_float("INFERENCE_WORKER_LOST_SECONDS", 5.0)
# Open (no credentials) or token-only inference endpoints. Nodes and the
# OpenAI client send `Authorization: Bearer <token>` (or `Token <token>`).
INFERENCE_REQUIRE_AUTH = env_bool("INFERENCE_REQUIRE_AUTH", env_str("CONCLAVE_ENV", "local") == "production")
# Latency samples are buffered (Redis list or memory) and written in bulk.
INFERENCE_SAMPLES_FLUSH_SECONDS = env_float("INFERENCE_SAMPLES_FLUSH_SECONDS", 5.0)

# --- Graceful degradation (/api/v1/ask) ---------------------------------------------
# Cosine similarity above which a past answer is reused for a new query.
INFERENCE_ASK_CACHE_THRESHOLD = env_float("INFERENCE_ASK_CACHE_THRESHOLD", 0.92)
# Hybrid (keyword + embedding) score above which a knowledge document answers.
INFERENCE_ASK_KNOWLEDGE_THRESHOLD = env_float("INFERENCE_ASK_KNOWLEDGE_THRESHOLD", 0.55)
# Deadline of the generation step; the governed request timeout caps it.
INFERENCE_ASK_TIMEOUT_SECONDS = env_float("INFERENCE_ASK_TIMEOUT_SECONDS", 15.0)
INFERENCE_ASK_MAX_TOKENS = env_int("INFERENCE_ASK_MAX_TOKENS", 128)

# --- Benchmarks -----------------------------------------------------------------
INFERENCE_BENCHMARK_REPEATS = env_int("INFERENCE_BENCHMARK_REPEATS", 50)
INFERENCE_BENCHMARK_GENERATION_TOKENS = env_int("INFERENCE_BENCHMARK_GENERATION_TOKENS", 64)
# Use only the first N items of each evaluation set (0 = all of them).
INFERENCE_BENCHMARK_MAX_ITEMS = env_int("INFERENCE_BENCHMARK_MAX_ITEMS", 0)
# A running benchmark stamps a heartbeat on its run this often; beat fails
# runs whose heartbeat is older than STALE (their worker died: the task is
# acknowledged on receipt, so nothing redelivers it), checking every SWEEP
# seconds. A dead worker's run is failed within STALE + SWEEP seconds.
INFERENCE_BENCHMARK_HEARTBEAT_SECONDS = env_float("INFERENCE_BENCHMARK_HEARTBEAT_SECONDS", 10.0)
INFERENCE_BENCHMARK_STALE_SECONDS = env_float("INFERENCE_BENCHMARK_STALE_SECONDS", 120.0)
INFERENCE_BENCHMARK_SWEEP_SECONDS = env_float("INFERENCE_BENCHMARK_SWEEP_SECONDS", 60.0)
# A queued run's message is sent again after this long untaken (it may have
# been lost with a broker); a queued run is failed after the second.
INFERENCE_BENCHMARK_RESEND_SECONDS = env_float("INFERENCE_BENCHMARK_RESEND_SECONDS", 600.0)
INFERENCE_BENCHMARK_QUEUED_MAX_SECONDS = env_float("INFERENCE_BENCHMARK_QUEUED_MAX_SECONDS", 24 * 3600.0)

# --- Queues -----------------------------------------------------------------------
# Requests and benchmarks travel on separate queues (routes in
# conclave.settings) so a benchmark never blocks serving; declaring them here
# lets a plain `celery worker` (and the test worker) consume all three.
CELERY_TASK_QUEUES = (
    Queue("default", Exchange("default"), routing_key="default"),
    Queue("inference", Exchange("inference"), routing_key="inference"),
    Queue("benchmark", Exchange("benchmark"), routing_key="benchmark"),
)

BEAT_SCHEDULE: dict = {
    "inference-latency-samples-flush": {
        "task": "inference.tasks.latency_samples_flush",
        "schedule": INFERENCE_SAMPLES_FLUSH_SECONDS,
    },
    "inference-stalled-benchmarks-fail": {
        "task": "inference.tasks.stalled_benchmarks_fail",
        "schedule": INFERENCE_BENCHMARK_SWEEP_SECONDS,
    },
}
