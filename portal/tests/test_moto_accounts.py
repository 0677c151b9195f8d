"""The emulator finds a request's account without scanning every account (portal/moto_accounts.py),
and answers what moto's own scan would."""

from unittest import mock

import pytest


@pytest.fixture
def iam_models():
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam import models

    from portal import moto_accounts

    moto_accounts.install()
    models.iam_backends.reset()
    yield models, str(DEFAULT_ACCOUNT_ID)
    models.iam_backends.reset()


def no_scan(models):
    """Any lookup that scans the accounts fails."""
    return mock.patch.object(type(models.iam_backends), "items", side_effect=AssertionError("scanned"))


def temp_keys(models, count: int) -> dict[str, str]:
    accounts = [f"{500000000000 + i}" for i in range(count)]
    return {a: models.iam_backends[a]["aws"].create_temp_access_key().access_key_id for a in accounts}


def test_a_key_moto_made_is_found_without_a_scan(iam_models):
    models, _ = iam_models
    keys = temp_keys(models, 40)
    with no_scan(models):
        assert models.get_account_id_from(keys["500000000039"]) == "500000000039"
        assert models.get_account_id_from(keys["500000000007"]) == "500000000007"


def test_a_key_in_no_account_is_scanned_for_once(iam_models):
    """The base credentials sign every AssumeRole: they are in no account."""
    models, default_account = iam_models
    temp_keys(models, 40)
    assert models.get_account_id_from("testing") == default_account
    with no_scan(models):
        assert models.get_account_id_from("testing") == default_account


def test_a_key_gone_from_its_account_is_looked_for_again(iam_models):
    models, default_account = iam_models
    key = models.iam_backends["500000000001"]["aws"].create_temp_access_key().access_key_id
    assert models.get_account_id_from(key) == "500000000001"
    del models.iam_backends["500000000001"]["aws"].access_keys[key]
    assert models.get_account_id_from(key) == default_account  # what moto answers an unknown key
    models.iam_backends.reset()
    assert models.get_account_id_from(key) == default_account
