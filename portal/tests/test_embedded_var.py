"""The embedded run's data folder: private to its user, with an encryption key of its own.

`make run` keeps the SQLite database (broker tokens in it), the queue and the locks in var/. Before,
var/ and its files were readable by every local user, and the tokens were encrypted with a key
derived from the development SECRET_KEY, which is public.
"""

import os
import stat

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from accounts import services as account_services
from accounts.models import BrokerInstance
from portal import embedded, fields

TOKEN = "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b"


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """make_private sets the process's umask (for the children it starts): restored after the test."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)


def test_make_private_closes_var_and_what_it_holds_and_sets_the_umask(tmp_path, umask):
    var_dir = tmp_path / "var"
    (var_dir / "queue").mkdir(parents=True, mode=0o755)
    (var_dir / "portal.sqlite3").write_text("")
    (var_dir / "portal.sqlite3").chmod(0o644)
    (var_dir / "queue" / "message").write_text("")
    (var_dir / "queue" / "message").chmod(0o664)
    var_dir.chmod(0o755)

    embedded.make_private(var_dir)

    assert mode(var_dir) == 0o700 and mode(var_dir / "queue") == 0o700
    assert mode(var_dir / "portal.sqlite3") == 0o600 and mode(var_dir / "queue" / "message") == 0o600
    (var_dir / "locks").mkdir()
    (var_dir / "locks" / "agent-1.lock").write_text("")  # as the portal creates them: default modes
    assert mode(var_dir / "locks") == 0o700 and mode(var_dir / "locks" / "agent-1.lock") == 0o600


def test_the_key_is_generated_once_private_and_random_then_reused(tmp_path, umask):
    first_var, other_var = tmp_path / "one" / "var", tmp_path / "two" / "var"
    for var_dir in (first_var, other_var):
        var_dir.mkdir(parents=True)
    key = embedded.encryption_key(first_var)
    Fernet(key.encode())  # a Fernet key
    path = first_var / embedded.KEY_FILE
    assert mode(path) == 0o600
    assert embedded.encryption_key(first_var) == key  # the next start reads it back
    assert embedded.encryption_key(other_var) != key  # per install, not derived from anything
    assert key != fields.derived_key("insecure-development-key-do-not-use-in-production")
    assert [p.name for p in first_var.iterdir()] == [embedded.KEY_FILE]  # no temporary file left


def test_a_damaged_key_file_stops_the_start_without_replacing_it(tmp_path):
    (tmp_path / embedded.KEY_FILE).write_text("not a key\n")
    with pytest.raises(ImproperlyConfigured, match=embedded.KEY_FILE) as exc:
        embedded.encryption_key(tmp_path)
    assert "not a key" not in str(exc.value)
    assert (tmp_path / embedded.KEY_FILE).read_text() == "not a key\n"


def _raw_token(pk) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT broker_token FROM {BrokerInstance._meta.db_table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_tokens_of_an_earlier_embedded_run_move_to_the_new_key(db, settings):
    settings.ENCRYPTION_KEYS = []  # what an embedded run used before it had its own key
    legacy = fields.derived_key(settings.SECRET_KEY)
    agent = account_services.agent_create(name="cra", kind="role", account_id="111111111111")
    account = account_services.account_create(
        agent=agent, account_id="222222222222", regions=["us-east-1"], broker_token=TOKEN
    )
    broker = account.brokers.get()
    new_key = Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [new_key]

    assert fields.reencrypt(legacy) == 1
    stored = _raw_token(broker.pk).encode()
    assert Fernet(new_key.encode()).decrypt(stored).decode() == TOKEN
    with pytest.raises(InvalidToken):
        Fernet(legacy.encode()).decrypt(stored)
    assert fields.reencrypt(legacy) == 0  # done once: nothing left under the old key
