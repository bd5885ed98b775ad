"""The node's home folder: configuration, trusted metadata, state, downloads, models.

Layout (all written atomically: temp file, fsync, rename)::

    <home>/config.json              server, gateways, token, models folder
    <home>/state.json               versions already trusted (rollback floors), what is installed
    <home>/metadata/root.json       the newest root verified along the chain from the trust root
    <home>/metadata/approved_set.json   the newest verified signed set, as received
    <home>/downloads/<sha256>.part  partial downloads, resumed with HTTP Range
    <home>/telemetry/latency.json   latency summaries waiting for `report`
    <home>/telemetry/latency.sealed.json  the summary `report` is sending, its period closed (resent unchanged)
    <home>/witness/hashes.bin       the hash of every audit event this node verified (32 bytes each)
    <models>/sets/v<N>/<model>/<version>/<file>  one folder per installed approved set
    <models>/current -> sets/v<N>   the set in use; `previous` -> the one before
"""

import datetime as dt
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from conclave_node.errors import NotInitialized
from conclave_node.sketch import InvalidSketch, LatencySketch

DEFAULT_HOME_ENV = "CONCLAVE_NODE_HOME"


def default_home() -> Path:
    return Path(os.environ.get(DEFAULT_HOME_ENV) or Path.home() / ".conclave-node")


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class NodeConfig:
    server: str
    gateways: list[str] = field(default_factory=list)
    token: str | None = None
    models_dir: str = ""
    use_platform_gateway: bool = True
    attempts: int = 3
    timeout_seconds: float = 30.0
    # A source slower than this over a whole window is left for the next one.
    min_rate_bytes_per_second: float = 16384.0
    rate_window_seconds: float = 30.0


@dataclass
class InstalledSet:
    approved_set_version: int
    signed_version: int
    path: str


@dataclass
class NodeState:
    # Rollback floors: never accept a signed set below these.
    last_version: int = 0
    last_digest: str | None = None
    last_approved_version: int = 0
    etag: str | None = None
    installed: InstalledSet | None = None
    previous: InstalledSet | None = None
    # The audit head this node last witnessed: {seq, hash, checkpoint_cid, first_seq}
    # (`first_seq`: the first event whose hash is kept in witness/hashes.bin).
    witness: dict | None = None

    @classmethod
    def from_dict(cls, data: dict) -> "NodeState":
        installed = data.get("installed")
        previous = data.get("previous")
        return cls(
            last_version=int(data.get("last_version", 0)),
            last_digest=data.get("last_digest"),
            last_approved_version=int(data.get("last_approved_version", 0)),
            etag=data.get("etag"),
            installed=InstalledSet(**installed) if installed else None,
            previous=InstalledSet(**previous) if previous else None,
            witness=data.get("witness"),
        )


class NodeHome:
    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else default_home()

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def state_path(self) -> Path:
        return self.path / "state.json"

    @property
    def trusted_root_path(self) -> Path:
        return self.path / "metadata" / "root.json"

    @property
    def cached_set_path(self) -> Path:
        return self.path / "metadata" / "approved_set.json"

    @property
    def downloads_dir(self) -> Path:
        return self.path / "downloads"

    @property
    def telemetry_path(self) -> Path:
        return self.path / "telemetry" / "latency.json"

    @property
    def telemetry_sealed_path(self) -> Path:
        """A summary closed for sending: its period ends when it was sealed, and a resend is the same report."""
        return self.path / "telemetry" / "latency.sealed.json"

    def telemetry_seal(self) -> Path | None:
        """Close the current summary into its period (start: first observation, end: now); the sealed file, if any.

        A summary sealed before and not yet accepted is returned as it is, so
        a report whose answer was lost is sent again unchanged and the
        platform stores it once; observations made since go to a new summary.
        """
        if self.telemetry_sealed_path.exists():
            return self.telemetry_sealed_path
        if not self.telemetry_path.exists():
            return None
        data = json.loads(self.telemetry_path.read_text())
        end = _utc_now()
        data["period"] = {"start": data.pop("period_start", None) or end, "end": end}
        write_atomic(self.telemetry_sealed_path, json.dumps(data).encode())
        self.telemetry_path.unlink()
        return self.telemetry_sealed_path

    @property
    def witness_hashes_path(self) -> Path:
        return self.path / "witness" / "hashes.bin"

    def witnessed_hash(self, seq: int, *, first_seq: int) -> str | None:
        """The hash this node verified for event `seq`, if it kept one."""
        if seq < first_seq:
            return None
        try:
            with self.witness_hashes_path.open("rb") as handle:
                handle.seek((seq - first_seq) * 32)
                raw = handle.read(32)
        except FileNotFoundError:
            return None
        return raw.hex() if len(raw) == 32 else None

    def witness_append(self, hashes: list[str], *, first_seq: int, next_seq: int) -> None:
        """Keep the hashes of events next_seq, next_seq+1, ... (dropping anything stored past them)."""
        path = self.witness_hashes_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as handle:
            handle.truncate((next_seq - first_seq) * 32)
            handle.write(b"".join(bytes.fromhex(h) for h in hashes))
            handle.flush()
            os.fsync(handle.fileno())

    def models_dir(self, config: NodeConfig) -> Path:
        return Path(config.models_dir) if config.models_dir else self.path / "models"

    def is_initialized(self) -> bool:
        return self.config_path.exists() and self.trusted_root_path.exists()

    def load_config(self) -> NodeConfig:
        if not self.is_initialized():
            raise NotInitialized(
                f"{self.path} is not initialised: run `conclave-node init --server URL --trust-root FILE`"
            )
        try:
            return NodeConfig(**json.loads(self.config_path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise NotInitialized(f"cannot read {self.config_path}: {exc}") from exc

    def save_config(self, config: NodeConfig) -> None:
        # The config holds the node's API token.
        write_atomic(self.config_path, json.dumps(asdict(config), indent=2).encode(), mode=0o600)

    def load_state(self) -> NodeState:
        if not self.state_path.exists():
            return NodeState()
        try:
            return NodeState.from_dict(json.loads(self.state_path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise NotInitialized(f"cannot read {self.state_path}: {exc}") from exc

    def save_state(self, state: NodeState) -> None:
        write_atomic(self.state_path, json.dumps(asdict(state), indent=2).encode())

    def read_bytes(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def record_latency(self, *, model_name: str, version: str, values_ms: list[float]) -> None:
        """Add observations to the summary `report` sends next (for the node's inference runtime).

        Each model's summary is a `conclave_node.sketch.LatencySketch` in its JSON
        form (DDSketch, 1 % relative error): the form the dashboards merge, so
        one node's report adds up with every other node's exactly.
        """
        data = json.loads(self.telemetry_path.read_text()) if self.telemetry_path.exists() else {"models": []}
        data.setdefault("period_start", _utc_now())
        entries = {f"{m['model_name']}@{m['version']}": m for m in data["models"]}
        key = f"{model_name}@{version}"
        entry = entries.get(key)
        try:
            sketch = LatencySketch.from_dict(entry["latency_ms"]) if entry else LatencySketch()
        except InvalidSketch:
            # A summary written by an older agent (fixed 1-2-5 buckets) cannot become a sketch,
            # and the server refuses it: start this model's summary afresh.
            sketch = LatencySketch()
        sketch.add_many(values_ms)
        entries[key] = {"model_name": model_name, "version": version, "latency_ms": sketch.as_dict()}
        data["models"] = list(entries.values())
        write_atomic(self.telemetry_path, json.dumps(data).encode())

    def record_client(self, metrics: dict) -> None:
        """Keep the client library's metrics for the report `report` sends next.

        `metrics` is `ConclaveClient.metrics()`: call counts, success rate,
        latency and the circuit breaker's state; the latest one replaces the
        one before (it is a state, not a sum).
        """
        data = json.loads(self.telemetry_path.read_text()) if self.telemetry_path.exists() else {"models": []}
        data["client"] = metrics
        write_atomic(self.telemetry_path, json.dumps(data).encode())


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
