"""Run by test_suite_isolation.py in a session of its own, in this order (not collected otherwise)."""

import pytest


@pytest.mark.django_db(transaction=True)
def test_a_transactional_test_by_marker_ends_with_a_flush():
    pass


def test_the_next_transactional_test_still_finds_the_role_groups(transactional_db, admin_user):
    assert admin_user.groups.filter(name="admin").exists()
