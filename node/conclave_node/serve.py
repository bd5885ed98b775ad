"""`conclave-node serve`: the installed, verified set, served over HTTP with the platform's contract.

Routes: `/embed`, `/generate`, `/health` (`/health/live`), `/metrics`,
`/metrics/prometheus`, and the OpenAI-compatible `/v1/models`,
`/v1/embeddings`, `/v1/chat/completions` and `/v1/completions` (both with
server-sent events when `stream` is true, ending `data: [DONE]`). Errors use
the one JSON shape `{"error": {"message", "type", "code"}}`.

No Django, no database, no broker: a `ThreadingHTTPServer` speaking HTTP/1.1
with keep-alive (one thread per connection), orjson, and the platform's
runtimes. Embedding requests that arrive together share onnxruntime calls
(`conclave_node.batching`); each generation runs on its own thread (the
OpenMP note in `conclave_node/runtimes/generation.py`).

The governed limits come from the signed set being served
(`conclave_node.limits`): max_tokens over `max_tokens_per_request` is a 400
naming it; at most `max_concurrent_requests` generations run and
`queue_size` wait, beyond that 503 with Retry-After; `request_timeout_seconds`
counts from a request's arrival, and a generation past it is stopped between
two tokens (504); `memory_limit_mb` bounds what a set may load. A reloader
thread watches `<models>/current` and the set's signed document: a new set
is loaded beside the one serving and swapped in once every model answered
its probe (a set that fails to load leaves the serving one in place); a
re-signed document (a parameter changed) applies its limits at once.

With `--join` (or `--secret-file`) every route but `/health` and
`/health/live` needs `Authorization: Bearer <secret>`: the secret the node
generated and sent the platform when it joined (`conclave_node.federation`),
so only the platform's router reaches its models. Without either, the node
is open, for local use.
"""

import base64
import collections
import hashlib
import hmac
import http.server
import math
import os
import select
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from conclave_node.batching import EmbeddingTimeout
from conclave_node.errors import ModelLoadFailed, NodeError
from conclave_node.install import SET_METADATA
from conclave_node.limits import Limits, limits_from
from conclave_node.loading import EMBEDDING, GENERATIVE, RuntimeOptions, ServedSet, set_load, signed_set_read
from conclave_node.metadata import load_json, parse_root
from conclave_node.metrics import NodeMetrics
from conclave_node.payloads import (
    GenerationParams,
    InvalidRequest,
    chat_params,
    completion_params,
    embed_texts,
    embeddings_input,
    generate_params,
)
from conclave_node.runtimes.memory import process_rss_mb
from conclave_node.state import NodeHome

MAX_BODY_BYTES = 8 * 1024 * 1024
# OpenAI's finish reasons are stop | length; a deadline ends a stream with an error event instead.
# The runtime says why a generation ended (eos_token | stop_sequence | max_tokens, the
# roadmap's stop_reason on /generate); the OpenAI endpoints say it in OpenAI's words.
FINISH_REASONS = {"eos_token": "stop", "stop_sequence": "stop", "max_tokens": "length"}
CLIENT_CHECK_SECONDS = 0.1
_JSON = "application/json"


class ApiError(Exception):
    error_type = "invalid_request_error"

    def __init__(
        self, status: int, message: str, *, code: str, error_type: str | None = None, headers: dict | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.error_type = error_type or {
            404: "not_found_error",
            413: "invalid_request_error",
            503: "unavailable_error",
            504: "timeout_error",
        }.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> bytes:
        return orjson.dumps({"error": {"message": self.message, "type": self.error_type, "code": self.code}})


@dataclass(frozen=True)
class InputLimits:
    """Sizes a node accepts, as the platform's settings (INFERENCE_EMBED_MAX_INPUTS, INFERENCE_MAX_INPUT_CHARS)."""

    embed_max_inputs: int = 256
    max_input_chars: int = 32_000


# --- Admission of generations ------------------------------------------------------------


class AdmissionGate:
    """At most `max_concurrent_requests` generations run, `queue_size` wait in arrival order; the rest get 503.

    The limits are read at every decision, so a changed limit applies to the
    next request and to the queue as it stands.
    """

    def __init__(self, limits):
        self._limits = limits
        self._cond = threading.Condition()
        self.running = 0
        self._waiting: collections.deque = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def enter(self, *, deadline: float) -> float:
        """Wait for a running slot; returns the seconds waited. Raises 503 (full) or 504 (deadline)."""
        started = time.monotonic()
        with self._cond:
            limits = self._limits()
            if self.running + len(self._waiting) >= limits.max_concurrent_requests + limits.queue_size:
                raise ApiError(
                    503,
                    f"{limits.max_concurrent_requests} generations are running and {limits.queue_size} waiting "
                    "(max_concurrent_requests, queue_size); retry shortly.",
                    code="queue_full",
                    headers={"Retry-After": str(max(1, math.ceil(limits.request_timeout_seconds / 10)))},
                )
            if not self._waiting and self.running < limits.max_concurrent_requests:
                self.running += 1
                return 0.0
            ticket = object()
            self._waiting.append(ticket)
            try:
                while True:
                    if self._waiting[0] is ticket and self.running < self._limits().max_concurrent_requests:
                        self._waiting.popleft()
                        self.running += 1
                        self._cond.notify_all()
                        return time.monotonic() - started
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise ApiError(
                            504,
                            "The request waited in the queue past "
                            f"request_timeout_seconds={self._limits().request_timeout_seconds}.",
                            code="timeout",
                        )
                    self._cond.wait(remaining)
            except BaseException:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                    self._cond.notify_all()
                raise

    def leave(self) -> None:
        with self._cond:
            self.running -= 1
            self._cond.notify_all()

    def wake(self) -> None:
        """Let waiting requests look at the limits again (they changed)."""
        with self._cond:
            self._cond.notify_all()


# --- The node --------------------------------------------------------------------------


class ServingNode:
    """What a serving process holds: the set being served, its limits, the reloader, the metrics."""

    def __init__(
        self,
        home: NodeHome,
        *,
        options: RuntimeOptions,
        inputs: InputLimits = InputLimits(),
        reload_seconds: float = 1.0,
        secret: str | None = None,
    ):
        self.home = home
        self.options = options
        self.inputs = inputs
        self.reload_seconds = reload_seconds
        # The bearer every route but /health must carry; None: open (local use).
        self.secret = secret
        self.config = home.load_config()
        self.models_dir = home.models_dir(self.config)
        self.started = time.time()
        self.metrics = NodeMetrics()
        self.served: ServedSet | None = None
        self.loading: str | None = None
        self.errors: dict[str, str] = {}
        self._seen: tuple[str, str] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.gate = AdmissionGate(self.limits)
        self._reloader: threading.Thread | None = None

    # --- the set being served -------------------------------------------------------------
    def limits(self) -> Limits:
        served = self.served
        return served.limits if served is not None else Limits()

    def acquire(self) -> ServedSet:
        while True:
            served = self.served
            if served is None:
                detail = f" (loading {self.loading})" if self.loading else ""
                errors = "; ".join(self.errors.copy().values())
                raise ApiError(
                    503,
                    f"No approved set is loaded yet{detail}{': ' + errors if errors else ''}.",
                    code="model_unavailable",
                    headers={"Retry-After": "5"},
                )
            if served.acquire():
                return served

    def _current_identity(self) -> tuple[str, str] | None:
        """(set folder, sha256 of its signed document) that `current` points at now."""
        current = self.models_dir / "current"
        try:
            folder = current.resolve(strict=True)
            digest = hashlib.sha256((folder / SET_METADATA).read_bytes()).hexdigest()
        except OSError:
            return None
        return str(folder), digest

    def reload(self) -> bool:
        """Follow `current`: load a new set, or apply a re-signed document's limits. True when something changed."""
        identity = self._current_identity()
        if identity is None:
            if self.served is None:
                self.errors["current"] = f"nothing is installed in {self.models_dir}: run `conclave-node pull`"
            return False
        if identity == self._seen:
            return False
        self.errors.pop("current", None)
        folder, _ = identity
        root = parse_root(load_json(self.home.trusted_root_path.read_bytes(), what="trusted root"))
        served = self.served
        if served is not None and str(served.path) == folder:
            try:
                signed = signed_set_read(Path(folder), root=root)
                limits = limits_from(signed.parameters)
            except NodeError as exc:
                self.errors[folder] = f"the re-signed set does not verify: {exc.message}"
                self._seen = identity
                return False
            served.signed, served.limits = signed, limits
            # Back on the set being served (a rollback): earlier failures are history.
            self.errors.clear()
            self._seen = identity
            self.gate.wake()
            _log(
                f"applied signed set v{signed.version} (approved set v{signed.approved_set_version}): "
                f"{limits.as_dict()}"
            )
            return True
        self.loading = folder
        try:
            new = set_load(Path(folder), root=root, options=self.options)
        except (ModelLoadFailed, NodeError) as exc:
            self.errors[folder] = exc.message
            self._seen = identity
            _log(f"cannot serve {folder}: {exc.message}" + (f"; still serving {served.path}" if served else ""))
            return False
        finally:
            self.loading = None
        with self._lock:
            old, self.served = self.served, new
        self.errors.clear()
        self._seen = identity
        self.metrics.set_version.set(new.approved_set_version)
        self.gate.wake()
        if old is not None:
            old.retire()
        _log(
            f"serving approved set v{new.approved_set_version} (signed v{new.signed.version}) from {folder}: "
            + ", ".join(f"{m.label} ({m.load_seconds:.2f} s)" for m in new.models)
        )
        return True

    def start_reloader(self) -> None:
        """Load the current set now (readiness is 503 meanwhile), then follow `current`."""
        self.loading = "the current set"

        def run() -> None:
            while True:
                try:
                    self.reload()
                except Exception as exc:  # noqa: BLE001 - the reloader must outlive any one failure
                    _log(f"reload failed: {type(exc).__name__}: {exc}")
                finally:
                    self.loading = None
                if self._stop.wait(self.reload_seconds):
                    return

        self._reloader = threading.Thread(target=run, name="reloader", daemon=True)
        self._reloader.start()

    def stop(self) -> None:
        self._stop.set()

    # --- health --------------------------------------------------------------------------
    def health(self) -> tuple[int, dict]:
        served, errors = self.served, self.errors.copy()
        if served is None:
            status = "loading" if self.loading or not errors else "unavailable"
        elif errors:
            status = "degraded"
        else:
            status = "healthy"
        default = None
        if served is not None:
            model = served.find(kind=GENERATIVE, requested=None) or served.find(kind=EMBEDDING, requested=None)
            default = model.label if model else None
        body = {
            "status": status,
            "model": default,
            "models": [
                {
                    "name": m.name,
                    "version": m.version,
                    "kind": m.kind,
                    "format": m.format,
                    "loaded": True,
                    "load_seconds": round(m.load_seconds, 3),
                }
                for m in (served.models if served else [])
            ],
            "backend": _backend(self.options),
            "memory_mb": round(process_rss_mb(), 1),
            "uptime_seconds": round(time.time() - self.started, 1),
            "approved_set_version": served.approved_set_version if served else None,
            "signed_version": served.signed.version if served else None,
            "limits": served.limits.as_dict() if served else None,
            "requests_running": self.gate.running,
            "requests_waiting": self.gate.waiting,
            "loading": self.loading,
            "errors": errors,
        }
        return (200 if status in ("healthy", "degraded") else 503), body


def _backend(options: RuntimeOptions) -> dict:
    import llama_cpp
    import onnxruntime

    return {
        "onnxruntime": onnxruntime.__version__,
        "llama_cpp": llama_cpp.__version__,
        "threads": options.threads,
        "n_ctx": options.n_ctx,
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()) and options.n_gpu_layers != 0,
    }


_LOG_LOCK = threading.Lock()


def log_line(message: str) -> None:
    """One line on stderr, written whole: the reloader, the heartbeat and request threads log at once, and
    `print` writes the text and its newline separately."""
    with _LOG_LOCK:
        sys.stderr.write(f"conclave-node serve: {message}\n")
        sys.stderr.flush()


_log = log_line


# --- HTTP ----------------------------------------------------------------------------------


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _sse(payload) -> bytes:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return b"data: " + data + b"\n\n"


SSE_DONE = _sse(b"[DONE]")


class ClientGone(Exception):
    pass


MAX_HEADER_LINE = 65536
MAX_HEADERS = 100


class RequestHeaders(dict):
    """A request's headers by lower-cased name (the first of repeated ones), read without the email parser.

    `http.client.parse_headers` costs about 40 µs a request, more than the
    rest of reading one; these are the only accessors the node uses.
    """

    def get(self, name: str, default=None):
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str):
        return dict.get(self, name.lower())

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name.lower())


class MalformedHeaders(ValueError):
    pass


def headers_read(rfile) -> RequestHeaders:
    """Header lines up to the blank line, as RFC 9112 reads them; raises MalformedHeaders."""
    headers = RequestHeaders()
    for _ in range(MAX_HEADERS + 1):
        line = rfile.readline(MAX_HEADER_LINE + 1)
        if len(line) > MAX_HEADER_LINE:
            raise MalformedHeaders("A header line is too long.")
        if line in (b"\r\n", b"\n", b""):
            return headers
        if line[:1] in (b" ", b"\t"):
            raise MalformedHeaders("Folded header lines are not accepted (RFC 9112, section 5.2).")
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise MalformedHeaders(f"Malformed header line {line[:80]!r}.")
        key = name.decode("latin-1").lower()
        if key not in headers:
            dict.__setitem__(headers, key, value.strip().decode("latin-1"))
    raise MalformedHeaders(f"More than {MAX_HEADERS} headers.")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "conclave-node"
    sys_version = ""
    disable_nagle_algorithm = True
    node: ServingNode  # set on the subclass `serve_forever` builds

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass

    def parse_request(self) -> bool:
        """The request line as `BaseHTTPRequestHandler` reads it, then the headers with `headers_read`."""
        # Errors below are answered in HTTP/1.1 (the base class answers a bad line in HTTP/0.9: no status line).
        self.command, self.request_version = None, "HTTP/1.1"
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3:
            if words:
                self.send_error(http.HTTPStatus.BAD_REQUEST, f"Bad request syntax ({self.requestline[:80]!r})")
            return False
        command, path, version = words
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            if version.startswith("HTTP/") and version[5:6].isdigit() and version[5:6] >= "2":
                self.send_error(http.HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"Invalid HTTP version ({version[5:]})")
            else:
                self.send_error(http.HTTPStatus.BAD_REQUEST, f"Bad request version ({version[:20]!r})")
            return False
        self.command, self.request_version = command, version
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path
        try:
            self.headers = headers_read(self.rfile)
        except MalformedHeaders as exc:
            self.send_error(http.HTTPStatus.BAD_REQUEST, str(exc))
            return False
        connection = self.headers.get("Connection", "").lower()
        self.close_connection = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        if self.headers.get("Expect", "").lower() == "100-continue" and version == "HTTP/1.1":
            return self.handle_expect_100()
        return True

    # --- plumbing ------------------------------------------------------------------------
    def _respond(self, status: int, body: bytes, *, content_type: str = _JSON, headers: dict | None = None) -> None:
        head = [
            f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
        ]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}")
        if self.close_connection:
            head.append("Connection: close")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    def _json(self, status: int, payload, headers: dict | None = None) -> None:
        self._respond(status, orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), headers=headers)

    def _body(self):
        length = self.headers.get("Content-Length")
        if length is None:
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                raise ApiError(411, "Send the body with a Content-Length.", code="length_required")
            return {}
        try:
            size = int(length)
        except ValueError as exc:
            self.close_connection = True
            raise ApiError(400, "Content-Length is not a number.", code="invalid") from exc
        if size > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiError(
                413, f"The body has {size} bytes; at most {MAX_BODY_BYTES} are accepted.", code="payload_too_large"
            )
        raw = self.rfile.read(size) if size else b""
        try:
            return orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"The body is not JSON: {exc}", code="parse_error") from exc

    def _run(self, endpoint: str, action) -> None:
        self.arrival = time.monotonic()
        status, reason = 200, "ok"
        try:
            status = action() or 200
        except ApiError as exc:
            status, reason = exc.status, exc.code
            self._json_error(exc)
        except InvalidRequest as exc:
            status, reason = exc.status, exc.code
            self._json_error(ApiError(exc.status, exc.message, code=exc.code))
        except (BrokenPipeError, ConnectionResetError, ClientGone):
            status, reason = 499, "cancelled"
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - answer 500 in the one error shape, keep serving
            status, reason = 500, "inference_failed"
            _log(f"{endpoint} failed: {type(exc).__name__}: {exc}")
            self._json_error(ApiError(500, f"Inference failed: {type(exc).__name__}", code="inference_failed"))
        self.node.metrics.observe(
            endpoint=endpoint, status=status, seconds=time.monotonic() - self.arrival, reason=reason
        )

    def _authorized(self) -> bool:
        """True when the node is open or the request carries its secret; else answers 401."""
        secret = self.node.secret
        if secret is None:
            return True
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), secret.encode()):
            return True
        # The body is not read: the connection closes after the answer.
        self.close_connection = True
        self._json_error(
            ApiError(
                401,
                "This node serves the platform that it joined: send Authorization: Bearer <the node's secret>.",
                code="unauthorized",
                error_type="authentication_error",
                headers={"WWW-Authenticate": 'Bearer realm="conclave-node"'},
            )
        )
        return False

    def _json_error(self, error: ApiError) -> None:
        if getattr(self, "_streaming", False):
            # Headers went out already: the error travels as an event, then the stream ends.
            self._chunk(_sse({"error": {"message": error.message, "type": error.error_type, "code": error.code}}))
            self._chunk(SSE_DONE)
            self._chunk(b"")
            return
        self._respond(error.status, error.body(), headers=error.headers)

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._streaming = False
        route = self.path.split("?", 1)[0]
        if route in ("/health", "/health/"):
            status, body = self.node.health()
            self._json(status, body)
        elif route in ("/health/live", "/health/live/"):
            self._json(200, {"status": "alive", "uptime_seconds": round(time.time() - self.node.started, 1)})
        elif not self._authorized():
            return
        elif route in ("/metrics", "/metrics/"):
            self._run("metrics", self._metrics)
        elif route in ("/metrics/prometheus", "/metrics/prometheus/"):
            self._run("metrics_prometheus", self._prometheus)
        elif route in ("/v1/models", "/v1/models/"):
            self._run("models", self._models)
        else:
            self._json_error(ApiError(404, f"No route {route}.", code="not_found"))

    def do_POST(self):  # noqa: N802
        self._streaming = False
        route = self.path.split("?", 1)[0].rstrip("/")
        handler = {
            "/embed": ("embed", self._embed),
            "/v1/embeddings": ("embeddings", self._embeddings),
            "/generate": ("generate", lambda: self._generation("generate", generate_params)),
            "/v1/chat/completions": ("chat_completions", lambda: self._generation("chat_completions", chat_params)),
            "/v1/completions": ("completions", lambda: self._generation("completions", completion_params)),
        }.get(route)
        if not self._authorized():
            return
        if handler is None:
            self._body_discard()
            self._json_error(ApiError(404, f"No route {route}.", code="not_found"))
            return
        self._run(*handler)

    def _body_discard(self) -> None:
        try:
            self._body()
        except ApiError:
            pass

    # --- reads ---------------------------------------------------------------------------
    def _metrics(self):
        body = {
            **self.node.metrics.snapshot(),
            "memory_usage_mb": round(process_rss_mb(), 1),
            "requests_running": self.node.gate.running,
            "requests_waiting": self.node.gate.waiting,
        }
        self._json(200, body)

    def _prometheus(self):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self.node.metrics.running.set(self.node.gate.running)
        self.node.metrics.waiting.set(self.node.gate.waiting)
        self._respond(200, generate_latest(self.node.metrics.registry), content_type=CONTENT_TYPE_LATEST)

    def _models(self):
        served = self.node.acquire()
        try:
            created = int(served.loaded_at)
            data = [
                {
                    "id": m.name,
                    "object": "model",
                    "created": created,
                    "owned_by": "conclave",
                    "kind": m.kind,
                    "version": m.version,
                    "format": m.format,
                    "sha256": m.manifest.document.get("sha256"),
                    "license": m.manifest.document.get("license"),
                }
                for m in served.models
            ]
        finally:
            served.release()
        self._json(200, {"object": "list", "data": data})

    # --- embeddings ------------------------------------------------------------------------
    def _embedded(self, texts: list[str], model_name: str | None):
        inputs = self.node.inputs
        if len(texts) > inputs.embed_max_inputs:
            raise ApiError(
                413,
                f"{len(texts)} texts in one request; at most {inputs.embed_max_inputs} are accepted.",
                code="too_many_inputs",
            )
        longest = max(len(t) for t in texts)
        if longest > inputs.max_input_chars:
            raise ApiError(
                413,
                f"A text has {longest} characters; at most {inputs.max_input_chars} are accepted.",
                code="input_too_long",
            )
        served = self.node.acquire()
        try:
            model = _model_for(served, kind=EMBEDDING, requested=model_name)
            deadline = self.arrival + served.limits.request_timeout_seconds
            try:
                answer = model.embedder.embed(texts, timeout=deadline - time.monotonic())
            except EmbeddingTimeout as exc:
                raise ApiError(
                    504, "The embedding did not finish before the request's deadline.", code="timeout"
                ) from exc
            self.node.metrics.batch_size.labels(model.label).observe(answer.batch_size)
            return answer, model.label
        finally:
            served.release()

    def _embed(self):
        texts, single, model_name = embed_texts(self._body())
        answer, label = self._embedded(texts, model_name)
        body = {
            "model": label,
            "tokens": int(sum(answer.token_counts)),
            "latency_ms": round((time.monotonic() - self.arrival) * 1000, 3),
        }
        if single:
            body["embedding"] = answer.vectors[0]
        else:
            body["embeddings"] = answer.vectors
        self._json(200, body)

    def _embeddings(self):
        texts, model_name, encoding = embeddings_input(self._body())
        answer, label = self._embedded(texts, model_name)
        data = []
        for index, vector in enumerate(answer.vectors):
            if encoding == "base64":
                embedding = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
            else:
                embedding = vector
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = int(sum(answer.token_counts))
        self._json(
            200,
            {
                "object": "list",
                "data": data,
                "model": label,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    # --- generation ------------------------------------------------------------------------
    def _chunk(self, data: bytes) -> None:
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        except OSError as exc:
            raise ClientGone() from exc

    def _client_gone(self) -> bool:
        """True when the client closed its side (checked without reading a pipelined request)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _generation(self, endpoint: str, parse) -> int:
        params: GenerationParams = parse(self._body())
        node = self.node
        served = node.acquire()
        try:
            limits = served.limits
            limit = limits.max_tokens_per_request
            if params.max_tokens is not None and params.max_tokens > limit:
                raise ApiError(
                    400,
                    f"max_tokens={params.max_tokens} is over max_tokens_per_request={limit}, a limit set by "
                    "governance; "
                    f"ask for {limit} or fewer.",
                    code="max_tokens_exceeded",
                )
            model = _model_for(served, kind=GENERATIVE, requested=params.model)
            deadline = self.arrival + limits.request_timeout_seconds
            queue_seconds = node.gate.enter(deadline=deadline)
            node.metrics.queue_time.observe(queue_seconds)
            try:
                return self._generate(endpoint, params, model, deadline=deadline, limit=limit)
            finally:
                node.gate.leave()
        finally:
            served.release()

    def _generate(self, endpoint: str, params: GenerationParams, model, *, deadline: float, limit: int) -> int:
        from conclave_node.runtimes.generation import ChatUnsupported, LogitBiasOutOfRange

        runtime = model.runtime
        cancelled = threading.Event()
        next_check = [0.0]

        def should_stop() -> str | None:
            now = time.monotonic()
            if now >= deadline:
                return "timeout"
            if cancelled.is_set():
                return "cancelled"
            if not params.stream and now >= next_check[0]:
                next_check[0] = now + CLIENT_CHECK_SECONDS
                if self._client_gone():
                    cancelled.set()
                    return "cancelled"
            return None

        with runtime.context() as llm:
            try:
                if params.mode == "chat":
                    tokens, template_stops = runtime.chat_prompt(llm, params.messages)
                else:
                    tokens, template_stops = runtime.completion_prompt(llm, params.prompt)
            except ChatUnsupported as exc:
                raise ApiError(400, str(exc), code="chat_unsupported") from exc
            max_tokens = params.max_tokens
            if max_tokens is None:
                max_tokens = max(1, min(limit, runtime.n_ctx - len(tokens)))
            if len(tokens) + max_tokens > runtime.n_ctx:
                raise ApiError(
                    400,
                    f"The prompt has {len(tokens)} tokens; with max_tokens={max_tokens} it needs "
                    f"{len(tokens) + max_tokens}, more than this model's context of {runtime.n_ctx} tokens.",
                    code="context_length_exceeded",
                )
            if params.logit_bias:
                outside = sorted(token for token in params.logit_bias if not 0 <= int(token) < llm.n_vocab())
                if outside:
                    error = LogitBiasOutOfRange(outside, llm.n_vocab())
                    raise ApiError(400, str(error), code="logit_bias_out_of_range")
            stream = _Stream(self, endpoint, model.label, cancelled) if params.stream else None
            if stream is not None:
                stream.open()
            outcome = runtime.generate(
                llm,
                prompt_tokens=tokens,
                max_tokens=max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                stop=params.stop + template_stops,
                seed=params.seed,
                presence_penalty=params.presence_penalty,
                frequency_penalty=params.frequency_penalty,
                logit_bias=params.logit_bias or None,
                should_stop=should_stop,
                on_text=stream.text if stream is not None else None,
            )
        metrics = self.node.metrics
        metrics.prompt_tokens.labels(model.label).inc(outcome.prompt_tokens)
        metrics.generation_tokens.labels(model.label).inc(outcome.completion_tokens)
        if outcome.time_to_first_token is not None:
            metrics.ttft.labels(model.label).observe(outcome.time_to_first_token)
        if stream is not None:
            if stream.gone or outcome.finish_reason == "cancelled":
                raise ClientGone()
            stream.finish(outcome, started=self.arrival)
            return 504 if outcome.finish_reason == "timeout" else 200
        if outcome.finish_reason == "timeout":
            raise ApiError(
                504,
                f"The generation passed request_timeout_seconds={self.node.limits().request_timeout_seconds} "
                f"and was stopped after {outcome.completion_tokens} tokens.",
                code="timeout",
            )
        if outcome.finish_reason == "cancelled":
            raise ClientGone()
        self._json(200, _generation_body(endpoint, model.label, outcome, started=self.arrival))
        return 200


def _model_for(served: ServedSet, *, kind: str, requested: str | None):
    model = served.find(kind=kind, requested=requested)
    if model is not None:
        return model
    noun = "embedding" if kind == EMBEDDING else "generative"
    labels = ", ".join(m.label for m in served.models if m.kind == kind) or "none"
    if requested:
        other = [m for m in served.models if requested in (m.name, m.label)]
        if other:
            raise ApiError(
                404,
                f"{requested!r} is an approved {other[0].kind} model; this endpoint needs an {noun} model ({labels}).",
                code="model_not_found",
            )
        raise ApiError(
            404,
            f"No approved {noun} model is called {requested!r}; approved: {labels}. Only models "
            "adopted by governance are served.",
            code="model_not_found",
        )
    raise ApiError(404, f"No {noun} model is approved in the served set.", code="model_not_found")


def _timings(outcome, *, started: float) -> dict:
    return {
        "latency_ms": round((time.monotonic() - started) * 1000, 3),
        "inference_ms": round(outcome.generation_seconds * 1000, 3),
        "time_to_first_token_ms": None
        if outcome.time_to_first_token is None
        else round(outcome.time_to_first_token * 1000, 3),
    }


def _generation_body(endpoint: str, label: str, outcome, *, started: float) -> dict:
    finish = FINISH_REASONS.get(outcome.finish_reason, "stop")
    if endpoint == "generate":
        return {
            "text": outcome.text,
            "model": label,
            "tokens_generated": outcome.completion_tokens,
            "prompt_tokens": outcome.prompt_tokens,
            "latency_ms": round((time.monotonic() - started) * 1000, 3),
            "stop_reason": outcome.finish_reason,
            "usage": _usage(outcome.prompt_tokens, outcome.completion_tokens),
        }
    if endpoint == "chat_completions":
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": outcome.text},
            "logprobs": None,
            "finish_reason": finish,
        }
        kind, prefix = "chat.completion", "chatcmpl"
    else:
        choice = {"index": 0, "text": outcome.text, "logprobs": None, "finish_reason": finish}
        kind, prefix = "text_completion", "cmpl"
    return {
        "id": f"{prefix}-{uuid.uuid4().hex[:24]}",
        "object": kind,
        "created": int(time.time()),
        "model": label,
        "choices": [choice],
        "usage": _usage(outcome.prompt_tokens, outcome.completion_tokens),
        "timings": _timings(outcome, started=started),
    }


class _Stream:
    """Server-sent events of one generation, written by the generation's own thread as text arrives."""

    def __init__(self, handler: Handler, endpoint: str, label: str, cancelled: threading.Event):
        self.handler = handler
        self.endpoint = endpoint
        self.label = label
        self.cancelled = cancelled
        self.gone = False
        prefix, self.kind = {
            "chat_completions": ("chatcmpl", "chat.completion.chunk"),
            "completions": ("cmpl", "text_completion"),
        }.get(endpoint, ("gen", ""))
        self.id = f"{prefix}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _send(self, payload) -> None:
        if self.gone:
            return
        try:
            self.handler._chunk(payload if isinstance(payload, bytes) else _sse(payload))
        except ClientGone:
            self.gone = True
            self.cancelled.set()

    def _event(self, piece, finish_reason=None, **extra) -> dict:
        """A chunk: for chat `piece` is the delta object, for completions the text."""
        if self.endpoint == "chat_completions":
            choice = {"index": 0, "delta": piece, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish_reason}
        return {
            "id": self.id,
            "object": self.kind,
            "created": self.created,
            "model": self.label,
            "choices": [choice],
            **extra,
        }

    def open(self) -> None:
        handler = self.handler
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            "X-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        try:
            handler.wfile.write(head.encode("latin-1"))
        except OSError as exc:
            raise ClientGone() from exc
        handler._streaming = True
        if self.endpoint == "chat_completions":
            self._send(self._event({"role": "assistant", "content": ""}))

    def text(self, piece: str) -> None:
        if self.endpoint == "generate":
            self._send({"text": piece})
        elif self.endpoint == "chat_completions":
            self._send(self._event({"content": piece}))
        else:
            self._send(self._event(piece))

    def finish(self, outcome, *, started: float) -> None:
        if outcome.finish_reason == "timeout":
            self._send(
                {
                    "error": {
                        "message": "The generation passed its deadline and was stopped.",
                        "type": "timeout_error",
                        "code": "timeout",
                    }
                }
            )
        elif self.endpoint == "generate":
            self._send(
                {
                    "text": "",
                    "model": self.label,
                    "tokens_generated": outcome.completion_tokens,
                    "prompt_tokens": outcome.prompt_tokens,
                    "stop_reason": outcome.finish_reason,
                    "latency_ms": round((time.monotonic() - started) * 1000, 3),
                }
            )
        else:
            finish = FINISH_REASONS.get(outcome.finish_reason, "stop")
            self._send(
                self._event(
                    {} if self.endpoint == "chat_completions" else "",
                    finish,
                    usage=_usage(outcome.prompt_tokens, outcome.completion_tokens),
                    timings=_timings(outcome, started=started),
                )
            )
        self._send(SSE_DONE)
        if not self.gone:
            try:
                self.handler._chunk(b"")
            except ClientGone:
                self.gone = True


class NodeHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # A client that hangs up is not the node's error (wrk does it at every run's end).
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def server_build(node: ServingNode, *, host: str, port: int) -> NodeHTTPServer:
    handler = type("BoundHandler", (Handler,), {"node": node})
    return NodeHTTPServer((host, port), handler)


def serve(
    home: NodeHome,
    *,
    host: str,
    port: int,
    options: RuntimeOptions,
    inputs: InputLimits = InputLimits(),
    reload_seconds: float = 1.0,
    join: bool = False,
    public_url: str | None = None,
    secret: str | None = None,
) -> int:
    """Load the current set, start the reloader and answer requests until SIGINT/SIGTERM.

    `join`: join the platform the node was initialised against and heartbeat
    (`conclave_node.federation`); the node then requires `secret` (generated
    when not given) on every route but /health.
    """
    import secrets
    import signal

    from conclave_node.federation import PlatformMembership, node_token

    # The tokenizer's own thread pool would spin on the cores the model lanes use; requests
    # side by side are the node's parallelism. (Read by `tokenizers` at each call.)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    platform = node_token(home) if join else None
    if join and secret is None:
        secret = secrets.token_urlsafe(32)
    node = ServingNode(home, options=options, inputs=inputs, reload_seconds=reload_seconds, secret=secret)
    if not (node.models_dir / "current").exists():
        _log(f"nothing is installed in {node.models_dir}: run `conclave-node pull` (serving 503 until a set appears)")
    server = server_build(node, host=host, port=port)
    bound_host, bound_port = server.server_address[:2]

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    # Said before the reloader starts: llama.cpp silences the process's stderr while it loads a model, and a line
    # any thread writes meanwhile is lost.
    _log(f"listening on http://{bound_host}:{bound_port} (pid {os.getpid()})")
    node.start_reloader()
    membership = None
    if platform is not None:
        membership = PlatformMembership(
            node,
            server=platform[0],
            token=platform[1],
            public_url=public_url or f"http://{_url_host(bound_host)}:{bound_port}",
            secret=secret,
            gpu=options.n_gpu_layers != 0,
        )
        membership.start()
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
        if membership is not None:
            membership.stop()
        server.server_close()
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
