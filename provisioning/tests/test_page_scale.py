"""The dashboard, the audit page and the run list at scale: the same queries for 5 or 65 accounts
(with their audit snapshots, bulk runs and operations), and never a run's plan or result.

A bulk run's plan holds every document of every account it onboarded (megabytes for 1,000
accounts); the dashboard loaded the plan and result of its ten latest runs on every request,
though it shows neither. The inventory is built as `make bench`'s served-pages scenario builds it.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from bench.served import fill_inventory

PAGES = ["dashboard", "provisioning:audit_list", "provisioning:run_list"]
PLAN, RESULT = '"provisioning_run"."plan"', '"provisioning_run"."result"'


def queries_of(client, url: str) -> list[str]:
    client.get(url, secure=True)  # warm the session
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, secure=True)
    assert response.status_code == 200
    return [q["sql"] for q in captured.captured_queries]


@pytest.mark.parametrize("name", PAGES)
def test_pages_cost_the_same_queries_for_5_or_65_accounts_and_never_load_run_documents(client, viewer, name):
    client.force_login(viewer)
    url = reverse(name)
    fill_inventory(5, 300, agent_name="small", first_id=710000000000)
    few = queries_of(client, url)
    fill_inventory(60, 1200, agent_name="large", first_id=720000000000)
    many = queries_of(client, url)
    assert len(many) == len(few), "\n".join(many)
    assert [sql for sql in many if PLAN in sql] == []
    # The audit page shows the last audit's agent findings (an audit's result: agents only).
    assert [sql for sql in many if RESULT in sql and "'audit'" not in sql] == []
