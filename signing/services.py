"""Signing the approved set for nodes: root metadata (the trusted keys) and signed sets.

The metadata format and its checks live in `conclave_node.metadata`, shared
with the node agent; this module decides *what* to sign and keeps the rows.
Every document is verified with the node's own code before it is stored, so
a misconfiguration (a threshold the keys cannot meet, an online key root
does not list) fails here rather than on every node.

- `root_ensure` publishes root v1 on first use and a new root version when
  the configured keys or thresholds change (a rotation, which is how a key
  is revoked) or root nears expiry.
- `signed_set_publish_for(approved_set)` signs one approved set; call it
  after the transaction that published the set commits (the
  `signed_set_publish_task` does), and `signed_set_refresh` re-signs the
  current set before it expires (the beat, and lazily the API).
- Each signing carries the governed parameters' live values (`parameters`),
  so nodes enforce the limits governance set; a set whose latest signing
  carries other values than the live ones is signed anew (an executed
  parameter-change enqueues that, and the API does it lazily).
- Each signing appends a `signing.set_signed` audit event naming the
  document's CID (its `audit_head` is the head just before that event), so
  the exported history alone leads `conclave-verify` to every signed set.
"""

import datetime as dt
import json
import logging
from collections.abc import Sequence

from aleph_cid import compute_cid
from django.apps import apps
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.hashing import GENESIS_HASH
from audit.models import AuditChainHead, AuditCheckpoint
from conclave_node.errors import NodeError
from conclave_node.metadata import (
    ROOT_ROLE,
    SET_ROLE,
    SPEC_VERSION,
    Root,
    canonical,
    parse_root,
    sign_envelope,
    timestamp,
    verify_new_root,
    verify_signed_set,
    verify_trust_root,
)
from core.errors import ServiceUnavailable
from core.ipfs import PinError, pinning_backend
from core.locks import transaction_lock
from registry.models import ApprovedSet, Manifest, PinStatus
from signing import events
from signing.keys import KeyConfig, SigningKey, key_config
from signing.models import RootMetadata, SignedApprovedSet
from signing.selectors import (
    approved_manifest_cids,
    governed_parameters,
    root_current,
    signed_manifest_cids_current,
    signed_parameters,
    signed_set_current,
)

logger = logging.getLogger(__name__)

SIGNING_LOCK = "registry:signing"


class SigningUnavailable(ServiceUnavailable):
    default_code = "signing_unavailable"


# --- Root ----------------------------------------------------------------------------


def _role_from_keys(keys: Sequence[SigningKey], threshold: int) -> tuple[dict[str, dict], dict]:
    documents = {key.keyid: key.public_document for key in keys}
    return documents, {"keyids": sorted(documents), "threshold": threshold}


def _role_from_root(root: Root, role: str) -> tuple[dict[str, dict], dict]:
    allowed = root.role(role)
    documents = {keyid: root.envelope["signed"]["keys"][keyid] for keyid in allowed.keyids}
    return documents, {"keyids": sorted(allowed.keyids), "threshold": allowed.threshold}


def _load_root(row: RootMetadata) -> Root:
    return parse_root(json.loads(bytes(row.document)))


def root_ensure(
    *,
    now: dt.datetime | None = None,
    signer_keys: Sequence[SigningKey] = (),
    force: bool = False,
    strict: bool = False,
    actor=None,
) -> RootMetadata:
    """Return the current root, publishing a new version when one is due.

    A new version is due when there is none, when the configured online keys
    or threshold differ from root's (a rotation: keys left out are revoked),
    when configured root keys differ, or when root is within
    SIGNING_ROOT_RENEW_MARGIN_SECONDS of expiry. It needs signatures from a
    threshold of the previous root's root keys and of its own: configured
    root keys plus `signer_keys` (offline keys handed in by
    `manage.py signing_keys rotate`). Outside `strict` mode (the API and the
    beat), a due renewal that the available keys cannot sign is logged and
    the current root kept, unless the online keys no longer match (no set
    could verify) or root has expired.
    """
    now = now or timezone.now()
    config = key_config()
    with transaction.atomic():
        transaction_lock(SIGNING_LOCK)
        current_row = root_current()
        current = _load_root(current_row) if current_row else None
        online_docs, online_role = _role_from_keys(config.online_keys, config.online_threshold)
        if config.root_keys:
            root_docs, root_role = _role_from_keys(config.root_keys, config.root_threshold)
        elif current is not None:
            root_docs, root_role = _role_from_root(current, ROOT_ROLE)
        elif signer_keys:
            # Root v1 from offline keys handed in for this one signing.
            root_docs, root_role = _role_from_keys(_unique(tuple(signer_keys)), config.root_threshold)
        else:
            raise SigningUnavailable(
                "No root metadata is published and no root keys are configured: set SIGNING_ROOT_KEYS, or run "
                "`manage.py signing_keys rotate --root-key FILE` with the offline root keys.",
                code="signing_no_root",
            )
        online_mismatch = False
        if current is not None:
            online_mismatch = _role_dict(current, SET_ROLE) != online_role
            root_mismatch = _role_dict(current, ROOT_ROLE) != root_role
            renew_due = current.expires - now <= dt.timedelta(seconds=settings.SIGNING_ROOT_RENEW_MARGIN_SECONDS)
            if not (force or online_mismatch or root_mismatch or renew_due):
                return current_row
        try:
            return _root_publish(
                current=current,
                root_docs=root_docs,
                root_role=root_role,
                online_docs=online_docs,
                online_role=online_role,
                signers=_unique(config.root_keys + tuple(signer_keys)),
                now=now,
                actor=actor,
            )
        except SigningUnavailable:
            if strict or current is None or online_mismatch or current.expires <= now:
                raise
            logger.exception("root v%s is due for renewal but cannot be re-signed now", current.version)
            return current_row


def _role_dict(root: Root, role: str) -> dict:
    allowed = root.role(role)
    return {"keyids": sorted(allowed.keyids), "threshold": allowed.threshold}


def _unique(keys: Sequence[SigningKey]) -> tuple[SigningKey, ...]:
    seen: dict[str, SigningKey] = {}
    for key in keys:
        seen.setdefault(key.keyid, key)
    return tuple(seen.values())


def _root_publish(
    *,
    current: Root | None,
    root_docs: dict,
    root_role: dict,
    online_docs: dict,
    online_role: dict,
    signers: tuple[SigningKey, ...],
    now: dt.datetime,
    actor,
) -> RootMetadata:
    version = current.version + 1 if current else 1
    expires = now + dt.timedelta(seconds=settings.SIGNING_ROOT_LIFETIME_SECONDS)
    signed = {
        "_type": ROOT_ROLE,
        "spec_version": SPEC_VERSION,
        "version": version,
        "expires": timestamp(expires),
        "consistent_snapshot": False,
        "keys": {**root_docs, **online_docs},
        "roles": {ROOT_ROLE: root_role, SET_ROLE: online_role},
    }
    wanted = set(root_role["keyids"]) | (current.role(ROOT_ROLE).keyids if current else set())
    envelope = sign_envelope(signed, [key.private for key in signers if key.keyid in wanted])
    try:
        verify_trust_root(envelope)
        if current is not None:
            verify_new_root(current, envelope)
    except NodeError as exc:
        raise SigningUnavailable(
            f"Cannot publish root v{version}: {exc.message}. Sign it with the previous root keys: "
            "`manage.py signing_keys rotate --previous-root-key FILE ...`.",
            code="signing_root_unsigned",
        ) from exc
    data = canonical(envelope)
    row = RootMetadata.objects.create(
        version=version, document=data, cid=compute_cid(data), expires=expires.replace(microsecond=0)
    )
    events.root_published_event(
        root=row, actor=actor, signed=signed, previous_version=current.version if current else None
    )
    transaction.on_commit(lambda: _enqueue_pin("root", row.pk))
    logger.info("published root v%s (cid %s)", version, row.cid)
    return row


# --- Signed approved sets ---------------------------------------------------------


def signed_set_publish_for(
    approved_set: ApprovedSet, *, now: dt.datetime | None = None, force: bool = False
) -> SignedApprovedSet:
    """Sign `approved_set` with the online keys unless a fresh signing of it exists.

    Never signs a set older than the latest one signed: that one is returned
    instead, so a late task cannot roll nodes back. `force` signs anew even
    when the latest signing is still fresh.
    """
    now = now or timezone.now()
    root_row = root_ensure(now=now)
    config = key_config()
    with transaction.atomic():
        transaction_lock(SIGNING_LOCK)
        latest = signed_set_current()
        if latest is not None and not force:
            if latest.approved_set.version > approved_set.version:
                return latest
            fresh = latest.expires - now > dt.timedelta(seconds=settings.SIGNING_SET_RESIGN_MARGIN_SECONDS)
            if (
                latest.approved_set_id == approved_set.pk
                and latest.root_version == root_row.version
                and fresh
                and signed_parameters(latest.version, latest.cid) == governed_parameters()
                and signed_manifest_cids_current(latest.version, latest.cid)
            ):
                return latest
        return _signed_set_create(approved_set, root_row=root_row, config=config, latest=latest, now=now)


def _signed_set_create(
    approved_set: ApprovedSet, *, root_row: RootMetadata, config: KeyConfig, latest, now: dt.datetime
) -> SignedApprovedSet:
    version = latest.version + 1 if latest else 1
    expires = (now + dt.timedelta(seconds=settings.SIGNING_SET_LIFETIME_SECONDS)).replace(microsecond=0)
    document = json.loads(bytes(approved_set.document))
    adoptions = manifest_adoptions(document["manifests"])
    live_cids = approved_manifest_cids()
    signed = {
        "_type": SET_ROLE,
        "spec_version": SPEC_VERSION,
        "version": version,
        "expires": timestamp(expires),
        "signed_at": timestamp(now),
        "root_version": root_row.version,
        "approved_set": {
            "version": approved_set.version,
            "generated_at": document.get("generated_at"),
            "cid": approved_set.cid,
        },
        # manifest_cid: the registry's live CID of each manifest (serving nodes announce it when they join); it
        # differs from the entry's own CID once a benchmark recorded on the approved model changed its document.
        "manifests": [
            {
                **manifest,
                "manifest_cid": live_cids.get(f"{manifest['model_name']}@{manifest['version']}")
                or compute_cid(canonical(manifest)),
                "adoption": adoptions.get((manifest["model_name"], manifest["version"])),
            }
            for manifest in document["manifests"]
        ],
        "audit_head": audit_head_current(),
        "parameters": governed_parameters(),
    }
    root = _load_root(root_row)
    envelope = sign_envelope(signed, [key.private for key in config.online_keys])
    try:
        verify_signed_set(envelope, root=root, now=now)
    except NodeError as exc:
        raise SigningUnavailable(f"Cannot sign approved set v{approved_set.version}: {exc.message}") from exc
    data = canonical(envelope)
    row = SignedApprovedSet.objects.create(
        version=version,
        approved_set=approved_set,
        root_version=root_row.version,
        document=data,
        cid=compute_cid(data),
        signed_at=now,
        expires=expires,
    )
    events.set_signed_event(signed_set=row, signed=signed)
    transaction.on_commit(lambda: _enqueue_pin("set", row.pk))
    logger.info("signed approved set v%s as signed set v%s (expires %s)", approved_set.version, version, expires)
    return row


def signed_set_refresh(*, now: dt.datetime | None = None, force: bool = False) -> SignedApprovedSet | None:
    """Sign the current approved set if it is unsigned or its signing nears expiry; None if no set exists."""
    current = ApprovedSet.objects.order_by("-version").first()
    if current is None:
        return None
    return signed_set_publish_for(current, now=now, force=force)


def audit_head_current() -> dict:
    """The audit chain's head as a signed set carries it: `{seq, hash, checkpoint_cid}`.

    Nodes check that each new head extends the one they saw last, so a
    history rewritten after they witnessed it is refused. `checkpoint_cid`
    is the newest checkpoint pinned at or before the head (None before the
    first), from which anyone can walk the exported log.
    """
    head = AuditChainHead.objects.filter(id=1).values_list("last_seq", "last_hash").first()
    seq, digest = head if head else (0, GENESIS_HASH)
    checkpoint = (
        AuditCheckpoint.objects.filter(seq__lte=seq).order_by("-seq", "-pk").values_list("cid", flat=True).first()
    )
    return {"seq": seq, "hash": digest, "checkpoint_cid": checkpoint}


def manifest_adoptions(manifests: list[dict]) -> dict[tuple[str, str], dict]:
    """How each manifest came to be approved: the proposal and its final tally, or an operator action.

    Read from the latest `manifest.approved` audit event of each manifest
    (which names the proposal, if any) and the proposal's frozen tally.
    """
    if not manifests:
        return {}
    match = Q()
    for manifest in manifests:
        match |= Q(model_name=manifest["model_name"], version=manifest["version"])
    ids = {
        pk: (name, version)
        for pk, name, version in Manifest.objects.filter(match).values_list("pk", "model_name", "version")
    }
    audit_event = apps.get_model("audit", "AuditEvent")
    approvals: dict[str, dict] = {}
    for object_id, payload in (
        audit_event.objects.filter(
            event_type="manifest.approved", object_type="manifest", object_id__in=[str(pk) for pk in ids]
        )
        .order_by("seq")
        .values_list("object_id", "payload")
    ):
        approvals[object_id] = payload
    proposal_ids = {p["proposal_id"] for p in approvals.values() if p.get("proposal_id")}
    proposals = {}
    if proposal_ids and apps.is_installed("governance"):
        proposal_model = apps.get_model("governance", "Proposal")
        for proposal in proposal_model.objects.filter(pk__in=proposal_ids).only(
            "pk", "title", "final_tally", "closed_at"
        ):
            proposals[proposal.pk] = proposal
    adoptions = {}
    for pk, key in ids.items():
        payload = approvals.get(str(pk))
        if payload is None:
            continue
        proposal_id = payload.get("proposal_id")
        proposal = proposals.get(proposal_id)
        if proposal_id is None:
            adoptions[key] = {"proposal_id": None, "operator_action": True, "reason": payload.get("reason", "")}
        else:
            adoptions[key] = {
                "proposal_id": proposal_id,
                "operator_action": False,
                "title": proposal.title if proposal else None,
                "tally": proposal.final_tally if proposal else None,
                "decided_at": timestamp(proposal.closed_at) if proposal and proposal.closed_at else None,
            }
    return adoptions


# --- Pinning -------------------------------------------------------------------------


def _enqueue_pin(kind: str, pk: int) -> None:
    from signing.tasks import signed_metadata_pin_task

    signed_metadata_pin_task.delay(kind, pk)


def signed_metadata_pin_request(*, kind: str, pks: Sequence[int]) -> int:
    """Queue a re-pin of root ("root") or signed-set ("set") documents once the caller's transaction commits."""
    pks = list(pks)
    for pk in pks:
        transaction.on_commit(lambda pk=pk: _enqueue_pin(kind, pk))
    return len(pks)


def signed_metadata_pin(*, kind: str, pk: int) -> bool:
    """Pin a root or signed-set document; False if the row is gone. Raises PinError on failure."""
    model = RootMetadata if kind == "root" else SignedApprovedSet
    row = model.objects.filter(pk=pk).only("pk", "document", "cid", "pin_status").first()
    if row is None:
        return False
    try:
        pinning_backend().pin_bytes(bytes(row.document), cid=row.cid)
    except PinError:
        model.objects.filter(pk=pk).update(pin_status=PinStatus.FAILED)
        raise
    model.objects.filter(pk=pk).update(pin_status=PinStatus.PINNED)
    return True
