"""System checks: no production start with a development or weak SECRET_KEY, a warning without
ENCRYPTION_KEYS, and `check --deploy` clean under production settings."""

import os
import secrets
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from portal import checks

BASE_DIR = django_settings.BASE_DIR
LONG_KEY = secrets.token_urlsafe(50)
FERNET_KEY = Fernet.generate_key().decode()
WEAK_KEYS = {
    "empty": "",
    "development default": django_settings.DEFAULT_SECRET_KEY,
    "short": "s3cr3t-but-short",
    "31 characters": secrets.token_hex(16)[:31],
    "startproject default": "django-insecure-" + secrets.token_urlsafe(40),
    "one repeated character": "a" * 64,
}


def ids(messages) -> set[str]:
    return {message.id for message in messages}


@pytest.fixture
def production(settings):
    settings.DEBUG = False
    settings.SECRET_KEY = LONG_KEY
    settings.ENCRYPTION_KEYS = [FERNET_KEY]
    return settings


@pytest.mark.parametrize("key", list(WEAK_KEYS.values()), ids=list(WEAK_KEYS))
def test_weak_secret_key_is_an_error_when_debug_is_off(production, key):
    production.SECRET_KEY = key
    assert ids(checks.secret_key_check(None)) == {"portal.E001"}
    with pytest.raises(SystemCheckError, match=r"portal\.E001"):
        call_command("check")


def test_deleted_secret_key_is_an_error_not_a_crash(production):
    del production.SECRET_KEY
    assert ids(checks.secret_key_check(None)) == {"portal.E001"}


def test_long_random_secret_key_passes(production):
    assert checks.secret_key_check(None) == []
    assert checks.encryption_key_check(None) == []
    call_command("check")  # raises SystemCheckError on any error


@pytest.mark.parametrize("key", [WEAK_KEYS["development default"], WEAK_KEYS["short"]])
def test_debug_mode_accepts_the_development_key(production, key):
    production.DEBUG = True
    production.SECRET_KEY = key
    assert checks.secret_key_check(None) == []
    call_command("check")


def test_the_error_never_shows_the_key(production):
    production.SECRET_KEY = "short-but-secret-value"
    (error,) = checks.secret_key_check(None)
    assert "short-but-secret-value" not in f"{error.msg} {error.hint}"


def test_missing_encryption_keys_warn_outside_debug(production):
    production.ENCRYPTION_KEYS = []
    assert ids(checks.encryption_key_check(None)) == {"portal.W002"}
    production.DEBUG = True
    assert checks.encryption_key_check(None) == []


def test_malformed_encryption_key_is_an_error_naming_its_position(production):
    production.ENCRYPTION_KEYS = [FERNET_KEY, "not-a-fernet-key"]
    (error,) = checks.encryption_key_check(None)
    assert error.id == "portal.E003"
    assert "entry 2" in error.msg
    assert "not-a-fernet-key" not in f"{error.msg} {error.hint}"
    with pytest.raises(SystemCheckError, match=r"portal\.E003"):
        call_command("check")


# --- stored secrets no key decrypts ------------------------------------------------------------------


@pytest.fixture
def brokers(production, db):
    from accounts import services as account_services

    agent = account_services.agent_create(name="cra", kind="role", account_id="111111111111")
    account = account_services.account_create(
        agent=agent, account_id="222222222222", regions=["us-east-1", "eu-west-1", "eu-central-1"]
    )
    return list(account.brokers.order_by("pk"))


def _encrypt_with_a_foreign_key(broker) -> str:
    from django.db import connection

    foreign = Fernet(Fernet.generate_key()).encrypt(b"1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b").decode()
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {broker._meta.db_table} SET broker_token = %s WHERE id = %s", [foreign, broker.pk]
        )
    return foreign


def test_unreadable_secrets_are_counted_with_their_rows_never_shown(brokers, capsys):
    first, _, third = brokers
    stored = [_encrypt_with_a_foreign_key(b) for b in (first, third)]
    (warning,) = checks.unreadable_secrets_check(None, databases=["default"])
    assert warning.id == "portal.W003"
    assert "2 stored secrets" in warning.msg and f"ids {first.pk}, {third.pk}" in warning.msg
    assert "accounts.BrokerInstance.broker_token" in warning.msg
    said = f"{warning.msg} {warning.hint}"
    assert "1b4e28ba" not in said and not any(token in said for token in stored)
    call_command("check", "--database", "default")  # a warning: reported, nothing refused
    assert "portal.W003" in capsys.readouterr().err


def test_readable_secrets_and_checks_without_a_database_say_nothing(brokers, django_assert_num_queries):
    assert checks.unreadable_secrets_check(None, databases=["default"]) == []
    _encrypt_with_a_foreign_key(brokers[0])
    with django_assert_num_queries(0):
        assert checks.unreadable_secrets_check(None) == []  # plain `check`: no database is read


# --- the real command line, with the environment production uses ---------------------------------


# settings.py also reads BASE_DIR/.env (without overriding the environment): a developer's .env
# that sets one of these would change what the subprocess tests below measure.
_DOTENV = BASE_DIR / ".env"
_MEASURED = {"SECRET_KEY", "SECRET_KEY_FILE", "ENCRYPTION_KEYS", "DEBUG", "ALLOWED_HOSTS"}
_MEASURED |= {"SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS"}
_MEASURED |= {"SECURE_HSTS_PRELOAD"}


@pytest.fixture
def no_dotenv_override():
    if _DOTENV.is_file():
        names = {line.split("=", 1)[0].strip() for line in _DOTENV.read_text().splitlines() if "=" in line}
        if overridden := sorted(names & _MEASURED - {""}):
            pytest.skip(f".env sets {', '.join(overridden)}: these tests measure the defaults")


def _manage(tmp_path, *args, **env_overrides):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SECRET_KEY", "ENCRYPTION_KEYS", "SECURE_", "DJANGO_SETTINGS"))
    }
    env.update(PORTAL_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="portal.settings")
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


PRODUCTION_ENV = {
    "DEBUG": "false",
    "SECRET_KEY": LONG_KEY,
    "ENCRYPTION_KEYS": FERNET_KEY,
    "ALLOWED_HOSTS": "portal.example.com",
}


def test_check_deploy_is_clean_under_production_settings(tmp_path, no_dotenv_override):
    result = _manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION_ENV)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in output, output
    assert "WARNINGS" not in output and "ERRORS" not in output, output


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"SECRET_KEY": ""}, "portal.E001"),
        ({"SECRET_KEY": "short"}, "portal.E001"),
        ({"SECRET_KEY": WEAK_KEYS["development default"]}, "portal.E001"),
        ({"ENCRYPTION_KEYS": "oops"}, "portal.E003"),
    ],
    ids=["empty-key", "short-key", "default-key", "bad-fernet-key"],
)
def test_manage_py_refuses_to_start_with_a_bad_key(tmp_path, variables, message, no_dotenv_override):
    result = _manage(tmp_path, "check", **{**PRODUCTION_ENV, **variables})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output, output
    assert "Traceback" not in output, output


def test_unset_secret_key_falls_back_to_the_default_and_is_refused(tmp_path, no_dotenv_override):
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "SECRET_KEY"}
    result = _manage(tmp_path, "check", **env)
    assert result.returncode != 0
    assert "portal.E001" in result.stdout + result.stderr


def test_secret_key_file_is_read(tmp_path, no_dotenv_override):
    key_file = tmp_path / "secret_key"
    key_file.write_text(LONG_KEY + "\n")
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "SECRET_KEY"}
    result = _manage(tmp_path, "check", SECRET_KEY_FILE=str(key_file), **env)
    assert result.returncode == 0, result.stdout + result.stderr
    empty = tmp_path / "empty"
    empty.write_text("")
    result = _manage(tmp_path, "check", SECRET_KEY_FILE=str(empty), **env)
    assert result.returncode != 0
    assert "portal.E001" in result.stdout + result.stderr
