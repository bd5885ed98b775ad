"""The canonical form of an audit row and its hash."""

import datetime as dt
import hashlib

import rfc8785

GENESIS_HASH = "0" * 64


def canonical_timestamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


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
