"""Breedlab settings, read from the environment.

Defaults work out of the box for one machine: SQLite, media, datasets and model files under
var/. Every knob is an environment variable (see README "Configuration"); a bad value stops
the process at start with one sentence naming the variable.
"""

from __future__ import annotations

import re
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from config.env import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_path,
    env_str,
    launcher_value,
    read_secret_key,
)
from training.objectstore import parse_storage_url

BASE_DIR = Path(__file__).resolve().parent.parent

# 1. Core ------------------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)
# The storage root (section 2) is needed here: without SECRET_KEY/SECRET_KEY_FILE the key that
# ``make run`` generated into var/secret_key is used, so manage.py works in the same checkout.
_VAR_DIR = env_path("BREEDLAB_VAR_DIR", BASE_DIR / "var", base=BASE_DIR)
SECRET_KEY = read_secret_key(BASE_DIR, debug=DEBUG, generated=_VAR_DIR / "secret_key")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "classifier",
]

MIDDLEWARE = [
    # First: an oversized body is refused before anything (CSRF included) reads it.
    "classifier.web.bodylimit.BodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            # The app's tags live in its web/ package, not at classifier/templatetags.
            "libraries": {
                "run_format": "classifier.web.templatetags.run_format",
                "names": "classifier.web.templatetags.names",
            },
        },
    },
]

# 2. Files -----------------------------------------------------------------------------------
# Everything the application writes lives under one storage root (var/ by default), which can
# be a shared mount when web processes and workers run on different hosts.
VAR_DIR = env_path("BREEDLAB_VAR_DIR", BASE_DIR / "var", base=BASE_DIR)
MEDIA_ROOT = env_path("MEDIA_ROOT", VAR_DIR / "media", base=BASE_DIR)
MEDIA_URL = "/media/"
# Datasets, run folders and model versions: a local folder (the default: VAR_DIR; every host
# mounts it) or s3://bucket/prefix (endpoint and credentials from the AWS_* variables). With S3,
# DATASETS_ROOT and RUNS_ROOT are this host's caches of the bucket (classifier/storage/remote.py).
BREEDLAB_STORAGE_URL = env_str("BREEDLAB_STORAGE_URL", "") or str(VAR_DIR)
try:
    BREEDLAB_STORAGE_S3 = parse_storage_url(BREEDLAB_STORAGE_URL)
except ValueError as exc:
    raise ImproperlyConfigured(f"BREEDLAB_STORAGE_URL: {exc}") from None
BREEDLAB_STORAGE_CACHE_DIR = env_path("BREEDLAB_STORAGE_CACHE_DIR", VAR_DIR / "cache" / "storage", base=BASE_DIR)
_FILES_ROOT = BREEDLAB_STORAGE_CACHE_DIR if BREEDLAB_STORAGE_S3 else env_path("BREEDLAB_STORAGE_URL", VAR_DIR, base=BASE_DIR)
DATASETS_ROOT = env_path("BREEDLAB_DATASETS_ROOT", _FILES_ROOT / "datasets", base=BASE_DIR)
RUNS_ROOT = env_path("BREEDLAB_RUNS_ROOT", _FILES_ROOT / "runs", base=BASE_DIR)
STATIC_URL = "/static/"
STATIC_ROOT = env_path("STATIC_ROOT", VAR_DIR / "static", base=BASE_DIR)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Upload limits. Images for classification are small; dataset archives are streamed to disk.
BREEDLAB_MAX_IMAGE_BYTES = env_int("BREEDLAB_MAX_IMAGE_BYTES", 10 * 1024 * 1024, minimum=1024)
BREEDLAB_MAX_IMAGE_PIXELS = env_int("BREEDLAB_MAX_IMAGE_PIXELS", 40_000_000, minimum=10_000)
BREEDLAB_MAX_ARCHIVE_BYTES = env_int("BREEDLAB_MAX_ARCHIVE_BYTES", 1024 * 1024 * 1024, minimum=1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024  # larger uploads stream to a temporary file
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024  # non-file form fields only

# 3. Database --------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL Django understands: {exc}.") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while the worker writes progress.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# 4. Redis: Celery broker and the shared cache (rate limits, model version checks) -----------
# Without REDIS_URL: the embedded Redis that a running ``make run`` started (var/launcher.json).
REDIS_URL = env_str("REDIS_URL", launcher_value(VAR_DIR, "redis_url") or "redis://127.0.0.1:6379/0")
if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(f"REDIS_URL={REDIS_URL!r} must start with redis://, rediss:// or unix://.")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "breedlab",
        "TIMEOUT": 300,
    }
}
if env_bool("BREEDLAB_LOCAL_CACHE", False):
    CACHES["default"] = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None  # results live in our own database rows
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_MAX_TASKS_PER_CHILD = 1  # CUDA does not survive fork: a fresh child per run
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A broker restart must not cancel a training run in progress: it keeps running, reconnects, and
# acknowledges its message when it ends (tests/classifier/runs/test_broker_faults.py).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
BREEDLAB_MAX_RUN_SECONDS = env_int("BREEDLAB_MAX_RUN_SECONDS", 6 * 3600, minimum=60)
# The broker re-delivers an unacknowledged task after this long; it must outlast the longest run.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": BREEDLAB_MAX_RUN_SECONDS + 3600}
# Training runs on the `training` queue; the reapers and periodic clean-ups on `maintenance`, served
# by a light worker of their own so that they run on time while every training worker is busy.
CELERY_TASK_ROUTES = {
    "classifier.tasks.execute_run": {"queue": "training"},
    "classifier.tasks.*": {"queue": "maintenance"},
}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = "UTC"

# 5. Auth, i18n, API -------------------------------------------------------------------------
# Logins are throttled per client address and per user name (classifier/web/auth.py).
AUTHENTICATION_BACKENDS = ["classifier.web.auth.ThrottledModelBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("ru", _("Russian"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_TZ = True

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "classifier.web.schema.BreedlabAutoSchema",
    "EXCEPTION_HANDLER": "classifier.web.errors.json_error_handler",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Breedlab API",
    "DESCRIPTION": "Classify dog photos with fine-tuned models and manage training runs.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # served from our own static files, never a CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "classifier.models.TrainingRun.Status",
        "DatasetStatusEnum": "classifier.models.Dataset.Status",
    },
}

# 6. Security: HTTPS=1 behind TLS turns on the settings `check --deploy` asks for --------------
HTTPS = env_bool("HTTPS", False)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", HTTPS)
# Behind a reverse proxy: trust its X-Forwarded-Proto, and take the client address (rate limits)
# from the last hop it appended to X-Forwarded-For.
BREEDLAB_BEHIND_PROXY = env_bool("BEHIND_PROXY", False)
if BREEDLAB_BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

# 7. Breedlab --------------------------------------------------------------------------------
BREEDLAB_HEARTBEAT_TIMEOUT = env_int("BREEDLAB_HEARTBEAT_TIMEOUT", 120, minimum=1)
# A run whose worker was lost is re-queued to resume from its last epoch until it has been
# started this many times; then it fails ("worker lost").
BREEDLAB_MAX_RUN_ATTEMPTS = env_int("BREEDLAB_MAX_RUN_ATTEMPTS", 2, minimum=1)
# A run still queued this many seconds after it was last sent to the broker is sent again (its
# message was lost: the web process died between commit and enqueue, or Redis restarted without
# its append-only file). The atomic claim makes a duplicate message harmless.
BREEDLAB_REQUEUE_AFTER_SECONDS = env_int("BREEDLAB_REQUEUE_AFTER_SECONDS", 1800, minimum=60)
# An archive import still "importing" after this many seconds was interrupted (its web process
# stopped mid-import): the periodic reaper marks it failed and removes its partial folder.
BREEDLAB_IMPORT_TIMEOUT = env_int("BREEDLAB_IMPORT_TIMEOUT", 7200, minimum=60)
# Dataset photos (thumbnails, confusion-matrix cells) for staff only, or (1) for everyone.
BREEDLAB_PUBLIC_DATASET_IMAGES = env_bool("BREEDLAB_PUBLIC_DATASET_IMAGES", False)
# Anonymous visitors' predictions and their photos are removed after this many days (hourly task).
BREEDLAB_ANONYMOUS_RETENTION_DAYS = env_int("BREEDLAB_ANONYMOUS_RETENTION_DAYS", 30, minimum=1)
# Failed logins per client address (and per user name) before login is refused for the window.
BREEDLAB_LOGIN_FAILURES = env_int("BREEDLAB_LOGIN_FAILURES", 10, minimum=1)
BREEDLAB_LOGIN_WINDOW_SECONDS = env_int("BREEDLAB_LOGIN_WINDOW_SECONDS", 900, minimum=10)
# Exported model archives (ONNX + weights + model card) for everyone, or for staff only.
BREEDLAB_PUBLIC_MODEL_EXPORT = env_bool("BREEDLAB_PUBLIC_MODEL_EXPORT", False)
# Deleted runs, dataset versions and model versions keep their files this many hours (they can be
# restored meanwhile); the periodic purge (celery beat) then removes files and rows.
BREEDLAB_DELETE_GRACE_HOURS = env_float("BREEDLAB_DELETE_GRACE_HOURS", 24.0, minimum=0)
BREEDLAB_HEALTH_TIMEOUT = env_float("BREEDLAB_HEALTH_TIMEOUT", 1.0, minimum=0.05, maximum=30)
# Workers write a heartbeat this often (classifier/web/heartbeat.py); /api/health reads it.
BREEDLAB_WORKER_HEARTBEAT_SECONDS = env_int("BREEDLAB_WORKER_HEARTBEAT_SECONDS", 15, minimum=1, maximum=600)

# Serving (classifier/serving/cache.py). Threads per inference call: gunicorn runs WEB_CONCURRENCY
# processes x WEB_THREADS threads; with 1 thread per call, concurrent requests fill the cores
# instead of fighting over them (bench/RESULTS-serving.md).
BREEDLAB_INFERENCE_THREADS = env_int("BREEDLAB_INFERENCE_THREADS", 1, minimum=1, maximum=64)
BREEDLAB_INFERENCE_ENGINE = env_str("BREEDLAB_INFERENCE_ENGINE", "onnxruntime")
if BREEDLAB_INFERENCE_ENGINE not in ("onnxruntime", "torch"):
    raise ImproperlyConfigured(f"BREEDLAB_INFERENCE_ENGINE={BREEDLAB_INFERENCE_ENGINE!r} must be onnxruntime or torch.")
# Serve a model version's int8 graph when it agrees with fp32 (classifier/serving/int8.py); off: fp32 always.
BREEDLAB_INT8 = env_bool("BREEDLAB_INT8", True)
# Exported ONNX graphs and calibrations that cannot be written next to a model (RUNS_ROOT may be read-only).
BREEDLAB_SERVING_CACHE_DIR = env_path("BREEDLAB_SERVING_CACHE_DIR", VAR_DIR / "cache" / "serving", base=BASE_DIR)
# The pretrained network that answers "before" (and alone, while no fine-tuned model is active).
BREEDLAB_BASE_BACKBONE = env_str("BREEDLAB_BASE_BACKBONE", "efficientnet_lite0")
# Web processes load the serving model in the background as they start (config/wsgi.py).
BREEDLAB_WARM_UP = env_bool("BREEDLAB_WARM_UP", True)
BREEDLAB_MAX_BATCH_IMAGES = env_int("BREEDLAB_MAX_BATCH_IMAGES", 16, minimum=1, maximum=256)
# Prediction requests per client: "<n>/<s|m|h|d>", or "off".
BREEDLAB_RATE_LIMIT = env_str("BREEDLAB_RATE_LIMIT", "60/m").strip().lower()
if BREEDLAB_RATE_LIMIT != "off" and not re.fullmatch(r"[1-9]\d*/[smhd]", BREEDLAB_RATE_LIMIT):
    raise ImproperlyConfigured(f"BREEDLAB_RATE_LIMIT={BREEDLAB_RATE_LIMIT!r} must look like 60/m (per s, m, h or d) or be off.")
# "Wrong breed?" corrections per client (same format).
BREEDLAB_FEEDBACK_RATE_LIMIT = env_str("BREEDLAB_FEEDBACK_RATE_LIMIT", "20/h").strip().lower()
if BREEDLAB_FEEDBACK_RATE_LIMIT != "off" and not re.fullmatch(r"[1-9]\d*/[smhd]", BREEDLAB_FEEDBACK_RATE_LIMIT):
    raise ImproperlyConfigured(
        f"BREEDLAB_FEEDBACK_RATE_LIMIT={BREEDLAB_FEEDBACK_RATE_LIMIT!r} must look like 20/h (per s, m, h or d) or be off."
    )
# Memory per web process is bounded by how many predictions decode and classify at once: each
# process runs at most this many (the others wait up to BREEDLAB_PREDICT_WAIT_SECONDS, then 503).
BREEDLAB_MAX_CONCURRENT_PREDICTIONS = env_int("BREEDLAB_MAX_CONCURRENT_PREDICTIONS", 1, minimum=1, maximum=64)
BREEDLAB_PREDICT_WAIT_SECONDS = env_float("BREEDLAB_PREDICT_WAIT_SECONDS", 30.0, minimum=0.1, maximum=600)
# Prediction requests one client may have in flight at once, across every web process (429 beyond).
BREEDLAB_MAX_IN_FLIGHT_PER_CLIENT = env_int("BREEDLAB_MAX_IN_FLIGHT_PER_CLIENT", 2, minimum=1, maximum=1000)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

CELERY_BEAT_SCHEDULE = {
    "reap-stale-runs": {"task": "classifier.tasks.reap_stale_runs", "schedule": 60.0},
    "reap-interrupted-imports": {"task": "classifier.tasks.reap_interrupted_imports", "schedule": 600.0},
    "purge-anonymous-predictions": {"task": "classifier.tasks.purge_anonymous_predictions", "schedule": 3600.0},
    "clear-sessions": {"task": "classifier.tasks.clear_sessions", "schedule": 86400.0},
    "purge-deleted": {"task": "classifier.tasks.purge_deleted", "schedule": 900.0},
}
