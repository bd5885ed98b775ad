"""`conclave-node serve --join`: the node joins the platform's rotation and heartbeats its load.

At start the node joins (`POST /api/v1/nodes/join/`, with its node token)
announcing its public URL, the manifest CIDs of the models it serves (once
its set has loaded), its hardware, its signed set version, and the secret
the platform must present as `Authorization: Bearer` on every inference
request (the platform never forwards user tokens). Then a daemon thread
beats every `heartbeat_seconds` the platform answered with: running and
waiting generations and the queue capacity (governed
max_concurrent_requests + queue_size). It joins again when the platform
says `not_joined` (409) and when the CIDs it serves change (a new set, or
the same set re-signed with new manifest CIDs after a benchmark).

The platform being unreachable never stops the node serving: it logs once,
retries with a growing delay, and logs again when it is back.
"""

import os
import threading

import httpx

from conclave_node.errors import ConfigError
from conclave_node.serve import log_line as _log
from conclave_node.state import NodeHome

JOIN_PATH = "/api/v1/nodes/join/"
HEARTBEAT_PATH = "/api/v1/nodes/heartbeat/"
DEFAULT_HEARTBEAT_SECONDS = 2.0
MAX_RETRY_SECONDS = 30.0
SECRET_MIN_CHARS, SECRET_MAX_CHARS = 32, 128


def secret_check(secret: str, *, source: str) -> str:
    secret = secret.strip()
    if not SECRET_MIN_CHARS <= len(secret) <= SECRET_MAX_CHARS or not all("!" <= c <= "~" for c in secret):
        raise ConfigError(
            f"{source}: the node secret must be {SECRET_MIN_CHARS} to {SECRET_MAX_CHARS} visible ASCII characters"
        )
    return secret


def hardware_describe(*, gpu: bool) -> dict:
    """Cores, physical memory (MiB) and whether models run on a GPU, as the platform's join takes them."""
    try:
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError, AttributeError):
        memory_mb = 0
    return {"cores": os.cpu_count() or 1, "memory_mb": int(memory_mb), "gpu": gpu}


def node_token(home: NodeHome) -> tuple[str, str]:
    """(platform URL, node token) this node was initialised with; ConfigError when there is no token."""
    config = home.load_config()
    token = config.token or os.environ.get("CONCLAVE_NODE_TOKEN")
    if not token:
        raise ConfigError("--join needs a node token: pass --token to `init` or set CONCLAVE_NODE_TOKEN")
    return config.server.rstrip("/"), token


class PlatformMembership:
    """Joins the platform and keeps the node in its rotation by heartbeating (a daemon thread).

    `node` is the serving process's `conclave_node.serve.ServingNode`: its
    served set gives the models and signed set version, its admission gate
    the load, its limits the queue capacity.
    """

    def __init__(
        self,
        node,
        *,
        server: str,
        token: str,
        public_url: str,
        secret: str,
        gpu: bool,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.node = node
        self.server = server.rstrip("/")
        self.public_url = public_url
        self.secret = secret
        self.hardware = hardware_describe(gpu=gpu)
        self.heartbeat_seconds = DEFAULT_HEARTBEAT_SECONDS
        self.joined_models: tuple[str, ...] | None = None
        self.joins = 0
        self.beats = 0
        self._failures = 0
        self._unreachable = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
            headers={"Authorization": f"Token {token}"},
            transport=transport,
        )

    # --- what the node announces ------------------------------------------------------------
    def _served(self):
        """The set being served and the manifest CIDs of its loaded models, from its latest signing (a re-signed
        document may carry new CIDs for the same models)."""
        served = self.node.served
        if served is None:
            return None, ()
        signed = served.signed
        loaded = {m.manifest.key for m in served.models}
        return served, tuple(sorted({m.manifest_cid for m in signed.manifests if m.key in loaded}))

    def _load(self) -> dict:
        limits = self.node.limits()
        return {
            "running": self.node.gate.running,
            "waiting": self.node.gate.waiting,
            "queue_capacity": limits.max_concurrent_requests + limits.queue_size,
        }

    # --- one exchange with the platform --------------------------------------------------------
    def join(self) -> bool:
        served, models = self._served()
        body = {
            "url": self.public_url,
            "secret": self.secret,
            "models": list(models),
            "hardware": self.hardware,
            "signed_set_version": served.signed.version if served else None,
            "queue_capacity": self._load()["queue_capacity"],
        }
        response = self._http.post(self.server + JOIN_PATH, json=body)
        if response.status_code != 200:
            self._refused("join", response)
            return False
        answer = response.json()
        self.heartbeat_seconds = max(0.2, float(answer.get("heartbeat_seconds") or DEFAULT_HEARTBEAT_SECONDS))
        self.joined_models = models
        self.joins += 1
        _log(
            f"joined {self.server} as {answer.get('node')} at {answer.get('url')} serving {len(models)} models; "
            f"heartbeat every {self.heartbeat_seconds:g} s"
        )
        return True

    def heartbeat(self) -> bool:
        served, models = self._served()
        if models != self.joined_models:
            # A new set was loaded (or the first one): announce it by joining again.
            return self.join()
        body = {**self._load(), "signed_set_version": served.signed.version if served else None}
        response = self._http.post(self.server + HEARTBEAT_PATH, json=body)
        if response.status_code == 409 and _error_code(response) == "not_joined":
            _log("the platform does not know this node (not_joined): joining again")
            return self.join()
        if response.status_code != 200:
            self._refused("heartbeat", response)
            return False
        self.beats += 1
        return True

    def _refused(self, what: str, response: httpx.Response) -> None:
        if not self._failures:
            _log(f"the platform refused the {what}: HTTP {response.status_code}{_error_message(response)}")

    # --- the thread ------------------------------------------------------------------------------
    def step(self) -> bool:
        """One join or heartbeat; False when it did not go through (the caller waits longer)."""
        try:
            ok = self.heartbeat() if self.joined_models is not None else self.join()
        except (httpx.HTTPError, ValueError) as exc:
            if not self._unreachable:
                _log(
                    f"cannot reach the platform at {self.server} ({type(exc).__name__}: {exc}); still serving, retrying"
                )
            self._unreachable = True
            ok = False
        else:
            if ok and self._unreachable:
                _log(f"the platform at {self.server} answers again")
                self._unreachable = False
        self._failures = 0 if ok else self._failures + 1
        return ok

    def delay(self) -> float:
        if not self._failures:
            return self.heartbeat_seconds
        return min(MAX_RETRY_SECONDS, self.heartbeat_seconds * 2 ** min(self._failures - 1, 10))

    def start(self) -> None:
        def run() -> None:
            # Announce models only once a set is served: an empty node is no use to the router.
            while self.node.served is None and not self._stop.wait(0.2):
                pass
            while not self._stop.is_set():
                try:
                    self.step()
                except Exception as exc:  # noqa: BLE001 - the heartbeat must outlive any one failure
                    _log(f"heartbeat failed: {type(exc).__name__}: {exc}")
                    self._failures += 1
                if self._stop.wait(self.delay()):
                    return

        self._thread = threading.Thread(target=run, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._http.close()


def _error_code(response: httpx.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def _error_message(response: httpx.Response) -> str:
    try:
        return f": {response.json()['error']['message']}"
    except (ValueError, KeyError, TypeError):
        return ""
