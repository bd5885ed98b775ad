"""Micro-batching of a node's concurrent embedding requests on lane threads.

Each lane (a runtime of the model, on its own threads) has one thread that
runs batches: it takes everything waiting (up to `max_batch` texts) as one
onnxruntime call, hands each request its rows, and takes the next batch at
once, without waiting for any request's thread to wake (when request
threads led the batches themselves, a lane sat idle until the next leader
woke; see BENCHMARKS.md). Under load, batches fill by themselves while the
previous one runs, which is where batching's 2.5x on MiniLM comes from. A
lone request pays one thread wake-up and goes to the lane that finished
last, whose session is warm in the caches.

With several lanes, up to that many batches run side by side: on a few
cores, two one-thread calls at once embed more per second than one
two-thread call. But one sentence on one thread takes a quarter longer
than on two, so a queue with lanes can also hold a *solo* runtime on every
thread: a batch that starts while no other lane is busy (a lone client's
request) runs on it; under load the lanes use their own.
"""

import collections
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from conclave_node.runtimes.embedding import EmbeddingRuntime


class EmbeddingTimeout(TimeoutError):
    pass


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass
class _Job:
    texts: list[str]
    # Released by the lane when the answer is in: a lock is several times cheaper than an Event,
    # and a batch answers up to `max_batch` of them.
    ready: threading.Lock = field(default_factory=_held_lock)
    taken: bool = False
    vectors: np.ndarray | None = None
    token_counts: list[int] | None = None
    batch_size: int = 0
    inference_seconds: float = 0.0
    error: BaseException | None = None


@dataclass(frozen=True)
class EmbeddingAnswer:
    vectors: np.ndarray
    token_counts: list[int]
    batch_size: int
    inference_seconds: float


class _Lane:
    def __init__(self, runtime: EmbeddingRuntime):
        self.runtime = runtime
        self.wake = threading.Event()


class EmbeddingQueue:
    def __init__(
        self,
        runtime: EmbeddingRuntime,
        *,
        max_batch: int = 32,
        lanes: list[EmbeddingRuntime] = (),
        solo: EmbeddingRuntime | None = None,
    ):
        self.runtime = runtime
        self.max_batch = max(1, max_batch)
        self._solo = solo
        self._solo_busy = False
        self._lock = threading.Lock()
        self._pending: collections.deque[_Job] = collections.deque()
        self._closed = False
        self._lanes = [_Lane(lane) for lane in (runtime, *lanes)]
        # Idle lanes, the last to finish on top: a lone request goes to the lane whose
        # session is warm in the caches (taking turns costs a single sentence half again).
        self._idle: list[_Lane] = list(reversed(self._lanes))
        self._threads = [
            threading.Thread(target=self._lane_run, args=(lane,), name=f"embedding-lane-{i}", daemon=True)
            for i, lane in enumerate(self._lanes)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def busy(self) -> int:
        """Lanes running a batch (or about to)."""
        with self._lock:
            return len(self._lanes) - len(self._idle)

    def embed(self, texts: list[str], *, timeout: float) -> EmbeddingAnswer:
        job = _Job(texts=texts)
        with self._lock:
            if self._closed:
                raise RuntimeError("the embedding queue is closed")
            self._pending.append(job)
            if self._idle:
                self._idle.pop().wake.set()
        if not job.ready.acquire(timeout=max(0.0, timeout)):
            with self._lock:
                if not job.taken:
                    self._pending.remove(job)
                    raise EmbeddingTimeout("the embedding did not start before the request's deadline")
            # Its batch is running: a batch ends, so take the answer after all.
            job.ready.acquire()
        return _answer(job)

    def close(self) -> None:
        """Stop the lane threads once what is waiting has run; later requests are refused."""
        with self._lock:
            self._closed = True
            for lane in self._idle:
                lane.wake.set()

    def _lane_run(self, lane: _Lane) -> None:
        while True:
            lane.wake.wait()
            lane.wake.clear()
            answered: list[_Job] = []
            runtime = lane.runtime
            while True:
                with self._lock:
                    if runtime is not lane.runtime:
                        self._solo_busy = False
                    batch, count = [], 0
                    while self._pending and (not batch or count + len(self._pending[0].texts) <= self.max_batch):
                        job = self._pending.popleft()
                        job.taken = True
                        batch.append(job)
                        count += len(job.texts)
                    if not batch and not self._closed:
                        # Idle again before the answers go out, so a client's next request finds this lane.
                        self._idle.append(lane)
                    stopping = not batch and self._closed
                    runtime = lane.runtime
                    if batch and self._solo is not None and not self._solo_busy and self._others_idle():
                        runtime, self._solo_busy = self._solo, True
                for job in answered:
                    job.ready.release()
                if not batch:
                    if stopping:
                        return
                    break
                self._run(runtime, batch)
                answered = batch

    def _others_idle(self) -> bool:
        """No lane but the calling one is running a batch (with the lock held)."""
        return len(self._idle) == len(self._lanes) - 1

    def _run(self, runtime: EmbeddingRuntime, batch: list[_Job]) -> None:
        texts = [text for job in batch for text in job.texts]
        started = time.perf_counter()
        try:
            if len(texts) <= self.max_batch:
                result = runtime.embed(texts)
                vectors, counts = result.vectors, result.token_counts
            else:
                parts = [runtime.embed(texts[i : i + self.max_batch]) for i in range(0, len(texts), self.max_batch)]
                vectors = np.concatenate([p.vectors for p in parts])
                counts = [n for p in parts for n in p.token_counts]
            elapsed = time.perf_counter() - started
            offset = 0
            for job in batch:
                end = offset + len(job.texts)
                job.vectors, job.token_counts = vectors[offset:end], counts[offset:end]
                job.batch_size, job.inference_seconds = len(texts), elapsed
                offset = end
        except BaseException as exc:  # noqa: BLE001 - every request of the batch gets the error
            for job in batch:
                job.error = exc


def _answer(job: _Job) -> EmbeddingAnswer:
    if job.error is not None:
        raise job.error
    return EmbeddingAnswer(
        vectors=job.vectors,
        token_counts=job.token_counts,
        batch_size=job.batch_size,
        inference_seconds=job.inference_seconds,
    )
