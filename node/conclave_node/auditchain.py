"""The audit chain's canonical form and hash, shared by the platform and everyone who checks it.

One event is hashed as the RFC 8785 canonical JSON of::

    {seq, type, actor, object_type, object_id, payload, created_at, prev_hash}

with `created_at` in UTC, ISO 8601, always with microseconds
(`2030-01-01T12:00:00.000000+00:00`). `prev_hash` is the previous event's
hash, 64 zeros for the first. The platform's `audit` app appends with these
functions and a node or `conclave-verify` recomputes with them, so both
agree by construction. Nothing here touches Django.

An event *record* is the shape the API serves and the exported pages hold:
`{seq, event_type, actor, object_type, object_id, payload, created_at,
prev_hash, hash}`.
"""

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import rfc8785

GENESIS_HASH = "0" * 64
RECORD_FIELDS = ("seq", "event_type", "actor", "object_type", "object_id", "payload", "created_at", "prev_hash", "hash")


def canonical_timestamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def parse_event_time(value: Any) -> dt.datetime:
    """A record's `created_at` (canonical, or as a JSON API wrote it: `Z`, microseconds dropped when zero)."""
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str):
        raise ValueError(f"created_at must be a timestamp, got {value!r}")
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"created_at has no time zone: {value!r}")
    return parsed


def event_hash(
    *,
    seq: int,
    event_type: str,
    actor_label: str,
    object_type: str,
    object_id: str,
    payload: dict,
    created_at: dt.datetime,
    prev_hash: str,
) -> str:
    document = {
        "seq": seq,
        "type": event_type,
        "actor": actor_label,
        "object_type": object_type,
        "object_id": object_id,
        "payload": payload,
        "created_at": canonical_timestamp(created_at),
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(rfc8785.dumps(document)).hexdigest()


def record_hash(record: dict) -> str:
    """Recompute the hash of an event record (from the API or an exported page)."""
    return event_hash(
        seq=record["seq"],
        event_type=record["event_type"],
        actor_label=record["actor"],
        object_type=record["object_type"],
        object_id=str(record["object_id"]),
        payload=record["payload"],
        created_at=parse_event_time(record["created_at"]),
        prev_hash=record["prev_hash"],
    )


def canonical_record(record: dict) -> dict:
    """A record with only the hashed fields and `created_at` in canonical form (what pages hold)."""
    clean = {name: record[name] for name in RECORD_FIELDS}
    clean["object_id"] = str(clean["object_id"])
    clean["created_at"] = canonical_timestamp(parse_event_time(record["created_at"]))
    return clean


@dataclass(frozen=True)
class ChainBreak(Exception):
    """Where and why a run of records stops being one chain."""

    seq: int
    reason: str

    def __str__(self) -> str:
        return f"event #{self.seq}: {self.reason}"


def walk_chain(records: Iterable[dict], *, after_seq: int = 0, after_hash: str = GENESIS_HASH) -> Iterator[dict]:
    """Yield each record once its link to the one before is checked; raise ChainBreak at the first bad one.

    Starts after the event (after_seq, after_hash): 0 and GENESIS_HASH for
    the whole chain. Checks that seqs follow without a gap, that each
    `prev_hash` names the previous hash, and that each hash recomputes.
    Streams: holds one record at a time.
    """
    expected, previous = after_seq + 1, after_hash
    for record in records:
        seq = record.get("seq")
        if seq != expected:
            raise ChainBreak(expected, f"expected event #{expected}, got #{seq}: an event is missing or was inserted")
        if record.get("prev_hash") != previous:
            raise ChainBreak(seq, "does not link to the event before it (prev_hash differs)")
        try:
            recomputed = record_hash(record)
        except (KeyError, TypeError, ValueError) as exc:
            raise ChainBreak(seq, f"is malformed: {exc}") from exc
        if recomputed != record.get("hash"):
            raise ChainBreak(seq, "was altered: its content no longer matches its hash")
        yield record
        previous = record["hash"]
        expected += 1


# --- The log on IPFS: pages and checkpoints ------------------------------------------

PAGE_FORMAT = "conclave-audit-page/1"


def page_document(*, events: list[dict], previous: str | None) -> bytes:
    """One page of the exported log: canonical JSON (RFC 8785) of its events, linking to the page before.

    Pages hold consecutive events from seq 1; the first page's `previous`
    is null. A page's CID is a pure function of its events and the pages
    before it, so a full page keeps its CID from one export to the next.
    """
    return rfc8785.dumps(
        {
            "format": PAGE_FORMAT,
            "previous": previous,
            "first_seq": events[0]["seq"],
            "last_seq": events[-1]["seq"],
            "events": events,
        }
    )


class LogFormatError(ValueError):
    """A page or checkpoint document that is not in the exported log's format."""


def parse_page(data: bytes, *, cid: str) -> dict:
    try:
        page = json.loads(data)
    except ValueError as exc:
        raise LogFormatError(f"page {cid} is not JSON: {exc}") from exc
    if not isinstance(page, dict) or page.get("format") != PAGE_FORMAT:
        raise LogFormatError(f"page {cid} is not a {PAGE_FORMAT} document")
    events = page.get("events")
    if not isinstance(events, list) or not events or not all(isinstance(e, dict) for e in events):
        raise LogFormatError(f"page {cid} has no events")
    if events[0].get("seq") != page.get("first_seq") or events[-1].get("seq") != page.get("last_seq"):
        raise LogFormatError(f"page {cid}: first_seq/last_seq do not match its events")
    previous = page.get("previous")
    if previous is not None and not isinstance(previous, str):
        raise LogFormatError(f"page {cid}: previous must be a CID or null")
    # Not re-serialised to check the canonical form: the bytes are checked against the CID and every
    # event against its hash, and re-serialising each page would triple a verifier's CPU time.
    return page


def parse_checkpoint(data: bytes, *, cid: str) -> dict:
    """A checkpoint document: `{seq, hash, created_at}` of one event, plus `log` (newest page CID) when exported."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise LogFormatError(f"checkpoint {cid} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise LogFormatError(f"checkpoint {cid} is not an object")
    seq, digest = document.get("seq"), document.get("hash")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 or not isinstance(digest, str) or len(digest) != 64:
        raise LogFormatError(f"checkpoint {cid} needs seq and hash")
    log = document.get("log")
    if log is not None and not isinstance(log, str):
        raise LogFormatError(f"checkpoint {cid}: log must be a CID")
    return document


def checkpoint_document(*, seq: int, digest: str, created_at: dt.datetime, log: str | None = None) -> bytes:
    document = {"seq": seq, "hash": digest, "created_at": canonical_timestamp(created_at)}
    if log:
        document["log"] = log
    return rfc8785.dumps(document)
