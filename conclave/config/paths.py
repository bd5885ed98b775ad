"""Where the project and its data live; every other settings module builds on these."""

from pathlib import Path

from conclave.env import env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent
DATA_DIR = Path(env_str("CONCLAVE_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)
