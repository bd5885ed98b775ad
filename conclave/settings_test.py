"""Settings for the test suite: the same settings module, on a throwaway data dir.

DATABASE_URL and CELERY_BROKER_URL pass through, so the suite runs on the
embedded defaults or on PostgreSQL + Redis unchanged.
"""

import os
import tempfile

os.environ.setdefault("CONCLAVE_DATA_DIR", tempfile.mkdtemp(prefix="conclave-test-"))
os.environ.setdefault("SECRET_KEY", "test-only-not-secret")

from conclave.settings import *  # noqa: E402,F403

ALLOWED_HOSTS = ["*"]
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not Django's shared-cache in-memory database: worker threads
    # then wait on SQLite's busy timeout instead of failing at once with
    # "database table is locked" when they write beside the test thread.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_AUTOREFRESH = True
# A benchmark per adoption proposal would put minutes of model runs on any
# test's worker; the tests of that behaviour switch it on themselves.
GOVERNANCE_BENCHMARK_CANDIDATES = False
# No request rates: the suite's clients would share an address and an
# allowance. The throttle tests set the rates they check.
THROTTLE_RATES = dict.fromkeys(THROTTLE_RATES)  # noqa: F405
if not os.environ.get("CACHE_URL"):
    # The broker's Redis is no place for a test to run cache.clear() (FLUSHDB).
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "conclave-test"}}
