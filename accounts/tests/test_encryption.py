"""Broker tokens at rest: the raw column holds a Fernet token, never the broker token; keys rotate
(the first key encrypts, every key decrypts); a wrong or malformed key fails loudly where the token
is used, and only there: a row loads, saves and shows on every page without its token."""

import io
import re

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.urls import reverse

from accounts.choices import Lifecycle
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


def test_wrong_key_raises_a_clear_error_where_the_token_is_read(broker, keys):
    keys.ENCRYPTION_KEYS = [NEW_KEY]
    loaded = BrokerInstance.objects.get(pk=broker.pk)  # loading decrypts nothing
    assert not loaded.token_readable
    with pytest.raises(fields.UnreadableSecret, match="ENCRYPTION_KEYS") as exc:
        loaded.broker_token  # the read is the test
    message = str(exc.value)
    assert TOKEN not in message and raw_token(broker.pk) not in message
    assert isinstance(exc.value, ValueError)


def test_a_row_whose_token_is_unreadable_saves_its_other_fields_and_keeps_the_token(broker, keys):
    stored = raw_token(broker.pk)
    keys.ENCRYPTION_KEYS = [NEW_KEY]
    loaded = BrokerInstance.objects.get(pk=broker.pk)
    loaded.port = 8443
    loaded.save()
    assert raw_token(broker.pk) == stored  # saved back as it was, never encrypted twice
    keys.ENCRYPTION_KEYS = [OLD_KEY]  # the key comes back: so does the token
    assert BrokerInstance.objects.get(pk=broker.pk).broker_token == TOKEN


def test_malformed_key_names_the_setting_not_the_key(broker, keys):
    keys.ENCRYPTION_KEYS = ["this-is-not-a-fernet-key"]
    loaded = BrokerInstance.objects.get(pk=broker.pk)
    with pytest.raises(ImproperlyConfigured, match="ENCRYPTION_KEYS entry 1") as exc:
        loaded.broker_token  # the read is the test
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
        BrokerInstance.objects.get(pk=broker.pk).broker_token  # the read is the test


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


# --- one unreadable token among readable ones: every page still answers ----------------------------

UNREADABLE = "token unreadable — re-enter or rotate"


def make_unreadable(broker) -> None:
    """The broker's token as a key ENCRYPTION_KEYS does not hold would have written it."""
    foreign = Fernet(Fernet.generate_key()).encrypt(TOKEN.encode()).decode()
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {BrokerInstance._meta.db_table} SET broker_token = %s WHERE id = %s",
            [foreign, broker.pk],
        )


@pytest.fixture
def two_accounts(keys, make_account):
    """Two accounts of one agent on one agent URL (one docker host); the first's token is unreadable."""
    bad = make_account(
        "222222222222", broker_client_url="http://broker-a:8000", cr_agent_url="http://cra:8081"
    )
    good = make_account(
        "333333333333", broker_client_url="http://broker-b:8001", cr_agent_url="http://cra:8081"
    )
    # Onboarded: a draft's brokers are pending, and their files refused for that reason first.
    EcrAccount.objects.filter(pk__in=[bad.pk, good.pk]).update(status=Lifecycle.ACTIVE)
    make_unreadable(bad.brokers.get())
    return bad, good


def _broker_article(body: str, region: str) -> str:
    match = re.search(rf'<article class="change broker" id="broker-{region}">(.*?)</article>', body, re.S)
    assert match, body
    return match.group(1)


def test_pages_show_an_unreadable_token_on_its_broker_and_answer(client, operator, two_accounts):
    bad, good = two_accounts
    client.force_login(operator)
    for name, args in [
        ("dashboard", []),
        ("accounts:account_list", []),
        ("accounts:agent_detail", [bad.agent.pk]),
    ]:
        assert client.get(reverse(name, args=args)).status_code == 200, name
    body = client.get(bad.get_absolute_url()).content.decode()
    article = _broker_article(body, "us-east-1")
    assert UNREADABLE in article
    assert "download" not in article.lower()
    good_article = _broker_article(client.get(good.get_absolute_url()).content.decode(), "us-east-1")
    assert UNREADABLE not in good_article and "Download .env" in good_article
    assert good.brokers.get().masked_token in good_article


@pytest.mark.parametrize("fmt", ["env", "helm", "docker"])
def test_downloading_an_unreadable_token_explains_instead_of_failing(client, operator, two_accounts, fmt):
    bad, _ = two_accounts
    client.force_login(operator)
    response = client.get(reverse("accounts:broker_download", args=[bad.brokers.get().pk, fmt]), follow=True)
    assert response.redirect_chain[-1][0] == bad.get_absolute_url()
    (message,) = [str(m) for m in response.context["messages"]]
    assert UNREADABLE in message and "ENCRYPTION_KEYS" in message


def test_a_host_script_leaves_out_the_broker_whose_token_is_unreadable(client, operator, two_accounts):
    _, good = two_accounts
    client.force_login(operator)
    response = client.get(reverse("accounts:broker_download", args=[good.brokers.get().pk, "docker"]))
    assert response.status_code == 200
    script = response.content.decode()
    assert "broker-b" in script and "--name broker-a" not in script
    assert UNREADABLE in script  # named among the brokers left out, with why


def test_the_command_line_refuses_an_unreadable_token(two_accounts):
    bad, _ = two_accounts
    with pytest.raises(CommandError, match=UNREADABLE) as exc:
        call_command("broker_env", bad.account_id, stdout=io.StringIO())
    assert exc.value.returncode == 2
