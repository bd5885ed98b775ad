"""Settings come from the environment, with embedded defaults and clear errors.

Settings are read once per process, so each case loads `conclave.settings`
in a fresh interpreter with exactly the environment under test.
"""

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

_READ_SETTINGS = """
import json
import re
from django.conf import settings
db = settings.DATABASES["default"]
print(json.dumps({
    "engine": db["ENGINE"],
    "name": str(db["NAME"]),
    "debug": settings.DEBUG,
    "secret_key": settings.SECRET_KEY,
    "data_dir": str(settings.DATA_DIR),
    "broker": settings.CELERY_BROKER_URL,
    "result_backend": settings.CELERY_RESULT_BACKEND,
    "broker_transport": getattr(settings, "CELERY_BROKER_TRANSPORT", None),
    "ipfs_backend": settings.IPFS_BACKEND,
}))
"""

# Variables the test process itself carries (settings_test sets some) or that
# a developer's shell might: each case starts from none of them.
_CONTROLLED = (
    "DJANGO_SETTINGS_MODULE",
    "CONCLAVE_ENV",
    "CONCLAVE_DATA_DIR",
    "SECRET_KEY",
    "DEBUG",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "CELERY_BROKER_TRANSPORT",
    "IPFS_BACKEND",
)


def _load_settings(data_dir: Path, **env_vars: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in _CONTROLLED}
    env.update(DJANGO_SETTINGS_MODULE="conclave.settings", CONCLAVE_DATA_DIR=str(data_dir), **env_vars)
    return subprocess.run(
        [sys.executable, "-c", _READ_SETTINGS],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _settings(data_dir: Path, **env_vars: str) -> dict:
    result = _load_settings(data_dir, **env_vars)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_database_url_the_database_is_sqlite_under_the_data_dir(tmp_path):
    loaded = _settings(tmp_path)

    assert loaded["engine"] == "django.db.backends.sqlite3"
    assert Path(loaded["name"]) == tmp_path.resolve() / "conclave.sqlite3"


def test_database_url_selects_postgresql(tmp_path):
    loaded = _settings(tmp_path, DATABASE_URL="postgres://conclave:pw@db.example:5433/conclave")

    assert loaded["engine"] == "django.db.backends.postgresql"
    assert loaded["name"] == "conclave"


def test_without_broker_url_celery_uses_the_embedded_in_memory_broker(tmp_path):
    loaded = _settings(tmp_path)

    assert loaded["broker"].startswith("memory://")
    assert loaded["result_backend"].endswith("+memory://")  # an in-process result store
    assert loaded["ipfs_backend"] == "embedded"


def test_broker_url_is_also_the_result_backend(tmp_path):
    loaded = _settings(tmp_path, CELERY_BROKER_URL="redis://127.0.0.1:6379/3")

    assert loaded["broker"] == "redis://127.0.0.1:6379/3"
    assert loaded["result_backend"] == "redis://127.0.0.1:6379/3"
    assert loaded["broker_transport"] == "conclave.brokers.redis:Transport"
    stock = _settings(tmp_path, CELERY_BROKER_URL="redis://127.0.0.1:6379/3", CELERY_BROKER_TRANSPORT="redis")
    assert stock["broker_transport"] == "redis"


def test_production_without_secret_key_refuses_to_start(tmp_path):
    result = _load_settings(tmp_path, CONCLAVE_ENV="production")

    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY must be set when CONCLAVE_ENV=production" in result.stderr
    assert not (tmp_path / "secret_key").exists()


def test_production_uses_the_secret_key_from_the_environment(tmp_path):
    loaded = _settings(tmp_path, CONCLAVE_ENV="production", SECRET_KEY="from-the-environment")

    assert loaded["secret_key"] == "from-the-environment"
    assert not (tmp_path / "secret_key").exists()


def test_local_run_generates_a_private_secret_key_file_and_reuses_it(tmp_path):
    first = _settings(tmp_path)
    key_file = tmp_path / "secret_key"

    assert key_file.read_text().strip() == first["secret_key"]
    assert len(first["secret_key"]) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert _settings(tmp_path)["secret_key"] == first["secret_key"]


def test_separate_data_dirs_get_separate_secret_keys(tmp_path):
    assert _settings(tmp_path / "a")["secret_key"] != _settings(tmp_path / "b")["secret_key"]


def test_debug_is_off_unless_asked_for(tmp_path):
    assert _settings(tmp_path)["debug"] is False
    assert _settings(tmp_path, DEBUG="true")["debug"] is True
    assert _settings(tmp_path, DEBUG="0")["debug"] is False


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_a_malformed_boolean_fails_with_a_message_naming_the_variable(tmp_path, value):
    result = _load_settings(tmp_path, DEBUG=value)

    assert result.returncode != 0
    assert f"DEBUG must be a boolean (1/0, true/false), got {value!r}" in result.stderr


def test_env_example_documents_every_variable_the_settings_read():
    read = set()
    for path in [REPO_ROOT / "conclave" / "settings.py", *sorted((REPO_ROOT / "conclave" / "config").glob("*.py"))]:
        read |= set(re.findall(r'env_(?:str|bool|int|float|list)\(\s*"([A-Z0-9_]+)"', path.read_text()))
    read |= {"SECRET_KEY"}  # read by conclave.env.secret_key_from_env_or_file
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", (REPO_ROOT / ".env.example").read_text(), re.MULTILINE))

    assert read - documented == set(), "add these to .env.example with a comment and the default"


def test_app_settings_modules_merge_their_settings_and_beat_schedules_and_refuse_a_name_defined_twice():
    import types

    from django.core.exceptions import ImproperlyConfigured

    from conclave import settings as conclave_settings

    first = types.ModuleType("conclave.config.first")
    first.FIRST_LIMIT = 3
    first._PRIVATE = 1
    first.BEAT_SCHEDULE = {"first-job": {"task": "first.tasks.job", "schedule": 60.0}}
    second = types.ModuleType("conclave.config.second")
    second.FIRST_LIMIT = 4
    second.BEAT_SCHEDULE = {}
    namespace = {"CELERY_BEAT_SCHEDULE": {}}
    conclave_settings._app_settings_merge(namespace, [first])
    assert namespace == {
        "CELERY_BEAT_SCHEDULE": {"first-job": {"task": "first.tasks.job", "schedule": 60.0}},
        "FIRST_LIMIT": 3,
    }
    with pytest.raises(ImproperlyConfigured, match="FIRST_LIMIT is defined twice"):
        conclave_settings._app_settings_merge(namespace, [second])


def test_every_app_settings_module_is_merged():
    from django.conf import settings

    assert settings.TELEMETRY_MAX_BYTES == 64 * 1024
    assert settings.REGISTRY_PIN_RETRY_SECONDS == 300
    assert settings.IPFS_BACKEND
    assert {"registry-retry-unpinned", "signing-refresh", "governance-proposals-advance"} <= set(
        settings.CELERY_BEAT_SCHEDULE
    )
    assert settings.CELERY_BEAT_SCHEDULE["signing-refresh"]["task"] == "registry.signing_tasks.signing_refresh_task"
