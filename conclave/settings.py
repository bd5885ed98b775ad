"""Conclave settings: everything comes from the environment.

Unset variables give the embedded default (SQLite, an in-process broker, the
embedded IPFS store under CONCLAVE_DATA_DIR); setting DATABASE_URL,
CELERY_BROKER_URL and IPFS_BACKEND=kubo moves the same code onto PostgreSQL,
Redis and Kubo.
"""

import datetime as dt
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from conclave.config import core, dashboards, governance, inference, nodes, registry, signing
from conclave.config.paths import BASE_DIR, DATA_DIR
from conclave.env import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_rate,
    env_str,
    secret_key_from_env_or_file,
)

CONCLAVE_ENV = env_str("CONCLAVE_ENV", "local")
PRODUCTION = CONCLAVE_ENV == "production"

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = secret_key_from_env_or_file(DATA_DIR, production=PRODUCTION)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", PRODUCTION)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Every HTML page (core/csp.py): scripts, styles and requests from the site
# itself only; no inline script, style or handler.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
# Swagger UI (/api/docs/) runs from this site's files (drf-spectacular-sidecar)
# and sets inline styles on its elements; it shows the schema, nothing users wrote.
CONTENT_SECURITY_POLICY_OVERRIDES = {
    "/api/docs/": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
}

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
    "axes",
    # Swagger UI's files from the install (PyPI), not from a CDN.
    "drf_spectacular_sidecar",
    "conclave",
    "core",
    "accounts",
    "audit",
    "registry",
    "signing",
    "nodes",
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
    "core.csp.ContentSecurityPolicyMiddleware",
    "core.api.exception_handler.BrokerUnavailableMiddleware",
    # Last: it answers a sign-in while its account or address is locked out.
    "axes.middleware.AxesMiddleware",
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
# Sign-in lockout (django-axes, attempts kept in the database, so every
# process sees them): after LOGIN_FAILURE_LIMIT
# failed sign-ins for one account, or from one address, further attempts (the
# right password too) get 429 with Retry-After until LOGIN_COOLOFF_SECONDS
# have passed. Covers the login page and the admin's.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = dt.timedelta(seconds=env_int("LOGIN_COOLOFF_SECONDS", 900))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "accounts.lockout.login_lockout_response"
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
    "DEFAULT_THROTTLE_CLASSES": ["core.api.throttles.ApiAnonThrottle", "core.api.throttles.ApiUserThrottle"],
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exception_handler.api_exception_handler",
    # `format` is a manifest filter (onnx | gguf), not a renderer switch.
    "URL_FORMAT_OVERRIDE": None,
    "DEFAULT_PARSER_CLASSES": [
        "core.api.parsers.JsonBodyParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
}
# Requests per client ("N/s|min|hour|day"; "off" for none): anonymous clients by
# address, authenticated ones by account; inference has its own pair.
THROTTLE_RATES = {
    "api_anon": env_rate("THROTTLE_API_ANON_RATE", "300/min"),
    "api_user": env_rate("THROTTLE_API_USER_RATE", "1200/min"),
    "inference_anon": env_rate("THROTTLE_INFERENCE_ANON_RATE", "60/min"),
    "inference_user": env_rate("THROTTLE_INFERENCE_USER_RATE", "600/min"),
}
# JSON bodies nesting arrays and objects deeper than this are refused (400)
# before they are parsed (core/api/parsers.py).
JSON_MAX_DEPTH = env_int("JSON_MAX_DEPTH", 64)
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
    "conclave.brokers.embedded:ResultBackend+memory://" if CELERY_EMBEDDED else CELERY_BROKER_URL,
)
if CELERY_EMBEDDED:
    CELERY_BROKER_URL = "memory://localhost/"
    # Wakes the worker and result waiters on arrival instead of polling
    # (README "Embedded broker", bench/celery_roundtrip.py).
    CELERY_BROKER_TRANSPORT = "conclave.brokers.embedded:Transport"
elif CELERY_BROKER_URL.startswith("redis://"):
    # Kombu's Redis transport, reusing its publishing client (conclave/brokers/redis.py).
    CELERY_BROKER_TRANSPORT = env_str("CELERY_BROKER_TRANSPORT", "conclave.brokers.redis:Transport")

# --- Cache -------------------------------------------------------------------
# Throttle counters live here, so every web process must
# share it: Redis whenever there is one. Unset CACHE_URL: the broker's Redis
# when CELERY_BROKER_URL is redis://, else this process's memory (embedded).
CACHE_URL = env_str("CACHE_URL", CELERY_BROKER_URL if CELERY_BROKER_URL.startswith("redis") else "")
if CACHE_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "KEY_PREFIX": "conclave",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "conclave"}}
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
# A broker outage: publishing (the web side) retries once and then answers
# 503, and workers retry for ever, never more than
# CELERY_BROKER_RETRY_MAX_SECONDS apart (conclave.celery.BrokerConnection), so
# serving resumes within about that long after the broker is back.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": env_float("CELERY_BROKER_RETRY_MAX_SECONDS", 1.0),
}
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS["socket_connect_timeout"] = 2.0
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}

# --- Per-app settings ---------------------------------------------------------
# One module per app under conclave/config/, merged here: every upper-case name
# it defines becomes a setting (two modules defining one name stop start-up),
# and its BEAT_SCHEDULE joins Celery beat's.
CELERY_BEAT_SCHEDULE: dict = {}
_app_settings_modules = (core, registry, signing, nodes, governance, inference, dashboards)


def _app_settings_merge(namespace: dict, modules) -> None:
    for module in modules:
        for name, value in vars(module).items():
            if not name.isupper() or name.startswith("_") or name == "BEAT_SCHEDULE":
                continue
            if name in namespace and namespace[name] is value:
                continue  # imported from a shared module (DATA_DIR), not defined here
            if name in namespace:
                raise ImproperlyConfigured(f"setting {name} is defined twice ({module.__name__})")
            namespace[name] = value
        namespace["CELERY_BEAT_SCHEDULE"].update(getattr(module, "BEAT_SCHEDULE", {}))


_app_settings_merge(globals(), _app_settings_modules)
