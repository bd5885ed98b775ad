"""Settings of the core app's shared infrastructure: the IPFS backend (imported by conclave.settings)."""

from pathlib import Path

from conclave.config.paths import DATA_DIR
from conclave.env import env_float, env_str

IPFS_BACKEND = env_str("IPFS_BACKEND", "embedded")
IPFS_API_URL = env_str("IPFS_API_URL", "http://127.0.0.1:5001")
IPFS_API_TIMEOUT_SECONDS = env_float("IPFS_API_TIMEOUT_SECONDS", 60.0)
IPFS_STORE_DIR = Path(env_str("IPFS_STORE_DIR", str(DATA_DIR / "ipfs"))).resolve()

BEAT_SCHEDULE: dict = {}
