"""HTTP to a serving node: one call per object, cancellable from another thread.

A routed request may be abandoned while a node is still answering (a hedge
or a redundant copy lost the race, the deadline passed): `cancel()` shuts
the socket down, which wakes the thread blocked on it and tells the node
the client has gone (it stops a generation at its next token).

The platform presents the node's own secret (`Authorization: Bearer`),
never the user's token.
"""

import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator


class NodeCallFailed(Exception):
    """The node did not give a usable answer: connection refused or reset, 5xx, timeout, garbage."""

    def __init__(self, message: str, *, kind: str = "error", status: int | None = None):
        super().__init__(message)
        self.kind = kind  # error | timeout | busy | cancelled | unreachable
        self.status = status


class NodeRefused(Exception):
    """The node answered 4xx: the request itself is at fault (over a limit, malformed); not the node's fault."""

    def __init__(self, status: int, body: dict):
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        super().__init__(error.get("message") or f"The node refused the request ({status}).")
        self.status = status
        self.code = error.get("code")
        self.message = str(self)


class NodeCall:
    def __init__(self, url: str, secret: str, *, timeout: float):
        parts = urllib.parse.urlsplit(url)
        self.secure = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.secure else 80)
        self.base = parts.path.rstrip("/")
        self.secret = secret
        self.timeout = max(0.05, timeout)
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self.cancelled = False
        self.started = time.perf_counter()

    def _open(self, path: str, body: dict) -> http.client.HTTPResponse:
        cls = http.client.HTTPSConnection if self.secure else http.client.HTTPConnection
        connection = cls(self.host, self.port, timeout=self.timeout)
        with self._lock:
            if self.cancelled:
                raise NodeCallFailed("cancelled", kind="cancelled")
            self._connection = connection
        payload = json.dumps(body, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.secret}",
            "Content-Length": str(len(payload)),
        }
        try:
            connection.request("POST", self.base + path, body=payload, headers=headers)
            response = connection.getresponse()
        except TimeoutError as exc:
            raise NodeCallFailed(f"no answer within {self.timeout:.1f} s", kind="timeout") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise self._failure(exc) from exc
        if response.status >= 400:
            raw = response.read()
            try:
                parsed = json.loads(raw or b"{}")
            except ValueError:
                parsed = {}
            error = parsed.get("error") if isinstance(parsed, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            if response.status in (429, 503) and code in ("queue_full", "loading", "model_unavailable", None):
                raise NodeCallFailed(f"the node is busy ({response.status} {code})", kind="busy", status=503)
            if response.status >= 500 or code == "model_not_found":
                raise NodeCallFailed(f"the node answered {response.status} ({code})", status=response.status)
            raise NodeRefused(response.status, parsed)
        return response

    def _failure(self, exc: BaseException) -> NodeCallFailed:
        if self.cancelled:
            return NodeCallFailed("cancelled", kind="cancelled")
        if isinstance(exc, TimeoutError):
            return NodeCallFailed(f"no answer within {self.timeout:.1f} s", kind="timeout")
        if isinstance(exc, ConnectionError):  # refused, reset, closed without an answer: the node is gone
            return NodeCallFailed(f"{type(exc).__name__}: {exc}", kind="unreachable")
        return NodeCallFailed(f"{type(exc).__name__}: {exc}")

    def post_json(self, path: str, body: dict) -> dict:
        try:
            response = self._open(path, body)
            try:
                return json.loads(response.read())
            except (OSError, http.client.HTTPException, ValueError) as exc:
                raise self._failure(exc) from exc
        finally:
            self.close()

    def stream(self, path: str, body: dict) -> Iterator[dict | str]:
        """The node's server-sent events (`data:` payloads, JSON-decoded; "[DONE]" as is)."""
        try:
            response = self._open(path, body)
            while True:
                try:
                    line = response.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise self._failure(exc) from exc
                if not line:
                    raise NodeCallFailed("the node closed the stream before its end")
                line = line.strip()
                if not line.startswith(b"data: "):
                    continue
                data = line[len(b"data: ") :]
                if data == b"[DONE]":
                    yield "[DONE]"
                    return
                try:
                    yield json.loads(data)
                except ValueError as exc:
                    raise NodeCallFailed("the node sent an event that is not JSON") from exc
        finally:
            self.close()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            connection = self._connection
        if connection is not None and connection.sock is not None:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
