"""Settings for the ECR Broker Portal, read from the environment through django-environ.

Nothing secret lives here: SECRET_KEY and ENCRYPTION_KEYS come from the environment (or a
`<NAME>_FILE` holding it). The defaults give the embedded run (`make run`): SQLite, a
filesystem Celery broker that needs no server, and whatever AWS endpoint the environment names.

The environment wins over `.env`. A value the portal cannot read stops it with ImproperlyConfigured
naming the variable; a blank boolean, number or path takes its default.
"""

import math
import os
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

# Lower case; read in any case.
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def _raw(name: str) -> str:
    return env.str(name, default="").strip()


def _bool(name: str, default: bool) -> bool:
    """Unlike env.bool, which reads any word it does not know (DEBUG=maybe) as False."""
    value = _raw(name)
    if not value:
        return default
    if value.lower() in _TRUE_WORDS:
        return True
    if value.lower() in _FALSE_WORDS:
        return False
    raise ImproperlyConfigured(
        f"{name}={value!r} is not a boolean: use true, yes, on or 1 for on; false, no, off or 0 for off "
        f"(any case); blank for the default ({'on' if default else 'off'})."
    )


def _too_small(name: str, value: str, number: float, minimum: float, default_is: str) -> ImproperlyConfigured:
    shown = repr(value) if value else f"{number} (its default{', ' + default_is if default_is else ''})"
    return ImproperlyConfigured(f"{name}={shown} is too small: it must be at least {minimum}.")


def _int(name: str, default: int, *, minimum: int, default_is: str = "") -> int:
    value = _raw(name)
    try:
        number = int(value) if value else default
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number.") from None
    if number < minimum:
        raise _too_small(name, value, number, minimum, default_is)
    return number


def _float(name: str, default: float, *, minimum: float) -> float:
    """Unlike env.float, which drops the characters it does not expect ("1x5" would read as 15)."""
    value = _raw(name)
    try:
        number = float(value) if value else default
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ImproperlyConfigured(f"{name}={value!r} is not a number.")
    if number < minimum:
        raise _too_small(name, value, number, minimum, "")
    return number


def _list(name: str, default: list[str]) -> list[str]:
    """Comma-separated, spaces around items dropped (env.list keeps them: "a, b" would allow host " b")."""
    value = env.str(name, default=None)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def _database(name: str, default: str) -> dict:
    url = _raw(name) or default
    # Checked here: for a URL without a scheme django-environ warns with the parsed URL, password too.
    if not urlsplit(url).scheme:
        raise ImproperlyConfigured(
            f"{name} has no database scheme: it must look like postgres://user:password@host:5432/name "
            "or sqlite:////absolute/path (its value is not shown: it may hold a password)."
        )
    return environ.Env.db_url_config(url)


def _secret(name: str, default: str = "") -> str:
    """Read NAME, or the file named by NAME_FILE (docker/k8s secrets), failing loudly if unreadable."""
    path = env.str(f"{name}_FILE", default="")
    if path:
        return Path(path).read_text().strip()
    return env.str(name, default=default)


# Read after .env, which may set it too.
VAR_DIR = Path(_raw("PORTAL_VAR_DIR") or BASE_DIR / "var")
VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)  # SQLite file (broker tokens), queue, lock files

# A well-known development key. The portal.E001 check refuses it whenever DEBUG is off.
DEFAULT_SECRET_KEY = "insecure-development-key-do-not-use-in-production"
SECRET_KEY = _secret("SECRET_KEY", default=DEFAULT_SECRET_KEY)
DEBUG = _bool("DEBUG", default=False)
ALLOWED_HOSTS = _list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = _list("CSRF_TRUSTED_ORIGINS", default=[])

# Fernet keys for secrets at rest (broker tokens). First key encrypts, all decrypt (rotation).
# Empty: a key is derived from SECRET_KEY (portal.W002 warns about that outside DEBUG).
ENCRYPTION_KEYS = [k for k in _secret("ENCRYPTION_KEYS").split(",") if k.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "portal",
    "accounts",
    "provisioning",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "portal.middleware.RequestIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "portal.middleware.SecurityHeadersMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

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
                "portal.roles.context_processor",
            ],
        },
    },
]

DATABASES = {"default": _database("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'portal.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web and worker share the file: WAL lets readers run beside the writer, IMMEDIATE takes the
    # write lock when a transaction starts (the default DEFERRED mode upgrades mid-transaction and
    # then fails with "database is locked" or loses updates), and the timeout makes writers queue.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = env.str("STATIC_URL", default="/static/")
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

# --- Security headers (production values; `manage.py check --deploy` must be clean) ----------
SECURE_SSL_REDIRECT = _bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = _bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = _bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = _int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = _bool("SECURE_HSTS_PRELOAD", default=False)
# Preload is a commitment for the whole domain (anyone may submit a domain that sends it), so it
# stays opt-in and security.W021, its reminder, is silenced unless the operator opts in.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# --- Celery --------------------------------------------------------------------------------
# Default broker: a filesystem queue under var/ (portal.kombu_fs: atomic writes), so the embedded
# run has a real worker process and no server. Production sets redis://.
REDIS_URL = env.str("REDIS_URL", default="")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "portalfs://")
CELERY_QUEUE_DIR = Path(_raw("CELERY_QUEUE_DIR") or VAR_DIR / "queue")
CELERY_TASK_HARD_TIME_LIMIT = _int("CELERY_TASK_HARD_TIME_LIMIT", default=3600, minimum=1)
CELERY_TASK_SOFT_TIME_LIMIT = _int(
    "CELERY_TASK_SOFT_TIME_LIMIT",
    default=CELERY_TASK_HARD_TIME_LIMIT - 60,
    minimum=1,
    default_is="CELERY_TASK_HARD_TIME_LIMIT - 60",
)
# IAM eventual consistency: how long "Invalid principal" is retried before the run fails.
IAM_PROPAGATION_TIMEOUT = _float("IAM_PROPAGATION_TIMEOUT", default=120.0, minimum=0)
# A run that shows no sign of life for this long is re-queued by the sweeper (worker died).
RUN_STALE_AFTER = _int("RUN_STALE_AFTER", default=600, minimum=1)
RUN_MAX_ATTEMPTS = _int("RUN_MAX_ATTEMPTS", default=3, minimum=1)
RUN_SWEEP_INTERVAL = _int("RUN_SWEEP_INTERVAL", default=60, minimum=1)
AUDIT_INTERVAL = _int("AUDIT_INTERVAL", default=3600, minimum=1)
AUDIT_WEBHOOK_URL = env.str("AUDIT_WEBHOOK_URL", default="")
AUDIT_CONCURRENCY = _int("AUDIT_CONCURRENCY", default=16, minimum=1)
# Accounts a reconcile, rotation or offboarding run works on at once (threads in one worker).
RECONCILE_CONCURRENCY = _int("RECONCILE_CONCURRENCY", default=8, minimum=1)
EXTERNAL_ID_GRACE_DAYS = _int("EXTERNAL_ID_GRACE_DAYS", default=14, minimum=0)

# --- AWS -----------------------------------------------------------------------------------
# boto3 reads AWS_ENDPOINT_URL itself; it is mirrored here so pages and checks can show it.
AWS_ENDPOINT_URL: str = env.str("AWS_ENDPOINT_URL", default="")
AWS_DEFAULT_REGION: str = env.str("AWS_DEFAULT_REGION", default="us-east-1")

# --- Snyk (Universal Broker agents) -----------------------------------------------------------
# The REST API host new Snyk connections use (snyk_connect --api-url overrides it per connection).
SNYK_API_URL: str = _raw("SNYK_API_URL").rstrip("/") or "https://api.snyk.io"
if urlsplit(SNYK_API_URL).scheme not in ("http", "https") or not urlsplit(SNYK_API_URL).hostname:
    raise ImproperlyConfigured(
        f"SNYK_API_URL={SNYK_API_URL!r} is not an http(s) URL, e.g. https://api.eu.snyk.io"
    )
# Snyk's Broker App (snyk-broker-config's default); Snyk gives other ids for other environments.
SNYK_BROKER_APP_ID: str = _raw("SNYK_BROKER_APP_ID") or "cb43d761-bd17-4b44-9b6c-e5b8ad077d33"
# Seconds one Snyk API call may take, and how many times a 429 or 5xx is retried.
SNYK_TIMEOUT = _float("SNYK_TIMEOUT", default=30.0, minimum=1)
SNYK_RETRIES = _int("SNYK_RETRIES", default=5, minimum=0)
# Connections per deployment: Snyk allows 25; one is left free so a deployment is never at the limit.
SNYK_CONNECTIONS_PER_DEPLOYMENT = _int("SNYK_CONNECTIONS_PER_DEPLOYMENT", default=24, minimum=1)
if SNYK_CONNECTIONS_PER_DEPLOYMENT > 25:
    raise ImproperlyConfigured(
        f"SNYK_CONNECTIONS_PER_DEPLOYMENT={SNYK_CONNECTIONS_PER_DEPLOYMENT} is too large: Snyk allows 25."
    )

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "portal.middleware.RequestIdFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"botocore": {"level": "WARNING"}, "urllib3": {"level": "WARNING"}},
}

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not :memory:, so worker processes started by tests share the test database; one per
    # test session (pid), so concurrent sessions never share a file.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
