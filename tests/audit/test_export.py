"""The audit log exported to IPFS as content-addressed pages, named by each checkpoint."""

import io
import json

import pytest
import rfc8785
from aleph_cid import compute_cid, read_carv1_root
from django.conf import settings
from django.core.management import call_command

from audit.checkpoints import audit_checkpoint_create, audit_checkpoints_verify
from audit.export import audit_log_pages
from audit.models import AuditCheckpoint, AuditEvent
from audit.selectors import audit_chain_verify
from audit.tasks import audit_checkpoint_pin
from conclave_node.auditchain import parse_checkpoint, parse_page, walk_chain
from core.ipfs import pinning_backend
from governance.services import vote_cast
from tests.governance.factories import parameter_proposal, person

pytestmark = pytest.mark.django_db


@pytest.fixture
def five_events(settings):
    settings.AUDIT_EXPORT_PAGE_EVENTS = 2
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    proposal = parameter_proposal(author=alice, now=None)
    for voter in (alice, bob, carol):
        vote_cast(proposal=proposal, voter=voter, choice="for")
    assert AuditEvent.objects.count() == 5
    return proposal


def read(cid: str) -> bytes:
    return b"".join(pinning_backend().read(cid))


def walk_back(cid: str) -> list[dict]:
    """The pages from the newest back to the first, as anyone with the CID would read them."""
    pages = []
    while cid:
        page = parse_page(read(cid), cid=cid)
        pages.append(page)
        cid = page["previous"]
    return pages


def test_the_checkpoint_names_the_newest_page_and_the_pages_link_back_to_genesis(five_events):
    checkpoint = audit_checkpoint_create()
    document = parse_checkpoint(read(checkpoint.cid), cid=checkpoint.cid)
    assert document["log"] == checkpoint.log_cid
    pages = walk_back(document["log"])
    assert [(p["first_seq"], p["last_seq"]) for p in pages] == [(5, 5), (3, 4), (1, 2)]
    events = [event for page in reversed(pages) for event in page["events"]]
    assert [e["seq"] for e in walk_chain(events)] == [1, 2, 3, 4, 5]
    assert events[-1]["hash"] == document["hash"]
    recorded = AuditEvent.objects.order_by("-seq").first()
    assert recorded.payload["log"] == checkpoint.log_cid
    assert audit_checkpoints_verify().ok


def test_each_page_is_canonical_json_stored_under_its_cid(five_events):
    for page in audit_log_pages(upto_seq=5):
        parsed = json.loads(page.data)
        assert rfc8785.dumps(parsed) == page.data
        assert compute_cid(page.data) == page.cid


def test_full_pages_keep_their_cids_and_only_the_newest_page_changes(five_events):
    first = audit_checkpoint_create()
    vote_cast(proposal=five_events, voter=person("dave"), choice="against")
    second = audit_checkpoint_create()
    old, new = walk_back(first.log_cid), walk_back(second.log_cid)
    assert [(p["first_seq"], p["last_seq"]) for p in new] == [(7, 7), (5, 6), (3, 4), (1, 2)]
    # The page (5, 6) links to the same (3, 4) page the first export made, which links to the same (1, 2).
    assert new[1]["previous"] == old[0]["previous"]
    assert new[2] == old[1] and new[3] == old[2]


def test_a_checkpoint_without_a_log_is_followed_by_one_with(five_events):
    checkpoint = audit_checkpoint_create()
    AuditCheckpoint.objects.filter(pk=checkpoint.pk).update(log_cid="")
    again = audit_checkpoint_create()
    assert again is not None and again.log_cid


def test_audit_export_pins_a_checkpoint_and_writes_a_car(five_events, tmp_path):
    out = io.StringIO()
    car = tmp_path / "history.car"
    call_command("audit_export", "--car", str(car), stdout=out)
    checkpoint = AuditCheckpoint.objects.get()
    assert f"checkpoint {checkpoint.cid} pinned" in out.getvalue()
    assert read_carv1_root(car) in out.getvalue()
    assert audit_chain_verify().ok

    call_command("audit_export", stdout=(again := io.StringIO()))
    assert "already pinned" in again.getvalue()
    assert AuditCheckpoint.objects.count() == 1


def test_the_checkpoint_beat_exports_the_log(five_events):
    result = audit_checkpoint_pin.apply().get()
    checkpoint = AuditCheckpoint.objects.get()
    assert result["cid"] == checkpoint.cid
    assert pinning_backend().is_pinned(checkpoint.log_cid)
    assert settings.CELERY_BEAT_SCHEDULE["audit-checkpoint-pin"]["task"] == "audit.tasks.audit_checkpoint_pin"
