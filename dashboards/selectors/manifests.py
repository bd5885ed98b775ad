"""The model page: one manifest's files and hashes, benchmarks over time, adoption record and served latency."""

from __future__ import annotations

import datetime as dt

from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from core.errors import NotFound
from dashboards.selectors.adoptions import audit_link, manifest_brief, proposal_brief
from dashboards.selectors.latency import model_latency
from governance.models import Proposal
from inference.models import BenchmarkRun
from registry.models import Manifest

BENCHMARK_RUNS_SHOWN = 50


def manifest_page(*, manifest_id: int, now: dt.datetime | None = None) -> dict:
    now = now or timezone.now()
    manifest = Manifest.objects.prefetch_related("files").filter(pk=manifest_id).first()
    if manifest is None:
        raise NotFound(f"Manifest {manifest_id} does not exist.")
    label = f"{manifest.model_name}@{manifest.version}"

    runs = BenchmarkRun.objects.filter(manifest=manifest).order_by("-created_at", "-id")[:BENCHMARK_RUNS_SHOWN]
    benchmarks = [
        {
            "id": run.pk,
            "status": run.status,
            "progress": round(run.progress, 4),
            "stage": run.stage,
            "created_at": run.created_at,
            "finished_at": run.finished_at,
            "worker": run.worker,
            "hardware": run.hardware,
            "library_versions": run.library_versions,
            "latency_ms": (run.results or {}).get("latency_ms") or {},
            "avg_tokens_per_sec": (run.results or {}).get("avg_tokens_per_sec"),
            "quality_score": (run.results or {}).get("quality_score"),
            "memory_usage_mb": (run.results or {}).get("memory_usage_mb"),
            "error": run.error,
        }
        for run in reversed(list(runs))
    ]

    events = AuditEvent.objects.filter(object_type="manifest", object_id=str(manifest.pk)).order_by("seq")
    record = [
        {
            "seq": event.seq,
            "type": event.event_type,
            "at": event.created_at,
            "actor": event.actor_label,
            "reason": event.payload.get("reason", ""),
            "proposal_id": event.payload.get("proposal_id"),
            "hash": event.hash,
        }
        for event in events
    ]
    naming = (
        Q(payload__candidate=manifest.pk)
        | Q(payload__replaces=manifest.pk)
        | Q(payload__manifest=manifest.pk)
        | Q(payload__replacement=manifest.pk)
    )
    proposals = [proposal_brief(p) for p in Proposal.objects.filter(naming).order_by("created_at", "id")]

    return {
        "manifest": {
            **manifest_brief(manifest),
            "format": manifest.format,
            "quantization": manifest.quantization,
            "size_bytes": manifest.size_bytes,
            "approved_by_governance": manifest.approved_by_governance,
            "adoption_date": manifest.adoption_date,
            "retired_at": manifest.retired_at,
            "pin_status": manifest.pin_status,
            "source": manifest.source,
            "metrics": manifest.metrics,
            "files": [
                {
                    "path": f.path,
                    "role": f.role,
                    "size_bytes": f.size_bytes,
                    "sha256": f.sha256,
                    "cid": f.cid,
                    "gateway_url": reverse("ipfs-gateway", args=[f.cid]),
                }
                for f in manifest.files.all()
            ],
        },
        "benchmarks": benchmarks,
        "adoption_record": record,
        "proposals": proposals,
        "served_24h": model_latency(model=label, start=now - dt.timedelta(hours=24), end=now),
        "audit_url": audit_link("manifest", manifest.pk),
    }


def manifest_ids_by_label(labels) -> dict[str, int]:
    """The ids of the manifests named "model_name@version" in `labels`."""
    ids = {}
    for manifest_id, name, version in Manifest.objects.values_list("id", "model_name", "version"):
        label = f"{name}@{version}"
        if label in labels:
            ids[label] = manifest_id
    return ids
