"""The embedded broker: in-process queues and results that wake their waiters.

Kombu's ``memory://`` transport sleeps ``polling_interval`` whenever its queues
are empty, and Celery's in-memory result store (``cache+memory://``) makes
``AsyncResult.get()`` sleep ``interval`` (0.5 s unless the caller says
otherwise) between looks. A task handed from a web thread to the worker thread
of ``manage.py up`` would pay one polling interval on each leg.

These subclasses keep the same in-process storage and signal a condition
variable on every arrival, so a consumer or a waiting caller wakes at once.
Messages still pass only between threads of one process, exactly as with
``memory://``. Selected by settings when CELERY_BROKER_URL is unset.
"""

import threading
from queue import Empty
from time import monotonic

from celery import states
from celery.backends.cache import CacheBackend
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu.transport import memory

# Longest a waiter sleeps between checks. Arrivals wake it sooner; this only
# bounds the cost of anything that changes state without passing through here.
FALLBACK_WAKEUP_SECONDS = 1.0


class _Arrivals:
    """A count of arrivals that threads wait on without missing one between check and wait."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._count = 0

    def count(self) -> int:
        return self._count

    def mark(self) -> None:
        with self._condition:
            self._count += 1
            self._condition.notify_all()

    def wait_after(self, seen: int, timeout: float) -> None:
        """Block until an arrival after `seen` (or `timeout` seconds)."""
        with self._condition:
            if self._count == seen:
                self._condition.wait(timeout)


_messages = _Arrivals()
_results = _Arrivals()


class Channel(memory.Channel):
    def _put(self, queue, message, **kwargs):
        super()._put(queue, message, **kwargs)
        _messages.mark()

    def _put_fanout(self, exchange, message, routing_key=None, **kwargs):
        super()._put_fanout(exchange, message, routing_key, **kwargs)
        _messages.mark()


class Transport(memory.Transport):
    """Kombu's in-memory transport whose consumers block until a message arrives."""

    Channel = Channel
    polling_interval = FALLBACK_WAKEUP_SECONDS

    def drain_events(self, connection, timeout=None):
        started = monotonic()
        while True:
            seen = _messages.count()
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                wait = self.polling_interval or FALLBACK_WAKEUP_SECONDS
                if timeout is not None:
                    remaining = timeout - (monotonic() - started)
                    if remaining <= 0:
                        raise TimeoutError from None  # socket.timeout, which the worker loop expects
                    wait = min(wait, remaining)
                _messages.wait_after(seen, wait)


class ResultBackend(CacheBackend):
    """Celery's in-memory result store whose ``get()`` callers wake when a result is stored.

    ``interval`` keeps its meaning of "check at least this often"; a stored
    result ends the wait at once instead of at the next check.
    """

    def set(self, key, value):
        result = super().set(key, value)
        _results.mark()
        return result

    def wait_for(self, task_id, timeout=None, interval=0.5, no_ack=True, on_interval=None):
        self._ensure_not_eager()
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            seen = _results.count()
            meta = self.get_task_meta(task_id)
            if meta["status"] in states.READY_STATES:
                return meta
            if on_interval:
                on_interval()
            wait = interval if interval else FALLBACK_WAKEUP_SECONDS
            if deadline is not None:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    raise CeleryTimeoutError("The operation timed out.")
                wait = min(wait, remaining)
            _results.wait_after(seen, wait)
