"""Web side of a request: check the limits, hand the work to a worker, wait for its answer.

Embeddings: enqueue `serve_embed` (concurrent requests of this process
together, see `EmbeddingCoalescer`), wait for `done`. Generations go through
admission first: a place among this web process's threads (at most its
threads less a reserve for the rest of the site, see `WebThreadBudget`),
a ticket (at most max_concurrent_requests + queue_size of them), each
refused at once with 503 and Retry-After, then a running slot (at most
max_concurrent_requests, in arrival order) before the task is enqueued, so
a worker only ever receives generations it may run at once. Deadlines count
from the request's arrival at the server (`request_arrived_at`), not from
when a web thread took it up. The governed
limits are read per request (reused for at most a second across processes,
see `selectors._Fresh`): a changed parameter applies to the next one.

Every request, answered or refused, leaves a latency sample and counts in
the metrics.
"""

import collections
import logging
import math
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.utils import timezone

from core.api.exception_handler import BROKER_RETRY_AFTER_SECONDS
from core.errors import DomainError, PayloadTooLarge, ServiceUnavailable, ValidationFailed
from core.web_server import request_arrived_at
from inference.errors import (
    ContextLengthExceeded,
    InferenceTimeout,
    LimitExceeded,
    ModelNotFound,
    ModelUnavailable,
    QueueFull,
    WorkerLost,
    WorkerUnavailable,
)
from inference.metrics import request_observe
from inference.models import ANSWER_CACHE_ENDPOINT
from inference.selectors import limits_current, model_label, serving_manifest
from inference.serving.shared_state import STATE_UNREACHABLE, coordination
from registry.models import ModelKind

logger = logging.getLogger(__name__)

# The web process gives the worker this long past the deadline to report
# that it stopped, before answering 504 on its own.
DEADLINE_GRACE_SECONDS = 1.0
# After a cancel, how long to wait for the worker's final count of tokens.
CANCEL_WAIT_SECONDS = 2.0
# While no message comes, the web side checks this often that the worker
# running the request still beats (see execution.WorkerHeartbeat).
WORKER_CHECK_SECONDS = 1.0

_ERRORS = {
    400: ValidationFailed,
    404: ModelNotFound,
    413: PayloadTooLarge,
    503: ModelUnavailable,
    504: InferenceTimeout,
}


def _error_from_message(message: dict) -> DomainError:
    code = message.get("code")
    if code == "context_length_exceeded":
        return ContextLengthExceeded(message["message"])
    cls = _ERRORS.get(message.get("status"), DomainError)
    error = cls(message["message"], code=code, fields=message.get("fields"))
    if cls is DomainError:
        error.status_code = message.get("status", 500)
        error.error_type = "server_error"
    return error


def _arrival() -> tuple[float, float]:
    """(`time.time()`, `time.perf_counter()`) of the request's arrival at the server.

    Under `manage.py up` the server stamps each request when its first bytes
    arrive; elsewhere (tests, other servers) arrival is now.
    """
    now, counter = time.time(), time.perf_counter()
    arrived = request_arrived_at()
    if arrived is None or arrived > now:
        return now, counter
    return arrived, counter - (now - arrived)


class WebThreadBudget:
    """How many generations this web process may hold at once, running or waiting.

    A generation holds its web thread for its whole life, its wait for a
    running slot included. Without a bound, a raised queue_size lets
    generations take every thread, and health checks, pages and the rest of
    the API wait behind them. `manage.py up` sets the bound to its web
    threads less a reserve (`--reserved-threads`); unset (tests, other
    servers) it does not bound anything.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.limit: int | None = None
        self.threads = 0
        self.reserved = 0
        self.held = 0

    def configure(self, *, threads: int, reserved: int) -> int:
        if not 0 <= reserved < threads:
            raise ValueError(f"reserved threads ({reserved}) must be at least 0 and fewer than threads ({threads})")
        with self._lock:
            self.threads, self.reserved, self.limit = threads, reserved, threads - reserved
        return self.limit

    def unconfigure(self) -> None:
        with self._lock:
            self.limit = None

    def take(self) -> bool:
        with self._lock:
            if self.limit is not None and self.held >= self.limit:
                return False
            self.held += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.held = max(0, self.held - 1)

    def refusal(self, retry_after: int) -> QueueFull:
        return QueueFull(
            f"This web server holds at most {self.limit} generations at once, running or waiting (its "
            f"{self.threads} threads less {self.reserved} kept for the rest of the site), and all are taken; "
            "retry shortly.",
            headers={"Retry-After": str(retry_after)},
        )


web_thread_budget = WebThreadBudget()


def _sample(**fields) -> dict:
    sample = {
        "created_at": timezone.now().isoformat(),
        "manifest_id": None,
        "model": "",
        "queue_ms": None,
        "inference_ms": None,
        "cpu_ms": None,
        "time_to_first_token_ms": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "batch_size": None,
        "worker": "",
    }
    sample.update(fields)
    return sample


def _cpu_share(message: dict, texts: int) -> float | None:
    """This request's share, by texts, of the CPU time the worker spent on a message's texts."""
    cpu_ms, total = message.get("cpu_ms"), len(message.get("token_counts") or ())
    return None if cpu_ms is None or not total else cpu_ms * texts / total


def sample_record(sample: dict) -> None:
    """Count the request in the metrics and buffer its sample for the bulk writer."""
    request_observe(sample)
    coordination().samples_push(sample)


def answer_cache_sample_record(*, model: str, hit: bool, lookup_ms: float) -> None:
    """Buffer one answer-cache lookup as a sample (not a served request: no request metrics)."""
    coordination().samples_push(
        _sample(
            endpoint=ANSWER_CACHE_ENDPOINT, status=200, outcome="hit" if hit else "miss", e2e_ms=lookup_ms, model=model
        )
    )


def rejection_record(*, endpoint: str, started: float, error: DomainError, model: str = "", manifest_id=None) -> None:
    sample_record(
        _sample(
            endpoint=endpoint,
            status=error.status_code,
            outcome=error.code,
            e2e_ms=(time.perf_counter() - started) * 1000,
            model=model,
            manifest_id=manifest_id,
        )
    )


def _wait_started(state, request_id: str, *, deadline: float) -> dict:
    """The worker's first message; 503 when no worker picks the request up in time."""
    pickup = min(settings.INFERENCE_PICKUP_TIMEOUT_SECONDS, max(0.0, deadline - time.time()))
    message = state.reply_pop(request_id, pickup)
    if message is None:
        state.cancel(request_id)
        if time.time() >= deadline:
            raise InferenceTimeout("No worker started the request before its deadline.", code="timeout")
        raise WorkerUnavailable(
            f"No inference worker picked the request up within {pickup:.0f} s; is a worker consuming the "
            "`inference` queue?",
            headers={"Retry-After": "5"},
        )
    return message


# --- Embeddings -----------------------------------------------------------------------------


@dataclass
class EmbeddingResult:
    vectors: np.ndarray
    token_counts: list[int]
    model: str
    manifest_id: int
    latency_ms: float
    queue_ms: float
    inference_ms: float
    batch_size: int

    @property
    def tokens(self) -> int:
        return sum(self.token_counts)


def _embed_on_worker(*, manifest_id: int, texts: list[str], deadline: float, limit: int) -> dict:
    """One `serve_embed` task for `texts`; the worker's one answer (`done`, else raised as its error)."""
    from inference.tasks import serve_embed

    state = coordination()
    request_id = uuid.uuid4().hex
    state.reply_open(request_id)
    try:
        serve_embed.apply_async(
            args=(request_id, manifest_id, texts, time.time(), deadline), expires=max(0.1, deadline - time.time())
        )
        message = _wait_started(state, request_id, deadline=deadline)
    finally:
        state.reply_close(request_id)
    if message["t"] == "error":
        raise _error_from_message(message)
    return message


@dataclass
class _Waiter:
    texts: list[str]
    ready: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    message: dict | None = None
    offset: int = 0
    error: BaseException | None = None


class EmbeddingCoalescer:
    """Concurrent embedding requests of this web process, sent to the worker together.

    Each request costs a Celery message, a task and a reply; under load that
    costs more than the model. While `max_in_flight` tasks for a model are
    out, arriving requests queue here; when one comes back, the oldest
    waiting request takes everything queued (up to `max_texts`) as one task.
    A lone request never waits. The worker's batcher then merges tasks from
    every web process into shared onnxruntime calls.
    """

    def __init__(self, *, max_texts: int, max_in_flight: int = 2):
        self.max_texts = max_texts
        self.max_in_flight = max_in_flight
        self._lock = threading.Lock()
        self._pending: collections.deque[_Waiter] = collections.deque()
        self._in_flight = 0

    def embed(self, texts: list[str], *, send, timeout: float) -> _Waiter:
        waiter = _Waiter(texts=texts)
        with self._lock:
            self._pending.append(waiter)
            if self._in_flight < self.max_in_flight:
                self._in_flight += 1
                waiter.lead = True
        if not waiter.lead:
            if not waiter.ready.wait(timeout):
                with self._lock:
                    if waiter in self._pending:
                        self._pending.remove(waiter)
                    if waiter.lead:  # promoted just now: hand the turn on
                        self._in_flight -= 1
                        self._promote_locked()
                raise InferenceTimeout("The embedding did not finish before the request's deadline.")
            if not waiter.lead:
                return waiter
        self._lead(waiter, send)
        return waiter

    def _promote_locked(self) -> None:
        if self._pending and self._in_flight < self.max_in_flight:
            successor = self._pending[0]
            successor.lead = True
            self._in_flight += 1
            successor.ready.set()

    def _lead(self, leader: _Waiter, send) -> None:
        with self._lock:
            self._pending.remove(leader)
            batch, count = [leader], len(leader.texts)
            while self._pending and count + len(self._pending[0].texts) <= self.max_texts:
                waiter = self._pending.popleft()
                waiter.offset = count
                batch.append(waiter)
                count += len(waiter.texts)
        try:
            message = send([text for waiter in batch for text in waiter.texts])
            for waiter in batch:
                waiter.message = message
        except BaseException as exc:  # noqa: BLE001 - every request of the batch gets the error
            for waiter in batch:
                waiter.error = exc
        finally:
            with self._lock:
                self._in_flight -= 1
                self._promote_locked()
            for waiter in batch[1:]:
                waiter.ready.set()


_coalescers: dict[int, EmbeddingCoalescer] = {}
_coalescers_lock = threading.Lock()


def _coalescer(manifest_id: int) -> EmbeddingCoalescer:
    with _coalescers_lock:
        coalescer = _coalescers.get(manifest_id)
        if coalescer is None:
            coalescer = _coalescers[manifest_id] = EmbeddingCoalescer(
                max_texts=settings.INFERENCE_EMBED_BATCH_SIZE, max_in_flight=settings.INFERENCE_EMBED_TASKS_IN_FLIGHT
            )
        return coalescer


def _embed_on_nodes(*, manifest, label: str, texts: list[str], deadline: float, endpoint: str, started: float):
    """The request answered by serving nodes (inference.routing), or None for the local workers (hybrid)."""
    from inference.routing import requested_redundancy, router

    routed = router.embed(
        manifest=manifest, label=label, texts=texts, deadline=deadline, redundancy=requested_redundancy.get()
    )
    if routed is None:
        return None
    latency_ms = (time.perf_counter() - started) * 1000
    # A node reports the request's token total, not one count per text.
    token_counts = [routed.tokens] + [0] * (len(texts) - 1)
    result = EmbeddingResult(
        vectors=routed.vectors,
        token_counts=token_counts,
        model=routed.model,
        manifest_id=manifest.pk,
        latency_ms=latency_ms,
        queue_ms=0.0,
        inference_ms=routed.latency_ms,
        batch_size=len(texts),
    )
    sample_record(
        _sample(
            endpoint=endpoint,
            status=200,
            outcome="ok",
            e2e_ms=latency_ms,
            model=label,
            manifest_id=manifest.pk,
            inference_ms=routed.latency_ms,
            prompt_tokens=routed.tokens,
            worker=f"node:{routed.node}",
        )
    )
    return result


def embeddings_create(
    *, texts: list[str], model: str | None, endpoint: str, timeout: float | None = None
) -> EmbeddingResult:
    arrived, started = _arrival()
    label = ""
    manifest_id = None
    try:
        if not texts:
            raise ValidationFailed("Give at least one text to embed.", fields={"input": ["Empty."]})
        if len(texts) > settings.INFERENCE_EMBED_MAX_INPUTS:
            raise PayloadTooLarge(
                f"{len(texts)} texts in one request; at most {settings.INFERENCE_EMBED_MAX_INPUTS} are accepted.",
                code="too_many_inputs",
            )
        longest = max(len(t) for t in texts)
        if longest > settings.INFERENCE_MAX_INPUT_CHARS:
            raise PayloadTooLarge(
                f"A text has {longest} characters; at most {settings.INFERENCE_MAX_INPUT_CHARS} are accepted.",
                code="input_too_long",
            )
        manifest = serving_manifest(kind=ModelKind.EMBEDDING, requested=model)
        label, manifest_id = model_label(manifest), manifest.pk
        limit = limits_current()["request_timeout_seconds"]
        deadline = arrived + (min(limit, timeout) if timeout else limit)
        if settings.INFERENCE_ROUTING != "local":
            routed = _embed_on_nodes(
                manifest=manifest, label=label, texts=texts, deadline=deadline, endpoint=endpoint, started=started
            )
            if routed is not None:
                return routed

        def send(batch_texts: list[str]) -> dict:
            return _embed_on_worker(manifest_id=manifest.pk, texts=batch_texts, deadline=deadline, limit=limit)

        if len(texts) >= settings.INFERENCE_EMBED_BATCH_SIZE:
            message, offset = send(texts), 0
        else:
            waiter = _coalescer(manifest.pk).embed(
                texts, send=send, timeout=max(0.0, deadline - time.time()) + 2 * DEADLINE_GRACE_SECONDS
            )
            if waiter.error is not None:
                raise waiter.error
            message, offset = waiter.message, waiter.offset
    except DomainError as exc:
        rejection_record(endpoint=endpoint, started=started, error=exc, model=label, manifest_id=manifest_id)
        raise
    latency_ms = (time.perf_counter() - started) * 1000
    end = offset + len(texts)
    result = EmbeddingResult(
        vectors=np.asarray(message["vectors"])[offset:end],
        token_counts=list(message["token_counts"][offset:end]),
        model=message["model"],
        manifest_id=manifest_id,
        latency_ms=latency_ms,
        queue_ms=message.get("queue_ms", 0.0),
        inference_ms=message["inference_ms"],
        batch_size=message["batch_size"],
    )
    sample_record(
        _sample(
            endpoint=endpoint,
            status=200,
            outcome="ok",
            e2e_ms=latency_ms,
            model=label,
            manifest_id=manifest_id,
            queue_ms=result.queue_ms,
            inference_ms=result.inference_ms,
            cpu_ms=_cpu_share(message, len(texts)),
            prompt_tokens=result.tokens,
            batch_size=result.batch_size,
            worker=message.get("worker", ""),
        )
    )
    return result


# --- Generation ------------------------------------------------------------------------------


@dataclass
class GenerationRequest:
    mode: str  # completion | chat
    endpoint: str
    prompt: str = ""
    messages: list[dict] = field(default_factory=list)
    model: str | None = None
    max_tokens: int | None = None
    default_max_tokens: int | None = None
    temperature: float = 0.8
    top_p: float = 0.95
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logit_bias: dict[str, float] = field(default_factory=dict)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stream: bool = False
    timeout: float | None = None


@dataclass
class GenerationResult:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    latency_ms: float
    queue_ms: float | None
    time_to_first_token_ms: float | None


class Generation:
    """One admitted generation: its events as they come, its result, and its clean-up.

    `close()` must run whatever happens (views call it from `finally` or when
    the streaming response is closed): it cancels a generation still
    running, frees the slot and records the sample.
    """

    def __init__(
        self, *, request: GenerationRequest, manifest, ticket: str, limits: dict, started: float, deadline: float
    ):
        self.request = request
        self.manifest_id = manifest.pk
        self.model = model_label(manifest)
        self.ticket = ticket
        self.limits = limits
        self.started = started
        self.deadline = deadline
        self.request_id = uuid.uuid4().hex
        self.state = coordination()
        self.first: dict | None = None
        self.done: dict | None = None
        self.error: DomainError | None = None
        self.closed = False
        self.worker_lost = False
        self.state_lost = False
        self.status = 200
        self.outcome = "ok"
        # A place in `web_thread_budget`, given back by close().
        self.budget_taken = False
        self._pending: list[dict] = []
        self.texts: list[str] = []

    # --- talking to the worker ---------------------------------------------------------
    def _send(self, *, max_tokens: int, max_tokens_default: bool) -> None:
        from inference.tasks import serve_generate

        request = self.request
        spec = {
            "manifest_id": self.manifest_id,
            "mode": request.mode,
            "prompt": request.prompt,
            "messages": request.messages,
            "max_tokens": max_tokens,
            "max_tokens_default": max_tokens_default,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stop": request.stop,
            "seed": request.seed,
            "logit_bias": request.logit_bias,
            "presence_penalty": request.presence_penalty,
            "frequency_penalty": request.frequency_penalty,
            "stream": request.stream,
            "deadline": self.deadline,
            "enqueued_at": time.time(),
        }
        self.state.reply_open(self.request_id)
        serve_generate.apply_async(args=(self.request_id, spec), expires=max(0.1, self.deadline - time.time()))

    def _next(self) -> dict | None:
        """The worker's next message; None past the deadline; WorkerLost when its worker stopped beating."""
        if self._pending:
            return self._pending.pop(0)
        # The worker's heartbeat name; None from a worker that does not beat.
        worker = (self.first or {}).get("heartbeat")
        while True:
            remaining = self.deadline - time.time() + DEADLINE_GRACE_SECONDS
            try:
                message = self.state.reply_pop(self.request_id, max(0.0, min(remaining, WORKER_CHECK_SECONDS)))
                if message is not None or remaining <= WORKER_CHECK_SECONDS:
                    return message
                alive = not worker or self.state.worker_alive(worker)
            except STATE_UNREACHABLE as exc:
                self.state_lost = True
                raise ServiceUnavailable(
                    "The shared serving state (Redis) stopped answering during the generation, so its text cannot "
                    f"reach this server ({type(exc).__name__}); retry in a few seconds.",
                    code="broker_unavailable",
                    headers={"Retry-After": str(BROKER_RETRY_AFTER_SECONDS)},
                ) from exc
            if not alive:
                self.worker_lost = True
                self.state.cancel(self.request_id)
                raise WorkerLost(
                    f"The worker running this generation ({worker}) stopped: no heartbeat for "
                    f"INFERENCE_WORKER_LOST_SECONDS={settings.INFERENCE_WORKER_LOST_SECONDS:g}. Retry.",
                    headers={"Retry-After": "5"},
                )

    def _timeout(self) -> InferenceTimeout:
        tokens = self.done["completion_tokens"] if self.done else None
        detail = f" after {tokens} tokens" if tokens is not None else ""
        elapsed = time.perf_counter() - self.started
        return InferenceTimeout(
            f"The generation passed request_timeout_seconds={self.limits['request_timeout_seconds']} "
            f"and was stopped{detail} ({elapsed:.1f} s since the request arrived).",
            code="timeout",
        )

    def prime(self) -> None:
        """Wait for the worker to start and answer something, so errors still get their status code."""
        self.first = _wait_started(self.state, self.request_id, deadline=self.deadline)
        message = self.first if self.first["t"] != "started" else self._next()
        if message is None:
            self.state.cancel(self.request_id)
            raise self._timeout()
        if message["t"] == "error":
            raise _error_from_message(message)
        if message["t"] == "done":
            self.done = message
            if message["finish_reason"] == "timeout" and not self.request.stream:
                raise self._timeout()
        self._pending.append(message)

    def events(self) -> Iterator[dict]:
        """Messages after `prime`: `text` pieces, then `done` (or `error`)."""
        while True:
            try:
                message = self._next()
            except (WorkerLost, ServiceUnavailable) as exc:
                self.error = exc
                self.status, self.outcome = exc.status_code, exc.code
                yield {"t": "error", "status": exc.status_code, "code": exc.code, "message": exc.message}
                return
            if message is None:
                self.state.cancel(self.request_id)
                self.status, self.outcome = 504, "timeout"
                yield {"t": "error", "status": 504, "code": "timeout", "message": str(self._timeout())}
                return
            if message["t"] == "text":
                self.texts.append(message["d"])
            elif message["t"] == "done":
                self.done = message
                if message["finish_reason"] in ("timeout", "cancelled"):
                    self.status, self.outcome = (
                        (504, "timeout") if message["finish_reason"] == "timeout" else (499, "cancelled")
                    )
                else:
                    self.outcome = message["finish_reason"]
            elif message["t"] == "error":
                error = _error_from_message(message)
                self.status, self.outcome = error.status_code, error.code
            yield message
            if message["t"] in ("done", "error"):
                return

    def result(self) -> GenerationResult:
        for _ in self.events():
            pass
        if self.error is not None:
            raise self.error
        if self.done is None:
            raise self._timeout()
        if self.done["finish_reason"] == "timeout":
            raise self._timeout()
        text = self.done["text"] if not self.request.stream else "".join(self.texts)
        return GenerationResult(
            text=text,
            model=self.done.get("model", self.model),
            prompt_tokens=self.done["prompt_tokens"],
            completion_tokens=self.done["completion_tokens"],
            finish_reason=self.done["finish_reason"],
            latency_ms=(time.perf_counter() - self.started) * 1000,
            queue_ms=(self.first or {}).get("queue_ms"),
            time_to_first_token_ms=self.done.get("ttft_ms"),
        )

    def close(self, *, error: DomainError | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if error is not None:
                self.status, self.outcome = error.status_code, error.code
            if self.done is None and self.first is not None and not self.worker_lost and not self.state_lost:
                # Still running (client gone, deadline, error): stop it, and
                # wait a moment for its final count of tokens.
                self.state.cancel(self.request_id)
                if self.status < 400:
                    self.status, self.outcome = 499, "cancelled"
                wait_until = time.monotonic() + CANCEL_WAIT_SECONDS
                while self.done is None and time.monotonic() < wait_until:
                    message = self.state.reply_pop(self.request_id, max(0.0, wait_until - time.monotonic()))
                    if message is None:
                        break
                    if message["t"] == "done":
                        self.done = message
                    elif message["t"] == "error":
                        break
        finally:
            try:
                self.state.release(self.ticket)
                self.state.reply_close(self.request_id)
            except STATE_UNREACHABLE:
                # The ticket is a lease and the reply channel has a TTL: both lapse
                # by themselves, and the answer has already gone to the client.
                logger.warning("could not release generation %s: shared state unreachable", self.request_id)
            if self.budget_taken:
                self.budget_taken = False
                web_thread_budget.give_back()
            done = self.done or {}
            sample_record(
                _sample(
                    endpoint=self.request.endpoint,
                    status=self.status,
                    outcome=self.outcome,
                    e2e_ms=(time.perf_counter() - self.started) * 1000,
                    model=self.model,
                    manifest_id=self.manifest_id,
                    queue_ms=(self.first or {}).get("queue_ms"),
                    inference_ms=done.get("inference_ms"),
                    cpu_ms=done.get("cpu_ms"),
                    time_to_first_token_ms=done.get("ttft_ms"),
                    prompt_tokens=done.get("prompt_tokens", 0),
                    completion_tokens=done.get("completion_tokens", 0),
                    worker=(self.first or {}).get("worker", ""),
                )
            )


def generation_start(request: GenerationRequest) -> Generation:
    """Admit, wait for a slot, enqueue, and wait for the worker's first answer.

    Raises the request's error (400 over a limit, 404 unknown model, 503
    queue full or no worker, 504 deadline) before anything is streamed.
    The deadline counts from the request's arrival at the server.
    """
    arrived, started = _arrival()
    label, manifest_id = "", None
    generation = None
    budget_taken = False
    ticket = None
    state = coordination()
    try:
        limits = limits_current()
        limit = limits["max_tokens_per_request"]
        if request.max_tokens is not None and request.max_tokens > limit:
            raise LimitExceeded(
                f"max_tokens={request.max_tokens} is over max_tokens_per_request={limit}, a limit set by governance; "
                f"ask for {limit} or fewer.",
                code="max_tokens_exceeded",
                fields={"max_tokens": [f"At most {limit} (max_tokens_per_request)."]},
            )
        if request.max_tokens is not None and request.max_tokens < 1:
            raise ValidationFailed("max_tokens must be at least 1.", fields={"max_tokens": ["At least 1."]})
        manifest = serving_manifest(kind=ModelKind.GENERATIVE, requested=request.model)
        label, manifest_id = model_label(manifest), manifest.pk
        timeout = limits["request_timeout_seconds"]
        if request.timeout:
            timeout = min(timeout, request.timeout)
        deadline = arrived + timeout
        retry_after = max(1, math.ceil(timeout / 10))
        if time.time() >= deadline:
            raise InferenceTimeout(
                f"The request waited {time.time() - arrived:.1f} s for the web server after it arrived, past "
                f"request_timeout_seconds={timeout}.",
                code="timeout",
            )
        budget_taken = web_thread_budget.take()
        if not budget_taken:
            raise web_thread_budget.refusal(retry_after)
        if settings.INFERENCE_ROUTING != "local":
            from inference.routing import requested_redundancy, router

            routed = router.generation_open(
                request=request,
                manifest=manifest,
                label=label,
                max_tokens=request.max_tokens or min(limit, request.default_max_tokens or limit),
                started=started,
                deadline=deadline,
                redundancy=requested_redundancy.get(),
            )
            if routed is not None:
                routed.budget_taken, budget_taken = True, False
                return routed
        ticket = uuid.uuid4().hex
        capacity = limits["max_concurrent_requests"] + limits["queue_size"]
        lease = timeout + DEADLINE_GRACE_SECONDS + CANCEL_WAIT_SECONDS + 5
        if not state.admit(ticket, capacity=capacity, lease_seconds=lease):
            ticket = None
            raise QueueFull(
                f"{limits['max_concurrent_requests']} generations are running and {limits['queue_size']} waiting "
                "(max_concurrent_requests, queue_size); retry shortly.",
                headers={"Retry-After": str(retry_after)},
            )
        generation = Generation(
            request=request, manifest=manifest, ticket=ticket, limits=limits, started=started, deadline=deadline
        )
        generation.budget_taken, budget_taken = True, False
        if not state.wait_start(
            ticket, max_running=limits["max_concurrent_requests"], lease_seconds=lease, until=deadline
        ):
            raise InferenceTimeout(
                f"The request waited in the queue past request_timeout_seconds={timeout} "
                f"({time.time() - arrived:.1f} s since it arrived).",
                code="timeout",
            )
        max_tokens = request.max_tokens
        if max_tokens is None:
            max_tokens = min(limit, request.default_max_tokens or limit)
        generation._send(max_tokens=max_tokens, max_tokens_default=request.max_tokens is None)
        generation.prime()
        return generation
    except DomainError as exc:
        if generation is not None:
            generation.close(error=exc)
        else:
            rejection_record(
                endpoint=request.endpoint, started=started, error=exc, model=label, manifest_id=manifest_id
            )
        raise
    except BaseException:
        # Anything else (a broker down, a bug) must not keep the ticket and
        # its slot until the lease expires: every later request would wait.
        if generation is not None:
            generation.status, generation.outcome = 500, "server_error"
            generation.close()
        elif ticket is not None:
            state.release(ticket)
        raise
    finally:
        if budget_taken:
            web_thread_budget.give_back()


def generation_run(request: GenerationRequest) -> GenerationResult:
    """A whole non-streamed generation."""
    generation = generation_start(request)
    error = None
    try:
        return generation.result()
    except DomainError as exc:
        error = exc
        raise
    finally:
        generation.close(error=error)
