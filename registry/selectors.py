"""Reads of the registry: manifests, their canonical documents, the approved set."""

import datetime as dt
from functools import lru_cache

from django.db.models import QuerySet

from registry.models import ApprovedSet, Manifest, ManifestStatus


def manifest_list(
    *, status: str | None = None, kind: str | None = None, fmt: str | None = None, model_name: str | None = None
) -> QuerySet[Manifest]:
    queryset = Manifest.objects.prefetch_related("files").order_by("model_name", "-created_at")
    if status:
        queryset = queryset.filter(status=status)
    if kind:
        queryset = queryset.filter(kind=kind)
    if fmt:
        queryset = queryset.filter(format=fmt)
    if model_name:
        queryset = queryset.filter(model_name=model_name)
    return queryset


def approved_manifests(kind: str | None = None) -> QuerySet[Manifest]:
    return manifest_list(status=ManifestStatus.APPROVED, kind=kind).order_by("kind", "model_name", "version")


def approved_set_current() -> ApprovedSet | None:
    return ApprovedSet.objects.order_by("-version").first()


def approved_set_current_head() -> tuple[int, str] | None:
    """(version, cid) of the current approved set: one indexed lookup, no document."""
    return ApprovedSet.objects.order_by("-version").values_list("version", "cid").first()


@lru_cache(maxsize=8)
def approved_set_body(version: int, cid: str) -> bytes:
    """The API body of an approved set: its pinned canonical bytes with `cid` added.

    A published set never changes and its CID names its content, so the body
    is cached per process under (version, cid).
    """
    document = bytes(ApprovedSet.objects.values_list("document", flat=True).get(version=version, cid=cid))
    return document[:-1] + b',"cid":"' + cid.encode() + b'"}'


def _timestamp(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None


def manifest_document(manifest: Manifest) -> dict:
    """The manifest in the roadmap's format; its RFC 8785 bytes give `manifest_cid`."""
    return {
        "model_name": manifest.model_name,
        "version": manifest.version,
        "kind": manifest.kind,
        "format": manifest.format,
        "quantization": manifest.quantization,
        "size_bytes": manifest.size_bytes,
        "sha256": manifest.sha256,
        "ipfs_cid": manifest.ipfs_cid,
        "license": manifest.license,
        "status": manifest.status,
        "approved_by_governance": manifest.approved_by_governance,
        "adoption_date": _timestamp(manifest.adoption_date),
        "metrics": manifest.metrics,
        "source": manifest.source,
        "files": [
            {"path": f.path, "role": f.role, "size_bytes": f.size_bytes, "sha256": f.sha256, "cid": f.cid}
            for f in sorted(manifest.files.all(), key=lambda f: f.path)
        ],
    }


def manifest_document_cids(manifest: Manifest) -> set[str]:
    """Every CID the manifest's document has had, from its audit events (each version describes the same files)."""
    from audit.models import AuditEvent

    named = AuditEvent.objects.filter(object_type="manifest", object_id=str(manifest.pk)).values_list(
        "payload__manifest_cid", flat=True
    )
    return {cid for cid in named if isinstance(cid, str) and cid} | {manifest.manifest_cid}
