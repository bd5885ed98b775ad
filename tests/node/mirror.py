"""A tiny hostile mirror: a real HTTP server that forwards to the platform and lies on demand.

It stands where a compromised mirror, gateway or network would: between the
node agent and the live platform. By default it passes requests through
unchanged (headers included); `replace` serves fixed bytes for a path,
`tamper` rewrites a file's bytes, `endless` streams without end,
`cut_after` drops the connection partway through a body, and `trickle`
sends the true bytes a few at a time with pauses between (slow retrieval).
"""

import http.server
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-encoding"}


@dataclass
class Rule:
    status: int = 200
    body: bytes | None = None
    headers: dict = field(default_factory=dict)
    transform: Callable[[bytes], bytes] | None = None
    endless: bytes | None = None  # after the body (if any), repeat this forever
    announce_length: int | None = None
    cut_after: int | None = None  # send this many body bytes, then close
    times: int | None = None  # apply to this many requests only
    ignore_range: bool = False  # answer 200 with the whole file, whatever Range asked
    trickle: tuple[int, float] | None = None  # (bytes, seconds): send this many bytes, pause, repeat


class HostileMirror:
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.rules: dict[str, Rule] = {}
        self.requests: list[tuple[str, dict]] = []
        self.statuses: list[tuple[str, int]] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):
                pass

            def do_GET(self):
                mirror._handle(self)

            def do_POST(self):
                mirror._handle(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "HostileMirror":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def replace(self, path: str, body: bytes, *, status: int = 200, headers: dict | None = None) -> None:
        self.rules[path] = Rule(status=status, body=body, headers=headers or {"Content-Type": "application/json"})

    def rule(self, path: str, **kwargs) -> Rule:
        self.rules[path] = Rule(**kwargs)
        return self.rules[path]

    def clear(self) -> None:
        self.rules.clear()

    def requests_for(self, path: str) -> list[dict]:
        return [headers for seen, headers in self.requests if seen == path]

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        path = handler.path
        headers = {k: v for k, v in handler.headers.items()}
        self.requests.append((path, headers))
        rule = self.rules.get(path)
        if rule is not None and rule.times is not None:
            if rule.times <= 0:
                rule = None
            else:
                rule.times -= 1
        try:
            if rule is not None and rule.body is not None and rule.transform is None:
                self._send(handler, rule.status, rule.headers, rule.body, rule)
                return
            if rule is not None and rule.ignore_range:
                headers = {k: v for k, v in headers.items() if k.lower() != "range"}
            status, upstream_headers, body = self._forward(handler, path, headers)
            if rule is not None and rule.transform is not None:
                body = rule.transform(body)
            self._send(handler, status, upstream_headers, body, rule)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _forward(self, handler, path: str, headers: dict) -> tuple[int, dict, bytes]:
        forward = {
            k: v
            for k, v in headers.items()
            if k.lower() in {"range", "if-none-match", "authorization", "content-type", "accept-encoding"}
        }
        body = None
        if handler.command == "POST":
            body = handler.rfile.read(int(headers.get("Content-Length", 0) or 0))
        response = httpx.request(handler.command, self.upstream + path, headers=forward, content=body, timeout=30)
        kept = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP | {"content-length"}}
        return response.status_code, kept, response.content

    def _send(self, handler, status: int, headers: dict, body: bytes, rule: Rule | None) -> None:
        self.statuses.append((handler.path, status))
        handler.send_response(status)
        for name, value in headers.items():
            if name.lower() != "content-length":
                handler.send_header(name, value)
        endless = rule is not None and rule.endless is not None
        if rule is not None and rule.announce_length is not None:
            handler.send_header("Content-Length", str(rule.announce_length))
        elif not endless and status != 304:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if status == 304:
            return
        if rule is not None and rule.cut_after is not None:
            handler.wfile.write(body[: rule.cut_after])
            handler.wfile.flush()
            handler.close_connection = True
            return
        if rule is not None and rule.trickle is not None:
            size, pause = rule.trickle
            for start in range(0, len(body), size):
                handler.wfile.write(body[start : start + size])
                handler.wfile.flush()
                time.sleep(pause)
            return
        handler.wfile.write(body)
        if endless:
            # Until the client hangs up: the agent must stop at the signed size.
            while True:
                handler.wfile.write(rule.endless)
