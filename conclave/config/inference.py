"""Settings of the inference app, read from the environment (imported by conclave.settings)."""

BEAT_SCHEDULE: dict = {}
