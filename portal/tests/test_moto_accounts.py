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


def test_a_key_is_found_once_by_the_scan_then_without_it(iam_models):
    models, _ = iam_models
    keys = {
        f"{500000000000 + i}": models.iam_backends[f"{500000000000 + i}"]["aws"].create_temp_access_key()
        for i in range(40)
    }
    account, key = "500000000039", keys["500000000039"].access_key_id
    assert models.get_account_id_from(key) == account  # found by the scan, remembered
    with mock.patch.object(type(models.iam_backends), "items", side_effect=AssertionError("scanned")):
        assert models.get_account_id_from(key) == account
    assert models.get_account_id_from(keys["500000000007"].access_key_id) == "500000000007"


def test_a_key_gone_from_its_account_is_looked_for_again(iam_models):
    models, default_account = iam_models
    key = models.iam_backends["500000000001"]["aws"].create_temp_access_key().access_key_id
    assert models.get_account_id_from(key) == "500000000001"
    del models.iam_backends["500000000001"]["aws"].access_keys[key]
    assert models.get_account_id_from(key) == default_account  # what moto answers an unknown key
    models.iam_backends.reset()
    assert models.get_account_id_from(key) == default_account
