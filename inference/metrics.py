"""Per-process request metrics: Prometheus series and the JSON summary of /metrics.

Each web process counts the requests it answered (Prometheus scrapes every
process, as usual); the running and waiting gauges are read at scrape time
from the shared admission state, so they cover every process.
"""

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# When this process started: /health's `uptime_seconds`.
PROCESS_STARTED = time.time()
PREFIX = "conclave_inference"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REGISTRY = CollectorRegistry(auto_describe=True)

E2E_LATENCY = Histogram(
    f"{PREFIX}_e2e_request_latency_seconds",
    "End-to-end request latency.",
    ["endpoint"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
QUEUE_TIME = Histogram(
    f"{PREFIX}_request_queue_time_seconds",
    "Time from arrival until a worker started the request.",
    ["endpoint"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
TIME_TO_FIRST_TOKEN = Histogram(
    f"{PREFIX}_time_to_first_token_seconds",
    "Time from the start of generation to its first token.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
INTER_TOKEN_LATENCY = Histogram(
    f"{PREFIX}_inter_token_latency_seconds",
    "Mean time between generated tokens, per request.",
    ["model"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1),
    registry=REGISTRY,
)
EMBEDDING_BATCH_SIZE = Histogram(
    f"{PREFIX}_embedding_batch_size",
    "Texts in the batch each embedding request ran in (worker-side batching).",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
PROMPT_TOKENS = Counter(f"{PREFIX}_prompt_tokens", "Prompt (input) tokens processed.", ["model"], registry=REGISTRY)
GENERATION_TOKENS = Counter(f"{PREFIX}_generation_tokens", "Tokens generated.", ["model"], registry=REGISTRY)
REQUESTS = Counter(
    f"{PREFIX}_requests", "Requests answered, by status code.", ["endpoint", "status"], registry=REGISTRY
)
REQUEST_SUCCESS = Counter(
    f"{PREFIX}_request_success",
    "Requests that finished, by finish reason.",
    ["endpoint", "finished_reason"],
    registry=REGISTRY,
)
REJECTIONS = Counter(f"{PREFIX}_rejections", "Requests refused, by reason.", ["reason"], registry=REGISTRY)
CACHE_HITS = Counter(f"{PREFIX}_answer_cache_hits", "/ask answers served from the semantic cache.", registry=REGISTRY)
CACHE_MISSES = Counter(
    f"{PREFIX}_answer_cache_misses", "/ask queries the semantic cache could not answer.", registry=REGISTRY
)
ROUTING = Counter(
    "conclave_routing_requests",
    "Requests (and spot checks) the router sent to serving nodes, by node and outcome.",
    ["node", "outcome"],
    registry=REGISTRY,
)
RUNNING = Gauge(f"{PREFIX}_num_requests_running", "Generations running now (all processes).", registry=REGISTRY)
WAITING = Gauge(
    f"{PREFIX}_num_requests_waiting", "Generations admitted and waiting for a slot (all processes).", registry=REGISTRY
)


class _Summary:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests_total = 0
        self.requests_failed = 0
        self.latency_sum_ms = 0.0
        self.cache_hits = 0
        self.cache_misses = 0

    def observe(self, *, e2e_ms: float, failed: bool) -> None:
        with self._lock:
            self.requests_total += 1
            self.latency_sum_ms += e2e_ms
            if failed:
                self.requests_failed += 1

    def cache(self, *, hit: bool) -> None:
        with self._lock:
            if hit:
                self.cache_hits += 1
            else:
                self.cache_misses += 1

    def snapshot(self) -> dict:
        with self._lock:
            average = self.latency_sum_ms / self.requests_total if self.requests_total else 0.0
            return {
                "requests_total": self.requests_total,
                "requests_failed": self.requests_failed,
                "avg_latency_ms": round(average, 3),
                "cache_hits": self.cache_hits,
                "cache_misses": self.cache_misses,
            }


SUMMARY = _Summary()


def request_observe(sample: dict) -> None:
    """Count one answered request (a latency sample's fields) in every series it belongs to."""
    endpoint = sample["endpoint"]
    status = sample["status"]
    E2E_LATENCY.labels(endpoint).observe(sample["e2e_ms"] / 1000)
    REQUESTS.labels(endpoint, str(status)).inc()
    if sample.get("queue_ms") is not None:
        QUEUE_TIME.labels(endpoint).observe(sample["queue_ms"] / 1000)
    model = sample.get("model") or ""
    if sample.get("batch_size"):
        EMBEDDING_BATCH_SIZE.labels(model).observe(sample["batch_size"])
    if sample.get("prompt_tokens"):
        PROMPT_TOKENS.labels(model).inc(sample["prompt_tokens"])
    if sample.get("completion_tokens"):
        GENERATION_TOKENS.labels(model).inc(sample["completion_tokens"])
    if sample.get("time_to_first_token_ms") is not None:
        TIME_TO_FIRST_TOKEN.labels(model).observe(sample["time_to_first_token_ms"] / 1000)
        tokens = sample.get("completion_tokens") or 0
        if tokens > 1 and sample.get("inference_ms") is not None:
            decode_ms = sample["inference_ms"] - sample["time_to_first_token_ms"]
            if decode_ms > 0:
                INTER_TOKEN_LATENCY.labels(model).observe(decode_ms / 1000 / (tokens - 1))
    if status < 400:
        REQUEST_SUCCESS.labels(endpoint, sample.get("outcome") or "ok").inc()
    else:
        REJECTIONS.labels(sample.get("outcome") or "error").inc()
    SUMMARY.observe(e2e_ms=sample["e2e_ms"], failed=status >= 400)


def answer_cache_observe(*, hit: bool) -> None:
    (CACHE_HITS if hit else CACHE_MISSES).inc()
    SUMMARY.cache(hit=hit)


def load_gauges_update(running: int, waiting: int) -> None:
    RUNNING.set(running)
    WAITING.set(waiting)


def routing_observe(*, node: str, outcome: str) -> None:
    """One routing decision's outcome: ok, failed, timeout, busy, refused, cancelled, hedged, retried,
    outvoted, spot_agreed, spot_disagreed; node `local` with `fallback` (hybrid), `none` with `no_node`."""
    ROUTING.labels(node, outcome).inc()
