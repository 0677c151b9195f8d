"""Broker tokens at rest: the raw column holds a Fernet token, never the broker token; keys rotate
(the first key encrypts, every key decrypts); a wrong or malformed key fails loudly."""

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from accounts.models import AgentIdentity, BrokerInstance, EcrAccount
from portal import fields

TOKEN = "0f8e2c4a-5b6d-4e7f-8a9b-0c1d2e3f4a5b"
OTHER_TOKEN = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def raw_row(pk) -> dict:
    """The broker's row as the database holds it, bypassing the model field."""
    table = BrokerInstance._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE id = %s", [pk])
        names = [column[0] for column in cursor.description]
        return dict(zip(names, cursor.fetchone(), strict=True))


def raw_token(pk) -> str:
    return raw_row(pk)["broker_token"]


@pytest.fixture
def keys(settings):
    settings.ENCRYPTION_KEYS = [OLD_KEY]
    return settings


@pytest.fixture
def ecr_account(db):
    agent = AgentIdentity.objects.create(name="cra", kind="role", account_id="111111111111", iam_name="Cra")
    return EcrAccount.objects.create(account_id="222222222222", agent=agent)


@pytest.fixture
def broker(keys, ecr_account):
    return BrokerInstance.objects.create(account=ecr_account, region="us-east-1", broker_token=TOKEN)


def test_raw_column_never_holds_the_token(broker):
    row = raw_row(broker.pk)
    stored = row["broker_token"]
    assert stored != TOKEN
    for column, value in row.items():
        for form in (TOKEN, TOKEN.replace("-", ""), TOKEN.upper()):
            assert form not in str(value), f"column {column} holds the token"
    assert stored.startswith("gAAAAA")  # a Fernet token
    assert Fernet(OLD_KEY.encode()).decrypt(stored.encode()).decode() == TOKEN


def test_token_decrypts_back_through_the_model(broker):
    assert BrokerInstance.objects.get(pk=broker.pk).broker_token == TOKEN
    assert broker.masked_token.endswith(TOKEN[-4:]) and TOKEN[:8] not in broker.masked_token


def test_each_write_uses_a_fresh_nonce(keys, ecr_account):
    first = BrokerInstance.objects.create(account=ecr_account, region="us-east-1", broker_token=TOKEN)
    second = BrokerInstance.objects.create(account=ecr_account, region="eu-west-1", broker_token=TOKEN)
    assert raw_token(first.pk) != raw_token(second.pk)  # equal tokens are not recognisable at rest


def test_every_write_path_encrypts(broker, ecr_account):
    BrokerInstance.objects.filter(pk=broker.pk).update(broker_token=OTHER_TOKEN)
    assert OTHER_TOKEN not in raw_token(broker.pk)
    assert BrokerInstance.objects.get(pk=broker.pk).broker_token == OTHER_TOKEN

    (created,) = BrokerInstance.objects.bulk_create(
        [BrokerInstance(account=ecr_account, region="eu-west-1", broker_token=TOKEN)]
    )
    pk = created.pk or BrokerInstance.objects.get(region="eu-west-1").pk
    assert TOKEN not in raw_token(pk)

    broker.refresh_from_db()
    broker.broker_token = TOKEN
    broker.save()
    broker.save()  # saving twice must not encrypt the ciphertext
    assert BrokerInstance.objects.get(pk=broker.pk).broker_token == TOKEN


def test_rotation_new_key_first_still_reads_old_rows(broker, keys):
    keys.ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]
    reloaded = BrokerInstance.objects.get(pk=broker.pk)
    assert reloaded.broker_token == TOKEN

    reloaded.save()  # re-encrypts with the first key
    stored = raw_token(broker.pk).encode()
    assert Fernet(NEW_KEY.encode()).decrypt(stored).decode() == TOKEN
    with pytest.raises(InvalidToken):
        Fernet(OLD_KEY.encode()).decrypt(stored)

    keys.ENCRYPTION_KEYS = [NEW_KEY]  # the old key can be retired once every row is re-saved
    assert BrokerInstance.objects.get(pk=broker.pk).broker_token == TOKEN


def test_wrong_key_raises_a_clear_error(broker, keys):
    keys.ENCRYPTION_KEYS = [NEW_KEY]
    with pytest.raises(ValueError, match="ENCRYPTION_KEYS") as exc:
        BrokerInstance.objects.get(pk=broker.pk)
    message = str(exc.value)
    assert TOKEN not in message and raw_token(broker.pk) not in message


def test_malformed_key_names_the_setting_not_the_key(broker, keys):
    keys.ENCRYPTION_KEYS = ["this-is-not-a-fernet-key"]
    with pytest.raises(ImproperlyConfigured, match="ENCRYPTION_KEYS entry 1") as exc:
        BrokerInstance.objects.get(pk=broker.pk)
    assert "this-is-not-a-fernet-key" not in str(exc.value)
    with pytest.raises(ImproperlyConfigured, match="ENCRYPTION_KEYS entry 1"):
        fields.encrypt(TOKEN)


def test_without_encryption_keys_a_key_derived_from_secret_key_is_used(settings, ecr_account):
    settings.ENCRYPTION_KEYS = []
    settings.SECRET_KEY = "first-" + "k" * 40
    broker = BrokerInstance.objects.create(account=ecr_account, region="us-east-1", broker_token=TOKEN)
    assert TOKEN not in raw_token(broker.pk)
    assert BrokerInstance.objects.get(pk=broker.pk).broker_token == TOKEN
    # Which is why portal.W002 asks for ENCRYPTION_KEYS: a new SECRET_KEY loses the tokens.
    settings.SECRET_KEY = "second-" + "k" * 40
    with pytest.raises(ValueError, match="ENCRYPTION_KEYS"):
        BrokerInstance.objects.get(pk=broker.pk)


def test_blank_and_null_stay_as_they_are():
    field = BrokerInstance._meta.get_field("broker_token")
    assert field.get_prep_value("") == ""
    assert field.get_prep_value(None) is None
    assert field.from_db_value("", None, connection) == ""
    assert field.from_db_value(None, None, connection) is None


def test_a_row_with_a_blank_token_loads_and_saves_back(broker):
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {BrokerInstance._meta.db_table} SET broker_token = '' WHERE id = %s", [broker.pk]
        )
    reloaded = BrokerInstance.objects.get(pk=broker.pk)
    assert reloaded.broker_token == ""
    assert reloaded.masked_token == ""
    reloaded.save()  # NOT NULL column: loading "" as None made this save fail
    assert raw_token(broker.pk) == ""
