"""The web server `manage.py up` runs: waitress, with limits that answer instead of hanging.

Stock waitress stops accepting at `connection_limit` open sockets (100, its
listener and wake-up pipe included, so 98 clients) and leaves the next
client in the kernel's backlog, unanswered, until an idle keep-alive
connection times out (`channel_timeout`, 120 s, looked at every
`cleanup_interval`, 30 s). Requests waiting for a web thread queue without
bound. Here, instead:

* at `connection_limit` client connections, the keep-alive connection idle
  longest (nothing in flight, idle at least IDLE_RECLAIM_SECONDS) is closed
  to make room for the new one;
* when none is idle, the new connection is accepted all the same, its
  request read and answered at once with 503 and Retry-After by the
  server's loop, without taking a web thread;
* at `queue_limit` requests waiting for a web thread, a new request gets
  the same immediate 503 rather than a place at the back of the queue;
* every request carries the time its first byte arrived (WSGI environ
  ARRIVED_AT_ENVIRON_KEY, and `request_arrived_at()` in the thread serving
  it), so deadlines count from arrival, not from when a thread took it up.

The loop uses poll(), as select() cannot watch descriptors above 1023.
"""

import json
import logging
import time
from contextlib import contextmanager
from contextvars import ContextVar

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher, WSGITask

logger = logging.getLogger("core.web_server")

ARRIVED_AT_ENVIRON_KEY = "conclave.arrived_at"
# An idle keep-alive connection older than this may be closed for a new client.
IDLE_RECLAIM_SECONDS = 1.0
# A refused connection that has not sent its request by then is closed.
REFUSAL_TIMEOUT_SECONDS = 5
# Refused connections open at once, past connection_limit; beyond them the
# server stops accepting until some close.
REFUSALS_MAX = 64
RETRY_AFTER_SECONDS = 1
# How often idle and refused connections are looked at (waitress: 30 s).
CLEANUP_INTERVAL_SECONDS = 1

_arrived_at: ContextVar[float | None] = ContextVar("conclave_request_arrived_at", default=None)


def request_arrived_at() -> float | None:
    """When the first byte of the request this thread serves reached the server (`time.time()`).

    None outside a request served by `ConclaveServer` (tests, other servers).
    """
    return _arrived_at.get()


@contextmanager
def request_arriving_at(arrived_at: float | None):
    """Within this block, `request_arrived_at()` answers `arrived_at` (the server sets it per request)."""
    token = _arrived_at.set(arrived_at)
    try:
        yield
    finally:
        _arrived_at.reset(token)


def refusal_response(*, code: str, message: str) -> bytes:
    """A complete 503 in the API's one JSON error shape, closing the connection."""
    body = json.dumps({"error": {"message": message, "type": "unavailable_error", "code": code}}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {RETRY_AFTER_SECONDS}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _ArrivalParser(HTTPRequestParser):
    """A request parser created when the request's first bytes are read: it records that moment."""

    def __init__(self, adj):
        super().__init__(adj)
        self.arrived_at = time.time()


class _ArrivalTask(WSGITask):
    def get_environment(self):
        environ = super().get_environment()
        environ[ARRIVED_AT_ENVIRON_KEY] = getattr(self.request, "arrived_at", None)
        return environ

    def execute(self):
        with request_arriving_at(getattr(self.request, "arrived_at", None)):
            super().execute()


class _Channel(HTTPChannel):
    parser_class = _ArrivalParser
    task_class = _ArrivalTask
    # Set on a connection accepted past connection_limit: its request is
    # read, answered with 503 and the connection closed.
    refused_with: bytes | None = None

    def refuse(self, response: bytes) -> None:
        """Answer with `response` from the server's loop and close once it is sent.

        Called with `requests_lock` held (from `received` via `add_task`) or
        on a connection no thread serves; drops the requests it had.
        """
        for request in self.requests:
            request.close()
        self.requests = []
        if self.close_when_flushed or self.will_close:
            return
        with self.outbuf_lock:
            self.outbufs[-1].append(response)
            self.current_outbuf_count += len(response)
            self.total_outbufs_len += len(response)
        self.close_when_flushed = True

    def received(self, data):
        if self.refused_with is None:
            return super().received(data)
        if not data or self.close_when_flushed or self.will_close:
            return False
        # Read the whole request (body included, so that closing does not
        # reset the connection under the client's feet), then refuse it.
        while data:
            if self.request is None:
                self.request = self.parser_class(self.adj)
            consumed = self.request.received(data)
            if self.request.completed:
                self.request = None
                self.refuse(self.refused_with)
                return True
            if consumed >= len(data):
                break
            data = data[consumed:]
        return True

    def del_channel(self, map=None):
        if self.refused_with is not None and self._fileno in self.server.active_channels:
            self.server.refusals_open -= 1
        super().del_channel(map)

    @property
    def reclaimable(self) -> bool:
        """A keep-alive connection between requests: nothing being read, served or sent."""
        return (
            self.refused_with is None
            and self.request is None
            and not self.requests
            and not self.total_outbufs_len
            and not self.will_close
            and not self.close_when_flushed
        )


class ConclaveServer(TcpWSGIServer):
    """waitress's TCP server with the overload behaviour described in the module docstring."""

    channel_class = _Channel

    def __init__(self, application, *, queue_limit: int, **kwargs):
        self.queue_limit = queue_limit
        self.refused_connections = 0
        self.refused_requests = 0
        self.reclaimed_connections = 0
        self.refusals_open = 0
        super().__init__(application, **kwargs)

    # --- connections ---------------------------------------------------------------
    def readable(self):
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        return self.accepting and self.refusals_open < REFUSALS_MAX

    def handle_accept(self):
        try:
            accepted = self.accept()
            if accepted is None:
                return
            conn, addr = accepted
            self.set_socket_options(conn)
        except OSError:
            if self.adj.log_socket_errors:
                self.logger.warning("server accept() threw an exception", exc_info=True)
            return
        addr = self.fix_addr(addr)
        serving = len(self.active_channels) - self.refusals_open
        if serving >= self.adj.connection_limit and not self._reclaim_idle(time.time()):
            channel = self.channel_class(self, conn, addr, self.adj, map=self._map)
            self.refusals_open += 1
            channel.refused_with = refusal_response(
                code="too_many_connections",
                message=(
                    f"The server holds its limit of {self.adj.connection_limit} open connections, "
                    "none of them idle; retry shortly."
                ),
            )
            self.refused_connections += 1
            if self.refused_connections == 1 or self.refused_connections % 100 == 0:
                logger.warning(
                    "connection limit %d reached with no idle connection: refused %d connections so far",
                    self.adj.connection_limit,
                    self.refused_connections,
                )
            return
        self.channel_class(self, conn, addr, self.adj, map=self._map)

    def _reclaim_idle(self, now: float) -> bool:
        """Close the keep-alive connection idle longest (at least IDLE_RECLAIM_SECONDS); False if none."""
        cutoff = now - IDLE_RECLAIM_SECONDS
        idle = [c for c in self.active_channels.values() if c.reclaimable and c.last_activity <= cutoff]
        if not idle:
            return False
        oldest = min(idle, key=lambda channel: channel.last_activity)
        oldest.handle_close()
        self.reclaimed_connections += 1
        return True

    def maintenance(self, now):
        super().maintenance(now)
        cutoff = now - REFUSAL_TIMEOUT_SECONDS
        for channel in self.active_channels.values():
            if channel.refused_with is not None and channel.creation_time < cutoff:
                channel.will_close = True

    # --- requests ------------------------------------------------------------------
    def add_task(self, task):
        waiting = len(self.task_dispatcher.queue)
        if waiting >= self.queue_limit and isinstance(task, _Channel):
            self.refused_requests += 1
            task.refuse(
                refusal_response(
                    code="server_busy",
                    message=(
                        f"All {self.adj.threads} web threads are busy and {waiting} requests wait for one "
                        f"(queue limit {self.queue_limit}); retry shortly."
                    ),
                )
            )
            self.pull_trigger()
            return
        super().add_task(task)


def server_create(
    application, *, map: dict, host: str, port: int, threads: int, connection_limit: int, queue_limit: int
) -> ConclaveServer:
    """A listening `ConclaveServer` on the first address `host` resolves to."""
    adj = Adjustments(
        host=host,
        port=port,
        threads=threads,
        ident="conclave",
        connection_limit=connection_limit,
        cleanup_interval=CLEANUP_INTERVAL_SECONDS,
        asyncore_use_poll=True,
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    try:
        return ConclaveServer(
            application, queue_limit=queue_limit, map=map, dispatcher=dispatcher, adj=adj, sockinfo=adj.listen[0]
        )
    except BaseException:
        dispatcher.shutdown(timeout=0)
        raise
