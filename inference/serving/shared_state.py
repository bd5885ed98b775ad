"""State the web processes and the inference workers share.

One small interface, two implementations:

* `RedisCoordination`, used whenever a Redis is configured (INFERENCE_STATE_URL,
  else CELERY_BROKER_URL / CELERY_RESULT_BACKEND when they are Redis): the
  limits then hold across every web process, worker process and machine.
* `LocalCoordination`, this process's memory: the embedded default, where
  `manage.py up` runs the web server and the worker in one process. Several
  processes without Redis would each enforce the limits on their own.

What is shared:
  * admission of generations: tickets (admitted, at most max_concurrent +
    queue_size) and running slots (at most max_concurrent), granted in
    arrival order; every entry is a lease that expires, so a crashed process
    cannot hold a slot for ever;
  * reply channels: the worker pushes a request's messages (started, text
    chunks, done, error) and the web process reads them as they come;
  * cancellation flags, which the worker checks between tokens;
  * each worker's status (loaded models, loading, memory) for /health, and
    its liveness heartbeat: a worker that stops beating (killed, its machine
    gone) is dropped from /health and its running generations are answered
    503 `worker_lost` within INFERENCE_WORKER_LOST_SECONDS;
  * latency samples waiting to be written to the database in bulk;
  * the router's records (`inference.routing.records`): per node and model
    its fitness, latency window, traffic and spot checks, per node its
    circuit breaker, each replaced atomically (read-modify-write).
"""

import atexit
import base64
import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Protocol

import numpy as np
import redis.exceptions
from django.conf import settings

logger = logging.getLogger(__name__)

REPLY_TTL_SECONDS = 600
CANCEL_TTL_SECONDS = 600
START_POLL_SECONDS = 0.003
BLOCKING_READ_SECONDS = 2.0
SAMPLES_MAX_BUFFERED = 100_000
# A web process sends its latency samples to Redis in batches, off the
# request path: at most this many seconds or this many samples late.
SAMPLES_SEND_SECONDS = 0.5
SAMPLES_SEND_BATCH = 256
# What redis-py raises when the shared state's server cannot be reached.
STATE_UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class Coordination(Protocol):
    name: str

    def admit(self, ticket: str, *, capacity: int, lease_seconds: float) -> bool:
        """Take a ticket if fewer than `capacity` are held; False when full."""

    def wait_start(self, ticket: str, *, max_running: int, lease_seconds: float, until: float) -> bool:
        """Wait (until the `time.time()` deadline `until`) for a running slot, in ticket order."""

    def release(self, ticket: str) -> None: ...

    def load(self) -> tuple[int, int]:
        """(running, waiting) generations, over every process sharing this state."""

    def reply_open(self, request_id: str) -> None: ...

    def reply_push(self, request_id: str, message: dict) -> None: ...

    def reply_pop(self, request_id: str, timeout: float) -> dict | None: ...

    def reply_close(self, request_id: str) -> None: ...

    def cancel(self, request_id: str) -> None: ...

    def is_cancelled(self, request_id: str) -> bool: ...

    def status_publish(self, worker: str, status: dict, *, ttl: float) -> None: ...

    def status_remove(self, worker: str) -> None: ...

    def statuses(self) -> dict[str, dict]: ...

    def heartbeat(self, worker: str, info: dict, *, ttl: float) -> None:
        """The worker process is alive for `ttl` more seconds, and so is its published status."""

    def heartbeat_remove(self, worker: str) -> None: ...

    def heartbeats(self) -> dict[str, dict]:
        """The info of each worker whose heartbeat is current."""

    def worker_alive(self, worker: str) -> bool: ...

    def samples_push(self, sample: dict) -> None: ...

    def samples_take(self, limit: int) -> list[dict]: ...

    def routing_update(self, key: str, update: Callable[[dict | None], dict], *, ttl: float) -> dict:
        """Replace the routing record `key` with `update(current)` atomically (current: None when absent).

        `update` may run more than once (Redis retries it when another process
        wrote the record meanwhile): it must not have side effects.
        """

    def routing_read(self, keys: list[str]) -> dict[str, dict]:
        """The routing records of `keys` that exist."""

    def reset(self) -> None:
        """Forget everything but the heartbeats of running workers (tests)."""


class LocalCoordination:
    name = "local"

    def __init__(self):
        self._lock = threading.Lock()
        self._slot_freed = threading.Condition(self._lock)
        self._tickets: dict[str, float] = {}  # insertion order = arrival order
        self._running: dict[str, float] = {}
        self._replies: dict[str, collections.deque] = {}
        self._reply_ready: dict[str, threading.Condition] = {}
        self._cancelled: dict[str, float] = {}
        self._statuses: dict[str, tuple[dict, float]] = {}
        self._heartbeats: dict[str, tuple[dict, float]] = {}
        self._samples: collections.deque = collections.deque(maxlen=SAMPLES_MAX_BUFFERED)
        self._routing: dict[str, tuple[dict, float]] = {}

    # --- admission -------------------------------------------------------------------
    def _expire(self, now: float) -> None:
        for table in (self._tickets, self._running):
            for ticket in [t for t, expiry in table.items() if expiry <= now]:
                del table[ticket]

    def admit(self, ticket: str, *, capacity: int, lease_seconds: float) -> bool:
        now = time.time()
        with self._lock:
            self._expire(now)
            if len(self._tickets) >= capacity:
                return False
            self._tickets[ticket] = now + lease_seconds
            return True

    def _try_start(self, ticket: str, max_running: int, lease_seconds: float, now: float) -> bool | None:
        self._expire(now)
        if ticket in self._running:
            return True
        if ticket not in self._tickets:
            return None
        ahead = 0
        for other in self._tickets:
            if other == ticket:
                break
            if other not in self._running:
                ahead += 1
        if len(self._running) + ahead >= max_running:
            return False
        self._running[ticket] = now + lease_seconds
        return True

    def wait_start(self, ticket: str, *, max_running: int, lease_seconds: float, until: float) -> bool:
        with self._lock:
            while True:
                now = time.time()
                started = self._try_start(ticket, max_running, lease_seconds, now)
                if started is not None:
                    if started:
                        return True
                elif ticket not in self._tickets:
                    return False
                if now >= until:
                    return False
                # Leases can expire without a release: wake up now and then.
                self._slot_freed.wait(min(until - now, 0.25))

    def release(self, ticket: str) -> None:
        with self._lock:
            self._tickets.pop(ticket, None)
            self._running.pop(ticket, None)
            self._slot_freed.notify_all()

    def load(self) -> tuple[int, int]:
        with self._lock:
            self._expire(time.time())
            running = len(self._running)
            return running, len(self._tickets) - running

    # --- replies ---------------------------------------------------------------------
    def reply_open(self, request_id: str) -> None:
        with self._lock:
            self._replies[request_id] = collections.deque()
            self._reply_ready[request_id] = threading.Condition(self._lock)

    def reply_push(self, request_id: str, message: dict) -> None:
        with self._lock:
            box = self._replies.get(request_id)
            if box is None:  # the reader has gone: nobody will read it
                return
            box.append(message)
            self._reply_ready[request_id].notify()

    def reply_pop(self, request_id: str, timeout: float) -> dict | None:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            box = self._replies.get(request_id)
            if box is None:
                return None
            ready = self._reply_ready[request_id]
            while not box:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                ready.wait(remaining)
            return box.popleft()

    def reply_close(self, request_id: str) -> None:
        with self._lock:
            self._replies.pop(request_id, None)
            self._reply_ready.pop(request_id, None)

    # --- cancellation --------------------------------------------------------------------
    def cancel(self, request_id: str) -> None:
        now = time.time()
        with self._lock:
            if len(self._cancelled) > 1000:
                self._cancelled = {k: v for k, v in self._cancelled.items() if v > now}
            self._cancelled[request_id] = now + CANCEL_TTL_SECONDS

    def is_cancelled(self, request_id: str) -> bool:
        return request_id in self._cancelled

    # --- worker status -------------------------------------------------------------------
    def status_publish(self, worker: str, status: dict, *, ttl: float) -> None:
        with self._lock:
            self._statuses[worker] = (status, time.time() + ttl)

    def status_remove(self, worker: str) -> None:
        with self._lock:
            self._statuses.pop(worker, None)

    def statuses(self) -> dict[str, dict]:
        now = time.time()
        with self._lock:
            return {worker: status for worker, (status, expiry) in self._statuses.items() if expiry > now}

    def heartbeat(self, worker: str, info: dict, *, ttl: float) -> None:
        now = time.time()
        with self._lock:
            self._heartbeats[worker] = (info, now + ttl)
            status = self._statuses.get(worker)
            if status is not None and status[1] > now:
                self._statuses[worker] = (status[0], max(status[1], now + ttl))

    def heartbeat_remove(self, worker: str) -> None:
        with self._lock:
            self._heartbeats.pop(worker, None)

    def heartbeats(self) -> dict[str, dict]:
        now = time.time()
        with self._lock:
            return {worker: info for worker, (info, expiry) in self._heartbeats.items() if expiry > now}

    def worker_alive(self, worker: str) -> bool:
        with self._lock:
            return self._heartbeats.get(worker, ({}, 0.0))[1] > time.time()

    # --- latency samples -------------------------------------------------------------------
    def samples_push(self, sample: dict) -> None:
        self._samples.append(sample)

    def samples_take(self, limit: int) -> list[dict]:
        taken = []
        while len(taken) < limit:
            try:
                taken.append(self._samples.popleft())
            except IndexError:
                break
        return taken

    # --- routing records -------------------------------------------------------------------
    def routing_update(self, key: str, update: Callable[[dict | None], dict], *, ttl: float) -> dict:
        now = time.time()
        with self._lock:
            current = self._routing.get(key)
            record = update(json.loads(json.dumps(current[0])) if current and current[1] > now else None)
            self._routing[key] = (record, now + ttl)
            return record

    def routing_read(self, keys: list[str]) -> dict[str, dict]:
        now = time.time()
        with self._lock:
            found = {key: self._routing.get(key) for key in keys}
            return {key: json.loads(json.dumps(value[0])) for key, value in found.items() if value and value[1] > now}

    def reset(self) -> None:
        with self._lock:
            self._tickets.clear()
            self._running.clear()
            self._cancelled.clear()
            self._statuses.clear()
            self._samples.clear()
            self._routing.clear()


_TRY_START = """
local now = tonumber(ARGV[1])
local max_running = tonumber(ARGV[2])
local ticket = ARGV[3]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ticket) then return 1 end
local mine = redis.call('ZSCORE', KEYS[2], ticket)
if not mine then return -1 end
local running = redis.call('ZCARD', KEYS[1])
if running >= max_running then return 0 end
local ahead = 0
for _, other in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. mine)) do
  if not redis.call('ZSCORE', KEYS[1], other) then ahead = ahead + 1 end
end
if running + ahead >= max_running then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ticket)
return 1
"""

_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
return 1
"""


def _encode(value):
    """JSON for arrays: embeddings travel as base64 float32, about 4x smaller than float lists."""
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value, dtype="<f4")
        return {"__f32__": base64.b64encode(data.tobytes()).decode("ascii"), "shape": list(data.shape)}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _decode(value: dict):
    if "__f32__" in value:
        return np.frombuffer(base64.b64decode(value["__f32__"]), dtype="<f4").reshape(value["shape"])
    return value


class RedisCoordination:
    name = "redis"

    def __init__(self, url: str, prefix: str):
        import redis

        # Blocking reads wait at most BLOCKING_READ_SECONDS, well under the socket timeout.
        self.client = redis.Redis.from_url(url, health_check_interval=30, socket_connect_timeout=2, socket_timeout=5)
        self.prefix = prefix
        self._tickets = f"{prefix}tickets"
        self._running = f"{prefix}running"
        self._workers = f"{prefix}workers"
        self._samples = f"{prefix}samples"
        self._admit = self.client.register_script(_ADMIT)
        self._outbox: collections.deque[dict] = collections.deque(maxlen=SAMPLES_MAX_BUFFERED)
        self._sender: threading.Thread | None = None
        self._sender_lock = threading.Lock()
        self._try_start = self.client.register_script(_TRY_START)

    # --- admission -------------------------------------------------------------------
    def admit(self, ticket: str, *, capacity: int, lease_seconds: float) -> bool:
        # Ticket scores are lease expiries; with one lease length they also
        # give the arrival order that running slots are granted in.
        now = time.time()
        return bool(self._admit(keys=[self._tickets], args=[now, capacity, ticket, now + lease_seconds]))

    def wait_start(self, ticket: str, *, max_running: int, lease_seconds: float, until: float) -> bool:
        while True:
            now = time.time()
            answer = self._try_start(
                keys=[self._running, self._tickets], args=[now, max_running, ticket, now + lease_seconds]
            )
            if answer == 1:
                return True
            if answer == -1 or now >= until:
                return False
            time.sleep(min(START_POLL_SECONDS, max(0.0, until - now)))

    def release(self, ticket: str) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zrem(self._tickets, ticket)
            pipe.zrem(self._running, ticket)
            pipe.execute()

    def load(self) -> tuple[int, int]:
        now = time.time()
        with self.client.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(self._running, "-inf", now)
            pipe.zremrangebyscore(self._tickets, "-inf", now)
            pipe.zcard(self._running)
            pipe.zcard(self._tickets)
            _, _, running, tickets = pipe.execute()
        return running, max(0, tickets - running)

    # --- replies ---------------------------------------------------------------------
    def _reply_key(self, request_id: str) -> str:
        return f"{self.prefix}reply:{request_id}"

    def reply_open(self, request_id: str) -> None:
        pass

    def reply_push(self, request_id: str, message: dict) -> None:
        key = self._reply_key(request_id)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.rpush(key, json.dumps(message, separators=(",", ":"), default=_encode))
            pipe.expire(key, REPLY_TTL_SECONDS)
            pipe.execute()

    def reply_pop(self, request_id: str, timeout: float) -> dict | None:
        key = self._reply_key(request_id)
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0.001:
                raw = self.client.lpop(key)
                break
            # Blocking reads stay well under the client's socket timeout (5 s).
            item = self.client.blpop([key], timeout=min(remaining, BLOCKING_READ_SECONDS))
            if item:
                raw = item[1]
                break
        return json.loads(raw, object_hook=_decode) if raw is not None else None

    def reply_close(self, request_id: str) -> None:
        # Redis drops a list once its last message is read, and anything a
        # worker sends after the reader left expires with REPLY_TTL_SECONDS:
        # no round trip needed.
        pass

    # --- cancellation --------------------------------------------------------------------
    def cancel(self, request_id: str) -> None:
        self.client.set(f"{self.prefix}cancel:{request_id}", 1, ex=CANCEL_TTL_SECONDS)

    def is_cancelled(self, request_id: str) -> bool:
        return bool(self.client.exists(f"{self.prefix}cancel:{request_id}"))

    # --- worker status -------------------------------------------------------------------
    def status_publish(self, worker: str, status: dict, *, ttl: float) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(f"{self.prefix}worker:{worker}", json.dumps(status), px=int(ttl * 1000))
            pipe.sadd(self._workers, worker)
            pipe.execute()

    def status_remove(self, worker: str) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.delete(f"{self.prefix}worker:{worker}")
            pipe.srem(self._workers, worker)
            pipe.execute()

    def statuses(self) -> dict[str, dict]:
        workers = sorted(w.decode() for w in self.client.smembers(self._workers))
        if not workers:
            return {}
        raw = self.client.mget([f"{self.prefix}worker:{w}" for w in workers])
        gone = [w for w, value in zip(workers, raw, strict=True) if value is None]
        if gone:
            self.client.srem(self._workers, *gone)
        return {w: json.loads(value) for w, value in zip(workers, raw, strict=True) if value is not None}

    def _heartbeat_key(self, worker: str) -> str:
        return f"{self.prefix}alive:{worker}"

    def heartbeat(self, worker: str, info: dict, *, ttl: float) -> None:
        ttl_ms = max(1, int(ttl * 1000))
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self._heartbeat_key(worker), json.dumps(info), px=ttl_ms)
            # The status lives as long as the worker beats (GT: never shortened).
            pipe.pexpire(f"{self.prefix}worker:{worker}", ttl_ms, gt=True)
            pipe.execute()

    def heartbeat_remove(self, worker: str) -> None:
        self.client.delete(self._heartbeat_key(worker))

    def heartbeats(self) -> dict[str, dict]:
        keys = list(self.client.scan_iter(match=self._heartbeat_key("*"), count=500))
        values = self.client.mget(keys) if keys else []
        start = len(self._heartbeat_key(""))
        return {
            key.decode()[start:]: json.loads(value)
            for key, value in zip(keys, values, strict=True)
            if value is not None
        }

    def worker_alive(self, worker: str) -> bool:
        return bool(self.client.exists(self._heartbeat_key(worker)))

    # --- latency samples -------------------------------------------------------------------
    def samples_push(self, sample: dict) -> None:
        # A round trip per request would cost more than recording the sample:
        # samples wait here and go in one RPUSH per batch (see _samples_sender).
        self._outbox.append(sample)
        if len(self._outbox) >= SAMPLES_SEND_BATCH:
            self.samples_send()
        elif self._sender is None:
            self._sender_start()

    def samples_send(self) -> None:
        """Send this process's waiting samples to Redis now."""
        batch = []
        while self._outbox and len(batch) < SAMPLES_MAX_BUFFERED:
            try:
                batch.append(json.dumps(self._outbox.popleft(), separators=(",", ":")))
            except IndexError:
                break
        if batch:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.rpush(self._samples, *batch)
                pipe.ltrim(self._samples, -SAMPLES_MAX_BUFFERED, -1)
                pipe.execute()

    def _sender_start(self) -> None:
        with self._sender_lock:
            if self._sender is None:
                self._sender = threading.Thread(target=self._samples_sender, name="samples-sender", daemon=True)
                self._sender.start()
                atexit.register(self._samples_send_quietly)

    def _samples_sender(self) -> None:
        while True:
            time.sleep(SAMPLES_SEND_SECONDS)
            self._samples_send_quietly()

    def _samples_send_quietly(self) -> None:
        try:
            self.samples_send()
        except Exception:  # noqa: BLE001 - Redis away: the samples wait for the next try
            logger.warning("could not send %d latency samples to Redis", len(self._outbox), exc_info=True)

    def samples_take(self, limit: int) -> list[dict]:
        self.samples_send()
        raw = self.client.lpop(self._samples, limit) or []
        return [json.loads(item) for item in raw]

    # --- routing records -------------------------------------------------------------------
    def _routing_key(self, key: str) -> str:
        return f"{self.prefix}routing:{key}"

    def routing_update(self, key: str, update: Callable[[dict | None], dict], *, ttl: float) -> dict:
        name = self._routing_key(key)
        written: list[dict] = []

        def transact(pipe) -> None:
            # WATCH/MULTI: when another process writes the record between the
            # read and the write, redis-py runs this again on the new value.
            raw = pipe.get(name)
            record = update(json.loads(raw) if raw is not None else None)
            pipe.multi()
            pipe.set(name, json.dumps(record, separators=(",", ":")), px=max(1, int(ttl * 1000)))
            written[:] = [record]

        self.client.transaction(transact, name)
        return written[0]

    def routing_read(self, keys: list[str]) -> dict[str, dict]:
        if not keys:
            return {}
        raw = self.client.mget([self._routing_key(key) for key in keys])
        return {key: json.loads(value) for key, value in zip(keys, raw, strict=True) if value is not None}

    def reset(self) -> None:
        self._outbox.clear()
        alive = self._heartbeat_key("")
        keys = [
            k for k in self.client.scan_iter(match=f"{self.prefix}*", count=500) if not k.decode().startswith(alive)
        ]
        if keys:
            self.client.delete(*keys)


def _is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def state_url() -> str:
    """The Redis the serving state lives in, or '' for this process's memory."""
    if settings.INFERENCE_STATE_URL:
        return settings.INFERENCE_STATE_URL if _is_redis(settings.INFERENCE_STATE_URL) else ""
    for url in (settings.CELERY_BROKER_URL, settings.CELERY_RESULT_BACKEND):
        if url and _is_redis(url):
            return url
    return ""


@lru_cache(maxsize=8)
def _coordination(url: str, prefix: str) -> Coordination:
    if url:
        return RedisCoordination(url, prefix)
    return LocalCoordination()


def coordination() -> Coordination:
    return _coordination(state_url(), settings.INFERENCE_STATE_PREFIX)
