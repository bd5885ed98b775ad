"""The Django-free chain hashing that the platform appends with and nodes and verifiers recompute with."""

import datetime as dt

import pytest

from conclave_node.auditchain import GENESIS_HASH, ChainBreak, canonical_record, event_hash, record_hash, walk_chain

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


def chain(n: int) -> list[dict]:
    records, previous = [], GENESIS_HASH
    for seq in range(1, n + 1):
        record = {
            "seq": seq,
            "event_type": "vote.cast",
            "actor": f"voter{seq}",
            "object_type": "proposal",
            "object_id": "1",
            "payload": {"choice": "for", "n": seq},
            "prev_hash": previous,
            "created_at": (T0 + dt.timedelta(seconds=seq)).isoformat(timespec="microseconds"),
        }
        record["hash"] = record_hash(record)
        previous = record["hash"]
        records.append(record)
    return records


def test_the_platform_appends_with_this_very_function():
    from audit import hashing

    assert hashing.event_hash is event_hash
    assert hashing.GENESIS_HASH == GENESIS_HASH


def test_a_whole_chain_walks_from_genesis():
    records = chain(5)
    assert [r["seq"] for r in walk_chain(records)] == [1, 2, 3, 4, 5]
    assert [r["seq"] for r in walk_chain(records[2:], after_seq=2, after_hash=records[1]["hash"])] == [3, 4, 5]


def test_timestamps_as_an_api_writes_them_hash_the_same():
    record = chain(1)[0]
    as_api = {**record, "created_at": "2030-01-01T12:00:01Z"}
    assert record_hash(as_api) == record["hash"]
    assert canonical_record(as_api)["created_at"] == "2030-01-01T12:00:01.000000+00:00"


def test_an_edited_event_is_named():
    records = chain(5)
    records[2]["payload"] = {"choice": "against", "n": 3}
    with pytest.raises(ChainBreak) as excinfo:
        list(walk_chain(records))
    assert excinfo.value.seq == 3 and "altered" in excinfo.value.reason


def test_an_inserted_or_missing_event_is_named():
    records = chain(5)
    with pytest.raises(ChainBreak) as excinfo:
        list(walk_chain(records[:2] + records[3:]))
    assert excinfo.value.seq == 3 and "missing or was inserted" in excinfo.value.reason


def test_a_chain_that_does_not_start_at_the_given_head_is_refused():
    records = chain(5)
    with pytest.raises(ChainBreak) as excinfo:
        list(walk_chain(records[3:], after_seq=3, after_hash="f" * 64))
    assert excinfo.value.seq == 4 and "link" in excinfo.value.reason
