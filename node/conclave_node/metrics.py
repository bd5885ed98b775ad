"""A serving node's metrics: Prometheus series (`/metrics/prometheus`) and the JSON summary (`/metrics`).

The names follow the platform's (`conclave_inference_*` there,
`conclave_node_*` here) and the inference servers' conventions.
"""

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "conclave_node"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class NodeMetrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.e2e = Histogram(
            f"{PREFIX}_e2e_request_latency_seconds",
            "End-to-end request latency.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            f"{PREFIX}_request_queue_time_seconds",
            "Time a generation waited for a running slot.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "Time from the start of generation to its first token.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_embedding_batch_size",
            "Texts in the batch each embedding request ran in.",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.prompt_tokens = Counter(
            f"{PREFIX}_prompt_tokens", "Prompt (input) tokens processed.", ["model"], registry=r
        )
        self.generation_tokens = Counter(f"{PREFIX}_generation_tokens", "Tokens generated.", ["model"], registry=r)
        self.requests = Counter(
            f"{PREFIX}_requests", "Requests answered, by status code.", ["endpoint", "status"], registry=r
        )
        self.rejections = Counter(f"{PREFIX}_rejections", "Requests refused, by reason.", ["reason"], registry=r)
        self.running = Gauge(f"{PREFIX}_num_requests_running", "Generations running now.", registry=r)
        self.waiting = Gauge(f"{PREFIX}_num_requests_waiting", "Generations waiting for a running slot.", registry=r)
        self.set_version = Gauge(f"{PREFIX}_approved_set_version", "The approved set being served.", registry=r)
        self._lock = threading.Lock()
        self.requests_total = 0
        self.requests_failed = 0
        self.latency_sum_ms = 0.0

    def observe(self, *, endpoint: str, status: int, seconds: float, reason: str = "") -> None:
        self.e2e.labels(endpoint).observe(seconds)
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.rejections.labels(reason or "error").inc()
        with self._lock:
            self.requests_total += 1
            self.latency_sum_ms += seconds * 1000
            if status >= 400:
                self.requests_failed += 1

    def snapshot(self) -> dict:
        with self._lock:
            average = self.latency_sum_ms / self.requests_total if self.requests_total else 0.0
            return {
                "requests_total": self.requests_total,
                "requests_failed": self.requests_failed,
                "avg_latency_ms": round(average, 3),
            }
