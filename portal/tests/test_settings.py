"""Settings refuse values they cannot read, and read PORTAL_VAR_DIR from .env too.

Settings are read once, at import: each test imports them in a fresh interpreter. The settings file
is copied into a folder of its own, so its BASE_DIR (and the .env read there) is the test's, not the
checkout's (whose .env would otherwise change what is measured); the apps still come from the
checkout.
"""

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings

BASE_DIR = django_settings.BASE_DIR
BOOLEANS = (
    "DEBUG",
    "SECURE_SSL_REDIRECT",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_PRELOAD",
)
# Each whole-number setting with the smallest value that means something.
WHOLE_NUMBERS = {
    "SECURE_HSTS_SECONDS": 0,
    "CELERY_TASK_HARD_TIME_LIMIT": 1,
    "CELERY_TASK_SOFT_TIME_LIMIT": 1,
    "RUN_STALE_AFTER": 1,
    "RUN_HEARTBEAT_INTERVAL": 1,
    "RUN_MAX_ATTEMPTS": 1,
    "RUN_SWEEP_INTERVAL": 1,
    "AUDIT_INTERVAL": 1,
    "ORG_SYNC_INTERVAL": 1,
    "AUDIT_CONCURRENCY": 1,
    "RECONCILE_CONCURRENCY": 1,
    "EXTERNAL_ID_GRACE_DAYS": 0,
}
SHOWN = (*BOOLEANS, *WHOLE_NUMBERS, "IAM_PROPAGATION_TIMEOUT", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS")
SHOW = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    f"names = {SHOWN!r}; "
    "print(json.dumps({**{n: getattr(s, n) for n in names}, 'VAR_DIR': str(s.VAR_DIR), "
    "'CELERY_QUEUE_DIR': str(s.CELERY_QUEUE_DIR), 'DATABASE': s.DATABASES['default']}))"
)


@pytest.fixture
def site(tmp_path) -> Path:
    """A BASE_DIR of the test's own, holding a copy of the settings and (when a test writes one) a .env."""
    site = tmp_path / "site"
    (site / "copied").mkdir(parents=True)
    shutil.copy(BASE_DIR / "portal" / "settings.py", site / "copied" / "settings.py")
    return site


def _load(site: Path, **variables: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join([str(site), str(BASE_DIR)]),
        "DJANGO_SETTINGS_MODULE": "copied.settings",
        **variables,
    }
    return subprocess.run(
        [sys.executable, "-c", SHOW], cwd=site, env=env, capture_output=True, text=True, timeout=120
    )


def _settings(site: Path, **variables: str) -> dict:
    result = _load(site, **variables)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _refusal(site: Path, **variables: str) -> str:
    """The last line of the traceback: the exception the settings raised."""
    result = _load(site, **variables)
    assert result.returncode != 0, result.stdout
    return result.stderr.strip().splitlines()[-1]


# --- booleans ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BOOLEANS)
def test_a_boolean_that_is_not_one_is_refused_with_its_name_value_and_the_accepted_words(site, name):
    error = _refusal(site, **{name: "maybe"})
    assert error.startswith("django.core.exceptions.ImproperlyConfigured:"), error
    assert f"{name}='maybe' is not a boolean" in error
    assert "true, yes, on or 1" in error and "false, no, off or 0" in error


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        ("1", True),
        ("false", False),
        ("False", False),
        ("no", False),
        ("off", False),
        ("0", False),
    ],
)
def test_booleans_read_the_usual_words_in_any_case(site, value, expected):
    assert _settings(site, DEBUG=value, SECURE_HSTS_PRELOAD=value)["SECURE_HSTS_PRELOAD"] is expected


def test_blank_booleans_take_their_defaults(site):
    # Production defaults follow DEBUG: a blank SECURE_SSL_REDIRECT must not switch the redirect off.
    loaded = _settings(site, DEBUG="", SECURE_SSL_REDIRECT=" ", SESSION_COOKIE_SECURE="")
    assert loaded["DEBUG"] is False
    assert loaded["SECURE_SSL_REDIRECT"] is True and loaded["SESSION_COOKIE_SECURE"] is True


# --- numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"), list(zip(WHOLE_NUMBERS, itertools.cycle(["ten", "1.5", "12abc"])))
)
def test_a_whole_number_that_is_not_one_is_refused(site, name, value):
    error = _refusal(site, **{name: value})
    assert error.startswith("django.core.exceptions.ImproperlyConfigured:"), error
    assert f"{name}={value!r}" in error and "whole number" in error


@pytest.mark.parametrize(("name", "minimum"), WHOLE_NUMBERS.items())
def test_a_whole_number_below_its_minimum_is_refused(site, name, minimum):
    error = _refusal(site, **{name: str(minimum - 1)})
    assert error.startswith("django.core.exceptions.ImproperlyConfigured:"), error
    assert f"{name}={str(minimum - 1)!r}" in error and f"at least {minimum}" in error


def test_a_default_soft_time_limit_below_one_second_names_where_it_comes_from(site):
    error = _refusal(site, CELERY_TASK_HARD_TIME_LIMIT="60")
    assert "CELERY_TASK_SOFT_TIME_LIMIT=0 (its default, CELERY_TASK_HARD_TIME_LIMIT - 60)" in error, error


def test_numbers_are_read(site):
    loaded = _settings(site, RUN_MAX_ATTEMPTS=" 5 ", SECURE_HSTS_SECONDS="0", IAM_PROPAGATION_TIMEOUT="2.5")
    assert loaded["RUN_MAX_ATTEMPTS"] == 5 and loaded["SECURE_HSTS_SECONDS"] == 0
    assert loaded["IAM_PROPAGATION_TIMEOUT"] == 2.5
    assert _settings(site, RUN_MAX_ATTEMPTS="")["RUN_MAX_ATTEMPTS"] == 3  # blank: the default


@pytest.mark.parametrize("value", ["1x5", "12abc", "two", "nan", "inf", "-1"])
def test_a_propagation_timeout_that_is_not_a_number_of_seconds_is_refused(site, value):
    # django-environ drops the characters it does not expect: "1x5" would be read as 15 seconds.
    error = _refusal(site, IAM_PROPAGATION_TIMEOUT=value)
    assert error.startswith("django.core.exceptions.ImproperlyConfigured:"), error
    assert f"IAM_PROPAGATION_TIMEOUT={value!r}" in error


# --- lists, paths, the database ------------------------------------------------------------------


def test_list_items_are_read_without_the_spaces_around_them(site):
    loaded = _settings(
        site,
        ALLOWED_HOSTS="portal.example.com, 127.0.0.1 ,,",
        CSRF_TRUSTED_ORIGINS=" https://portal.example.com",
    )
    assert loaded["ALLOWED_HOSTS"] == ["portal.example.com", "127.0.0.1"]
    assert loaded["CSRF_TRUSTED_ORIGINS"] == ["https://portal.example.com"]
    assert _settings(site)["ALLOWED_HOSTS"] == ["127.0.0.1", "localhost"]


def test_a_database_url_without_a_scheme_is_refused_without_showing_it(site):
    error = _refusal(site, DATABASE_URL="postgres//portal:hunter2@db.internal:5432/portal")
    assert error.startswith("django.core.exceptions.ImproperlyConfigured:"), error
    assert "DATABASE_URL" in error and "postgres://" in error
    assert (
        "hunter2" not in _load(site, DATABASE_URL="postgres//portal:hunter2@db.internal:5432/portal").stderr
    )


def test_blank_paths_and_database_url_take_their_defaults(site):
    loaded = _settings(site, PORTAL_VAR_DIR="", CELERY_QUEUE_DIR="", DATABASE_URL="")
    assert loaded["VAR_DIR"] == str(site / "var")
    assert loaded["CELERY_QUEUE_DIR"] == str(site / "var" / "queue")
    assert loaded["DATABASE"]["NAME"] == str(site / "var" / "portal.sqlite3")


def test_portal_var_dir_is_read_from_dotenv(site, tmp_path):
    var_dir = tmp_path / "from-dotenv"
    (site / ".env").write_text(f"PORTAL_VAR_DIR={var_dir}\n")
    loaded = _settings(site)
    assert loaded["VAR_DIR"] == str(var_dir) and var_dir.is_dir()
    assert loaded["DATABASE"]["NAME"] == str(var_dir / "portal.sqlite3")
    assert loaded["CELERY_QUEUE_DIR"] == str(var_dir / "queue")


def test_the_var_dir_is_created_private(site, tmp_path):
    var_dir = tmp_path / "fresh" / "var"
    _settings(site, PORTAL_VAR_DIR=str(var_dir))
    assert (var_dir.stat().st_mode & 0o777) == 0o700  # SQLite file, queue and lock files live there


def test_the_environment_wins_over_dotenv(site, tmp_path):
    (site / ".env").write_text(f"PORTAL_VAR_DIR={tmp_path / 'from-dotenv'}\nDEBUG=maybe\n")
    loaded = _settings(site, PORTAL_VAR_DIR=str(tmp_path / "from-env"), DEBUG="true")
    assert loaded["VAR_DIR"] == str(tmp_path / "from-env") and loaded["DEBUG"] is True


def test_a_bad_boolean_in_dotenv_is_refused_too(site):
    (site / ".env").write_text("SESSION_COOKIE_SECURE=maybe\n")
    assert "SESSION_COOKIE_SECURE='maybe'" in _refusal(site)
