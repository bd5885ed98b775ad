"""Tampering made directly in the database is found, and named, by every verifier.

The rows are changed with raw SQL through `connection.cursor()`, as someone
with database access would, bypassing the ORM and every service.
"""

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from audit.hashing import event_hash
from audit.models import AuditEvent
from audit.selectors import audit_chain_verify
from governance.services import vote_cast
from tests.governance.factories import parameter_proposal, person

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain():
    """A short real chain: a proposal created and opened, two votes."""
    alice, bob = person("alice"), person("bob")
    proposal = parameter_proposal(author=alice, now=None)
    vote_cast(proposal=proposal, voter=alice, choice="for")
    vote_cast(proposal=proposal, voter=bob, choice="against")
    assert AuditEvent.objects.count() == 4
    assert audit_chain_verify().ok
    return list(AuditEvent.objects.order_by("seq"))


def sql(statement: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement.replace("%t", AuditEvent._meta.db_table), params)


def insert_raw(event: dict) -> None:
    """A plain SQL INSERT of a well-formed event (valid hash, linked to its predecessor)."""
    sql(
        "INSERT INTO %t (seq, event_type, actor_label, object_type, object_id, payload, created_at, prev_hash, hash) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [
            event["seq"],
            event["event_type"],
            event["actor_label"],
            event["object_type"],
            event["object_id"],
            json.dumps(event["payload"]),
            event["created_at"],
            event["prev_hash"],
            event_hash(**event),
        ],
    )


def verify_command() -> tuple[bool, str]:
    out = io.StringIO()
    try:
        call_command("audit_verify", stdout=out)
    except CommandError as exc:
        return False, str(exc)
    return True, out.getvalue()


def test_intact_chain_verifies(chain):
    result = audit_chain_verify()
    assert result.ok and result.events_checked == 4 and result.head_seq == 4
    ok, output = verify_command()
    assert ok and "4 events" in output


def test_an_updated_row_is_found(chain):
    sql("UPDATE %t SET actor_label = %s WHERE seq = %s", ["mallory", 2])
    result = audit_chain_verify()
    assert not result.ok
    assert result.first_broken_seq == 2
    assert "altered" in result.reason
    ok, message = verify_command()
    assert not ok and "event #2" in message


def test_a_deleted_row_is_found(chain):
    sql("DELETE FROM %t WHERE seq = %s", [3])
    result = audit_chain_verify()
    assert not result.ok and result.first_broken_seq == 3
    assert not verify_command()[0]


def test_a_row_inserted_in_the_middle_is_found(chain):
    # Make room after #2 and insert a well-formed event linked to #2.
    sql("UPDATE %t SET seq = seq + 100 WHERE seq > %s", [2])
    sql("UPDATE %t SET seq = seq - 99 WHERE seq > %s", [100])
    second = chain[1]
    forged = {
        "seq": 3,
        "event_type": "vote.cast",
        "actor_label": "mallory",
        "object_type": "proposal",
        "object_id": second.object_id,
        "payload": {"choice": "for"},
        "created_at": second.created_at,
        "prev_hash": second.hash,
    }
    insert_raw(forged)
    result = audit_chain_verify()
    assert not result.ok
    assert result.first_broken_seq == 4  # the forged row links; the next one no longer does
    assert not verify_command()[0]


def test_a_row_appended_without_the_head_is_found(chain):
    last = chain[-1]
    forged = {
        "seq": last.seq + 1,
        "event_type": "vote.cast",
        "actor_label": "mallory",
        "object_type": "proposal",
        "object_id": last.object_id,
        "payload": {"choice": "for"},
        "created_at": last.created_at,
        "prev_hash": last.hash,
    }
    insert_raw(forged)
    assert AuditEvent.objects.count() == 5
    result = audit_chain_verify()
    assert not result.ok
    assert "head" in result.reason
    assert not verify_command()[0]
