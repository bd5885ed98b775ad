"""Settings of the signing app: the signed approved set (imported by conclave.settings).

Key files: `SIGNING_ROOT_KEYS` and `SIGNING_ONLINE_KEYS` are comma-separated
paths of Ed25519 PEM keys. Leave both unset on embedded runs: keys are then
created under `SIGNING_KEYS_DIR` (default `<CONCLAVE_DATA_DIR>/keys`).
"""

from conclave.env import env_float, env_int, env_list, env_str

_HOUR = 3600
_DAY = 24 * _HOUR

SIGNING_ROOT_KEYS = env_list("SIGNING_ROOT_KEYS", [])
SIGNING_ROOT_THRESHOLD = env_int("SIGNING_ROOT_THRESHOLD", 1)
SIGNING_ONLINE_KEYS = env_list("SIGNING_ONLINE_KEYS", [])
SIGNING_ONLINE_THRESHOLD = env_int("SIGNING_ONLINE_THRESHOLD", 1)
SIGNING_KEYS_DIR = env_str("SIGNING_KEYS_DIR", "")

# A signed set expires this long after signing; it is re-signed (on the beat,
# or on the first request) once less than the margin is left. The lifetime
# bounds how long a frozen mirror can keep a node on an old set.
SIGNING_SET_LIFETIME_SECONDS = env_int("SIGNING_SET_LIFETIME_SECONDS", _DAY)
SIGNING_SET_RESIGN_MARGIN_SECONDS = env_int("SIGNING_SET_RESIGN_MARGIN_SECONDS", _DAY // 2)
SIGNING_ROOT_LIFETIME_SECONDS = env_int("SIGNING_ROOT_LIFETIME_SECONDS", 365 * _DAY)
SIGNING_ROOT_RENEW_MARGIN_SECONDS = env_int("SIGNING_ROOT_RENEW_MARGIN_SECONDS", 30 * _DAY)
SIGNING_REFRESH_INTERVAL_SECONDS = env_float("SIGNING_REFRESH_INTERVAL_SECONDS", float(_HOUR))

BEAT_SCHEDULE: dict = {
    "signing-refresh": {
        "task": "registry.signing_tasks.signing_refresh_task",
        "schedule": SIGNING_REFRESH_INTERVAL_SECONDS,
    },
}
