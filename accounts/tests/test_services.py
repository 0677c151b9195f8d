"""Inventory services: what the engine asks of the inventory, at a cost that does not grow per account."""

from accounts import services as account_services

from .conftest import onboarded


def test_agent_member_arns_is_one_query_however_many_accounts(
    make_account, role_agent, django_assert_num_queries
):
    for n in range(5):
        onboarded(make_account(f"22222222220{n}"))

    with django_assert_num_queries(1):
        members = account_services.agent_member_arns(role_agent)

    assert members == {
        f"22222222220{n}": f"arn:aws:iam::22222222220{n}:role/SnykEcrServiceRole" for n in range(5)
    }
