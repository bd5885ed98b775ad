"""Writes to the registry: registering, pinning, approving and retiring manifests.

Hashing and pinning (slow I/O) happen outside database transactions; each
database change is one short transaction that also writes its audit event,
and pins are enqueued only after that transaction commits.
"""

import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path

import rfc8785
from aleph_cid import compute_cid
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import Conflict, NotFound, ValidationFailed
from core.ipfs import PinError, StagedFile, pinning_backend
from core.ipfs.base import ObjectNotFound
from core.locks import transaction_lock
from registry import events
from registry.formats import FileFormatInvalid, model_file_check
from registry.models import (
    IDENTITY_FIELDS,
    ApprovedSet,
    FileRole,
    Manifest,
    ManifestFile,
    ManifestStatus,
    ModelFormat,
    ModelKind,
    PinStatus,
    empty_metrics,
)
from registry.selectors import manifest_document
from registry.signals import approved_set_published
from registry.staging import (
    INCOMING_PREFIX,
    FileSource,
    ProgressCallback,
    StagedModel,
    discard_staged,
    incoming_writer_gone,
    last_write,
    stage_files,
)

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_WEIGHTS_SUFFIX = {ModelFormat.ONNX: ".onnx", ModelFormat.GGUF: ".gguf"}
APPROVED_SET_LOCK = "registry:approved-set"


# --- Registration ------------------------------------------------------------


def _validate_registration(
    *, model_name: str, version: str, kind: str, fmt: str, license: str, quantization: str, files: Sequence[FileSource]
) -> None:
    errors: dict[str, list[str]] = {}
    if not _NAME_RE.match(model_name or ""):
        errors["model_name"] = ["Use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit."]
    if not _VERSION_RE.match(version or ""):
        errors["version"] = ["Use 1-64 letters, digits, '.', '_', '+' or '-', starting with a letter or digit."]
    if kind not in ModelKind.values:
        errors["kind"] = [f"Choose one of: {', '.join(ModelKind.values)}."]
    if fmt not in ModelFormat.values:
        errors["format"] = [f"Choose one of: {', '.join(ModelFormat.values)}."]
    if not license or len(license) > 64:
        errors["license"] = ["Give the license as an SPDX identifier (e.g. Apache-2.0), at most 64 characters."]
    if len(quantization or "") > 32:
        errors["quantization"] = ["At most 32 characters."]
    file_errors: list[str] = []
    names = [f.name for f in files]
    if not files:
        file_errors.append("Give at least one file.")
    if len(set(names)) != len(names):
        file_errors.append("File names must be unique.")
    for source in files:
        if not _FILE_NAME_RE.match(source.name):
            file_errors.append(
                f"{source.name!r}: file names are plain names (letters, digits, '.', '_', '-'), no folders."
            )
        for part in source.parts:
            if not part.is_file():
                file_errors.append(f"{source.name!r}: {part} is not a readable file.")
    if fmt in _WEIGHTS_SUFFIX and files:
        weights = [f for f in files if f.role == FileRole.WEIGHTS]
        if len(weights) != 1:
            file_errors.append(f"Exactly one weights file ({_WEIGHTS_SUFFIX[fmt]}) is required, found {len(weights)}.")
        elif not weights[0].name.endswith(_WEIGHTS_SUFFIX[fmt]):
            file_errors.append(f"The weights file of a {fmt} model must end in {_WEIGHTS_SUFFIX[fmt]}.")
        if fmt == ModelFormat.ONNX and "tokenizer.json" not in names:
            file_errors.append("An ONNX model needs its tokenizer.json beside it.")
    if file_errors:
        errors["files"] = file_errors
    if errors:
        first = next(iter(errors.items()))
        raise ValidationFailed(f"Cannot register the model: {first[0]}: {first[1][0]}", fields=errors)


def file_role_for(name: str, fmt: str) -> str:
    if name.endswith(_WEIGHTS_SUFFIX.get(fmt, "\0")):
        return FileRole.WEIGHTS
    if name == "tokenizer.json":
        return FileRole.TOKENIZER
    return FileRole.AUXILIARY


def manifest_register(
    *,
    model_name: str,
    version: str,
    kind: str,
    fmt: str,
    license: str,
    files: Sequence[FileSource],
    source: dict,
    quantization: str = "",
    actor=None,
    progress: ProgressCallback | None = None,
    pin: str = "async",
    expected_sha256: str | None = None,
    formats_check: bool = True,
) -> tuple[Manifest, bool]:
    """Register a model version; returns (manifest, created).

    Every file is streamed once, producing its sha256, its CID and a staged
    copy. The same name and version with identical bytes returns the existing
    manifest; with different bytes it is refused (a new version is needed).
    `pin` is "async" (a Celery task after commit), "sync" (pin before
    returning; for commands without a worker) or "none". With
    `expected_sha256`, weights that hash differently are refused. Each file
    must be what it claims (`registry.formats`: ONNX loads, GGUF parses,
    tokenizer loads), else a 400 names it; `formats_check=False` is only for
    tests whose placeholder bytes stand for a model's files.
    """
    _validate_registration(
        model_name=model_name,
        version=version,
        kind=kind,
        fmt=fmt,
        license=license,
        quantization=quantization,
        files=files,
    )
    existing = Manifest.objects.filter(model_name=model_name, version=version).first()
    staging_dir = Path(settings.REGISTRY_STAGING_DIR)
    preexisting_stage = set(staging_dir.iterdir()) if staging_dir.exists() else set()
    staged = stage_files(files, staging_dir=staging_dir, progress=progress)

    def discard_if_new() -> None:
        if staged.folder not in preexisting_stage and not _stage_in_use(staged):
            discard_staged(staged.folder)

    weights = next(f for f in staged.files if f.role == FileRole.WEIGHTS)
    if expected_sha256 and weights.sha256 != expected_sha256.lower():
        discard_if_new()
        raise ValidationFailed(
            f"{weights.name} has sha256 {weights.sha256}, not the expected {expected_sha256}: refusing to register it.",
            code="sha256_mismatch",
            fields={"files": [f"{weights.name}: sha256 mismatch."]},
        )
    if formats_check:
        _files_check_formats(staged, fmt=fmt, discard=discard_if_new)
    identity = {
        "model_name": model_name,
        "version": version,
        "kind": kind,
        "format": fmt,
        "quantization": quantization or "",
        "size_bytes": sum(f.size for f in staged.files),
        "sha256": weights.sha256,
        "ipfs_cid": staged.root_cid,
        "license": license,
    }
    if existing is not None:
        discard_if_new()
        return _same_identity_or_conflict(existing, identity), False
    try:
        with transaction.atomic():
            manifest = Manifest(**identity, source=source)
            manifest.full_clean(validate_unique=False)
            manifest.save()
            ManifestFile.objects.bulk_create(
                [
                    ManifestFile(
                        manifest=manifest, path=f.name, role=f.role, size_bytes=f.size, sha256=f.sha256, cid=f.cid
                    )
                    for f in staged.files
                ]
            )
            _refresh_manifest_cid(manifest)
            events.manifest_registered_event(manifest=manifest, actor=actor)
            if pin == "async":
                transaction.on_commit(lambda: _enqueue_pin(manifest.pk))
    except IntegrityError:
        # A concurrent registration of the same name and version won the race.
        existing = Manifest.objects.filter(model_name=model_name, version=version).first()
        if existing is None:
            discard_if_new()
            raise
        discard_if_new()
        return _same_identity_or_conflict(existing, identity), False
    except BaseException:
        discard_if_new()
        raise
    if pin == "sync":
        manifest_pin(manifest=manifest)
        manifest.refresh_from_db()
    return manifest, True


def _files_check_formats(staged: StagedModel, *, fmt: str, discard) -> None:
    errors = []
    for staged_file in staged.files:
        try:
            model_file_check(
                name=staged_file.name, role=staged_file.role, fmt=fmt, path=staged.folder / staged_file.name
            )
        except FileFormatInvalid as exc:
            errors.append(f"{staged_file.name}: {exc}.")
    if errors:
        discard()
        raise ValidationFailed(
            f"Cannot register the model: {errors[0]}", code="invalid_file_format", fields={"files": errors}
        )


def _stage_in_use(staged: StagedModel) -> bool:
    return Manifest.objects.filter(
        ipfs_cid=staged.root_cid, pin_status__in=[PinStatus.PENDING, PinStatus.FAILED]
    ).exists()


def _same_identity_or_conflict(existing: Manifest, identity: dict) -> Manifest:
    differing = [name for name in IDENTITY_FIELDS if getattr(existing, name) != identity[name]]
    if differing:
        raise Conflict(
            f"{existing} is already registered with different {', '.join(differing)}; "
            "identity fields never change: register the new bytes as a new version.",
            code="manifest_identity_immutable",
            fields={name: [f"Registered value is {getattr(existing, name)!r}."] for name in differing},
        )
    return existing


def _refresh_manifest_cid(manifest: Manifest) -> bytes:
    """Recompute the manifest's document CID; pin that exact document after commit.

    Each version of the document is pinned as it was, from the bytes whose CID
    the audit event of this change names: pinning "the current document" later
    would lose a version that changed again meanwhile (a benchmark's metrics
    landing between an approval and its pin), and a verifier reading the
    approval's CID would find nothing.
    """
    document = rfc8785.dumps(manifest_document(manifest))
    manifest.manifest_cid = compute_cid(document)
    Manifest.objects.filter(pk=manifest.pk).update(manifest_cid=manifest.manifest_cid, updated_at=timezone.now())
    cid = manifest.manifest_cid
    transaction.on_commit(lambda: manifest_document_version_pin(document=document, cid=cid))
    return document


def manifest_document_version_pin(*, document: bytes, cid: str) -> None:
    """Pin one version of a manifest document; on failure hand the bytes to a retrying task (nothing is lost)."""
    if compute_cid(document) != cid:
        raise ValueError(f"the document's CID is {compute_cid(document)}, not {cid}")
    try:
        pinning_backend().pin_bytes(document, cid=cid)
    except PinError as exc:
        from registry.tasks import manifest_document_version_pin_task

        logger.warning("could not pin manifest document %s now (%s); a task retries it", cid, exc)
        manifest_document_version_pin_task.delay(document.decode(), cid)


def _enqueue_pin(manifest_id: int) -> None:
    from registry.tasks import manifest_pin_task

    manifest_pin_task.delay(manifest_id)


def manifest_pin_request(*, manifest_ids: Sequence[int]) -> int:
    """Queue a re-pin of each manifest once the caller's transaction commits; returns how many."""
    manifest_ids = list(manifest_ids)
    for manifest_id in manifest_ids:
        transaction.on_commit(lambda manifest_id=manifest_id: _enqueue_pin(manifest_id))
    return len(manifest_ids)


# --- Metrics -------------------------------------------------------------------


def manifest_metrics_record(*, manifest: Manifest, metrics: dict, actor=None) -> Manifest:
    """Merge benchmark `metrics` into the manifest, refresh its document CID, pin the new document.

    Metrics are not identity fields: a benchmark may fill them in at any
    status. The manifest's canonical document (and so `manifest_cid`)
    includes them, so it is recomputed and pinned after the commit.
    """
    with transaction.atomic():
        locked = Manifest.objects.select_for_update().get(pk=manifest.pk)
        locked.metrics = {**empty_metrics(), **(locked.metrics or {}), **metrics}
        locked.save(update_fields=["metrics", "updated_at"])
        _refresh_manifest_cid(locked)
        events.manifest_metrics_recorded_event(manifest=locked, actor=actor, metrics=metrics)
    return locked


# --- Pinning -------------------------------------------------------------------


def manifest_pin(*, manifest: Manifest) -> Manifest:
    """Pin the manifest's files and its current document; record the outcome.

    Idempotent: files already pinned are not sent again. A failure leaves the
    manifest registered with pin status `failed` (the staged bytes stay for
    the retry) and re-raises PinError.
    """
    backend = pinning_backend()
    manifest = Manifest.objects.prefetch_related("files").get(pk=manifest.pk)
    files = list(manifest.files.all())
    multi = len(files) > 1
    try:
        if not backend.is_pinned(manifest.ipfs_cid):
            folder = Path(settings.REGISTRY_STAGING_DIR) / manifest.ipfs_cid
            staged = [StagedFile(name=f.path, path=folder / f.path, cid=f.cid, size=f.size_bytes) for f in files]
            backend.pin_files(staged, root_cid=manifest.ipfs_cid if multi else None)
        document = rfc8785.dumps(manifest_document(manifest))
        backend.pin_bytes(document, cid=compute_cid(document))
    except (PinError, OSError) as exc:
        with transaction.atomic():
            Manifest.objects.filter(pk=manifest.pk).update(pin_status=PinStatus.FAILED, pin_error=str(exc)[:2000])
            manifest.refresh_from_db()
            events.manifest_pin_failed_event(manifest=manifest, backend=backend.name, error=str(exc)[:500])
        raise PinError(str(exc)) from exc
    with transaction.atomic():
        locked = Manifest.objects.select_for_update().get(pk=manifest.pk)
        first_pin = locked.pin_status != PinStatus.PINNED
        locked.pin_status = PinStatus.PINNED
        locked.pin_error = ""
        locked.pinned_at = locked.pinned_at or timezone.now()
        locked.save(update_fields=["pin_status", "pin_error", "pinned_at", "updated_at"])
        if first_pin:
            events.manifest_pinned_event(manifest=locked, backend=backend.name)
    if not _stage_in_use_by_others(locked):
        discard_staged(Path(settings.REGISTRY_STAGING_DIR) / manifest.ipfs_cid)
    return locked


def staging_sweep(*, older_than_seconds: float | None = None) -> list[Path]:
    """Remove staged copies nothing will pin, and partial copies and uploads of dead processes.

    A staged folder outlives its purpose when registration failed after
    staging in a way that could not clean up (the process died, or a caller's
    own transaction rolled back after `manifest_register` returned). A folder
    is kept while a manifest whose pin is pending or failed names it (the
    retry needs the bytes), and anything younger than `older_than_seconds` is
    left alone, so a registration in progress is never touched.

    A partial copy (`.incoming-*`) goes as soon as the process writing it is
    known to have ended (it ran on this machine), or once nothing in it was
    written for REGISTRY_STAGING_INCOMING_STALE_SECONDS (a writer on another
    machine or container). A partial upload in FILE_UPLOAD_TEMP_DIR goes by
    the same staleness rule: an upload in progress writes all the time.
    """
    age = settings.REGISTRY_STAGING_SWEEP_AGE_SECONDS if older_than_seconds is None else older_than_seconds
    now = time.time()
    removed = _partial_uploads_sweep(now - settings.REGISTRY_STAGING_INCOMING_STALE_SECONDS)
    staging_dir = Path(settings.REGISTRY_STAGING_DIR)
    if not staging_dir.exists():
        return removed
    cutoff = now - age
    stale_cutoff = now - settings.REGISTRY_STAGING_INCOMING_STALE_SECONDS
    needed = set(Manifest.objects.exclude(pin_status=PinStatus.PINNED).values_list("ipfs_cid", flat=True))
    for entry in sorted(staging_dir.iterdir()):
        try:
            modified = entry.stat().st_mtime
            if entry.name.startswith(INCOMING_PREFIX):
                gone = incoming_writer_gone(entry.name)
                if gone is False or (gone is None and modified > cutoff and last_write(entry) > stale_cutoff):
                    continue
            elif modified > cutoff or entry.name in needed:
                continue
        except FileNotFoundError:
            continue
        if entry.is_dir():
            discard_staged(entry)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    if removed:
        logger.info("removed %d staged copies and partial uploads nothing will pin", len(removed))
    return removed


def _partial_uploads_sweep(cutoff: float) -> list[Path]:
    """Upload files (Django's temporary uploads) last written before `cutoff`."""
    folder = Path(settings.FILE_UPLOAD_TEMP_DIR) if settings.FILE_UPLOAD_TEMP_DIR else None
    if folder is None or not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        try:
            if not entry.is_file() or entry.stat().st_mtime > cutoff:
                continue
            entry.unlink()
        except FileNotFoundError:
            continue
        removed.append(entry)
    return removed


def _stage_in_use_by_others(manifest: Manifest) -> bool:
    return (
        Manifest.objects.filter(ipfs_cid=manifest.ipfs_cid)
        .exclude(pk=manifest.pk)
        .exclude(pin_status=PinStatus.PINNED)
        .exists()
    )


def manifest_verify_files(*, manifest: Manifest) -> list[str]:
    """Re-read every pinned file from the backend; return the problems found.

    An empty list means each file is held by the pinning backend and its
    bytes hash to the recorded sha256 and CID.
    """
    import hashlib

    from aleph_cid import CidHasher

    backend = pinning_backend()
    problems: list[str] = []
    if not backend.is_pinned(manifest.ipfs_cid):
        problems.append(f"{manifest.ipfs_cid} is not pinned")
    for record in manifest.files.all():
        sha = hashlib.sha256()
        cid = CidHasher.for_expected(record.cid)
        size = 0
        try:
            for chunk in backend.read(record.cid):
                sha.update(chunk)
                cid.update(chunk)
                size += len(chunk)
        except (ObjectNotFound, PinError, OSError) as exc:
            problems.append(f"{record.path}: cannot read pinned bytes ({exc})")
            continue
        if size != record.size_bytes:
            problems.append(f"{record.path}: size {size} != recorded {record.size_bytes}")
        if sha.hexdigest() != record.sha256:
            problems.append(f"{record.path}: sha256 does not match the manifest")
        if cid.finalize() != record.cid:
            problems.append(f"{record.path}: CID does not match the manifest")
    return problems


# --- Approval, retirement, the approved set ---------------------------------------


def _locked_manifest(manifest: Manifest) -> Manifest:
    try:
        return Manifest.objects.select_for_update().get(pk=manifest.pk)
    except Manifest.DoesNotExist as exc:
        raise NotFound(f"Manifest {manifest.pk} does not exist.") from exc


def _approve(manifest: Manifest, *, actor, reason: str, proposal_id: int | None) -> Manifest:
    locked = _locked_manifest(manifest)
    if locked.status == ManifestStatus.APPROVED:
        return locked
    if locked.status == ManifestStatus.RETIRED:
        raise Conflict(f"{locked} is retired; register a new version to adopt it again.", code="manifest_retired")
    if locked.pin_status != PinStatus.PINNED:
        raise Conflict(
            f"{locked} is not pinned yet (pin status: {locked.pin_status}); its bytes must be pinned before approval.",
            code="manifest_not_pinned",
        )
    locked.status = ManifestStatus.APPROVED
    locked.approved_by_governance = proposal_id is not None
    locked.adoption_date = timezone.now()
    locked.save(update_fields=["status", "approved_by_governance", "adoption_date", "updated_at"])
    _refresh_manifest_cid(locked)
    events.manifest_approved_event(manifest=locked, actor=actor, reason=reason, proposal_id=proposal_id)
    transaction.on_commit(lambda: _enqueue_pin(locked.pk))
    return locked


@transaction.atomic
def manifest_approve(*, manifest: Manifest, actor, reason: str, proposal_id: int | None = None) -> Manifest:
    """Approve a pinned candidate and publish the next approved set (idempotent)."""
    transaction_lock(APPROVED_SET_LOCK)
    was_approved = Manifest.objects.filter(pk=manifest.pk, status=ManifestStatus.APPROVED).exists()
    approved = _approve(manifest, actor=actor, reason=reason, proposal_id=proposal_id)
    if not was_approved:
        approved_set_publish(actor=actor, reason=reason)
    return approved


def _retire(manifest: Manifest, *, actor, reason: str, proposal_id: int | None) -> tuple[Manifest, bool]:
    """Retire under the caller's lock; returns (manifest, whether it had been approved)."""
    locked = _locked_manifest(manifest)
    if locked.status == ManifestStatus.RETIRED:
        return locked, False
    was_approved = locked.status == ManifestStatus.APPROVED
    locked.status = ManifestStatus.RETIRED
    locked.retired_at = timezone.now()
    locked.save(update_fields=["status", "retired_at", "updated_at"])
    _refresh_manifest_cid(locked)
    events.manifest_retired_event(manifest=locked, actor=actor, reason=reason, proposal_id=proposal_id)
    transaction.on_commit(lambda: _enqueue_pin(locked.pk))
    return locked, was_approved


@transaction.atomic
def manifest_retire(*, manifest: Manifest, actor, reason: str, proposal_id: int | None = None) -> Manifest:
    """Retire a manifest; if it was approved, publish the next approved set (idempotent)."""
    transaction_lock(APPROVED_SET_LOCK)
    retired, was_approved = _retire(manifest, actor=actor, reason=reason, proposal_id=proposal_id)
    if was_approved:
        approved_set_publish(actor=actor, reason=reason)
    return retired


@transaction.atomic
def manifest_replace(
    *, candidate: Manifest, replaced: Manifest, actor, reason: str, proposal_id: int | None = None
) -> tuple[Manifest, Manifest]:
    """Approve `candidate` and retire `replaced` as one change: one new approved-set version."""
    transaction_lock(APPROVED_SET_LOCK)
    was_approved = Manifest.objects.filter(pk=candidate.pk, status=ManifestStatus.APPROVED).exists()
    approved = _approve(candidate, actor=actor, reason=reason, proposal_id=proposal_id)
    retired, retired_was_approved = _retire(replaced, actor=actor, reason=reason, proposal_id=proposal_id)
    if not was_approved or retired_was_approved:
        approved_set_publish(actor=actor, reason=reason)
    return approved, retired


@transaction.atomic
def genesis_adopt(*, manifests: Sequence[Manifest], actor, reason: str) -> ApprovedSet | None:
    """Approve the founding models as one recorded operator action.

    Runs once in a registry's life: if any approved set was ever published,
    later adoptions go through governance and this returns None.
    """
    transaction_lock(APPROVED_SET_LOCK)
    if ApprovedSet.objects.exists():
        return None
    if not reason.strip():
        raise ValidationFailed("A genesis adoption needs a reason.", fields={"reason": ["Required."]})
    approved = [_approve(m, actor=actor, reason=reason, proposal_id=None) for m in manifests]
    events.genesis_adoption_event(manifests=approved, actor=actor, reason=reason)
    return approved_set_publish(actor=actor, reason=reason)


def approved_set_publish(*, actor, reason: str) -> ApprovedSet:
    """Write the next version of the approved set. Call inside the transaction that changed it."""
    from registry.selectors import approved_manifests

    transaction_lock(APPROVED_SET_LOCK)
    latest = ApprovedSet.objects.order_by("-version").values_list("version", flat=True).first() or 0
    generated_at = timezone.now()
    document = {
        "version": latest + 1,
        "generated_at": generated_at.isoformat().replace("+00:00", "Z"),
        "manifests": [manifest_document(m) for m in approved_manifests()],
    }
    data = rfc8785.dumps(document)
    approved_set = ApprovedSet.objects.create(
        version=latest + 1, generated_at=generated_at, document=data, cid=compute_cid(data)
    )
    events.approved_set_published_event(approved_set=approved_set, actor=actor, reason=reason)
    transaction.on_commit(lambda: _enqueue_approved_set_pin(approved_set.pk))
    transaction.on_commit(lambda: approved_set_published.send(sender=ApprovedSet, approved_set_id=approved_set.pk))
    return approved_set


def _enqueue_approved_set_pin(approved_set_id: int) -> None:
    from registry.tasks import approved_set_pin_task

    approved_set_pin_task.delay(approved_set_id)


def approved_set_pin(*, approved_set: ApprovedSet) -> ApprovedSet:
    data = bytes(approved_set.document)
    try:
        pinning_backend().pin_bytes(data, cid=approved_set.cid)
    except PinError:
        ApprovedSet.objects.filter(pk=approved_set.pk).update(pin_status=PinStatus.FAILED)
        raise
    ApprovedSet.objects.filter(pk=approved_set.pk).update(pin_status=PinStatus.PINNED)
    approved_set.pin_status = PinStatus.PINNED
    return approved_set
