"""The adoption history: every adoption, retirement and parameter change, from the audit trail.

The audit events are the source (they are what can be proven); the
proposals, manifests and rollups they name are joined in, a fixed number of
queries per page, not per entry.
"""

from __future__ import annotations

import datetime as dt

from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent, EventType
from dashboards.selectors.latency import model_latency
from governance.models import Proposal
from governance.selectors import proposal_tally
from registry.models import Manifest

HISTORY_EVENTS = (
    EventType.GENESIS_ADOPTION,
    EventType.MANIFEST_APPROVED,
    EventType.MANIFEST_RETIRED,
    EventType.PARAMETER_CHANGED,
)
KIND_OF_EVENT = {
    EventType.GENESIS_ADOPTION: "genesis",
    EventType.MANIFEST_APPROVED: "adoption",
    EventType.MANIFEST_RETIRED: "retirement",
    EventType.PARAMETER_CHANGED: "parameter-change",
}
# Served latency compared around an adoption: this long after it for the new
# model, this long before it for the one it replaced.
COMPARISON_SPAN = dt.timedelta(days=7)


def audit_link(object_type: str, object_id) -> str:
    return f"{reverse('audit:event-list')}?object_type={object_type}&object_id={object_id}"


def manifest_brief(manifest: Manifest) -> dict:
    return {
        "id": manifest.pk,
        "label": f"{manifest.model_name}@{manifest.version}",
        "model_name": manifest.model_name,
        "version": manifest.version,
        "kind": manifest.kind,
        "status": manifest.status,
        "license": manifest.license,
        "sha256": manifest.sha256,
        "ipfs_cid": manifest.ipfs_cid,
        "manifest_cid": manifest.manifest_cid,
        "files": [{"path": f.path, "role": f.role, "sha256": f.sha256, "cid": f.cid} for f in manifest.files.all()],
        "url": reverse("dashboards:model", args=[manifest.pk]),
        "audit_url": audit_link("manifest", manifest.pk),
    }


def proposal_brief(proposal: Proposal) -> dict:
    tally = proposal.final_tally or proposal_tally(proposal).as_dict()
    return {
        "id": proposal.pk,
        "title": proposal.title,
        "proposal_type": proposal.proposal_type,
        "outcome": proposal.outcome or None,
        "tally": tally,
        "executed_at": proposal.executed_at,
        "url": reverse("governance:proposal-detail", args=[proposal.pk]),
        "audit_url": audit_link("proposal", proposal.pk),
    }


def _benchmark_metrics(manifest: Manifest) -> dict:
    metrics = manifest.metrics or {}
    return {
        "latency_ms": metrics.get("latency_ms") or {},
        "avg_tokens_per_sec": metrics.get("avg_tokens_per_sec"),
        "quality_score": metrics.get("quality_score"),
        "memory_usage_mb": metrics.get("memory_usage_mb"),
    }


def _comparison(new: Manifest, replaced: Manifest | None, at: dt.datetime, now: dt.datetime) -> dict:
    def side(manifest: Manifest, start: dt.datetime, end: dt.datetime) -> dict:
        return {
            "manifest": manifest.pk,
            "label": f"{manifest.model_name}@{manifest.version}",
            "benchmark": _benchmark_metrics(manifest),
            "served": model_latency(model=f"{manifest.model_name}@{manifest.version}", start=start, end=end),
        }

    return {
        "new": side(new, at, min(at + COMPARISON_SPAN, now)),
        "replaced": None if replaced is None else side(replaced, at - COMPARISON_SPAN, at),
    }


def adoption_history(*, limit: int = 50, now: dt.datetime | None = None) -> list[dict]:
    """The newest `limit` entries of the timeline, newest first."""
    now = now or timezone.now()
    events = list(AuditEvent.objects.filter(event_type__in=HISTORY_EVENTS).order_by("-seq")[:limit])
    genesis_ids = {
        manifest_id
        for event in events
        if event.event_type == EventType.GENESIS_ADOPTION
        for manifest_id in event.payload.get("manifest_ids", [])
    }
    proposal_ids = {event.payload.get("proposal_id") for event in events} - {None}
    proposals = {p.pk: p for p in Proposal.objects.filter(pk__in=proposal_ids)}
    manifest_ids = set(genesis_ids)
    for event in events:
        if event.object_type == "manifest":
            manifest_ids.add(int(event.object_id))
    for proposal in proposals.values():
        for name in ("replaces", "candidate", "manifest", "replacement"):
            if proposal.payload.get(name):
                manifest_ids.add(proposal.payload[name])
    manifests = {m.pk: m for m in Manifest.objects.filter(pk__in=manifest_ids).prefetch_related("files")}

    entries = []
    for event in events:
        # Genesis approvals are shown once, inside their genesis entry.
        if (
            event.event_type == EventType.MANIFEST_APPROVED
            and event.payload.get("proposal_id") is None
            and int(event.object_id) in genesis_ids
        ):
            continue
        proposal = proposals.get(event.payload.get("proposal_id"))
        entry = {
            "kind": KIND_OF_EVENT[event.event_type],
            "at": event.created_at,
            "actor": event.actor_label,
            "reason": event.payload.get("reason", ""),
            "event": {"seq": event.seq, "type": event.event_type, "hash": event.hash},
            "audit_url": audit_link(event.object_type, event.object_id),
            "proposal": proposal_brief(proposal) if proposal else None,
            "manifest": None,
            "replaced": None,
            "manifests": [],
            "parameter": None,
            "comparison": None,
        }
        if event.event_type == EventType.GENESIS_ADOPTION:
            entry["manifests"] = [
                manifest_brief(manifests[i]) for i in event.payload.get("manifest_ids", []) if i in manifests
            ]
        elif event.event_type == EventType.PARAMETER_CHANGED:
            entry["parameter"] = {
                "name": event.payload.get("parameter"),
                "old_value": event.payload.get("old_value"),
                "new_value": event.payload.get("new_value"),
            }
        else:
            manifest = manifests.get(int(event.object_id))
            entry["manifest"] = manifest_brief(manifest) if manifest else None
            if proposal is not None and event.event_type == EventType.MANIFEST_APPROVED:
                replaced = manifests.get(proposal.payload.get("replaces"))
                entry["replaced"] = manifest_brief(replaced) if replaced else None
                if manifest is not None:
                    entry["comparison"] = _comparison(manifest, replaced, event.created_at, now)
        entries.append(entry)
    return entries
