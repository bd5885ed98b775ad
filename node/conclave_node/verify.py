"""`conclave-verify`: re-check every decision from the audit history, trusting no server.

Sources (one of):

- `--server URL`: the platform's audit API (events), its checkpoints, root
  metadata and signed sets; documents are fetched from its gateway and
  checked against their CIDs.
- `--checkpoint CID --gateway URL`: only a checkpoint CID. Its document
  names the newest page of the exported log; the pages are walked back to
  genesis through any IPFS gateway, every byte checked against its CID.
  Roots and signed sets are those the history's own events name by CID.
- `--car FILE`: offline, from `manage.py audit_export --car` (or
  `--checkpoint CID` inside it). Such a CAR holds the adopted manifests'
  documents, the benchmark evidence and evaluation sets; the models' files
  only when exported with `--files` (otherwise reported as not checked).

With `--server URL --checkpoint CID` the CID is an anchor held from
before: the server's history must still contain it, or the first seq at
which it departs is named (a fork: history rewritten).

Checks, streaming (one page of events in memory, plus each open
proposal's current votes):

- the hash chain from genesis to the head, and every checkpoint;
- each proposal: its rules as frozen in its creation event, every vote
  (replacements included), the tally recomputed from the vote events, the
  state it must have reached, and whether the recorded outcome and
  execution agree;
- each vote's time (its `cast_at`, else the event's) inside the voting
  window frozen in its proposal's creation event;
- each parameter change: the executed value equals the proposal's, and the
  value the signed set tells nodes (when it carries parameters);
- each executed adoption or retirement: a signed set carrying its approved
  set, with a threshold of valid signatures under the root chain;
- each executed adoption: the adopted manifest's document (named by its
  `manifest.approved` event) and its files, streamed and hashed against the
  published sha256 and CIDs (`--skip-files`: reported as not checked); the
  benchmark evidence its execution names (required when its creation says
  runs were to inform the vote), fetched by CID, about the adopted model,
  with its evaluation set; with `--rerun-benchmarks` each run measured again
  here: quality exactly as recorded, speed as a ratio, both machines named.

Exit status: 0 everything verifies; 2 bad command line; 3 a source cannot
be read; otherwise the most fundamental failure found:
  10 chain broken     11 checkpoint mismatch   12 fork (history differs from the anchor)
  13 rules            14 votes                 15 tally
  16 outcome          17 execution             18 parameter (signed set vs executed)
  19 signatures of a signed set under the root chain
  20 an event whose payload cannot be read
  21 evidence (none where runs were to inform the vote, or missing / not matching)
  22 files (a manifest document or file that does not match what was published)
  23 re-run (a benchmark re-run measures another quality than its evidence)
"""

import argparse
import datetime as dt
import json
import math
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import httpx

from conclave_node.auditchain import (
    GENESIS_HASH,
    ChainBreak,
    LogFormatError,
    checkpoint_document,
    parse_checkpoint,
    parse_event_time,
    parse_page,
    walk_chain,
)
from conclave_node.car import CarError, CarReader
from conclave_node.errors import NodeError
from conclave_node.metadata import (
    SET_ROLE,
    Root,
    load_json,
    parse_root,
    verify_new_root,
    verify_threshold,
    verify_trust_root,
)

EXIT_CODES = {
    "unreachable": 3,
    "chain": 10,
    "checkpoint": 11,
    "fork": 12,
    "rules": 13,
    "vote": 14,
    "tally": 15,
    "outcome": 16,
    "execution": 17,
    "parameter": 18,
    "signature": 19,
    "malformed": 20,
    "evidence": 21,
    "files": 22,
    "rerun": 23,
}
AUDIT_PATH = "/api/v1/audit/"
PAGE_SIZE = 1000
RECENT_HASHES = 65536
RULE_FIELDS = (
    "voting_delay_seconds",
    "voting_period_seconds",
    "quorum",
    "approval_threshold",
    "timelock_seconds",
    "grace_period_seconds",
)


class SourceError(Exception):
    """A source that cannot be read (network, missing object, bytes that are not their CID's)."""


# --- Sources ----------------------------------------------------------------------------


class Source:
    """Where the history comes from: events in order, and content-addressed documents."""

    label = ""
    # Whether root metadata and signed sets can be read from this source (a bare checkpoint cannot).
    carries_signed_metadata = True

    def events(self) -> Iterator[dict]:
        raise NotImplementedError

    def fetch(self, cid: str) -> bytes:
        raise NotImplementedError

    def listed_checkpoints(self) -> list[dict]:
        return []

    def roots(self) -> list[bytes]:
        return []

    def signed_sets(self) -> list[bytes]:
        return []

    def anchor(self) -> dict | None:
        return None

    def chunks(self, cid: str) -> Iterator[bytes]:
        """A file's bytes in pieces (a model's weights need not fit in memory); unchecked."""
        yield self.fetch(cid)

    def has_file(self, cid: str) -> bool:
        """Whether this source can serve the file at all (a CAR exported without files cannot)."""
        return True


def file_check(source: Source, cid: str, dest: Path | None = None) -> tuple[str, int]:
    """Stream the file `cid` from the source, check it hashes to its CID; return (sha256, size); keep it at `dest`."""
    import hashlib

    from aleph_cid import CidHasher

    try:
        hasher = CidHasher.for_expected(cid)
    except ValueError as exc:
        raise SourceError(f"{cid} is not a CID this tool can check: {exc}") from exc
    digest, size = hashlib.sha256(), 0
    out = open(dest, "wb") if dest is not None else None  # noqa: SIM115 - closed below
    try:
        for chunk in source.chunks(cid):
            hasher.update(chunk)
            digest.update(chunk)
            size += len(chunk)
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()
    if hasher.finalize() != cid:
        raise SourceError(f"the bytes served for {cid} do not hash to that CID")
    return digest.hexdigest(), size


def _check_cid(data: bytes, cid: str) -> bytes:
    from aleph_cid import CidHasher

    try:
        hasher = CidHasher.for_expected(cid)
    except ValueError as exc:
        raise SourceError(f"{cid} is not a CID this tool can check: {exc}") from exc
    hasher.update(data)
    if hasher.finalize() != cid:
        raise SourceError(f"the bytes served for {cid} do not hash to that CID")
    return data


class HttpSource(Source):
    def __init__(self, client: httpx.Client):
        self.client = client

    gateway = ""

    def _get(self, url: str) -> bytes:
        try:
            response = self.client.get(url)
        except httpx.HTTPError as exc:
            raise SourceError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise SourceError(f"{url} answered HTTP {response.status_code}")
        return response.content

    def chunks(self, cid: str) -> Iterator[bytes]:
        url = f"{self.gateway}/ipfs/{cid}"
        try:
            with self.client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise SourceError(f"{url} answered HTTP {response.status_code}")
                yield from response.iter_bytes(1 << 20)
        except httpx.HTTPError as exc:
            raise SourceError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc


class ServerSource(HttpSource):
    def __init__(self, client: httpx.Client, server: str, gateway: str | None = None):
        super().__init__(client)
        self.server = server.rstrip("/")
        self.gateway = (gateway or server).rstrip("/")
        self.label = f"server {self.server}"

    def events(self, *, after: int = 0, upto: int | None = None) -> Iterator[dict]:
        page = 1
        while True:
            url = f"{self.server}{AUDIT_PATH}?after={after}&page_size={PAGE_SIZE}&page={page}"
            if upto is not None:
                url += f"&upto={upto}"
            try:
                body = json.loads(self._get(url))
                results = body["results"]
            except (ValueError, KeyError, TypeError) as exc:
                raise SourceError(f"{url} did not answer a page of audit events") from exc
            yield from results
            if not body.get("next") or not results:
                return
            page += 1

    def fetch(self, cid: str) -> bytes:
        return _check_cid(self._get(f"{self.gateway}/ipfs/{cid}"), cid)

    def _list(self, path: str) -> list[dict]:
        rows, url = [], f"{self.server}{path}?page_size={PAGE_SIZE}"
        while url:
            body = json.loads(self._get(url))
            if isinstance(body, list):
                return rows + body
            rows.extend(body.get("results", []))
            url = body.get("next")
        return rows

    def listed_checkpoints(self) -> list[dict]:
        return self._list("/api/v1/audit/checkpoints/")

    def roots(self) -> list[bytes]:
        documents, version = [], 1
        while True:
            try:
                response = self.client.get(f"{self.server}/api/v1/keys/{version}.root.json")
            except httpx.HTTPError as exc:
                raise SourceError(f"cannot reach {self.server}: {exc}") from exc
            if response.status_code == 404:
                return documents
            if response.status_code != 200:
                raise SourceError(f"root v{version} answered HTTP {response.status_code}")
            documents.append(response.content)
            version += 1

    def signed_sets(self) -> list[bytes]:
        documents = []
        for row in sorted(self._list("/api/v1/approved/signed/history/"), key=lambda r: r["version"]):
            try:
                documents.append(self.fetch(row["cid"]))
            except SourceError:
                continue  # not pinned (yet) on the gateway; the current one is served directly below
        try:
            documents.append(self._get(f"{self.server}/api/v1/approved/signed/"))
        except SourceError:
            pass  # no approved set published yet
        return documents


class LogSource(Source):
    """The exported log: a checkpoint document, its pages walked back to genesis, then read forward."""

    def __init__(self, checkpoint_cid: str):
        self.checkpoint_cid = checkpoint_cid
        self._anchor: dict | None = None

    def anchor(self) -> dict:
        if self._anchor is None:
            try:
                self._anchor = parse_checkpoint(self.fetch(self.checkpoint_cid), cid=self.checkpoint_cid)
            except LogFormatError as exc:
                raise SourceError(str(exc)) from exc
            self._anchor["cid"] = self.checkpoint_cid
        return self._anchor

    def events(self) -> Iterator[dict]:
        anchor = self.anchor()
        if not anchor.get("log"):
            raise SourceError(f"checkpoint {self.checkpoint_cid} names no exported log (made before exports)")
        cids, cid = [], anchor["log"]
        while cid:  # back to genesis, keeping only the CIDs
            page = self._page(cid)
            cids.append(cid)
            cid = page["previous"]
        for cid in reversed(cids):
            yield from self._page(cid)["events"]

    def _page(self, cid: str) -> dict:
        try:
            return parse_page(self.fetch(cid), cid=cid)
        except LogFormatError as exc:
            raise SourceError(str(exc)) from exc


class GatewaySource(LogSource, HttpSource):
    carries_signed_metadata = False

    def __init__(self, client: httpx.Client, checkpoint_cid: str, gateway: str):
        HttpSource.__init__(self, client)
        LogSource.__init__(self, checkpoint_cid)
        self.gateway = gateway.rstrip("/")
        self.label = f"checkpoint {checkpoint_cid} via {self.gateway}"

    def fetch(self, cid: str) -> bytes:
        return _check_cid(self._get(f"{self.gateway}/ipfs/{cid}"), cid)


class CarSource(LogSource):
    def __init__(self, path: Path, checkpoint_cid: str | None = None):
        try:
            self.car = CarReader(path)
            self.folder = self.car.list_directory(self.car.root)
            if checkpoint_cid is None:
                checkpoint_cid = self.folder["checkpoint.json"]
        except (CarError, KeyError) as exc:
            raise SourceError(f"{path} is not an exported history: {exc}") from exc
        super().__init__(checkpoint_cid)
        self.label = f"{path} (checkpoint {checkpoint_cid})"

    def fetch(self, cid: str) -> bytes:
        try:
            return _check_cid(self.car.read_file(cid), cid)
        except CarError as exc:
            raise SourceError(str(exc)) from exc

    def has_file(self, cid: str) -> bool:
        return cid in self.car

    def _documents(self, folder: str, order: Callable[[str], int]) -> list[bytes]:
        if folder not in self.folder:
            return []
        entries = self.car.list_directory(self.folder[folder])
        return [self.fetch(entries[name]) for name in sorted(entries, key=order)]

    def roots(self) -> list[bytes]:
        return self._documents("keys", lambda name: int(name.split(".")[0]))

    def signed_sets(self) -> list[bytes]:
        return self._documents("signed", lambda name: int(name.split(".")[0]))


# --- The report ----------------------------------------------------------------------------


@dataclass
class Problem:
    kind: str
    seq: int | None
    message: str

    def as_dict(self) -> dict:
        return {"kind": self.kind, "seq": self.seq, "message": self.message, "exit_code": EXIT_CODES[self.kind]}

    def __str__(self) -> str:
        where = f" event #{self.seq}" if self.seq is not None else ""
        return f"FAIL {self.kind}{where}: {self.message}"


@dataclass
class Report:
    emit: Callable[[str], None] | None = None
    lines: list[dict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def line(self, kind: str, text: str, *, ok: bool = True, **details) -> None:
        self.lines.append({"kind": kind, "ok": ok, "text": text, **details})
        if self.emit:
            self.emit(f"{'ok  ' if ok else 'FAIL'} {kind}: {text}")

    def fail(self, kind: str, seq: int | None, message: str) -> Problem:
        problem = Problem(kind, seq, message)
        self.problems.append(problem)
        if self.emit:
            self.emit(str(problem))
        return problem

    @property
    def exit_code(self) -> int:
        return min((EXIT_CODES[p.kind] for p in self.problems), default=0)

    def as_dict(self) -> dict:
        return {
            "ok": not self.problems,
            "exit_code": self.exit_code,
            "decisions": self.lines,
            "problems": [p.as_dict() for p in self.problems],
        }


# --- Proposals ----------------------------------------------------------------------------


def _time(value) -> dt.datetime | None:
    try:
        return parse_event_time(value) if value is not None else None
    except ValueError:
        return None


@dataclass
class ProposalTrack:
    pid: str
    created_seq: int
    proposal_type: str
    title: str
    payload: dict
    rules: dict
    eligible: int
    quorum_required: int
    threshold_bp: int
    votes: dict = field(default_factory=dict)
    casts: int = 0
    changes: int = 0
    opened_seq: int | None = None
    closed_seq: int | None = None
    outcome: str | None = None
    queued_seq: int | None = None
    executed_seq: int | None = None
    canceled_seq: int | None = None
    expired_seq: int | None = None
    result: dict | None = None
    effects: dict = field(default_factory=dict)
    failed: bool = False
    tally_text: str = "not closed"
    reported: bool = False
    evidence_required: bool = False
    starts: dt.datetime | None = None
    ends: dt.datetime | None = None

    def tally(self) -> dict:
        counts = {"for": 0, "against": 0, "abstain": 0}
        for choice in self.votes.values():
            counts[choice] += 1
        quorum_votes = counts["for"] + counts["abstain"]
        decided = counts["for"] + counts["against"]
        quorum_reached = quorum_votes >= self.quorum_required
        approval_reached = counts["for"] * 10000 > self.threshold_bp * decided
        return {
            **counts,
            "total": sum(counts.values()),
            "eligible_voters": self.eligible,
            "quorum_votes": quorum_votes,
            "quorum_votes_required": self.quorum_required,
            "quorum_reached": quorum_reached,
            "approval_threshold": self.threshold_bp / 10000,
            "approval_reached": approval_reached,
            "passed": quorum_reached and approval_reached,
        }

    @property
    def state(self) -> str:
        if self.canceled_seq:
            return "canceled"
        if self.executed_seq:
            return "executed"
        if self.expired_seq:
            return "expired"
        if self.closed_seq:
            if self.outcome != "passed":
                return "defeated"
            return "queued" if self.queued_seq else "succeeded"
        return "active" if self.opened_seq else "pending"


COUNTED = ("for", "against", "abstain", "total", "quorum_votes", "quorum_reached", "approval_reached", "passed")
FROZEN = ("eligible_voters", "quorum_votes_required", "approval_threshold")


class Verifier:
    def __init__(self, report: Report):
        self.report = report
        self.proposals: dict[str, ProposalTrack] = {}
        self.recent: OrderedDict[int, tuple[str, str]] = OrderedDict()
        self.checkpoint_events: list[dict] = []
        self.parameters: dict[str, list[tuple[int, int]]] = {}
        self.approved_sets: dict[int, int] = {}
        self.manifest_names: dict[str, str] = {}
        self.executions: list[tuple[ProposalTrack, int]] = []
        self.registered: dict[str, dict] = {}  # manifest id -> its manifest.registered payload
        self.approvals: dict[str, dict] = {}  # manifest id -> its latest manifest.approved payload
        self.adoptions: list[tuple[ProposalTrack, int, dict | None]] = []
        self.root_cids: dict[int, tuple[int, str]] = {}  # root version -> (seq, CID)
        self.set_cids: list[tuple[int, str]] = []  # (seq, CID) of each signing.set_signed event
        self.head_seq, self.head_hash = 0, GENESIS_HASH
        self.chain_ok = True

    # The stream ----------------------------------------------------------------------------

    def run(self, records: Iterator[dict], *, label: str) -> None:
        try:
            for record in walk_chain(records):
                self.head_seq, self.head_hash = record["seq"], record["hash"]
                self.recent[record["seq"]] = (record["hash"], record["created_at"])
                if len(self.recent) > RECENT_HASHES:
                    self.recent.popitem(last=False)
                try:
                    self.event(record)
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    self.report.fail(
                        "malformed", record["seq"], f"{record['event_type']} event cannot be read: {exc!r}"
                    )
        except ChainBreak as exc:
            self.chain_ok = False
            self.report.fail("chain", exc.seq, f"the hash chain breaks: {exc.reason}")
            return
        self.report.line("chain", f"{self.head_seq} events from genesis to #{self.head_seq} {self.head_hash} ({label})")

    def event(self, record: dict) -> None:
        kind, payload, seq = record["event_type"], record["payload"], record["seq"]
        if kind == "proposal.created":
            self._created(record)
            return
        if record["object_type"] == "proposal":
            track = self.proposals.get(str(record["object_id"]))
            if track is None:
                self.report.fail(
                    "execution" if kind == "proposal.executed" else "vote",
                    seq,
                    f"{kind} for proposal #{record['object_id']}, which no creation event precedes",
                )
                return
            self._proposal_event(track, record)
        elif kind == "parameter.changed":
            self._parameter_changed(record)
        elif kind == "manifest.registered":
            self.registered[str(record["object_id"])] = payload
        elif kind == "signing.root_published":
            self.root_cids[int(payload["version"])] = (seq, payload["cid"])
        elif kind == "signing.set_signed":
            self.set_cids.append((seq, payload["cid"]))
        elif kind == "manifest.approved" or kind == "manifest.retired":
            self.manifest_names[str(record["object_id"])] = payload.get("manifest", "")
            if kind == "manifest.approved":
                self.approvals[str(record["object_id"])] = payload
            proposal_id = payload.get("proposal_id")
            if proposal_id is not None and str(proposal_id) in self.proposals:
                self.proposals[str(proposal_id)].effects.setdefault(kind, []).append(str(record["object_id"]))
        elif kind == "approved_set.published":
            self.approved_sets[payload.get("version")] = seq
        elif kind == "audit.checkpoint_pinned":
            self.checkpoint_events.append(record)

    def _created(self, record: dict) -> None:
        payload, seq = record["payload"], record["seq"]
        pid = str(record["object_id"])
        rules = payload.get("rules") or {}
        missing = [name for name in RULE_FIELDS if name not in rules]
        try:
            threshold_bp = int(Decimal(str(rules.get("approval_threshold"))) * 10000)
            quorum = Decimal(str(rules.get("quorum")))
        except (InvalidOperation, TypeError):
            threshold_bp, quorum = 0, None
        track = ProposalTrack(
            pid=pid,
            created_seq=seq,
            proposal_type=payload.get("proposal_type", ""),
            title=payload.get("title", ""),
            payload=payload.get("payload") or {},
            rules=rules,
            eligible=int(payload.get("eligible_voters") or 0),
            quorum_required=int(payload.get("quorum_votes_required") or 0),
            threshold_bp=threshold_bp,
            evidence_required=payload.get("evidence_required") is True,
        )
        if pid in self.proposals:
            self._fail(track, "rules", seq, f"proposal #{pid} is created twice")
        self.proposals[pid] = track
        if missing or quorum is None:
            self._fail(
                track,
                "rules",
                seq,
                f"proposal #{pid}: its creation event freezes no complete rules "
                f"(missing {', '.join(missing) or 'quorum/approval_threshold'})",
            )
            return
        expected_quorum = math.ceil(quorum * track.eligible)
        if track.quorum_required != expected_quorum:
            self._fail(
                track,
                "rules",
                seq,
                f"proposal #{pid}: quorum_votes_required {track.quorum_required} is not "
                f"ceil({quorum} x {track.eligible} eligible) = {expected_quorum}",
            )
        starts, ends = _time(payload.get("voting_starts_at")), _time(payload.get("voting_ends_at"))
        track.starts, track.ends = starts, ends
        eta, expires = _time(payload.get("execution_eta")), _time(payload.get("expires_at"))
        spans = [
            ("voting_period_seconds", starts, ends),
            ("timelock_seconds", ends, eta),
            ("grace_period_seconds", eta, expires),
        ]
        for rule, start, end in spans:
            if start is None or end is None or (end - start).total_seconds() != rules[rule]:
                self._fail(
                    track,
                    "rules",
                    seq,
                    f"proposal #{pid}: its schedule does not follow its frozen {rule} ({rules[rule]})",
                )

    def _proposal_event(self, track: ProposalTrack, record: dict) -> None:
        kind, payload, seq = record["event_type"], record["payload"], record["seq"]
        if kind == "proposal.opened":
            track.opened_seq = seq
        elif kind in ("vote.cast", "vote.changed"):
            self._vote(track, record)
        elif kind == "proposal.canceled":
            track.canceled_seq = seq
            if track.executed_seq:
                self._fail(track, "execution", seq, f"proposal #{track.pid} canceled after it was executed")
        elif kind == "proposal.closed":
            self._closed(track, record)
        elif kind == "proposal.queued":
            track.queued_seq = seq
            if track.outcome != "passed":
                self._fail(track, "execution", seq, f"proposal #{track.pid} queued without having passed")
        elif kind == "proposal.executed":
            track.executed_seq, track.result = seq, payload.get("result") or {}
            self._executed(track, seq)
        elif kind == "proposal.expired":
            track.expired_seq = seq
            self.finish(track)

    def _vote(self, track: ProposalTrack, record: dict) -> None:
        payload, seq, pid = record["payload"], record["seq"], track.pid
        voter, choice = payload.get("voter"), payload.get("choice")
        if choice not in ("for", "against", "abstain") or not voter:
            self._fail(track, "vote", seq, f"proposal #{pid}: a vote without a voter or with choice {choice!r}")
            return
        if record["actor"] != voter:
            self._fail(track, "vote", seq, f"proposal #{pid}: a vote for {voter} recorded as cast by {record['actor']}")
        # "opened" is recorded by the beat, possibly after the first votes; a vote after the close
        # (or a cancel) is never valid.
        if track.closed_seq is not None or track.canceled_seq is not None:
            ended = track.closed_seq or track.canceled_seq
            self._fail(track, "vote", seq, f"proposal #{pid}: {voter}'s vote comes after voting ended at #{ended}")
        # The window frozen at creation: a vote counts from voting_starts_at until voting_ends_at. Its time
        # is the `cast_at` the platform checked under the proposal's lock (else the event's own). The log
        # keeps milliseconds, so a vote in the window's last millisecond records the end's own time.
        cast_at = _time(payload.get("cast_at", record["created_at"]))
        if cast_at is None or track.starts is None or track.ends is None:
            self._fail(track, "vote", seq, f"proposal #{pid}: {voter}'s vote has no time to check against its window")
        elif not track.starts <= cast_at <= track.ends:
            self._fail(
                track,
                "vote",
                seq,
                f"proposal #{pid}: {voter}'s vote at {payload.get('cast_at', record['created_at'])} lies outside "
                f"the voting window frozen at #{track.created_seq} "
                f"({track.starts.isoformat()} to {track.ends.isoformat()})",
            )
        if record["event_type"] == "vote.cast":
            if voter in track.votes:
                self._fail(
                    track,
                    "vote",
                    seq,
                    f"proposal #{pid}: {voter} casts a second vote (a replacement must be recorded as vote.changed)",
                )
            track.casts += 1
        else:
            if voter not in track.votes:
                self._fail(track, "vote", seq, f"proposal #{pid}: {voter} changes a vote never cast")
            elif payload.get("previous_choice") != track.votes[voter]:
                self._fail(
                    track,
                    "vote",
                    seq,
                    f"proposal #{pid}: {voter}'s change says the vote was "
                    f"{payload.get('previous_choice')!r}, the log says {track.votes[voter]!r}",
                )
            track.changes += 1
        track.votes[voter] = choice

    def _closed(self, track: ProposalTrack, record: dict) -> None:
        payload, seq, pid = record["payload"], record["seq"], track.pid
        track.closed_seq, track.outcome = seq, payload.get("outcome")
        recorded = payload.get("tally") or {}
        recomputed = track.tally()
        frozen = [name for name in FROZEN if recorded.get(name) != recomputed[name]]
        if frozen:
            self._fail(
                track,
                "rules",
                seq,
                f"proposal #{pid} was closed under rules other than those frozen at "
                f"#{track.created_seq}: "
                + ", ".join(f"{n} {recorded.get(n)!r} (frozen {recomputed[n]!r})" for n in frozen),
            )
        counted = [name for name in COUNTED if recorded.get(name) != recomputed[name]]
        if counted:
            self._fail(
                track,
                "tally",
                seq,
                f"proposal #{pid}: the tally recorded at close differs from the one "
                "recomputed from its vote events: "
                + ", ".join(f"{n} {recorded.get(n)!r} (votes say {recomputed[n]!r})" for n in counted),
            )
        expected = "passed" if recomputed["passed"] else "defeated"
        if track.outcome != expected:
            self._fail(
                track,
                "outcome",
                seq,
                f"proposal #{pid} is recorded as {track.outcome!r}, but its votes "
                f"under its frozen rules make it {expected!r}",
            )
        track.tally_text = (
            f"for {recomputed['for']} against {recomputed['against']} abstain {recomputed['abstain']} -> {expected}"
        )
        if expected != "passed":
            self.finish(track)

    def _executed(self, track: ProposalTrack, seq: int) -> None:
        pid, result, payload = track.pid, track.result, track.payload
        if track.outcome != "passed" or track.canceled_seq:
            self._fail(
                track,
                "execution",
                seq,
                f"proposal #{pid} executed although it is {track.state!r} (recorded outcome {track.outcome!r})",
            )
        if track.proposal_type == "parameter-change":
            if result.get("parameter") != payload.get("parameter") or result.get("new_value") != payload.get("value"):
                self._fail(
                    track,
                    "execution",
                    seq,
                    f"proposal #{pid} set {result.get('parameter')}="
                    f"{result.get('new_value')}, it proposed "
                    f"{payload.get('parameter')}={payload.get('value')}",
                )
            elif "parameter.changed" not in track.effects:
                self._fail(
                    track,
                    "execution",
                    seq,
                    f"proposal #{pid} executed, but no parameter.changed event records its change",
                )
        elif track.proposal_type == "model-adoption":
            approved = track.effects.get("manifest.approved", [])
            if result.get("approved") != payload.get("candidate") or str(payload.get("candidate")) not in approved:
                self._fail(
                    track,
                    "execution",
                    seq,
                    f"proposal #{pid} was to approve manifest "
                    f"{payload.get('candidate')}; execution approved "
                    f"{result.get('approved')} (events: {approved or 'none'})",
                )
            self.executions.append((track, seq))
            self.adoptions.append((track, seq, self.approvals.get(str(payload.get("candidate")))))
        elif track.proposal_type == "model-retirement":
            retired = track.effects.get("manifest.retired", [])
            if result.get("retired") != payload.get("manifest") or str(payload.get("manifest")) not in retired:
                self._fail(
                    track,
                    "execution",
                    seq,
                    f"proposal #{pid} was to retire manifest "
                    f"{payload.get('manifest')}; execution retired "
                    f"{result.get('retired')} (events: {retired or 'none'})",
                )
            self.executions.append((track, seq))
        version = result.get("approved_set_version")
        if track.proposal_type != "parameter-change" and version not in self.approved_sets:
            self._fail(
                track,
                "execution",
                seq,
                f"proposal #{pid} says it produced approved set v{version}, "
                "which no approved_set.published event records",
            )
        self.finish(track)

    def _parameter_changed(self, record: dict) -> None:
        payload, seq = record["payload"], record["seq"]
        name, new_value = payload.get("parameter"), payload.get("new_value")
        history = self.parameters.setdefault(name, [])
        text = f"{name}: {payload.get('old_value')} -> {new_value}"
        ok = True
        if history and payload.get("old_value") != history[-1][1]:
            ok = False
            self.report.fail(
                "parameter",
                seq,
                f"{name} changes from {payload.get('old_value')}, but the log last "
                f"set it to {history[-1][1]} (#{history[-1][0]})",
            )
        proposal_id = payload.get("proposal_id")
        if proposal_id is not None:
            track = self.proposals.get(str(proposal_id))
            if track is None or track.payload.get("parameter") != name or track.payload.get("value") != new_value:
                ok = False
                self.report.fail(
                    "execution",
                    seq,
                    f"{name}={new_value} is credited to proposal #{proposal_id}, which proposed something else",
                )
            else:
                track.effects.setdefault("parameter.changed", []).append(seq)
            text += f" by proposal #{proposal_id}"
        history.append((seq, new_value))
        self.report.line("parameter", f"{text} at #{seq}", ok=ok, seq=seq)

    # Per-decision lines ------------------------------------------------------------------

    def _fail(self, track: ProposalTrack, kind: str, seq: int, message: str) -> None:
        track.failed = True
        self.report.fail(kind, seq, message)

    def finish(self, track: ProposalTrack) -> None:
        if track.reported:
            return
        track.reported = True
        tally = track.tally_text
        text = (
            f"proposal #{track.pid} {track.proposal_type} {track.title!r}: rules frozen at #{track.created_seq}; "
            f"{track.casts} vote(s) cast, {track.changes} replaced; {tally}; recorded "
            f"{track.outcome or '-'}; state {track.state}"
        )
        if track.executed_seq:
            text += f" (executed at #{track.executed_seq}: {json.dumps(track.result, sort_keys=True)})"
        self.report.line("proposal", text, ok=not track.failed, proposal_id=track.pid, state=track.state)
        track.votes = {}

    def finish_all(self) -> None:
        for track in self.proposals.values():
            self.finish(track)

    # Checkpoints, anchors, signed sets -------------------------------------------------

    def check_checkpoints(self, source: Source) -> None:
        for record in self.checkpoint_events:
            payload = record["payload"]
            cid, seq = payload.get("cid"), payload.get("seq")
            known = self.recent.get(seq)
            try:
                data = source.fetch(cid)
                document = parse_checkpoint(data, cid=cid)
            except (SourceError, LogFormatError) as exc:
                self.report.fail("checkpoint", record["seq"], f"checkpoint {cid} cannot be read: {exc}")
                continue
            problems = []
            if document["seq"] != seq or document["hash"] != payload.get("hash"):
                problems.append("its document names another event than the checkpoint event does")
            if known is not None:
                expected = checkpoint_document(
                    seq=seq, digest=known[0], created_at=parse_event_time(known[1]), log=document.get("log")
                )
                if known[0] != document["hash"]:
                    problems.append(f"event #{seq} no longer has the hash it pinned")
                elif data != expected:
                    problems.append(f"event #{seq} no longer yields this document")
            if problems:
                self.report.fail("checkpoint", record["seq"], f"checkpoint {cid} (#{seq}): " + "; ".join(problems))
            else:
                self.report.line(
                    "checkpoint", f"{cid} anchors event #{seq} (pinned at #{record['seq']})", cid=cid, seq=seq
                )
        listed = source.listed_checkpoints()
        named = {r["payload"].get("cid") for r in self.checkpoint_events}
        for row in listed:
            if row.get("cid") not in named and row.get("seq", 0) <= self.head_seq:
                self.report.fail(
                    "checkpoint",
                    row.get("seq"),
                    f"checkpoint {row.get('cid')} is listed by the "
                    "server but no checkpoint event in the chain names it",
                )

    def check_anchor(self, anchor: dict) -> None:
        """The history must end at (or contain) the checkpoint it was read from or anchored to."""
        seq, digest = anchor["seq"], anchor["hash"]
        known = self.recent.get(seq)
        if self.head_seq < seq:
            self.report.fail(
                "fork",
                self.head_seq + 1,
                f"the history ends at #{self.head_seq}, before the checkpoint {anchor['cid']} (#{seq})",
            )
        elif known is not None and known[0] != digest:
            self.report.fail(
                "fork",
                seq,
                f"event #{seq} has hash {known[0][:16]}…, checkpoint {anchor['cid']} "
                f"pinned {digest[:16]}…: history rewritten",
            )
        else:
            self.report.line(
                "anchor", f"checkpoint {anchor['cid']} (#{seq}) is part of this history", cid=anchor["cid"], seq=seq
            )

    def check_signed_sets(self, source: Source, *, trust_root: bytes | None) -> None:
        from_history = not source.carries_signed_metadata
        if from_history and not self.set_cids:
            if self.executions:
                self.report.line(
                    "adoption",
                    f"{len(self.executions)} executed adoption(s)/retirement(s): signatures "
                    "not checked (this history names no signed sets; use --server or --car)",
                )
            return
        try:
            if from_history:
                # Only the history: every root and signed set its events name, fetched by CID.
                root_documents = [source.fetch(cid) for _, (_, cid) in sorted(self.root_cids.items())]
            else:
                root_documents = source.roots()
            roots = self._root_chain(root_documents, trust_root)
        except (NodeError, SourceError) as exc:
            self.report.fail("signature", None, f"the root chain does not verify: {exc}")
            return
        set_documents = []
        if from_history:
            for seq, cid in self.set_cids:
                try:
                    set_documents.append(source.fetch(cid))
                except SourceError as exc:
                    self.report.fail("signature", seq, f"the signed set {cid} named here cannot be read: {exc}")
        else:
            set_documents = source.signed_sets()
        if not roots:
            if self.executions:
                self.report.fail("signature", None, "no root metadata is available to check signed sets with")
            return
        sets: list[dict] = []
        for data in set_documents:
            try:
                envelope = load_json(data, what="signed set")
                signed = envelope["signed"]
                root = roots[signed["root_version"]]
                keyids = verify_threshold(envelope, root=root, role=SET_ROLE, what=f"signed set v{signed['version']}")
            except (NodeError, KeyError, TypeError) as exc:
                self.report.fail("signature", None, f"a signed set does not verify under the root chain: {exc}")
                continue
            sets.append({"signed": signed, "keyids": keyids})
        for track, seq in self.executions:
            version = (track.result or {}).get("approved_set_version")
            signing = next((s for s in sets if s["signed"]["approved_set"]["version"] == version), None)
            later = next((s for s in sets if s["signed"]["approved_set"]["version"] > (version or 0)), None)
            chosen = signing or later
            if chosen is None:
                self.report.fail(
                    "signature",
                    seq,
                    f"proposal #{track.pid} produced approved set v{version}, "
                    "which no signed set (at or after it) carries",
                )
                continue
            signed = chosen["signed"]
            note = "" if signing else f" (v{version} itself was never signed; first signed after it)"
            self.report.line(
                "adoption",
                f"proposal #{track.pid} {track.proposal_type} -> approved set v{version}: signed set "
                f"v{signed['version']} carries approved set v{signed['approved_set']['version']}{note}, "
                f"{len(chosen['keyids'])} valid signature(s) under root v{signed['root_version']}",
                proposal_id=track.pid,
                signed_version=signed["version"],
            )
        self._check_signed_parameters(sets)

    def _root_chain(self, documents: list[bytes], trust_root: bytes | None) -> dict[int, Root]:
        roots: dict[int, Root] = {}
        trusted = None
        if trust_root is not None:
            trusted = verify_trust_root(load_json(trust_root, what="trust root"))
            roots[trusted.version] = trusted
        for data in documents:
            envelope = load_json(data, what="root metadata")
            version = envelope.get("signed", {}).get("version")
            if trusted is None:
                trusted = verify_trust_root(envelope)
            elif version <= trusted.version:
                if version == trusted.version and parse_root(envelope).envelope != trusted.envelope:
                    raise SourceError(f"root v{version} differs from the trusted one")
                continue
            else:
                trusted = verify_new_root(trusted, envelope)
            roots[trusted.version] = trusted
        return roots

    def _check_signed_parameters(self, sets: list[dict]) -> None:
        for entry in sets:
            signed = entry["signed"]
            values = _signed_parameters(signed.get("parameters"))
            head = (signed.get("audit_head") or {}).get("seq")
            if values is None or head is None:
                continue
            for name, value in values.items():
                executed = [v for s, v in self.parameters.get(name, []) if s <= head]
                if executed and executed[-1] != value:
                    self.report.fail(
                        "parameter",
                        head,
                        f"signed set v{signed['version']} tells nodes {name}={value}, "
                        f"but the last executed change set {executed[-1]}",
                    )
                elif executed:
                    self.report.line(
                        "parameter", f"signed set v{signed['version']} tells nodes {name}={value}, the executed value"
                    )


class AdoptionChecks:
    """Each executed adoption: the adopted manifest's document and files, and the benchmark evidence of its vote."""

    def __init__(self, verifier: Verifier, source: Source, *, skip_files: bool, rerun: bool, workdir: Path | None):
        self.verifier, self.report, self.source = verifier, verifier.report, source
        self.skip_files, self.rerun, self.workdir = skip_files, rerun, workdir

    def run(self) -> None:
        for track, seq, approval in self.verifier.adoptions:
            candidate = str(track.payload.get("candidate"))
            document, files = self._manifest(track, seq, approval, self.verifier.registered.get(candidate))
            self._evidence(track, seq, approval, document, files)

    def _manifest(
        self, track: ProposalTrack, seq: int, approval: dict | None, registered: dict | None
    ) -> tuple[dict | None, dict[str, Path] | None]:
        pid = track.pid
        cid = (approval or {}).get("manifest_cid")
        if not cid:
            self.report.fail("files", seq, f"proposal #{pid}: no manifest.approved event names the adopted document")
            return None, None
        try:
            document = json.loads(self.source.fetch(cid))
            name = f"{document['model_name']}@{document['version']}"
            listed = [
                (f["path"], f.get("role"), int(f["size_bytes"]), f["sha256"], f["cid"]) for f in document["files"]
            ]
        except (SourceError, ValueError, KeyError, TypeError) as exc:
            self.report.fail(
                "files", seq, f"proposal #{pid}: the adopted manifest document {cid} cannot be read: {exc}"
            )
            return None, None
        problems = []
        if name != approval.get("manifest"):
            problems.append(f"it describes {name}, the approval names {approval.get('manifest')}")
        for field_name in ("sha256", "ipfs_cid"):
            if registered is not None and document.get(field_name) != registered.get(field_name):
                problems.append(f"its {field_name} is not the one registered")
        if not any(sha == document.get("sha256") for _, _, _, sha, _ in listed):
            problems.append("none of its files is the weights its sha256 names")
        if problems:
            self.report.fail("files", seq, f"proposal #{pid}: manifest document {cid}: " + "; ".join(problems))
            return document, None
        keep = self.rerun and self.workdir is not None
        if self.skip_files and not keep:
            self.report.line(
                "files",
                f"proposal #{pid} {name}: document {cid} read; its {len(listed)} file(s) NOT CHECKED (--skip-files)",
                checked=False,
                proposal_id=pid,
            )
            return document, None
        absent = [path for path, _, _, _, file_cid in listed if not self.source.has_file(file_cid)]
        if absent:
            self.report.line(
                "files",
                f"proposal #{pid} {name}: document {cid} read; file(s) NOT CHECKED, not in this source "
                f"({', '.join(absent)}; export with `audit_export --car FILE --files`)",
                checked=False,
                proposal_id=pid,
            )
            return document, None
        local: dict[str, Path] = {}
        folder = self.workdir / f"proposal-{pid}" if keep else None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        for path, role, size, sha256, file_cid in listed:
            dest = folder / Path(path).name if folder is not None else None
            try:
                digest, got = file_check(self.source, file_cid, dest)
            except SourceError as exc:
                self.report.fail("files", seq, f"proposal #{pid} {name}: {path}: {exc}")
                return document, None
            if digest != sha256 or got != size:
                self.report.fail(
                    "files",
                    seq,
                    f"proposal #{pid} {name}: {path} ({file_cid}) has sha256 {digest} and {got} bytes; the manifest "
                    f"publishes {sha256} and {size} bytes",
                )
                return document, None
            if dest is not None:
                local[role or path] = dest
        self.report.line(
            "files",
            f"proposal #{pid} {name}: document {cid}; {len(listed)} file(s) hash to their published sha256 and CIDs",
            checked=True,
            proposal_id=pid,
        )
        return document, local or None

    def _evidence(
        self, track: ProposalTrack, seq: int, approval: dict | None, document: dict | None, files: dict | None
    ) -> None:
        from conclave_node.benchmarks import EvidenceFormatError, evalset_parse, evidence_parse

        pid = track.pid
        cids = (track.result or {}).get("evidence")
        name = (approval or {}).get("manifest") or f"manifest {track.payload.get('candidate')}"
        if not cids:
            if track.evidence_required:
                self.report.fail(
                    "evidence",
                    seq,
                    f"proposal #{pid} adopted {name} naming no benchmark evidence, although its creation "
                    f"(#{track.created_seq}) says benchmark runs were to inform its vote",
                )
            return
        if not isinstance(cids, list) or not all(isinstance(c, str) for c in cids):
            self.report.fail("evidence", seq, f"proposal #{pid}: its evidence is not a list of CIDs: {cids!r}")
            return
        for cid in cids:
            try:
                evidence = evidence_parse(self.source.fetch(cid))
                evalset = self.source.fetch(evidence["evaluation_set"]["cid"])
                items = len(evalset_parse(evalset))
            except (SourceError, EvidenceFormatError, ValueError) as exc:
                self.report.fail("evidence", seq, f"proposal #{pid}: benchmark evidence {cid} cannot be used: {exc}")
                continue
            measured = evidence["manifest"]
            problems = []
            if measured.get("name") != name:
                problems.append(f"it measured {measured.get('name')}, not the adopted {name}")
            if document is not None and measured.get("ipfs_cid") != document.get("ipfs_cid"):
                problems.append("it measured other bytes than the adopted manifest's")
            if items != evidence["evaluation_set"].get("items"):
                problems.append(
                    f"its evaluation set has {items} items, it says {evidence['evaluation_set'].get('items')}"
                )
            if problems:
                self.report.fail("evidence", seq, f"proposal #{pid}: benchmark evidence {cid}: " + "; ".join(problems))
                continue
            results = evidence["results"]
            self.report.line(
                "evidence",
                f"proposal #{pid} {name}: benchmark run {evidence.get('benchmark_run')} ({cid}) on "
                f"{evidence['evaluation_set'].get('name')} ({evidence['evaluation_set']['cid']}): quality "
                f"{results.get('quality_score')}",
                proposal_id=pid,
                cid=cid,
            )
            if self.rerun:
                self._rerun(pid, seq, name, cid, evidence, evalset, document, files)

    def _rerun(self, pid, seq, name, cid, evidence, evalset, document, files) -> None:
        from conclave_node.benchmarks import hardware_info, rerun

        if files is None:
            self.report.line(
                "rerun", f"proposal #{pid} {name}: run {cid} NOT RE-RUN (the model's files were not fetched)", ok=True
            )
            return
        try:
            again = rerun(evidence, evalset=evalset, files=files, kind=(document or {}).get("kind"))
        except Exception as exc:  # noqa: BLE001 - a runtime that fails to load or run is reported, not raised
            self.report.fail("rerun", seq, f"proposal #{pid} {name}: re-running {cid} failed: {exc!r}")
            return
        recorded = evidence["results"]
        here = hardware_info()
        there = evidence.get("hardware") or {}
        speeds = [
            f"{key} {again[key]} vs {recorded[key]} recorded (x{again[key] / recorded[key]:.2f})"
            for key in ("sentences_per_sec_batch_32", "avg_tokens_per_sec")
            if isinstance(again.get(key), int | float) and isinstance(recorded.get(key), int | float) and recorded[key]
        ][:1]
        hardware = (
            f"here {here.get('processor')} ({here.get('cpus')} CPUs), recorded on {there.get('processor')} "
            f"({there.get('cpus')} CPUs)"
        )
        if again.get("quality_score") != recorded.get("quality_score"):
            self.report.fail(
                "rerun",
                seq,
                f"proposal #{pid} {name}: re-running {cid} measures quality {again.get('quality_score')}, the "
                f"evidence records {recorded.get('quality_score')} ({hardware})",
            )
            return
        self.report.line(
            "rerun",
            f"proposal #{pid} {name}: re-ran {cid}: quality {again['quality_score']} exactly as recorded; speed "
            f"{'; '.join(speeds) or 'not comparable'}; {hardware}",
            proposal_id=pid,
            quality=again["quality_score"],
            speed_ratio=[
                again[k] / recorded[k]
                for k in ("sentences_per_sec_batch_32", "avg_tokens_per_sec")
                if isinstance(again.get(k), int | float) and recorded.get(k)
            ][:1],
            hardware={"here": here, "recorded": there},
        )


def _signed_parameters(value) -> dict | None:
    """Parameters as a signed set may carry them: {name: value}, {name: {value}}, or [{name, value}]."""
    if isinstance(value, dict):
        return {k: (v.get("value") if isinstance(v, dict) else v) for k, v in value.items()}
    if isinstance(value, list):
        return {item.get("name"): item.get("value") for item in value if isinstance(item, dict)}
    return None


# --- Running it ------------------------------------------------------------------------------


def verify(
    source: Source,
    *,
    anchor_source: LogSource | None = None,
    trust_root: bytes | None = None,
    emit: Callable[[str], None] | None = None,
    skip_files: bool = False,
    rerun_benchmarks: bool = False,
    workdir: Path | None = None,
) -> Report:
    report = Report(emit=emit)
    verifier = Verifier(report)
    try:
        if anchor_source is not None:
            _compare_with_anchor(source, anchor_source, report)
        verifier.run(source.events(), label=source.label)
        if verifier.chain_ok:
            verifier.finish_all()
            if anchor_source is not None:
                verifier.check_anchor(anchor_source.anchor())
            anchor = source.anchor()
            if anchor is not None:
                verifier.check_anchor(anchor)
                if verifier.head_seq != anchor["seq"]:
                    report.fail(
                        "checkpoint",
                        anchor["seq"],
                        f"the log named by checkpoint {anchor['cid']} ends at "
                        f"#{verifier.head_seq}, not at #{anchor['seq']}",
                    )
            verifier.check_checkpoints(source)
            verifier.check_signed_sets(source, trust_root=trust_root)
            AdoptionChecks(verifier, source, skip_files=skip_files, rerun=rerun_benchmarks, workdir=workdir).run()
    except SourceError as exc:
        report.fail("unreachable", None, str(exc))
    return report


def _compare_with_anchor(source: ServerSource, anchor_source: LogSource, report: Report) -> None:
    """Walk the anchor's exported log beside the server's events; name the first seq whose hash differs."""
    anchor = anchor_source.anchor()
    if not anchor.get("log"):
        return  # only the head can be compared, after the main pass
    served = source.events(upto=anchor["seq"])
    for old in anchor_source.events():
        new = next(served, None)
        if new is None or new.get("hash") != old["hash"]:
            report.fail(
                "fork",
                old["seq"],
                f"the server's event #{old['seq']} differs from the one checkpoint "
                f"{anchor['cid']} pinned: history rewritten from #{old['seq']}",
            )
            return
    report.line("anchor", f"the server's events #1..#{anchor['seq']} are those checkpoint {anchor['cid']} pinned")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conclave-verify",
        description="Re-check every decision of a Conclave platform from its audit history, trusting no server.",
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--server", help="platform base URL (events from its audit API)")
    parser.add_argument("--checkpoint", help="a checkpoint CID: the history to walk, or with --server an anchor")
    parser.add_argument("--gateway", help="IPFS gateway base URL to fetch the checkpoint and pages from")
    parser.add_argument("--car", type=Path, help="a CAR file from `manage.py audit_export --car` (offline)")
    parser.add_argument(
        "--trust-root", type=Path, help="root metadata obtained out of band (default: trust v1 as served)"
    )
    parser.add_argument(
        "--skip-files",
        action="store_true",
        help="do not download the adopted models' files (reported as not checked, never as passed; "
        "--rerun-benchmarks downloads them all the same, as it needs them)",
    )
    parser.add_argument(
        "--rerun-benchmarks",
        action="store_true",
        help="re-run each adopted model's benchmark here on its pinned evaluation set: quality must match exactly",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.server and args.car:
        parser.error("give --server URL or --car FILE, not both")
    if not args.server and not args.car and not (args.checkpoint and args.gateway):
        parser.error("give one of --server URL, --checkpoint CID --gateway URL, or --car FILE")
    trust_root = None
    if args.trust_root:
        try:
            trust_root = args.trust_root.read_bytes()
        except OSError as exc:
            parser.error(f"cannot read {args.trust_root}: {exc.strerror}")
    emit = None if args.json else print
    with httpx.Client(
        timeout=args.timeout, follow_redirects=True, headers={"User-Agent": "conclave-verify/1"}
    ) as client:
        try:
            anchor_source = None
            if args.server:
                source = ServerSource(client, args.server, args.gateway)
                if args.checkpoint:
                    anchor_source = GatewaySource(client, args.checkpoint, args.gateway or args.server)
            elif args.car:
                source = CarSource(args.car, args.checkpoint)
            else:
                source = GatewaySource(client, args.checkpoint, args.gateway)
        except SourceError as exc:
            report = Report(emit=emit)
            report.fail("unreachable", None, str(exc))
        else:
            with tempfile.TemporaryDirectory(prefix="conclave-verify-") as workdir:
                report = verify(
                    source,
                    anchor_source=anchor_source,
                    trust_root=trust_root,
                    emit=emit,
                    skip_files=args.skip_files,
                    rerun_benchmarks=args.rerun_benchmarks,
                    workdir=Path(workdir) if args.rerun_benchmarks else None,
                )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        verdict = "everything verifies" if not report.problems else f"{len(report.problems)} problem(s)"
        print(f"conclave-verify: {verdict} (exit {report.exit_code})")
    return report.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
