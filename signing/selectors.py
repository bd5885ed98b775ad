"""Reads of the signed metadata: the current root and signed set, their history, and what needs signing."""

import datetime as dt
import json
from functools import lru_cache

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from core.errors import NotFound
from governance.selectors import runtime_parameters
from registry.models import ApprovedSet, Manifest, ManifestStatus, PinStatus
from signing.models import RootMetadata, SignedApprovedSet


def root_current() -> RootMetadata | None:
    return RootMetadata.objects.order_by("-version").first()


def root_get(version: int) -> RootMetadata:
    row = RootMetadata.objects.filter(version=version).first()
    if row is None:
        raise NotFound(f"There is no root v{version}.", code="root_not_found")
    return row


def root_current_head() -> tuple[int, str] | None:
    return RootMetadata.objects.order_by("-version").values_list("version", "cid").first()


def signed_set_current() -> SignedApprovedSet | None:
    return SignedApprovedSet.objects.select_related("approved_set").order_by("-version").first()


def signed_set_current_head() -> tuple[int, str, dt.datetime, int] | None:
    """(version, cid, expires, approved set version) of the latest signing: one indexed query."""
    return (
        SignedApprovedSet.objects.order_by("-version")
        .values_list("version", "cid", "expires", "approved_set__version")
        .first()
    )


def signed_set_list() -> QuerySet[SignedApprovedSet]:
    return SignedApprovedSet.objects.select_related("approved_set").defer("document").order_by("-version")


@lru_cache(maxsize=16)
def signed_document_bytes(model_label: str, version: int, cid: str) -> bytes:
    """The stored bytes of a signed document; immutable once written, so cached per (version, cid)."""
    model = RootMetadata if model_label == "root" else SignedApprovedSet
    return bytes(model.objects.values_list("document", flat=True).get(version=version, cid=cid))


def governed_parameters() -> dict[str, int]:
    """The governed limits' live values, as the signed set carries them."""
    return {name: int(value) for name, value in runtime_parameters().items()}


def signed_parameters(version: int, cid: str) -> dict | None:
    """The `parameters` a stored signing carries (None for signings made before they were signed)."""
    return json.loads(signed_document_bytes("set", version, cid))["signed"].get("parameters")


def approved_manifest_cids() -> dict[str, str]:
    """`name@version` -> the registry's live `manifest_cid` of each approved manifest (what a signing carries).

    A benchmark recorded on an approved model changes its document, so its
    CID, after the set was published: the set is then signed anew, so that
    the CIDs serving nodes announce stay the registry's.
    """
    rows = Manifest.objects.filter(status=ManifestStatus.APPROVED).exclude(manifest_cid="")
    return {
        f"{name}@{version}": cid for name, version, cid in rows.values_list("model_name", "version", "manifest_cid")
    }


def signed_manifest_cids_current(version: int, cid: str) -> bool:
    """Whether a stored signing carries the live manifest CID of every approved manifest it lists."""
    manifests = json.loads(signed_document_bytes("set", version, cid))["signed"].get("manifests") or []
    signed = {f"{m.get('model_name')}@{m.get('version')}": m.get("manifest_cid") for m in manifests}
    live = approved_manifest_cids()
    return all(signed[key] == live[key] for key in signed.keys() & live.keys())


def signed_set_needs_signing(*, now: dt.datetime | None = None) -> bool:
    """True when no signing covers the current approved set, the live parameters or the live manifest CIDs, or the
    latest one is close to expiry."""
    now = now or timezone.now()
    head = signed_set_current_head()
    latest_approved = ApprovedSet.objects.order_by("-version").values_list("version", flat=True).first()
    if latest_approved is None:
        return False
    if head is None:
        return True
    version, cid, expires, approved_version = head
    margin = dt.timedelta(seconds=settings.SIGNING_SET_RESIGN_MARGIN_SECONDS)
    if approved_version < latest_approved or expires - now <= margin:
        return True
    return signed_parameters(version, cid) != governed_parameters() or not signed_manifest_cids_current(version, cid)


def signed_metadata_unpinned() -> list[tuple[str, int]]:
    unpinned = [PinStatus.PENDING, PinStatus.FAILED]
    return [
        ("root", pk) for pk in RootMetadata.objects.filter(pin_status__in=unpinned).values_list("pk", flat=True)
    ] + [("set", pk) for pk in SignedApprovedSet.objects.filter(pin_status__in=unpinned).values_list("pk", flat=True)]
