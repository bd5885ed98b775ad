"""The web server `up` runs answers past its limits instead of leaving clients hanging.

The connection tests start the real `manage.py up` (no worker, no beat: only
the web tier matters; on the embedded defaults whatever the suite runs on)
with a small --connection-limit and talk to it over raw sockets. The queue and arrival tests run `ConclaveServer` in
this process
with a small WSGI app that holds a web thread until the test lets it go: the
only way to keep a thread busy for exactly as long as a test needs.

Socket timeouts below only bound how long a broken server can hang a test;
nothing asserts how fast anything is.
"""

import json
import socket
import threading
import time

import pytest

from core.web_server import (
    ARRIVED_AT_ENVIRON_KEY,
    IDLE_RECLAIM_SECONDS,
    request_arrived_at,
    server_create,
)
from tests.conclave.test_up import UpProcess, _embedded_environment

CLIENT_TIMEOUT_SECONDS = 15.0
CONNECTION_LIMIT = 6


def _request_bytes(path: str = "/health/live", *, keep_alive: bool = True) -> bytes:
    connection = "keep-alive" if keep_alive else "close"
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\n\r\n".encode()


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length (all the server sends here)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_SECONDS)
    sock.settimeout(CLIENT_TIMEOUT_SECONDS)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.5)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    finally:
        sock.settimeout(CLIENT_TIMEOUT_SECONDS)


@pytest.fixture
def up_small(tmp_path):
    up = UpProcess(
        tmp_path / "data",
        "--no-worker",
        "--no-beat",
        "--connection-limit",
        str(CONNECTION_LIMIT),
        env=_embedded_environment(tmp_path / "data"),
    )
    try:
        up.wait_until_serving()
        yield up
    finally:
        up.kill()


def test_up_states_its_web_limits_when_it_starts(up_small):
    assert f"{CONNECTION_LIMIT} connections" in up_small.output
    assert "at most 6 generations held at once (2 threads kept for the rest of the site)" in up_small.output


def test_a_connection_past_the_limit_gets_503_at_once_when_none_is_idle(up_small):
    # Connections in the middle of sending a request are not idle: the
    # server may not close them for a newcomer.
    busy = [_connect(up_small.port) for _ in range(CONNECTION_LIMIT)]
    try:
        for sock in busy:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        extra = _connect(up_small.port)
        extra.sendall(_request_bytes())
        status, headers, body = _read_response(extra)
        extra.close()

        assert status == 503
        assert headers["retry-after"] == "1"
        assert headers["connection"] == "close"
        error = json.loads(body)["error"]
        assert error["code"] == "too_many_connections"
        assert error["type"] == "unavailable_error"
        assert f"limit of {CONNECTION_LIMIT} open connections" in error["message"]
    finally:
        for sock in busy:
            sock.close()

    # Once those close, new clients are served again.
    deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS
    while True:
        with _connect(up_small.port) as sock:
            sock.sendall(_request_bytes(keep_alive=False))
            status, _, _ = _read_response(sock)
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200


def test_an_idle_keep_alive_connection_is_closed_to_serve_a_new_client(up_small):
    idle = [_connect(up_small.port) for _ in range(CONNECTION_LIMIT)]
    try:
        for sock in idle:
            sock.sendall(_request_bytes(keep_alive=True))
            status, headers, _ = _read_response(sock)
            assert status == 200
            assert headers.get("connection", "keep-alive").lower() != "close"
        time.sleep(IDLE_RECLAIM_SECONDS + 0.5)

        with _connect(up_small.port) as extra:
            extra.sendall(_request_bytes(keep_alive=False))
            status, _, body = _read_response(extra)

        assert status == 200, body
        closed = [sock for sock in idle if _closed_by_server(sock)]
        assert len(closed) == 1
    finally:
        for sock in idle:
            sock.close()


# --- In-process: requests waiting for a web thread ----------------------------------------------


class HoldingApp:
    """A WSGI app: /hold keeps its web thread until `release` is set; anything else answers at once."""

    def __init__(self):
        self.release = threading.Event()
        self.holding = threading.Event()

    def __call__(self, environ, start_response):
        if environ["PATH_INFO"] == "/hold":
            self.holding.set()
            self.release.wait(CLIENT_TIMEOUT_SECONDS)
        body = json.dumps(
            {
                "environ_arrived_at": environ[ARRIVED_AT_ENVIRON_KEY],
                "arrived_at": request_arrived_at(),
                "served_at": time.time(),
            }
        ).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


@pytest.fixture
def one_thread_server():
    app = HoldingApp()
    server = server_create(app, map={}, host="127.0.0.1", port=0, threads=1, connection_limit=100, queue_limit=1)
    loop = threading.Thread(target=server.run, daemon=True)
    loop.start()
    try:
        yield server, app
    finally:
        app.release.set()
        server.task_dispatcher.shutdown(timeout=5)
        server.close()
        for channel in list(server.active_channels.values()):
            channel.close()


def _wait_until(condition) -> None:
    deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "the server did not get there in time"
        time.sleep(0.01)


def test_a_request_past_the_queue_limit_gets_503_without_waiting_for_a_thread(one_thread_server):
    server, app = one_thread_server
    port = int(server.effective_port)
    holder = _connect(port)
    holder.sendall(_request_bytes("/hold"))
    assert app.holding.wait(CLIENT_TIMEOUT_SECONDS)
    queued = _connect(port)
    queued.sendall(_request_bytes("/queued"))
    _wait_until(lambda: len(server.task_dispatcher.queue) == 1)

    with _connect(port) as refused:
        refused.sendall(_request_bytes("/refused"))
        status, headers, body = _read_response(refused)
    assert status == 503
    assert headers["retry-after"] == "1"
    assert json.loads(body)["error"]["code"] == "server_busy"

    app.release.set()
    assert _read_response(holder)[0] == 200
    assert _read_response(queued)[0] == 200
    holder.close()
    queued.close()


def test_a_request_carries_its_arrival_not_the_moment_a_thread_took_it(one_thread_server):
    server, app = one_thread_server
    port = int(server.effective_port)
    holder = _connect(port)
    holder.sendall(_request_bytes("/hold"))
    assert app.holding.wait(CLIENT_TIMEOUT_SECONDS)

    sent_at = time.time()
    waiting = _connect(port)
    waiting.sendall(_request_bytes("/stamp"))
    _wait_until(lambda: len(server.task_dispatcher.queue) == 1)
    released_at = time.time()
    app.release.set()

    status, _, body = _read_response(waiting)
    assert status == 200
    stamps = json.loads(body)
    assert stamps["arrived_at"] == stamps["environ_arrived_at"]
    # Stamped when it arrived, while the only thread was still held, and
    # served only after the thread was let go.
    assert sent_at <= stamps["arrived_at"] <= released_at <= stamps["served_at"]
    _read_response(holder)
    holder.close()
    waiting.close()
    # Outside a request served by the server there is no arrival.
    assert request_arrived_at() is None
