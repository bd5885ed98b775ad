"""Worker side of a request: run the model and push what happens to the request's reply channel.

A generation sends, in order: `started` (with the time the request waited
for a worker, and the name of the worker's liveness heartbeat), for a
streamed generation one `text` per piece, then `done` with the result and
its timings, or `error` with an HTTP status and a code the web process turns
back into the same error. An embedding answers once.
"""

import logging
import os
import threading
import time

from conclave_node.runtimes.generation import ChatUnsupported, ContextLengthExceeded, LogitBiasOutOfRange
from core.errors import DomainError
from inference.serving.batching import BatcherStopped
from inference.serving.model_cache import model_cache
from inference.serving.shared_state import coordination
from registry.models import ModelKind

logger = logging.getLogger(__name__)

CANCEL_CHECK_SECONDS = 0.05


def _error(exc: BaseException) -> dict:
    if isinstance(exc, DomainError):
        return {"t": "error", "status": exc.status_code, "code": exc.code, "message": exc.message}
    if isinstance(exc, ContextLengthExceeded):
        return {"t": "error", "status": 400, "code": "context_length_exceeded", "message": str(exc)}
    if isinstance(exc, LogitBiasOutOfRange):
        return {
            "t": "error",
            "status": 400,
            "code": "invalid",
            "message": str(exc),
            "fields": {"logit_bias": [f"Token ids are 0 to {exc.n_vocab - 1} for this model."]},
        }
    if isinstance(exc, ChatUnsupported):
        return {"t": "error", "status": 400, "code": "chat_unsupported", "message": str(exc)}
    if isinstance(exc, BatcherStopped):
        return {
            "t": "error",
            "status": 503,
            "code": "model_unavailable",
            "message": "The model was unloaded (swapped out); retry.",
        }
    logger.exception("inference failed", exc_info=exc)
    return {
        "t": "error",
        "status": 500,
        "code": "inference_failed",
        "message": f"Inference failed: {type(exc).__name__}",
    }


def embedding_execute(
    *, request_id: str, manifest_id: int, texts: list[str], enqueued_at: float, deadline: float, worker: str
) -> None:
    """Embed and answer once: `done` (with the queue time) or `error`.

    An embedding takes milliseconds, so it sends no separate `started`: the
    answer itself tells the web process a worker picked the request up.
    """
    state = coordination()
    queue_ms = (time.time() - enqueued_at) * 1000
    try:
        model = model_cache().get(kind=ModelKind.EMBEDDING, manifest_id=manifest_id)
        result = model.batcher.embed(texts, timeout=max(0.05, deadline - time.time()))
    except TimeoutError:
        state.reply_push(
            request_id,
            {
                "t": "error",
                "status": 504,
                "code": "timeout",
                "message": "The embedding did not finish before the request's deadline.",
            },
        )
        return
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
        state.reply_push(request_id, _error(exc))
        return
    state.reply_push(
        request_id,
        {
            "t": "done",
            "queue_ms": queue_ms,
            "worker": worker,
            "vectors": result.vectors,
            "token_counts": result.token_counts,
            "batch_size": result.batch_size,
            "batch_wait_ms": result.queue_seconds * 1000,
            "inference_ms": result.inference_seconds * 1000,
            "cpu_ms": result.cpu_seconds * 1000,
            "model": model.label,
        },
    )


class StopCheck:
    """Answers, between tokens, whether the generation must stop: deadline passed or request cancelled."""

    def __init__(self, *, request_id: str, deadline: float):
        self.request_id = request_id
        self.deadline = deadline
        self._state = coordination()
        self._next_cancel_check = 0.0

    def __call__(self) -> str | None:
        now = time.time()
        if now >= self.deadline:
            return "timeout"
        # The flag may live in Redis: look at most every CANCEL_CHECK_SECONDS.
        if now >= self._next_cancel_check:
            self._next_cancel_check = now + CANCEL_CHECK_SECONDS
            if self._state.is_cancelled(self.request_id):
                return "cancelled"
        return None


class WorkerHeartbeat:
    """A worker process's liveness in the shared state, stamped every `interval` seconds by a thread.

    The web side waiting on a generation checks the heartbeat of the worker
    that started it: when it stops for `lost_after` seconds (the process was
    killed, its machine went away) the request is answered 503 `worker_lost`
    instead of waiting out its deadline, and /health drops the worker.
    """

    def __init__(self, *, hostname: str, interval: float, lost_after: float):
        self.hostname = hostname
        self.interval = interval
        self.lost_after = lost_after
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference-worker-heartbeat", daemon=True)

    def start(self) -> None:
        self._beat_quietly()
        self._thread.start()
        _beating.append(self.hostname)

    def stop(self) -> None:
        if self.hostname in _beating:
            _beating.remove(self.hostname)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval + 5)
        try:
            coordination().heartbeat_remove(self.hostname)
        except Exception:  # noqa: BLE001 - the entry expires on its own
            logger.warning("could not remove the heartbeat of %s", self.hostname)

    def _beat(self) -> None:
        info = {"pid": os.getpid(), "at": time.time(), "generating": _generating.count}
        coordination().heartbeat(self.hostname, info, ttl=self.lost_after)

    def _beat_quietly(self) -> None:
        try:
            self._beat()
        except Exception:  # noqa: BLE001 - Redis away: beat again next time
            logger.warning("could not send the heartbeat of %s", self.hostname, exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat_quietly()


class _Counter:
    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.count += 1

    def __exit__(self, *exc) -> None:
        with self._lock:
            self.count -= 1


# Generations running in this process (reported with the heartbeat).
_generating = _Counter()
# The names this process beats under (one per worker it runs).
_beating: list[str] = []


def heartbeat_name() -> str | None:
    """The name under which this process's liveness heartbeat is found, if it beats."""
    return _beating[0] if _beating else None


def generation_execute(*, request_id: str, spec: dict, worker: str) -> None:
    with _generating:
        _generation_execute(request_id=request_id, spec=spec, worker=worker)


def _generation_execute(*, request_id: str, spec: dict, worker: str) -> None:
    state = coordination()
    started = time.time()
    state.reply_push(
        request_id,
        {
            "t": "started",
            "queue_ms": (started - spec["enqueued_at"]) * 1000,
            "worker": worker,
            "heartbeat": heartbeat_name(),
        },
    )
    try:
        model = model_cache().get(kind=ModelKind.GENERATIVE, manifest_id=spec["manifest_id"])
        runtime = model.runtime
        stream = spec.get("stream", False)

        def push_text(delta: str) -> None:
            state.reply_push(request_id, {"t": "text", "d": delta})

        with runtime.context() as llm:
            if spec["mode"] == "chat":
                tokens, template_stops = runtime.chat_prompt(llm, spec["messages"])
            else:
                tokens, template_stops = runtime.completion_prompt(llm, spec["prompt"])
            max_tokens = spec["max_tokens"]
            if spec.get("max_tokens_default"):
                max_tokens = max(1, min(max_tokens, runtime.n_ctx - len(tokens)))
            outcome = runtime.generate(
                llm,
                prompt_tokens=tokens,
                max_tokens=max_tokens,
                temperature=spec.get("temperature", 0.8),
                top_p=spec.get("top_p", 0.95),
                stop=list(spec.get("stop") or []) + template_stops,
                seed=spec.get("seed"),
                presence_penalty=spec.get("presence_penalty", 0.0),
                frequency_penalty=spec.get("frequency_penalty", 0.0),
                logit_bias={int(k): float(v) for k, v in (spec.get("logit_bias") or {}).items()} or None,
                should_stop=StopCheck(request_id=request_id, deadline=spec["deadline"]),
                on_text=push_text if stream else None,
            )
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
        state.reply_push(request_id, _error(exc))
        return
    state.reply_push(
        request_id,
        {
            "t": "done",
            "text": "" if stream else outcome.text,
            "prompt_tokens": outcome.prompt_tokens,
            "completion_tokens": outcome.completion_tokens,
            "finish_reason": outcome.finish_reason,
            "ttft_ms": None if outcome.time_to_first_token is None else outcome.time_to_first_token * 1000,
            "inference_ms": outcome.generation_seconds * 1000,
            "cpu_ms": outcome.cpu_seconds * 1000,
            "model": model.label,
        },
    )
