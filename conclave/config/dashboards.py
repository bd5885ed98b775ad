"""Settings of the dashboards app, read from the environment (imported by conclave.settings)."""

from conclave.env import env_float, env_int

# How often the beat rolls latency samples up into per-minute (and per-hour) summaries.
DASHBOARDS_ROLLUP_INTERVAL_SECONDS = env_float("DASHBOARDS_ROLLUP_INTERVAL_SECONDS", 60.0)
# A minute is rolled up (final) only this long after it ended: samples reach
# the database in bulk every INFERENCE_SAMPLES_FLUSH_SECONDS, so a minute's
# last samples may land a little after it. Panels read the newer, not yet
# final minutes straight from the samples.
DASHBOARDS_ROLLUP_LATENESS_SECONDS = env_int("DASHBOARDS_ROLLUP_LATENESS_SECONDS", 120)
# Raw latency samples older than this (and already rolled up) are deleted, so
# storage grows with time, not with traffic. 0 keeps them forever.
DASHBOARDS_SAMPLE_RETENTION_HOURS = env_int("DASHBOARDS_SAMPLE_RETENTION_HOURS", 48)
# The fleet panel asks Celery workers over the broker (inspect); this is how
# long it waits for their replies, and how long an answer is reused.
DASHBOARDS_INSPECT_TIMEOUT_SECONDS = env_float("DASHBOARDS_INSPECT_TIMEOUT_SECONDS", 1.0)
DASHBOARDS_FLEET_CACHE_SECONDS = env_float("DASHBOARDS_FLEET_CACHE_SECONDS", 10.0)
# A worker whose last heartbeat is older than this is shown as unhealthy.
DASHBOARDS_HEARTBEAT_STALE_SECONDS = env_float("DASHBOARDS_HEARTBEAT_STALE_SECONDS", 30.0)
# How often panels refresh themselves in the browser.
DASHBOARDS_REFRESH_SECONDS = env_int("DASHBOARDS_REFRESH_SECONDS", 5)

BEAT_SCHEDULE: dict = {
    "dashboards-metrics-rollup": {
        "task": "dashboards.tasks.metrics_rollup",
        "schedule": DASHBOARDS_ROLLUP_INTERVAL_SECONDS,
    },
}
