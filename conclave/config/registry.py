"""Settings of the registry app (imported by conclave.settings)."""

from conclave.config.paths import DATA_DIR
from conclave.env import env_float, env_int

REGISTRY_STAGING_DIR = DATA_DIR / "staging"
REGISTRY_UPLOAD_MAX_BYTES = env_int("REGISTRY_UPLOAD_MAX_BYTES", 2 * 1024**3)
REGISTRY_PIN_RETRY_SECONDS = env_int("REGISTRY_PIN_RETRY_SECONDS", 300)
# Staged copies nothing will pin are removed once this old (hourly sweep).
REGISTRY_STAGING_SWEEP_AGE_SECONDS = env_int("REGISTRY_STAGING_SWEEP_AGE_SECONDS", 24 * 3600)
# A partial copy (staging/.incoming-*) or upload whose writer ran elsewhere is
# removed once nothing was written to it for this long; one whose process on
# this machine has ended goes at the next sweep.
REGISTRY_STAGING_INCOMING_STALE_SECONDS = env_int("REGISTRY_STAGING_INCOMING_STALE_SECONDS", 3600)

BEAT_SCHEDULE: dict = {
    "registry-staging-sweep": {"task": "registry.tasks.registry_staging_sweep", "schedule": 3600.0},
    "registry-retry-unpinned": {
        "task": "registry.tasks.registry_retry_unpinned",
        "schedule": env_float("REGISTRY_PIN_RETRY_SECONDS", 300.0),
    },
}
