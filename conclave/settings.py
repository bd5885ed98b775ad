"""Conclave settings: everything comes from the environment.

Unset variables give the embedded default (SQLite, an in-process broker, the
embedded IPFS store under CONCLAVE_DATA_DIR); setting DATABASE_URL,
CELERY_BROKER_URL and IPFS_BACKEND=kubo moves the same code onto PostgreSQL,
Redis and Kubo.
"""

from pathlib import Path

import dj_database_url

from conclave.env import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
    secret_key_from_env_or_file,
)

BASE_DIR = Path(__file__).resolve().parent.parent
CONCLAVE_ENV = env_str("CONCLAVE_ENV", "local")
PRODUCTION = CONCLAVE_ENV == "production"

DATA_DIR = Path(env_str("CONCLAVE_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = secret_key_from_env_or_file(DATA_DIR, production=PRODUCTION)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", PRODUCTION)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    # Swagger UI's files from the install (PyPI), not from a CDN.
    "drf_spectacular_sidecar",
    "conclave",
    "accounts",
    "audit",
    "registry",
    "governance",
    "inference",
    "dashboards",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "conclave.urls"
WSGI_APPLICATION = "conclave.wsgi.application"
ASGI_APPLICATION = "conclave.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # JIT compilation of the proposal list's many small subqueries costs
        # seconds and saves nothing at this size (bench/governance_tally.py).
        DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c jit=off"
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "conclave.sqlite3",
            "CONN_MAX_AGE": 60,
            # IMMEDIATE makes a write transaction take the lock when it starts,
            # so two writers queue instead of failing with "database is locked"
            # halfway through; WAL lets readers run beside the writer.
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/governance/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files (WhiteNoise) -------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(DATA_DIR / "staticfiles"))).resolve()
# Front-end libraries are installed from the npm registry at set-up
# (frontend/package.json); nothing third-party is committed.
STATICFILES_DIRS = [BASE_DIR / "static"]
_NODE_MODULES = BASE_DIR / "frontend" / "node_modules"
if _NODE_MODULES.exists():
    STATICFILES_DIRS.append(("vendor", _NODE_MODULES))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# WhiteNoise also serves straight from the apps' and the directories above
# (the finders), so the pages keep their CSS and scripts whatever data
# directory `manage.py up` starts with, collected into or not. An image that
# ran collectstatic at build (Dockerfile) turns it off and serves only the
# collected, precompressed files.
WHITENOISE_USE_FINDERS = env_bool("WHITENOISE_USE_FINDERS", True)

# --- REST API ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "conclave.api.exception_handler.api_exception_handler",
    # `format` is a manifest filter (onnx | gguf), not a renderer switch.
    "URL_FORMAT_OVERRIDE": None,
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Conclave API",
    "DESCRIPTION": "Governance and registry of the models a community-run AI network adopts.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # drf-spectacular-sidecar: Swagger UI and ReDoc served from this site.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery -------------------------------------------------------------------
# Unset CELERY_BROKER_URL means the embedded default: an in-memory broker and
# result store shared by the web server and the worker threads that
# `manage.py up` runs in one process. See README "Embedded broker".
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "")
CELERY_EMBEDDED = not CELERY_BROKER_URL
CELERY_RESULT_BACKEND = env_str(
    "CELERY_RESULT_BACKEND",
    "conclave.embedded_broker:ResultBackend+memory://" if CELERY_EMBEDDED else CELERY_BROKER_URL,
)
if CELERY_EMBEDDED:
    CELERY_BROKER_URL = "memory://localhost/"
    # Wakes the worker and result waiters on arrival instead of polling
    # (README "Embedded broker", bench/celery_roundtrip.py).
    CELERY_BROKER_TRANSPORT = "conclave.embedded_broker:Transport"
elif CELERY_BROKER_URL.startswith("redis://"):
    # Kombu's Redis transport, reusing its publishing client (conclave/redis_broker.py).
    CELERY_BROKER_TRANSPORT = env_str("CELERY_BROKER_TRANSPORT", "conclave.redis_broker:Transport")

# --- IPFS ---------------------------------------------------------------------
IPFS_BACKEND = env_str("IPFS_BACKEND", "embedded")
IPFS_API_URL = env_str("IPFS_API_URL", "http://127.0.0.1:5001")
IPFS_API_TIMEOUT_SECONDS = env_float("IPFS_API_TIMEOUT_SECONDS", 60.0)
IPFS_STORE_DIR = Path(env_str("IPFS_STORE_DIR", str(DATA_DIR / "ipfs"))).resolve()

# --- Registry -----------------------------------------------------------------
REGISTRY_STAGING_DIR = DATA_DIR / "staging"
REGISTRY_UPLOAD_MAX_BYTES = env_int("REGISTRY_UPLOAD_MAX_BYTES", 2 * 1024**3)
REGISTRY_PIN_RETRY_SECONDS = env_int("REGISTRY_PIN_RETRY_SECONDS", 300)
# Staged copies nothing will pin are removed once this old (hourly sweep).
REGISTRY_STAGING_SWEEP_AGE_SECONDS = env_int("REGISTRY_STAGING_SWEEP_AGE_SECONDS", 24 * 3600)
FILE_UPLOAD_TEMP_DIR = str(DATA_DIR / "uploads")
Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Uploads always go to disk: registration streams from a file path.
FILE_UPLOAD_HANDLERS = ["django.core.files.uploadhandler.TemporaryFileUploadHandler"]
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "inference.tasks.serve_*": {"queue": "inference"},
    "inference.tasks.benchmark_*": {"queue": "benchmark"},
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "registry-staging-sweep": {"task": "registry.tasks.registry_staging_sweep", "schedule": 3600.0},
    "registry-retry-unpinned": {
        "task": "registry.tasks.registry_retry_unpinned",
        "schedule": env_float("REGISTRY_PIN_RETRY_SECONDS", 300.0),
    },
}

# --- Per-app settings ---------------------------------------------------------
from conclave.config import dashboards as _dashboards_config  # noqa: E402
from conclave.config import governance as _governance_config  # noqa: E402
from conclave.config import inference as _inference_config  # noqa: E402
from conclave.config.dashboards import *  # noqa: E402,F403
from conclave.config.governance import *  # noqa: E402,F403
from conclave.config.inference import *  # noqa: E402,F403

for _config in (_governance_config, _inference_config, _dashboards_config):
    CELERY_BEAT_SCHEDULE.update(_config.BEAT_SCHEDULE)
del BEAT_SCHEDULE  # noqa: F821  (came in with the star imports above)

# --- Signing ------------------------------------------------------------------
from conclave.config import signing as _signing_config  # noqa: E402
from conclave.config.signing import *  # noqa: E402,F403

CELERY_BEAT_SCHEDULE.update(_signing_config.BEAT_SCHEDULE)
del BEAT_SCHEDULE  # noqa: F821
