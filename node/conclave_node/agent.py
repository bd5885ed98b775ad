"""The node agent: trust a root, pull and verify the signed set, install it, report latency.

`pull` follows TUF's client workflow with this platform's two roles:

1. Walk the root chain: fetch root N+1, N+2, ... from the server; each must
   be signed by a threshold of the previous root's root keys and of its own,
   and carry the next version. Refuse an expired final root.
2. Fetch the signed set with `If-None-Match`. A 200 must carry a threshold
   of signatures from the online keys root lists, must not have expired, and
   must not be older than (or, at the same version, differ from) the last set
   this node trusted. A 304 re-checks the cached set, so a frozen server is
   noticed when that set expires.
   The set also carries the platform's audit head at signing time: the
   node fetches the events between the head it witnessed last and the new
   one and checks that their hash links join the two (`_witness`). A
   history that does not extend the witnessed one (rewritten) is refused.
3. Download every file not already installed, verify size, sha256 and CID,
   and install the set atomically, keeping the previous one for rollback.

Nothing is installed unless every step passes.
"""

import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from conclave_node.auditchain import GENESIS_HASH, ChainBreak, walk_chain
from conclave_node.download import FileFetcher
from conclave_node.errors import (
    ConfigError,
    EndlessData,
    HistoryFork,
    MetadataFormatError,
    NodeError,
    NothingInstalled,
    RootRotationError,
    ServerError,
    ServerUnreachable,
    SignatureError,
    TelemetryRateLimited,
    TelemetryRejected,
)
from conclave_node.install import install_set, refresh_metadata, rollback, switch_current
from conclave_node.metadata import (
    SET_ROLE,
    Root,
    SignedFile,
    SignedSet,
    check_not_expired,
    check_not_rolled_back,
    envelope_digest,
    load_json,
    parse_root,
    timestamp,
    verify_new_root,
    verify_signed_set,
    verify_trust_root,
)
from conclave_node.state import NodeConfig, NodeHome, NodeState, write_atomic

SIGNED_SET_PATH = "/api/v1/approved/signed/"
ROOT_VERSION_PATH = "/api/v1/keys/{version}.root.json"
TELEMETRY_PATH = "/api/v1/telemetry/"
AUDIT_EVENTS_PATH = "/api/v1/audit/"
AUDIT_PAGE_SIZE = 1000
MAX_METADATA_BYTES = 32 * 1024 * 1024
MAX_ROOT_ROTATIONS = 64
USER_AGENT = "conclave-node/1"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class PullResult:
    outcome: str  # "installed", "up_to_date", "declined"
    signed_version: int
    approved_set_version: int
    expires: str
    root_version: int
    not_modified: bool
    models: list[str]
    downloaded_bytes: int = 0
    resumed_bytes: int = 0
    reused_files: int = 0
    downloaded_files: int = 0
    installed_path: str = ""
    refusals: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


class NodeAgent:
    def __init__(
        self,
        home: NodeHome,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
        transport: httpx.BaseTransport | None = None,
        progress: bool = False,
    ):
        self.home = home
        self.clock = clock
        self.transport = transport
        self.progress = progress

    # --- init --------------------------------------------------------------------

    def init(
        self,
        *,
        server: str,
        trust_root: Path,
        gateways: list[str] | None = None,
        token: str | None = None,
        models_dir: str = "",
        use_platform_gateway: bool = True,
        attempts: int = 3,
        min_rate_bytes_per_second: float = 16384.0,
        rate_window_seconds: float = 30.0,
        force: bool = False,
    ) -> dict:
        if not server.startswith(("http://", "https://")):
            raise ConfigError(f"--server must be an http(s) URL, got {server!r}")
        for gateway in gateways or []:
            if not gateway.startswith(("http://", "https://")):
                raise ConfigError(f"--gateway must be an http(s) URL, got {gateway!r}")
        if self.home.is_initialized() and not force:
            raise ConfigError(
                f"{self.home.path} is already initialised; pass --force to start over with a new trust root"
            )
        try:
            data = Path(trust_root).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the trust root {trust_root}: {exc.strerror}") from exc
        try:
            root = verify_trust_root(load_json(data, what=f"trust root {trust_root}"))
        except NodeError as exc:
            raise ConfigError(f"{trust_root} is not a usable trust root: {exc.message}") from exc
        config = NodeConfig(
            server=server.rstrip("/"),
            gateways=[g.rstrip("/") for g in gateways or []],
            token=token,
            models_dir=str(Path(models_dir).resolve()) if models_dir else "",
            use_platform_gateway=use_platform_gateway,
            attempts=attempts,
            min_rate_bytes_per_second=min_rate_bytes_per_second,
            rate_window_seconds=rate_window_seconds,
        )
        self.home.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.home.trusted_root_path, data)
        self.home.cached_set_path.unlink(missing_ok=True)
        self.home.save_config(config)
        self.home.witness_hashes_path.unlink(missing_ok=True)
        self.home.save_state(NodeState())
        return {"home": str(self.home.path), "server": config.server, "root_version": root.version}

    # --- pull --------------------------------------------------------------------

    def pull(self, *, accept: Callable[[SignedSet], bool] | None = None) -> PullResult:
        """Fetch, verify and install the current signed set.

        `accept`, when given, sees a verified set that would be installed
        before anything is downloaded; False leaves the node as it is
        (outcome "declined"), e.g. for `watch --confirm` or a set that
        already failed to start here.
        """
        config = self.home.load_config()
        state = self.home.load_state()
        now = self.clock()
        with self._client(config) as client:
            root = self._update_root(client, config, state)
            check_not_expired(root.expires, now=now, what=f"root v{root.version}")
            signed_set, envelope_bytes, not_modified = self._fetch_signed_set(client, config, state, root, now)
            installed = state.installed
            if (
                installed is not None
                and installed.approved_set_version == signed_set.approved_set_version
                and Path(installed.path).is_dir()
            ):
                if installed.signed_version != signed_set.version:
                    refresh_metadata(installed, envelope_bytes)
                    installed.signed_version = signed_set.version
                    self.home.save_state(state)
                return self._result("up_to_date", signed_set, root, not_modified, installed_path=installed.path)
            if accept is not None and not accept(signed_set):
                return self._result("declined", signed_set, root, not_modified)
            return self._install(client, config, state, signed_set, envelope_bytes, root, not_modified)

    def _client(self, config: NodeConfig) -> httpx.Client:
        return httpx.Client(
            timeout=httpx.Timeout(config.timeout_seconds, connect=min(10.0, config.timeout_seconds)),
            headers={"User-Agent": USER_AGENT},
            transport=self.transport,
            follow_redirects=True,
        )

    def _get(
        self, client: httpx.Client, url: str, *, headers: dict | None = None, what: str
    ) -> tuple[int, bytes, httpx.Headers]:
        """GET metadata, reading at most MAX_METADATA_BYTES."""
        try:
            with client.stream("GET", url, headers=headers or {}) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body.extend(chunk)
                    if len(body) > MAX_METADATA_BYTES:
                        raise EndlessData(
                            f"{what} from {url} exceeds {MAX_METADATA_BYTES:,} bytes; refusing to read more"
                        )
                return response.status_code, bytes(body), response.headers
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc

    def _update_root(self, client: httpx.Client, config: NodeConfig, state: NodeState) -> Root:
        trusted = parse_root(load_json(self.home.trusted_root_path.read_bytes(), what="trusted root"))
        first_online = trusted.role(SET_ROLE)
        for _ in range(MAX_ROOT_ROTATIONS):
            url = config.server + ROOT_VERSION_PATH.format(version=trusted.version + 1)
            status, body, _ = self._get(client, url, what=f"root v{trusted.version + 1}")
            if status == 404:
                break
            if status != 200:
                raise ServerError(f"{url} answered HTTP {status}{_error_message(body)}")
            try:
                envelope = load_json(body, what=f"root v{trusted.version + 1}")
            except MetadataFormatError as exc:
                raise RootRotationError(exc.message) from exc
            trusted = verify_new_root(trusted, envelope)
            write_atomic(self.home.trusted_root_path, body)
        else:
            raise RootRotationError(f"more than {MAX_ROOT_ROTATIONS} root versions in one pull")
        if trusted.role(SET_ROLE) != first_online:
            # The online keys rotated: forget the floors they set (TUF 5.3.11), so a
            # set version a compromised key pushed high cannot lock this node out.
            state.last_version, state.last_digest, state.last_approved_version, state.etag = 0, None, 0, None
            self.home.cached_set_path.unlink(missing_ok=True)
            self.home.save_state(state)
        return trusted

    def _fetch_signed_set(
        self, client: httpx.Client, config: NodeConfig, state: NodeState, root: Root, now: dt.datetime
    ) -> tuple[SignedSet, bytes, bool]:
        url = config.server + SIGNED_SET_PATH
        cached = self.home.read_bytes(self.home.cached_set_path)
        headers = {"If-None-Match": state.etag} if cached is not None and state.etag else {}
        status, body, response_headers = self._get(client, url, headers=headers, what="the signed approved set")
        if status == 304:
            if cached is None:
                raise ServerError(f"{url} answered 304 Not Modified, but this node holds no cached set")
            try:
                return verify_signed_set(load_json(cached, what="cached set"), root=root, now=now), cached, True
            except SignatureError:
                # The cached set no longer verifies under the current root: fetch it afresh.
                self.home.cached_set_path.unlink(missing_ok=True)
                status, body, response_headers = self._get(client, url, what="the signed approved set")
        if status == 404:
            raise ServerError(f"{url}: the platform has not published an approved set yet{_error_message(body)}")
        if status != 200:
            raise ServerError(f"{url} answered HTTP {status}{_error_message(body)}")
        envelope = load_json(body, what="the signed approved set")
        signed_set = verify_signed_set(envelope, root=root, now=now)
        check_not_rolled_back(
            signed_set,
            last_version=state.last_version,
            last_digest=state.last_digest,
            last_approved_version=state.last_approved_version,
        )
        witness = self._witness(client, config, state, signed_set)
        # Trusted from here on: the floors move before any download starts.
        write_atomic(self.home.cached_set_path, body)
        state.witness = witness
        state.last_version = signed_set.version
        state.last_digest = envelope_digest(envelope)
        state.last_approved_version = signed_set.approved_set_version
        state.etag = response_headers.get("ETag")
        self.home.save_state(state)
        return signed_set, body, False

    # --- witnessing the audit history ---------------------------------------------------

    def _witness(
        self, client: httpx.Client, config: NodeConfig, state: NodeState, signed_set: SignedSet
    ) -> dict | None:
        """Check that the set's audit head extends the witnessed one; return the new witness.

        Fetches the events between the two heads and walks their hash links
        from the old head to the new one, recomputing every hash. The first
        pull walks from genesis. Raises HistoryFork, naming the first seq at
        which the served history departs from what this node verified.
        """
        head = signed_set.audit_head
        old = state.witness
        if head is None:
            return old
        if old is None:
            first_seq, after_seq, after_hash = 1, 0, GENESIS_HASH
        else:
            first_seq, after_seq, after_hash = old["first_seq"], old["seq"], old["hash"]
        if head.seq <= after_seq:
            seen = after_hash if head.seq == after_seq else self.home.witnessed_hash(head.seq, first_seq=first_seq)
            if seen is not None and seen != head.hash:
                diverged = self._first_divergence(client, config, first_seq=first_seq, upto=head.seq)
                raise HistoryFork(
                    f"signed set v{signed_set.version} names audit event #{head.seq} with hash {head.hash[:16]}…, "
                    f"but this node witnessed {seen[:16]}…: history rewritten from event #{diverged}",
                    first_diverging_seq=diverged,
                )
            base = old or {"seq": 0, "hash": GENESIS_HASH, "checkpoint_cid": None, "first_seq": 1}
            return {**base, "checkpoint_cid": head.checkpoint_cid or base.get("checkpoint_cid")}
        hashes: list[str] = []
        last_seq, last_hash = after_seq, after_hash
        try:
            for record in walk_chain(
                self._audit_events(client, config, after=after_seq, upto=head.seq),
                after_seq=after_seq,
                after_hash=after_hash,
            ):
                hashes.append(record["hash"])
                last_seq, last_hash = record["seq"], record["hash"]
        except ChainBreak as exc:
            diverged = exc.seq
            if exc.seq == after_seq + 1 and after_seq > 0:
                diverged = self._first_divergence(client, config, first_seq=first_seq, upto=after_seq) or exc.seq
            raise HistoryFork(
                f"the audit history behind signed set v{signed_set.version} does not extend the one this node "
                f"witnessed (#{after_seq}): {exc}; history rewritten from event #{diverged}",
                first_diverging_seq=diverged,
            ) from exc
        if (last_seq, last_hash) != (head.seq, head.hash):
            raise HistoryFork(
                f"signed set v{signed_set.version} names audit head #{head.seq} ({head.hash[:16]}…), but the "
                f"served events end at #{last_seq} ({last_hash[:16]}…)",
                first_diverging_seq=last_seq + 1 if last_seq < head.seq else head.seq,
            )
        self.home.witness_append(hashes, first_seq=first_seq, next_seq=after_seq + 1)
        return {"seq": head.seq, "hash": head.hash, "checkpoint_cid": head.checkpoint_cid, "first_seq": first_seq}

    def _first_divergence(self, client: httpx.Client, config: NodeConfig, *, first_seq: int, upto: int) -> int | None:
        """The lowest seq in [first_seq, upto] whose served hash differs from the witnessed one (binary search).

        Chained hashes make the mismatch monotone: once one event differs,
        every later one does. None when all of them still match.
        """

        def differs(seq: int) -> bool:
            served = next(iter(self._audit_events(client, config, after=seq - 1, upto=seq)), None)
            return served is None or served.get("hash") != self.home.witnessed_hash(seq, first_seq=first_seq)

        low, high = first_seq, upto
        if high < low or not differs(high):
            return None
        while low < high:
            middle = (low + high) // 2
            if differs(middle):
                high = middle
            else:
                low = middle + 1
        return low

    def _audit_events(self, client: httpx.Client, config: NodeConfig, *, after: int, upto: int):
        """Events after..upto from the platform's audit API, page by page (never all in memory)."""
        page = 1
        while True:
            url = (
                f"{config.server}{AUDIT_EVENTS_PATH}?after={after}&upto={upto}&page_size={AUDIT_PAGE_SIZE}&page={page}"
            )
            status, body, _ = self._get(client, url, what="audit events")
            if status != 200:
                raise ServerError(f"{url} answered HTTP {status}{_error_message(body)}")
            try:
                data = json.loads(body)
                results, more = data["results"], data.get("next")
            except (ValueError, KeyError, TypeError) as exc:
                raise ServerError(f"{url} did not answer a page of audit events") from exc
            yield from results
            if not more or not results:
                return
            page += 1

    def _install(
        self,
        client: httpx.Client,
        config: NodeConfig,
        state: NodeState,
        signed_set: SignedSet,
        envelope_bytes: bytes,
        root: Root,
        not_modified: bool,
    ) -> PullResult:
        local = self._installed_files(state)
        files: dict[tuple[str, str], Path] = {}
        reused: set[tuple[str, str]] = set()
        to_fetch: dict[tuple[str, str], SignedFile] = {}
        same_bytes: list[tuple[tuple[str, str], tuple[str, str]]] = []
        for manifest in signed_set.manifests:
            for file in manifest.files:
                key = (manifest.key, file.path)
                existing = local.get(file.sha256)
                if existing is not None and existing.stat().st_size == file.size:
                    files[key] = existing
                    reused.add(key)
                else:
                    # Identical bytes listed twice are fetched once (each CID is still checked).
                    to_fetch.setdefault((file.sha256, file.cid), file)
                    same_bytes.append((key, (file.sha256, file.cid)))
        bar = _progress_bar(sum(file.size for file in to_fetch.values()), enabled=self.progress)
        fetcher = FileFetcher(
            client,
            downloads_dir=self.home.downloads_dir,
            attempts=config.attempts,
            on_bytes=bar.update,
            min_rate_bytes_per_second=config.min_rate_bytes_per_second,
            rate_window_seconds=config.rate_window_seconds,
        )
        fetched: dict[tuple[str, str], Path] = {}
        try:
            for identity, file in to_fetch.items():
                bar.set_postfix_str(file.path, refresh=False)
                fetched[identity] = fetcher.fetch(file, self._urls(config, file.cid))
        finally:
            bar.close()
        for key, identity in same_bytes:
            files[key] = fetched[identity]
        models_dir = self.home.models_dir(config)
        new = install_set(
            models_dir=models_dir, signed_set=signed_set, envelope=envelope_bytes, files=files, reused=reused
        )
        previous = state.installed if state.installed and state.installed.path != new.path else state.previous
        switch_current(models_dir=models_dir, installed=new, previous=previous)
        state.installed, state.previous = new, previous
        self.home.save_state(state)
        return self._result(
            "installed",
            signed_set,
            root,
            not_modified,
            downloaded_bytes=fetcher.stats.downloaded,
            resumed_bytes=fetcher.stats.resumed_bytes,
            reused_files=len(reused),
            downloaded_files=len(to_fetch),
            installed_path=new.path,
            refusals=fetcher.stats.refusals,
        )

    def _installed_files(self, state: NodeState) -> dict[str, Path]:
        """sha256 -> a file in an installed set (current or previous) that can be linked instead of fetched."""
        found: dict[str, Path] = {}
        for installed in (state.previous, state.installed):
            if installed is None:
                continue
            folder = Path(installed.path)
            try:
                envelope = json.loads((folder / "approved_set.json").read_bytes())
                for manifest in envelope["signed"]["manifests"]:
                    for file in manifest["files"]:
                        path = folder / manifest["model_name"] / manifest["version"] / file["path"]
                        if path.is_file():
                            found[file["sha256"]] = path
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found

    def _urls(self, config: NodeConfig, cid: str) -> list[str]:
        urls = [f"{gateway}/ipfs/{cid}" for gateway in config.gateways]
        if config.use_platform_gateway:
            urls.append(f"{config.server}/ipfs/{cid}")
        return urls

    def _result(self, outcome: str, signed_set: SignedSet, root: Root, not_modified: bool, **extra) -> PullResult:
        return PullResult(
            outcome=outcome,
            signed_version=signed_set.version,
            approved_set_version=signed_set.approved_set_version,
            expires=timestamp(signed_set.expires),
            root_version=root.version,
            not_modified=not_modified,
            models=[m.key for m in signed_set.manifests],
            **extra,
        )

    # --- status, rollback ------------------------------------------------------------

    def status(self) -> dict:
        config = self.home.load_config()
        state = self.home.load_state()
        now = self.clock()
        root = parse_root(load_json(self.home.trusted_root_path.read_bytes(), what="trusted root"))
        report = {
            "home": str(self.home.path),
            "server": config.server,
            "models_dir": str(self.home.models_dir(config)),
            "root_version": root.version,
            "root_expires": timestamp(root.expires),
            "signed_version": None,
            "approved_set_version": None,
            "expires": None,
            "expired": None,
            "models": [],
            "installed": asdict(state.installed) if state.installed else None,
            "previous": asdict(state.previous) if state.previous else None,
            "witness": state.witness,
        }
        cached = self.home.read_bytes(self.home.cached_set_path)
        if cached is not None:
            signed = load_json(cached, what="cached set")["signed"]
            report.update(
                signed_version=signed["version"],
                approved_set_version=signed["approved_set"]["version"],
                expires=signed["expires"],
                expired=now >= dt.datetime.fromisoformat(signed["expires"]),
                models=[f"{m['model_name']}@{m['version']}" for m in signed["manifests"]],
            )
        return report

    def rollback(self) -> dict:
        config = self.home.load_config()
        state = self.home.load_state()
        current, previous = rollback(
            models_dir=self.home.models_dir(config), installed=state.installed, previous=state.previous
        )
        state.installed, state.previous = current, previous
        self.home.save_state(state)
        return {"current": asdict(current), "previous": asdict(previous)}

    # --- report ----------------------------------------------------------------------

    def report(self, summary_file: Path | None = None) -> dict:
        config = self.home.load_config()
        state = self.home.load_state()
        token = config.token or os.environ.get("CONCLAVE_NODE_TOKEN")
        if not token:
            raise ConfigError("no node token: pass --token to `init` or set CONCLAVE_NODE_TOKEN")
        path = Path(summary_file) if summary_file else self.home.telemetry_seal() or self.home.telemetry_path
        try:
            summary = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise NothingInstalled(f"no latency summary at {path}: nothing to report yet") from exc
        except ValueError as exc:
            raise ConfigError(f"{path} is not JSON: {exc}") from exc
        payload = {
            "signed_set_version": state.installed.signed_version if state.installed else None,
            "approved_set_version": state.installed.approved_set_version if state.installed else None,
            "models": summary.get("models", []),
        }
        if summary.get("period"):
            payload["period"] = summary["period"]
        if summary.get("client"):
            payload["client"] = summary["client"]
        url = config.server + TELEMETRY_PATH
        try:
            with self._client(config) as client:
                response = client.post(url, json=payload, headers={"Authorization": f"Token {token}"})
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 429:
            raise TelemetryRateLimited(
                f"the platform is rate-limiting reports{_error_message(response.content)} "
                f"(retry after {response.headers.get('Retry-After', '?')} s)"
            )
        # 200: this report for this period was already stored (a resend after a lost answer).
        if response.status_code not in (200, 201):
            if summary_file is None and response.status_code in (400, 409, 413):
                # Sending the same bytes again would be refused the same way: set them
                # aside (kept for the operator) so later summaries are not stuck behind them.
                os.replace(path, path.with_name(path.name + ".rejected"))
            raise TelemetryRejected(f"{url} answered HTTP {response.status_code}{_error_message(response.content)}")
        if summary_file is None:
            os.replace(path, path.with_name(path.name + ".sent"))
        return response.json()


def _error_message(body: bytes) -> str:
    try:
        error = json.loads(body)["error"]
        return f": {error['message']}"
    except (ValueError, KeyError, TypeError):
        return ""


def _progress_bar(total: int, *, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled, desc="pull", leave=False
    )
