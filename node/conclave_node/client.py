"""A small Python client for nodes and services that call a Conclave server.

    from conclave_node.client import ConclaveClient

    with ConclaveClient("http://127.0.0.1:8000", token="...") as client:
        vectors = client.embed(["hello", "world"])
        answer = client.generate("The capital of France is", max_tokens=8)

What it does for the caller:

* connection reuse: one `httpx.Client` keeps connections alive across calls;
* timeouts on connect and read (`timeout=` for the client, and per call on
  `embed`, `generate` and `chat`);
* retries: up to `retries` (3) more attempts, with exponential backoff and
  jitter, on connection errors, timeouts, 429, 502, 503 and 504 (a
  `Retry-After` header is honoured up to `backoff_max`); other 4xx are the
  caller's mistake and are never retried;
* a circuit breaker: after `failure_threshold` consecutive failed calls the
  circuit opens and calls fail at once (no network) for `reset_timeout`
  seconds; then one trial call is let through (half-open), and its success
  closes the circuit again;
* fallback hooks: a callable per operation (`fallbacks={"generate": fn}`) or
  per call (`fallback=fn`), called with the error instead of raising it when
  the server cannot answer (retries exhausted, circuit open), e.g. to answer
  from a local cache or a smaller local model;
* metrics (`stats`, `metrics()`): counts of calls, attempts, retries,
  failures, short circuits and fallbacks, the success rate, the latency of
  recent calls (mean, p50, p95, p99) and the circuit breaker's state: what a
  node puts in its telemetry report (`NodeHome.record_client`).

`is_healthy()` asks `/health` once (no retries, no breaker) and answers a
boolean.
"""

import json
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

RETRY_STATUSES = frozenset({429, 502, 503, 504})


class ConclaveError(Exception):
    """The server answered with an error (the JSON error shape's message, type and code)."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, error_type: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.error_type = error_type


class ConclaveUnavailable(ConclaveError):
    """The server could not be reached or kept failing after the retries."""


class CircuitOpen(ConclaveUnavailable):
    """The circuit breaker is open: the call was not attempted."""


class CircuitBreaker:
    """Closed → open after `failure_threshold` consecutive failures → half-open after `reset_timeout`."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(
        self, *, failure_threshold: int = 5, reset_timeout: float = 30.0, clock: Callable[[], float] = time.monotonic
    ):
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self._trial_running = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return self.CLOSED
        if self.clock() - self.opened_at >= self.reset_timeout:
            return self.HALF_OPEN
        return self.OPEN

    def allow(self) -> bool:
        with self._lock:
            state = self.state
            if state == self.CLOSED:
                return True
            if state == self.HALF_OPEN and not self._trial_running:
                self._trial_running = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self.failures = 0
            self.opened_at = None
            self._trial_running = False

    def record_failure(self) -> None:
        with self._lock:
            self.failures += 1
            if self._trial_running or self.failures >= self.failure_threshold:
                self.opened_at = self.clock()
            self._trial_running = False


LATENCY_WINDOW = 1000


@dataclass
class ClientStats:
    """Counts since the client was made, and the latency of its last `LATENCY_WINDOW` calls.

    A call's latency runs from the call to its answer or final failure,
    retries and their waits included; short-circuited calls have none.
    `generate_stream` is not counted (a stream has no single latency).
    """

    calls: int = 0
    attempts: int = 0
    retries: int = 0
    successes: int = 0
    # The server could not answer (after the retries, or the circuit was open).
    failures: int = 0
    # The server refused the request as wrong (4xx other than 429, or 500/501): never retried.
    client_errors: int = 0
    short_circuited: int = 0
    fallbacks: int = 0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def call_finished(self, *, started: float, ok: bool) -> None:
        with self._lock:
            self.latencies_ms.append((time.perf_counter() - started) * 1000)
            if ok:
                self.successes += 1

    @property
    def success_rate(self) -> float | None:
        """Calls answered with success over all calls (errors, failures and short circuits count against it)."""
        return self.successes / self.calls if self.calls else None

    def latency_ms(self) -> dict:
        with self._lock:
            values = sorted(self.latencies_ms)
        if not values:
            return {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}

        def rank(q: float) -> float:
            return round(values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))], 3)

        return {
            "count": len(values),
            "mean": round(sum(values) / len(values), 3),
            "p50": rank(0.50),
            "p95": rank(0.95),
            "p99": rank(0.99),
            "max": round(values[-1], 3),
        }


class ConclaveClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float | httpx.Timeout = 30.0,
        retries: int = 3,
        backoff: float = 0.25,
        backoff_max: float = 8.0,
        breaker: CircuitBreaker | None = None,
        fallbacks: dict[str, Callable[[ConclaveError], Any]] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        headers = {"Accept": "application/json", "User-Agent": "conclave-client/1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout
            if isinstance(timeout, httpx.Timeout)
            else httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(max_keepalive_connections=8, keepalive_expiry=60.0),
            transport=transport,
        )
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.breaker = breaker or CircuitBreaker()
        self.fallbacks = dict(fallbacks or {})
        self.stats = ClientStats()
        self._sleep = sleep

    # --- plumbing ---------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ConclaveClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None and response.headers.get("Retry-After", "").isdigit():
            return min(float(response.headers["Retry-After"]), self.backoff_max)
        base = min(self.backoff * (2**attempt), self.backoff_max)
        return base * (0.5 + random.random() / 2)

    @staticmethod
    def _error(response: httpx.Response) -> ConclaveError:
        try:
            error = response.json().get("error", {})
        except (ValueError, AttributeError):
            error = {}
        message = error.get("message") or f"HTTP {response.status_code}"
        cls = (
            ConclaveUnavailable
            if response.status_code in RETRY_STATUSES or response.status_code >= 500
            else ConclaveError
        )
        return cls(message, status=response.status_code, code=error.get("code"), error_type=error.get("type"))

    def request(self, method: str, path: str, *, operation: str = "", fallback=None, **kwargs) -> Any:
        """One call with retries, the circuit breaker and the fallback; returns the decoded JSON."""
        self.stats.calls += 1
        fallback = fallback or self.fallbacks.get(operation)
        if not self.breaker.allow():
            self.stats.short_circuited += 1
            return self._fail(
                CircuitOpen(f"circuit open after {self.breaker.failures} failures; not calling {path}"), fallback
            )
        started = time.perf_counter()
        last: ConclaveError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
            self.stats.attempts += 1
            response = None
            try:
                response = self._http.request(method, path, **kwargs)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = ConclaveUnavailable(f"{type(exc).__name__}: {exc}")
            else:
                if response.status_code < 400:
                    self.breaker.record_success()
                    self.stats.call_finished(started=started, ok=True)
                    return response.json() if response.content else None
                last = self._error(response)
                if response.status_code not in RETRY_STATUSES:
                    # The request itself is wrong: the server is fine.
                    self.breaker.record_success()
                    self.stats.call_finished(started=started, ok=False)
                    self.stats.client_errors += 1
                    raise last
            if attempt < self.retries:
                self._sleep(self._delay(attempt, response))
        self.breaker.record_failure()
        self.stats.call_finished(started=started, ok=False)
        return self._fail(last, fallback)

    def _fail(self, error: ConclaveError, fallback):
        self.stats.failures += 1
        if fallback is None:
            raise error
        self.stats.fallbacks += 1
        return fallback(error)

    def metrics(self) -> dict:
        """Counts, success rate, latency and the circuit breaker's state, as a node reports them."""
        stats = self.stats
        return {
            "calls": stats.calls,
            "attempts": stats.attempts,
            "retries": stats.retries,
            "successes": stats.successes,
            "failures": stats.failures,
            "client_errors": stats.client_errors,
            "short_circuited": stats.short_circuited,
            "fallbacks": stats.fallbacks,
            "success_rate": None if stats.success_rate is None else round(stats.success_rate, 4),
            "latency_ms": stats.latency_ms(),
            "circuit_breaker": {
                "state": self.breaker.state,
                "consecutive_failures": self.breaker.failures,
                "failure_threshold": self.breaker.failure_threshold,
                "reset_timeout_seconds": self.breaker.reset_timeout,
            },
        }

    @staticmethod
    def _timeout(timeout: float | httpx.Timeout | None) -> dict:
        """httpx's `timeout=` for one call (none given: the client's own)."""
        if timeout is None:
            return {}
        if isinstance(timeout, httpx.Timeout):
            return {"timeout": timeout}
        return {"timeout": httpx.Timeout(timeout, connect=min(timeout, 5.0))}

    # --- operations -------------------------------------------------------------------------
    def health(self, **kwargs) -> dict:
        return self.request("GET", "/health", operation="health", **kwargs)

    def is_healthy(self, *, timeout: float | None = 5.0) -> bool:
        """One GET /health, no retries and no circuit breaker: True when the server answers `healthy`."""
        try:
            response = self._http.get("/health", **self._timeout(timeout))
            return response.status_code == 200 and response.json().get("status") == "healthy"
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    def approved_set(self, **kwargs) -> dict:
        return self.request("GET", "/api/v1/approved/", operation="approved_set", **kwargs)

    def models(self, **kwargs) -> list[dict]:
        return self.request("GET", "/v1/models", operation="models", **kwargs)["data"]

    def embed(
        self,
        texts: list[str] | str,
        *,
        model: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        **kwargs,
    ):
        """One vector for a string, a list of vectors for a list."""
        single = isinstance(texts, str)
        body = {"text": texts} if single else {"texts": list(texts)}
        if model:
            body["model"] = model
        result = self.request("POST", "/embed", operation="embed", json=body, **self._timeout(timeout), **kwargs)
        if isinstance(result, dict) and ("embedding" in result or "embeddings" in result):
            return result["embedding"] if single else result["embeddings"]
        return result

    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int = 128,
        timeout: float | httpx.Timeout | None = None,
        fallback=None,
        **params,
    ) -> dict:
        """`params` go into the request body; `timeout` bounds this call on the client side."""
        body = {"prompt": prompt, "max_tokens": max_tokens, **params}
        return self.request(
            "POST", "/generate", operation="generate", json=body, fallback=fallback, **self._timeout(timeout)
        )

    def chat(
        self,
        messages: list[dict],
        *,
        max_tokens: int | None = None,
        timeout: float | httpx.Timeout | None = None,
        fallback=None,
        **params,
    ) -> dict:
        body = {"messages": messages, **params}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return self.request(
            "POST", "/v1/chat/completions", operation="chat", json=body, fallback=fallback, **self._timeout(timeout)
        )

    def ask(self, query: str, **kwargs) -> dict:
        return self.request("POST", "/api/v1/ask", operation="ask", json={"query": query}, **kwargs)

    def generate_stream(self, prompt: str, *, max_tokens: int = 128, **params) -> Iterator[str]:
        """Text pieces of a streamed generation (no retries once the stream has started)."""
        if not self.breaker.allow():
            self.stats.short_circuited += 1
            raise CircuitOpen("circuit open; not streaming")
        body = {"prompt": prompt, "max_tokens": max_tokens, "stream": True, **params}
        with self._http.stream("POST", "/generate", json=body) as response:
            if response.status_code >= 400:
                response.read()
                error = self._error(response)
                (
                    self.breaker.record_failure
                    if isinstance(error, ConclaveUnavailable)
                    else self.breaker.record_success
                )()
                raise error
            self.breaker.record_success()
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    raise ConclaveError(event["error"]["message"], code=event["error"].get("code"))
                if event.get("text"):
                    yield event["text"]
