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
