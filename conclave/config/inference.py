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

# --- Routing to serving nodes (inference.routing) ------------------------------------
# local: every request runs on this platform's Celery workers (nodes are not used).
# federated: every request goes to a serving node (503 no_node_available when none has the model and room).
# hybrid: a node when one has room, else the local workers.
INFERENCE_ROUTING = env_str("INFERENCE_ROUTING", "local")
# Fitness (0..1, per node and model) of a node the platform has not judged yet,
# and the weight of each new observation in its moving average.
INFERENCE_ROUTING_FITNESS_PRIOR = env_float("INFERENCE_ROUTING_FITNESS_PRIOR", 0.8)
INFERENCE_ROUTING_FITNESS_ALPHA = env_float("INFERENCE_ROUTING_FITNESS_ALPHA", 0.2)
# Nodes under this fitness get no traffic for the model; fitness drifts back to the prior with this half-life.
INFERENCE_ROUTING_MIN_FITNESS = env_float("INFERENCE_ROUTING_MIN_FITNESS", 0.4)
INFERENCE_ROUTING_FITNESS_HALF_LIFE_SECONDS = env_float("INFERENCE_ROUTING_FITNESS_HALF_LIFE_SECONDS", 900.0)
# Latency samples kept per node and model (the p50 and p95 the score and hedging use).
INFERENCE_ROUTING_LATENCY_WINDOW = env_int("INFERENCE_ROUTING_LATENCY_WINDOW", 64)
# Samples older than MAX_AGE do not count; a node with fewer than MIN_SAMPLES recent ones is scored as new
# (the candidates' median latency), so a node that was slow once is tried again later.
INFERENCE_ROUTING_LATENCY_MAX_AGE_SECONDS = env_float("INFERENCE_ROUTING_LATENCY_MAX_AGE_SECONDS", 120.0)
INFERENCE_ROUTING_MIN_SAMPLES = env_int("INFERENCE_ROUTING_MIN_SAMPLES", 3)
# A node not measured for this long gets one request (per web process) so its estimate stays current; 0 = never.
INFERENCE_ROUTING_RESAMPLE_SECONDS = env_float("INFERENCE_ROUTING_RESAMPLE_SECONDS", 5.0)
# Window of the fleet page's traffic shares.
INFERENCE_ROUTING_SHARE_WINDOW_SECONDS = env_float("INFERENCE_ROUTING_SHARE_WINDOW_SECONDS", 300.0)
# Circuit breaker: open after this many consecutive failures, one trial request after the cool-down.
INFERENCE_ROUTING_BREAKER_FAILURES = env_int("INFERENCE_ROUTING_BREAKER_FAILURES", 3)
INFERENCE_ROUTING_BREAKER_COOLDOWN_SECONDS = env_float("INFERENCE_ROUTING_BREAKER_COOLDOWN_SECONDS", 10.0)
# Hedging: past the chosen node's p95 (known once it has this many samples), the next node is asked too.
INFERENCE_ROUTING_HEDGE_MIN_SAMPLES = env_int("INFERENCE_ROUTING_HEDGE_MIN_SAMPLES", 20)
# Hedged requests a web process has out at once: past p95 under load is the queue, and more copies only lengthen it.
INFERENCE_ROUTING_MAX_HEDGES_IN_FLIGHT = env_int("INFERENCE_ROUTING_MAX_HEDGES_IN_FLIGHT", 2)
# Redundancy: the most nodes one request may ask for (`k`, field or X-Conclave-Redundancy header).
INFERENCE_ROUTING_MAX_REDUNDANCY = env_int("INFERENCE_ROUTING_MAX_REDUNDANCY", 3)
# Spot checks: this share of embedding requests is computed again (after the answer) by the reference
# (`local`: a local worker; `node`: the fittest other node; `auto`: local when a worker beats, else a node);
# a cosine under MIN_COSINE is a disagreement.
INFERENCE_SPOT_CHECK_SHARE = env_float("INFERENCE_SPOT_CHECK_SHARE", 0.05)
INFERENCE_SPOT_CHECK_MIN_COSINE = env_float("INFERENCE_SPOT_CHECK_MIN_COSINE", 0.98)
INFERENCE_SPOT_CHECK_REFERENCE = env_str("INFERENCE_SPOT_CHECK_REFERENCE", "auto")
# Spot checks waiting to run at once; beyond it new ones are skipped (they never hold a client).
INFERENCE_SPOT_CHECK_MAX_PENDING = env_int("INFERENCE_SPOT_CHECK_MAX_PENDING", 16)

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
