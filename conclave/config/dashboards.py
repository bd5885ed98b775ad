"""Settings of the dashboards app, read from the environment (imported by conclave.settings)."""

BEAT_SCHEDULE: dict = {}
