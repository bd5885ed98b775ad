"""Checkpoints pin the chain head to IPFS; a consistent rewrite after one is still caught."""

import io

import pytest
from aleph_cid import compute_cid
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from audit.checkpoints import audit_checkpoint_create, audit_checkpoints_verify, checkpoint_document
from audit.hashing import GENESIS_HASH, event_hash
from audit.models import AuditChainHead, AuditCheckpoint, AuditEvent
from audit.selectors import audit_chain_verify
from audit.tasks import audit_checkpoint_pin
from core.errors import Conflict
from core.ipfs import pinning_backend
from governance.services import vote_cast
from tests.governance.factories import parameter_proposal, person

pytestmark = pytest.mark.django_db


@pytest.fixture
def events():
    alice = person("alice")
    proposal = parameter_proposal(author=alice, now=None)
    vote_cast(proposal=proposal, voter=alice, choice="for")
    return proposal


def test_checkpoint_pins_the_head_document_and_records_it(events):
    head = AuditEvent.objects.order_by("-seq").first()
    checkpoint = audit_checkpoint_create()
    assert (checkpoint.seq, checkpoint.hash) == (head.seq, head.hash)
    assert checkpoint.log_cid  # the log was exported first and the document names its newest page
    data = checkpoint_document(head, log_cid=checkpoint.log_cid)
    assert checkpoint.cid == compute_cid(data)
    backend = pinning_backend()
    assert backend.is_pinned(checkpoint.cid)
    assert b"".join(backend.read(checkpoint.cid)) == data
    recorded = AuditEvent.objects.order_by("-seq").first()
    assert recorded.event_type == "audit.checkpoint_pinned"
    assert recorded.payload == {"seq": head.seq, "hash": head.hash, "cid": checkpoint.cid, "log": checkpoint.log_cid}
    assert audit_chain_verify().ok
    assert audit_checkpoints_verify().ok


def test_no_new_checkpoint_without_new_events(events):
    first = audit_checkpoint_create()
    assert audit_checkpoint_create() is None  # only the checkpoint's own event is new
    vote_cast(proposal=events, voter=person("bob"), choice="against")
    second = audit_checkpoint_create()
    assert second.seq > first.seq
    assert AuditCheckpoint.objects.count() == 2


def test_empty_chain_has_nothing_to_checkpoint():
    assert audit_checkpoint_create() is None


def test_broken_chain_is_not_checkpointed(events):
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {AuditEvent._meta.db_table} SET actor_label = 'mallory' WHERE seq = 1")
    with pytest.raises(Conflict) as excinfo:
        audit_checkpoint_create()
    assert excinfo.value.code == "audit_chain_broken"
    assert AuditCheckpoint.objects.count() == 0


def test_consistent_rewrite_after_a_checkpoint_is_caught(events):
    audit_checkpoint_create()
    # Rewrite history: change event #1 and recompute every hash and the head, so the chain alone verifies.
    rows = list(AuditEvent.objects.order_by("seq"))
    prev = GENESIS_HASH
    table = AuditEvent._meta.db_table
    with connection.cursor() as cursor:
        for event in rows:
            label = "mallory" if event.seq == 1 else event.actor_label
            digest = event_hash(
                seq=event.seq,
                event_type=event.event_type,
                actor_label=label,
                object_type=event.object_type,
                object_id=event.object_id,
                payload=event.payload,
                created_at=event.created_at,
                prev_hash=prev,
            )
            cursor.execute(
                f"UPDATE {table} SET actor_label = %s, prev_hash = %s, hash = %s WHERE seq = %s",
                [label, prev, digest, event.seq],
            )
            prev = digest
        cursor.execute(f"UPDATE {AuditChainHead._meta.db_table} SET last_hash = %s WHERE id = 1", [prev])
    assert audit_chain_verify().ok  # the rewrite is internally consistent...
    result = audit_checkpoints_verify()
    assert not result.ok  # ...but no longer matches what was pinned
    assert "no longer has the pinned hash" in result.problems[0]
    with pytest.raises(CommandError, match="checkpoints do not match"):
        call_command("audit_verify", stdout=io.StringIO())


def test_checkpoint_task_runs_and_is_scheduled(events):
    result = audit_checkpoint_pin.apply().get()
    assert result["cid"] == AuditCheckpoint.objects.get().cid
    assert settings.CELERY_BEAT_SCHEDULE["audit-checkpoint-pin"]["task"] == "audit.tasks.audit_checkpoint_pin"
