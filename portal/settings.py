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


_ROLES = ("viewer", "operator", "admin")


def _role_map(name: str) -> dict[str, str]:
    """ "group=role,group=role" into {group: role}; a role the portal has not is refused by name."""
    mapping = {}
    for item in _list(name, default=[]):
        group, sep, role = (part.strip() for part in item.partition("="))
        if not sep or not group or role not in _ROLES:
            raise ImproperlyConfigured(
                f"{name}: {item!r} must be GROUP=ROLE with ROLE one of {', '.join(_ROLES)}."
            )
        mapping[group] = role
    return mapping


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
    "django.contrib.humanize",  # naturaltime, apnumber: times and counts read as words
    "django_htmx",
    "rest_framework",
    "drf_spectacular",
    "axes",
    "mozilla_django_oidc",
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
    "portal.middleware.SessionIdleMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
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

# --- Sign-in ----------------------------------------------------------------------------------
# django-axes first: it refuses a locked-out username from this address before any password check.
AUTHENTICATION_BACKENDS = [
    "portal.login.LockoutBackend",
    "portal.login.PasswordBackend",
]
# Local passwords: after LOGIN_FAILURE_LIMIT failures for one username from one address, that
# pair is locked out for LOGIN_LOCKOUT_MINUTES (a success resets the count).
AXES_FAILURE_LIMIT = _int("LOGIN_FAILURE_LIMIT", default=5, minimum=1)
AXES_COOLOFF_TIME = _float("LOGIN_LOCKOUT_MINUTES", default=15.0, minimum=0.1) / 60  # axes reads hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
AXES_ENABLE_ADMIN = False  # lockouts are lifted with `manage.py axes_reset_username USERNAME`
# A session ends after this many seconds without a request (each request pushes the end back).
SESSION_IDLE_TIMEOUT = _int("SESSION_IDLE_TIMEOUT", default=3600, minimum=60)
SESSION_COOKIE_AGE = SESSION_IDLE_TIMEOUT  # from the latest save: portal.middleware.SessionIdleMiddleware
# Local password sign-in on the login page; off leaves single sign-on only (the break-glass
# `admin` then signs in through `manage.py` commands only, e.g. changepassword, createsuperuser).
PASSWORD_LOGIN = _bool("PASSWORD_LOGIN", default=True)

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
# A running run's worker renews its lease (the heartbeat) this often, from a thread of its own so a
# long step (IAM propagation retries) keeps beating. A run whose lease ran out (RUN_LEASE_BEATS
# beats missed) is taken over by a redelivered message, or re-queued by the sweeper.
RUN_HEARTBEAT_INTERVAL = _int("RUN_HEARTBEAT_INTERVAL", default=10, minimum=1)
RUN_LEASE_BEATS = 4
# A queued run no worker has claimed for this long is sent again (its message was lost).
RUN_STALE_AFTER = _int("RUN_STALE_AFTER", default=600, minimum=1)
RUN_MAX_ATTEMPTS = _int("RUN_MAX_ATTEMPTS", default=3, minimum=1)
RUN_SWEEP_INTERVAL = _int("RUN_SWEEP_INTERVAL", default=60, minimum=1)
AUDIT_INTERVAL = _int("AUDIT_INTERVAL", default=3600, minimum=1)
AUDIT_WEBHOOK_URL = env.str("AUDIT_WEBHOOK_URL", default="")
AUDIT_CONCURRENCY = _int("AUDIT_CONCURRENCY", default=16, minimum=1)
# How often beat syncs every connected organization (applied only where auto-apply is on).
ORG_SYNC_INTERVAL = _int("ORG_SYNC_INTERVAL", default=3600, minimum=1)
# Accounts a reconcile, rotation or offboarding run works on at once (threads in one worker).
RECONCILE_CONCURRENCY = _int("RECONCILE_CONCURRENCY", default=8, minimum=1)
# A run over more accounts than this (bulk, reconcile, offboarding) is split into chunks of this
# many accounts that every worker of the pool takes; a smaller run stays in its one worker.
RUN_CHUNK_SIZE = _int("RUN_CHUNK_SIZE", default=25, minimum=1)
EXTERNAL_ID_GRACE_DAYS = _int("EXTERNAL_ID_GRACE_DAYS", default=14, minimum=0)

# --- AWS -----------------------------------------------------------------------------------
# boto3 reads AWS_ENDPOINT_URL itself; it is mirrored here so pages and checks can show it.
AWS_ENDPOINT_URL: str = env.str("AWS_ENDPOINT_URL", default="")
AWS_DEFAULT_REGION: str = env.str("AWS_DEFAULT_REGION", default="us-east-1")

# --- REST API (/api/v1/) ------------------------------------------------------------------------
# Requests per token (or signed-in user) and per address without credentials; more get 429.
API_RATE_LIMIT = env.str("API_RATE_LIMIT", default="600/minute")
API_ANON_RATE_LIMIT = env.str("API_ANON_RATE_LIMIT", default="60/minute")
# The longest a client may wait on GET /api/v1/runs/<id>/?wait=N for a run to end.
API_LONG_POLL_MAX = _int("API_LONG_POLL_MAX", default=30, minimum=0)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["portal.api.permissions.RolePermission"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "portal.api.pagination.Pagination",
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {"anon": API_ANON_RATE_LIMIT, "user": API_RATE_LIMIT},
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "portal.api.problems.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ECR Broker Portal API",
    "DESCRIPTION": (
        "Reads for viewers; previews and applies for operators, exactly as the pages do them. "
        "Send the header Authorization: Bearer <token>. Errors are RFC 9457 problem details."
    ),
    "VERSION": "1",
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "RunStatus": "provisioning.choices.RunStatus",
        "OperationStatus": "provisioning.choices.OperationStatus",
        "LifecycleStatus": "accounts.choices.Lifecycle",
        "ExternalIdStateEnum": "accounts.choices.ExternalIdState",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "portal.api.schema.add_problems",
    ],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
}

# --- Single sign-on (OpenID Connect, mozilla-django-oidc) ---------------------------------------
# On when OIDC_ISSUER is set. The provider's endpoints are given explicitly (the library does no
# discovery): see its /.well-known/openid-configuration.
OIDC_ISSUER = _raw("OIDC_ISSUER")
OIDC_ENABLED = bool(OIDC_ISSUER)
OIDC_RP_CLIENT_ID = _raw("OIDC_CLIENT_ID")
OIDC_RP_CLIENT_SECRET = _secret("OIDC_CLIENT_SECRET")
OIDC_OP_AUTHORIZATION_ENDPOINT = _raw("OIDC_AUTHORIZATION_ENDPOINT")
OIDC_OP_TOKEN_ENDPOINT = _raw("OIDC_TOKEN_ENDPOINT")
OIDC_OP_USER_ENDPOINT = _raw("OIDC_USERINFO_ENDPOINT")
OIDC_OP_JWKS_ENDPOINT = _raw("OIDC_JWKS_ENDPOINT")
OIDC_OP_LOGOUT_ENDPOINT = _raw("OIDC_END_SESSION_ENDPOINT")
OIDC_RP_SIGN_ALGO = _raw("OIDC_SIGN_ALGO") or "RS256"
OIDC_RP_SCOPES = _raw("OIDC_SCOPES") or "openid email profile groups"
OIDC_GROUPS_CLAIM = _raw("OIDC_GROUPS_CLAIM") or "groups"
OIDC_USERNAME_CLAIM = _raw("OIDC_USERNAME_CLAIM") or "preferred_username"
# Provider group -> portal role, e.g. "platform-admins=admin,platform=operator,engineering=viewer".
# Recomputed at every sign-in: a group removed at the provider removes the role at the next one.
OIDC_ROLE_MAP = _role_map("OIDC_ROLE_MAP")
OIDC_USE_PKCE = True
OIDC_PKCE_CODE_CHALLENGE_METHOD = "S256"
OIDC_USE_NONCE = True
OIDC_VERIFY_SSL = _bool("OIDC_VERIFY_SSL", default=True)
OIDC_TIMEOUT = 10
OIDC_STORE_ID_TOKEN = bool(OIDC_OP_LOGOUT_ENDPOINT)  # the logout redirect hands it back as a hint
OIDC_OP_LOGOUT_URL_METHOD = "portal.sso.provider_logout_url"
OIDC_AUTHENTICATION_CALLBACK_URL = "oidc_authentication_callback"
LOGIN_REDIRECT_URL_FAILURE = "/login/"  # a refused sign-in through the provider
if OIDC_ENABLED:
    AUTHENTICATION_BACKENDS.append("portal.sso.RoleMappingBackend")
    for _name, _value in (
        ("OIDC_CLIENT_ID", OIDC_RP_CLIENT_ID),
        ("OIDC_AUTHORIZATION_ENDPOINT", OIDC_OP_AUTHORIZATION_ENDPOINT),
        ("OIDC_TOKEN_ENDPOINT", OIDC_OP_TOKEN_ENDPOINT),
        ("OIDC_USERINFO_ENDPOINT", OIDC_OP_USER_ENDPOINT),
        ("OIDC_JWKS_ENDPOINT", OIDC_OP_JWKS_ENDPOINT),
    ):
        if not _value:
            raise ImproperlyConfigured(f"OIDC_ISSUER is set: {_name} must be set too.")

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
