"""The audit log on IPFS: content-addressed pages, the newest one named in each checkpoint.

Each page is the canonical JSON (RFC 8785) of up to AUDIT_EXPORT_PAGE_EVENTS
consecutive events (`conclave_node.auditchain.page_document`), linking to
the previous page's CID. Full pages never change, so their CIDs are stable
across exports; only the newest (partial) page is new each time. With a
checkpoint's CID alone, anyone walks the whole history back from any IPFS
gateway or a CAR file (`conclave-verify`).
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from aleph_cid import compute_cid
from django.conf import settings

from audit.models import AuditEvent
from conclave_node.auditchain import canonical_timestamp, page_document

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogPage:
    first_seq: int
    last_seq: int
    cid: str
    data: bytes


def audit_log_pages(*, upto_seq: int, page_events: int | None = None) -> Iterator[LogPage]:
    """The pages of events 1..upto_seq, oldest first, one page in memory at a time."""
    size = page_events or settings.AUDIT_EXPORT_PAGE_EVENTS
    rows = (
        AuditEvent.objects.filter(seq__lte=upto_seq)
        .order_by("seq")
        .values_list(
            "seq", "event_type", "actor_label", "object_type", "object_id", "payload", "created_at", "prev_hash", "hash"
        )
    )
    previous = None
    batch: list[dict] = []
    for seq, event_type, actor, object_type, object_id, payload, created_at, prev_hash, digest in rows.iterator(
        chunk_size=2000
    ):
        batch.append(
            {
                "seq": seq,
                "event_type": event_type,
                "actor": actor,
                "object_type": object_type,
                "object_id": object_id,
                "payload": payload,
                "created_at": canonical_timestamp(created_at),
                "prev_hash": prev_hash,
                "hash": digest,
            }
        )
        if len(batch) == size:
            page = _page(batch, previous)
            yield page
            previous, batch = page.cid, []
    if batch:
        yield _page(batch, previous)


def _page(events: list[dict], previous: str | None) -> LogPage:
    data = page_document(events=events, previous=previous)
    return LogPage(first_seq=events[0]["seq"], last_seq=events[-1]["seq"], cid=compute_cid(data), data=data)


def audit_log_export(*, upto_seq: int) -> tuple[str | None, int]:
    """Pin every page of events 1..upto_seq not pinned yet; return (newest page CID, page count).

    Raises PinError when the store refuses a page (the caller retries).
    """
    from core.ipfs import pinning_backend

    backend = pinning_backend()
    newest, count = None, 0
    for page in audit_log_pages(upto_seq=upto_seq):
        if not backend.is_pinned(page.cid):
            backend.pin_bytes(page.data, cid=page.cid)
        newest, count = page.cid, count + 1
    logger.info("audit log exported up to #%s: %s page(s), newest %s", upto_seq, count, newest)
    return newest, count
