"""The pages read as words (issue 11, item 21): labels instead of stored values, times as a person
says them, counts in the right number, and the dashboard's audit summary once."""

import html
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts import services as account_services
from accounts.choices import Lifecycle
from accounts.models import EcrAccount
from provisioning.choices import RunKind
from provisioning.models import Run

from .conftest import make_management_role
from .test_audit_pages import audited, page  # noqa: F401  audited is a fixture

NEW = "999988887777"


@pytest.fixture(autouse=True)
def _plain_http(settings):
    settings.SECURE_SSL_REDIRECT = False


def shown(body: str) -> str:
    """The text a person reads: tags dropped, entities decoded, white space collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def test_no_page_counts_with_a_bracketed_s(client, operator, audited):  # noqa: F811
    for url in (reverse("dashboard"), reverse("provisioning:run_list"), reverse("provisioning:audit_list")):
        text = shown(page(client, operator, url))
        assert "(s)" not in text, url
    for run in Run.objects.all():
        assert "(s)" not in run.explanation, run.explanation
        assert not [e.message for e in run.log_entries.all() if "(s)" in e.message]


def test_the_audit_says_how_many_reads_ran_at_once_beside_its_limit(audited, settings):  # noqa: F811
    run = audited[2]
    limit = settings.AUDIT_CONCURRENCY
    # The log names the limit; the explanation the reads measured at once beside it (not alone).
    peak = re.search(rf"Reads at once: at most (\d+) \(limit {limit}\)", run.explanation)
    assert peak and 1 <= int(peak.group(1)) <= min(limit, 2), run.explanation
    assert f"up to {limit} reads at a time" in run.log_entries.first().message
    assert run.explanation.startswith("Audited 2 accounts and 1 agent: ")


def test_the_dashboard_gives_the_audit_summary_once(client, operator, audited):  # noqa: F811
    text = shown(page(client, operator, reverse("dashboard")))
    assert text.count("Audited 2 accounts and 1 agent") == 1  # in the runs table only
    findings = re.findall(r"\d+ findings? ?: \d+ critical, \d+ high, \d+ medium, \d+ low\.", text)
    assert len(findings) == 1 and text.count("critical") == 1, text  # once, in the findings card
    assert "0 drifted accounts" not in text  # the tiles have it
    assert "1 agent " in text and "1 agents" not in text  # the tiles count in words too


def test_times_read_as_a_person_says_them(client, viewer, audited):  # noqa: F811
    Run.objects.update(created_at=timezone.now() - timedelta(seconds=30))
    text = shown(page(client, viewer, reverse("provisioning:run_list")))
    assert "30 seconds ago" in text or "31 seconds ago" in text
    assert "0 minutes" not in text
    EcrAccount.objects.update(updated_at=timezone.now())
    assert "0 minutes" not in shown(page(client, viewer, reverse("accounts:account_list")))


def test_audit_states_are_labels_not_stored_values(client, viewer, audited, aws):  # noqa: F811
    agent = audited[0]
    account_services.account_create(
        agent=agent, account_id=NEW, regions=["us-east-1"], management_role_arn=make_management_role(NEW)
    )
    EcrAccount.objects.filter(account_id=NEW).update(status=Lifecycle.ACTIVE)  # onboarded, never audited
    body = page(client, viewer)
    row = shown(body[body.index(f'id="relationship-{NEW}"') :].split("</tr>")[0])
    assert "Not audited yet" in row
    text = shown(body)
    for raw in ("not_audited", "in_sync", "inline-per-account", " critical ", " high "):
        assert raw not in text.replace("Critical", "").replace("High", ""), raw
    assert "Drifted" in text and "Critical" in text and "Inline, one statement per account" in text


@pytest.mark.parametrize(
    ("username", "superuser", "role"), [("admin", True, "Administrator"), ("otto", False, "Operator")]
)
def test_the_header_names_the_user_and_the_role_once(client, django_user_model, username, superuser, role):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user(username=username, password="pw", is_superuser=superuser)
    if not superuser:
        user.groups.add(Group.objects.get(name="operator"))
    body = page(client, user, reverse("dashboard"))
    assert f'<span id="who-name">{username}</span>' in body
    assert f'id="who-role" title="Your role in the portal">{role}</span>' in body
    assert " · " not in shown(body[body.index('class="who"') :].split("</div>")[0])


def test_an_onboard_run_counts_its_accounts_and_writes_in_words(audited):  # noqa: F811
    onboard = Run.objects.filter(kind=RunKind.ONBOARD).order_by("pk").first()
    assert re.fullmatch(r"1 account in sync \(\d+ writes\)\.", onboard.explanation), onboard.explanation
