"""The fleet: Celery workers (inspection and heartbeats), running benchmarks, reporting nodes, serving nodes.

Two sources describe a worker. Celery's remote control (`inspect`) answers
for every worker on the broker: its queues, pool and process. The heartbeat
each inference worker publishes (`inference.serving.shared_state`) adds its loaded
models, memory and load errors. A worker is healthy when it answers
inspection and, if it publishes heartbeats, its last one is fresh and its
models loaded without error.
"""

from __future__ import annotations

import datetime as dt
import time

from django.conf import settings
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from inference.models import BenchmarkRun, BenchmarkStatus

_INSPECT_CACHE_KEY = "dashboards:fleet:inspect"


def celery_inspection() -> dict[str, dict]:
    """What each worker on the broker says about itself, reused for a few seconds.

    Inspection waits the whole timeout for replies (it cannot know how many
    workers there are), so panels polling every few seconds share one answer.
    """
    cached = cache.get(_INSPECT_CACHE_KEY)
    if cached is not None:
        return cached
    from conclave.celery import app

    inspector = app.control.inspect(timeout=settings.DASHBOARDS_INSPECT_TIMEOUT_SECONDS)
    try:
        stats = inspector.stats() or {}
        queues = inspector.active_queues() or {}
    except Exception:  # noqa: BLE001 - an unreachable broker shows as "no worker answered", not a 500
        stats, queues = {}, {}
    answered = {
        name: {"stats": stats.get(name) or {}, "queues": sorted(q["name"] for q in queues.get(name) or [])}
        for name in set(stats) | set(queues)
    }
    cache.set(_INSPECT_CACHE_KEY, answered, settings.DASHBOARDS_FLEET_CACHE_SECONDS)
    return answered


def worker_heartbeats() -> dict[str, dict]:
    from inference.serving.shared_state import coordination

    try:
        return coordination().statuses()
    except Exception:  # noqa: BLE001 - the shared state store being down is shown, not raised
        return {}


def fleet_workers(*, now: float | None = None) -> list[dict]:
    inspected = celery_inspection()
    heartbeats = worker_heartbeats()
    # After both reads: inspection waits up to its timeout, and heartbeats keep arriving meanwhile.
    now = now or time.time()
    stale_after = settings.DASHBOARDS_HEARTBEAT_STALE_SECONDS
    workers = []
    for name in sorted(set(inspected) | set(heartbeats)):
        answer = inspected.get(name)
        heartbeat = heartbeats.get(name)
        stats = (answer or {}).get("stats") or {}
        pool = stats.get("pool") or {}
        problems = []
        if answer is None:
            problems.append("did not answer inspection")
        last_heartbeat = age = None
        if heartbeat is not None:
            reported = heartbeat.get("reported_at")
            if reported:
                last_heartbeat = dt.datetime.fromtimestamp(reported, tz=dt.UTC)
                age = round(max(0.0, now - reported), 1)
                if age > stale_after:
                    problems.append(f"last heartbeat {age:.0f} s ago")
            for manifest_id, error in (heartbeat.get("errors") or {}).items():
                problems.append(f"model {manifest_id}: {error}")
        memory_mb = (heartbeat or {}).get("memory_mb")
        if memory_mb is None and stats.get("rusage", {}).get("maxrss"):
            # Linux reports maxrss in KiB.
            memory_mb = round(stats["rusage"]["maxrss"] / 1024, 1)
        workers.append(
            {
                "name": name,
                "host": name.split("@", 1)[-1],
                "queues": (answer or {}).get("queues", []),
                "pool": pool.get("implementation", "").rsplit(":", 1)[-1] or None,
                "concurrency": pool.get("max-concurrency"),
                "pid": stats.get("pid"),
                "loaded_models": [f"{m['name']}@{m['version']}" for m in (heartbeat or {}).get("models", [])],
                "loading": bool((heartbeat or {}).get("loading")),
                "approved_set_version": (heartbeat or {}).get("approved_set_version"),
                "memory_mb": memory_mb,
                "last_heartbeat": last_heartbeat,
                "heartbeat_age_seconds": age,
                "answered_inspection": answer is not None,
                "healthy": not problems,
                "problems": problems,
            }
        )
    return workers


def running_benchmarks() -> list[dict]:
    runs = (
        BenchmarkRun.objects.filter(status__in=[BenchmarkStatus.QUEUED, BenchmarkStatus.RUNNING])
        .select_related("manifest")
        .order_by("created_at", "id")
    )
    return [
        {
            "id": run.pk,
            "manifest": run.manifest_id,
            "label": str(run.manifest),
            "status": run.status,
            "stage": run.stage,
            "progress": round(run.progress, 4),
            "worker": run.worker,
            "created_at": run.created_at,
            "started_at": run.started_at,
            "url": reverse("dashboards:model", args=[run.manifest_id]),
        }
        for run in runs
    ]


def fleet_nodes() -> list[dict]:
    from nodes.selectors import node_reports_latest

    nodes = []
    for report in node_reports_latest():
        nodes.append(
            {
                "node": report.node.get_username(),
                "last_report": report.received_at,
                "signed_set_version": report.signed_set_version,
                "approved_set_version": report.approved_set_version,
                "circuit_breaker": report.circuit_breaker or None,
                "client_success_rate": (report.client or {}).get("success_rate"),
                "models": [
                    {"model": model, "requests": (report.summary.get(model) or {}).get("count", 0)}
                    for model in report.models
                ],
            }
        )
    return nodes


def fleet_serving_nodes(*, now: float | None = None) -> list[dict]:
    """Every serving node that ever joined: its models with what the router learnt, breaker, heartbeat, rotation.

    A node is in the rotation while its heartbeat is fresh and its breaker
    lets requests through. Traffic shares are over the last
    INFERENCE_ROUTING_SHARE_WINDOW_SECONDS, per model, among all nodes.
    """
    from inference.routing import records
    from inference.routing.policy import OPEN
    from nodes.selectors import serving_node_in_rotation, serving_nodes_all
    from registry.models import Manifest

    now = time.time() if now is None else now
    servings = serving_nodes_all()
    cids = sorted({cid for serving in servings for cid in serving.models or []})
    labels = {
        cid: f"{name}@{version}"
        for cid, name, version in Manifest.objects.filter(manifest_cid__in=cids).values_list(
            "manifest_cid", "model_name", "version"
        )
    }
    node_ids = [serving.account_id for serving in servings]
    views: dict[str, dict] = {}
    breakers: dict = {}
    try:
        for cid in cids:
            views[cid], breakers = records.records_read(node_ids, cid)
        if not cids and node_ids:
            _, breakers = records.records_read(node_ids, None)
    except Exception:  # noqa: BLE001 - the shared state store being down is shown as unknown, not raised
        views, breakers = {}, {}
    since = now - settings.INFERENCE_ROUTING_SHARE_WINDOW_SECONDS
    totals = {cid: sum(view.routed_since(since) for view in views.get(cid, {}).values()) for cid in cids}
    cooldown = settings.INFERENCE_ROUTING_BREAKER_COOLDOWN_SECONDS
    rows = []
    for serving in servings:
        breaker = breakers.get(serving.account_id)
        breaker_state = breaker.shown_state(now=now, cooldown=cooldown) if breaker else None
        models = []
        for cid in serving.models or []:
            view = views.get(cid, {}).get(serving.account_id)
            routed = view.routed_since(since) if view else 0
            models.append(
                {
                    "manifest_cid": cid,
                    "model": labels.get(cid, cid),
                    "fitness": None if view is None else round(view.fitness, 4),
                    "p50_ms": None if view is None or view.p50_ms is None else round(view.p50_ms, 3),
                    "p95_ms": None if view is None or view.p95_ms is None else round(view.p95_ms, 3),
                    "requests_in_window": routed,
                    "traffic_share": round(routed / totals[cid], 4) if totals.get(cid) else None,
                    "spot_checks": view.spot_checks if view else 0,
                    "spot_agreement": round(view.spot_agreed / view.spot_checks, 4)
                    if view and view.spot_checks
                    else None,
                }
            )
        fresh = serving_node_in_rotation(serving)
        rows.append(
            {
                "node": serving.account.get_username(),
                "url": serving.url,
                "last_heartbeat": serving.last_heartbeat_at,
                "heartbeat_age_seconds": round(max(0.0, now - serving.last_heartbeat_at.timestamp()), 1),
                "heartbeat_fresh": fresh,
                "breaker": breaker_state,
                "in_rotation": fresh and breaker_state != OPEN,
                "running": serving.running,
                "waiting": serving.waiting,
                "queue_capacity": serving.queue_capacity,
                "hardware": serving.hardware or {},
                "models": models,
            }
        )
    return rows


# The status card's words for /health's states.
STATUS_CARD_STATES = {"healthy": "online", "loading": "degraded", "degraded": "degraded", "unavailable": "offline"}


def serving_status() -> dict:
    """The status card: online, degraded or offline, with the model and memory, from what /health answers."""
    from inference.metrics import PROCESS_STARTED
    from inference.selectors import serving_health

    health = serving_health(process_started=PROCESS_STARTED).body
    return {
        "state": STATUS_CARD_STATES[health["status"]],
        "health": health["status"],
        "model": health["model"],
        "backend": health["backend"],
        "memory_mb": health["memory_mb"],
        "uptime_seconds": health["uptime_seconds"],
        "models": health["models"],
        "errors": health["errors"],
        "workers": len(health["workers"]),
    }


def fleet_overview() -> dict:
    workers = fleet_workers()
    return {
        "generated_at": timezone.now(),
        "workers": workers,
        "healthy_workers": sum(1 for worker in workers if worker["healthy"]),
        "benchmarks": running_benchmarks(),
        "nodes": fleet_nodes(),
        "routing": settings.INFERENCE_ROUTING,
        "serving_nodes": fleet_serving_nodes(),
    }
