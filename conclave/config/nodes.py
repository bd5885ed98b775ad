"""Settings of the nodes app: telemetry from nodes, serving nodes (imported by conclave.settings)."""

from conclave.env import env_bool, env_int

# Telemetry from nodes: body size, models per report, reports per node per hour.
TELEMETRY_MAX_BYTES = env_int("TELEMETRY_MAX_BYTES", 64 * 1024)
TELEMETRY_MAX_MODELS = env_int("TELEMETRY_MAX_MODELS", 32)
TELEMETRY_MAX_REPORTS_PER_HOUR = env_int("TELEMETRY_MAX_REPORTS_PER_HOUR", 60)

BEAT_SCHEDULE: dict = {}

# Serving nodes: a node leaves the rotation when its last heartbeat is older
# than this; nodes are told to beat every NODES_HEARTBEAT_SECONDS.
NODES_HEARTBEAT_SECONDS = env_int("NODES_HEARTBEAT_SECONDS", 2)
NODES_HEARTBEAT_TIMEOUT_SECONDS = env_int("NODES_HEARTBEAT_TIMEOUT_SECONDS", 6)
# Loopback, private and link-local node URLs are refused unless allowed (tests, a LAN deployment).
NODES_ALLOW_PRIVATE_URLS = env_bool("NODES_ALLOW_PRIVATE_URLS", False)
# A join or heartbeat body, and the models (manifest CIDs) one node may announce.
NODES_JOIN_MAX_BYTES = env_int("NODES_JOIN_MAX_BYTES", 16 * 1024)
NODES_MAX_MODELS = env_int("NODES_MAX_MODELS", 64)
