"""Settings of the nodes app: telemetry from nodes (imported by conclave.settings)."""

from conclave.env import env_int

# Telemetry from nodes: body size, models per report, reports per node per hour.
TELEMETRY_MAX_BYTES = env_int("TELEMETRY_MAX_BYTES", 64 * 1024)
TELEMETRY_MAX_MODELS = env_int("TELEMETRY_MAX_MODELS", 32)
TELEMETRY_MAX_REPORTS_PER_HOUR = env_int("TELEMETRY_MAX_REPORTS_PER_HOUR", 60)

BEAT_SCHEDULE: dict = {}
