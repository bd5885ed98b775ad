"""The rollup task on a real worker, and the fleet as a real worker describes itself."""

import datetime as dt
import uuid

from django.core.cache import cache
from django.utils import timezone

from dashboards.models import LatencyRollup, Resolution
from dashboards.selectors.fleet import fleet_overview
from dashboards.tasks import metrics_rollup
from tests.dashboards.factories import sample, samples_add


def test_the_beat_schedules_the_rollup_task(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["dashboards-metrics-rollup"]
    assert entry["task"] == "dashboards.tasks.metrics_rollup"
    assert entry["schedule"] == settings.DASHBOARDS_ROLLUP_INTERVAL_SECONDS


def test_rollup_task_runs_on_a_worker(celery_worker):
    now = timezone.now()
    samples_add([sample(at=now - dt.timedelta(minutes=10)), sample(at=now - dt.timedelta(minutes=9))])
    result = metrics_rollup.delay().get(timeout=60)
    assert result["minute_rows"] == 2
    assert LatencyRollup.objects.filter(resolution=Resolution.MINUTE).count() == 2
    again = metrics_rollup.delay().get(timeout=60)
    assert again["minute_rows"] == 0


def test_fleet_shows_a_live_worker_with_its_queues_as_healthy(celery_worker, settings):
    settings.DASHBOARDS_INSPECT_TIMEOUT_SECONDS = 2.0
    cache.clear()
    data = fleet_overview()
    names = [w["name"] for w in data["workers"]]
    assert celery_worker.hostname in names
    worker = data["workers"][names.index(celery_worker.hostname)]
    assert worker["answered_inspection"] is True
    assert worker["healthy"] is True
    assert worker["problems"] == []
    assert "default" in worker["queues"]
    assert worker["pool"] and worker["pid"]
    assert data["healthy_workers"] >= 1


GHOST = f"celery@ghost-{uuid.uuid4().hex[:8]}"


def test_a_worker_that_stopped_heartbeating_is_unhealthy(db, settings):
    """A heartbeat without an inspection answer: the worker is gone or its broker connection is."""
    from inference.serving.shared_state import coordination

    settings.DASHBOARDS_INSPECT_TIMEOUT_SECONDS = 0.2
    cache.clear()
    state = coordination()
    state.status_publish(
        GHOST, {"models": [], "memory_mb": 12.5, "reported_at": timezone.now().timestamp() - 600}, ttl=30
    )
    try:
        ghost = next(w for w in fleet_overview()["workers"] if w["name"] == GHOST)
    finally:
        state.status_remove(GHOST)
    assert ghost["healthy"] is False
    assert "did not answer inspection" in ghost["problems"]
    assert any("last heartbeat" in p for p in ghost["problems"])
    assert ghost["memory_mb"] == 12.5
