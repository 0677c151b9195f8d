"""portal.emulator: the environment that pins boto3 to the emulator, the server, the demo data."""

from __future__ import annotations

import os

import pytest
from django.core.management import CommandError, call_command

from portal import emulator

HOSTILE = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "a-real-session",
    "AWS_PROFILE": "production-admin",
    "AWS_ENDPOINT_URL": "https://example.invalid",
    "AWS_ENDPOINT_URL_IAM": "https://iam.amazonaws.com",
    "AWS_ENDPOINT_URL_STS": "https://sts.amazonaws.com",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true",
    "AWS_ROLE_ARN": "arn:aws:iam::999999999999:role/Admin",
    "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/token",
}


def test_the_pinned_environment_beats_every_real_aws_setting(tmp_path, monkeypatch):
    import boto3

    url = "http://127.0.0.1:5999"
    for name, value in HOSTILE.items():
        monkeypatch.setenv(name, value)
    for name, value in emulator.aws_environ(url, tmp_path).items():
        monkeypatch.setenv(name, value)

    session = boto3.session.Session()  # botocore's own resolution of endpoints and credentials
    for service in ("iam", "sts", "ecr"):
        assert session.client(service).meta.endpoint_url == url
    credentials = session.get_credentials()
    assert credentials.access_key == emulator.FAKE_ACCESS_KEY_ID
    assert credentials.method == "env"


def test_a_pinned_environment_survives_dotenv_loading(tmp_path, monkeypatch):
    """settings.py loads .env with setdefault: nothing it says may replace a pinned value."""
    import environ

    pinned = emulator.aws_environ("http://127.0.0.1:5999", tmp_path, HOSTILE)
    for name, value in pinned.items():
        monkeypatch.setenv(name, value)
    dotenv = tmp_path / ".env"
    dotenv.write_text("".join(f"{name}={value}\n" for name, value in HOSTILE.items()))
    environ.Env.read_env(dotenv)

    assert {name: os.environ[name] for name in pinned} == pinned
    assert set(HOSTILE) <= set(pinned)


@pytest.mark.parametrize("endpoint", ["", "https://iam.amazonaws.com", "http://10.0.0.5:5000"])
def test_demo_data_is_never_written_outside_a_loopback_emulator(endpoint, monkeypatch, aws):
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    with pytest.raises(RuntimeError, match="loopback"):
        emulator.seed_aws()
    assert sum(aws.calls.values()) == 0


@pytest.mark.reliability
def test_the_server_serves_moto_and_seeding_twice_changes_nothing(db, tmp_path, monkeypatch):
    from accounts.models import AgentIdentity, EcrAccount
    from provisioning import aws

    server = emulator.start()
    try:
        assert emulator.is_loopback_url(server.url) and server.port > 0
        for name, value in emulator.aws_environ(server.url, tmp_path).items():
            monkeypatch.setenv(name, value)
        aws.sessions.clear()

        first = emulator.seed_aws()
        again = emulator.seed_aws()
        assert (
            first
            == again
            == {
                account: emulator.management_role_arn(account)
                for account in [emulator.DEMO.agent_account]
                + [a.account_id for a in emulator.DEMO.ecr_accounts]
            }
        )
        for demo in emulator.DEMO.ecr_accounts:
            access = aws.Access(demo.account_id, emulator.management_role_arn(demo.account_id))
            repos = aws.call(access, "ecr", "describe_repositories")["repositories"]
            assert sorted(r["repositoryName"] for r in repos) == sorted(demo.repositories)

        created = emulator.seed_inventory()
        kept = emulator.seed_inventory()
        assert created.created and not kept.created
        assert kept.agent.pk == created.agent.pk
        assert AgentIdentity.objects.count() == 1
        assert list(EcrAccount.objects.values_list("status", flat=True)) == ["draft", "draft"]
        assert created.agent.management_role_arn == emulator.management_role_arn(emulator.DEMO.agent_account)
    finally:
        server.stop()
        aws.sessions.clear()
    assert not server.alive()


def test_run_embedded_refuses_shared_servers(settings, db):
    from django.db import connection

    settings.CELERY_BROKER_URL = "redis://redis.internal:6379/0"
    expected = "DATABASE_URL" if connection.vendor != "sqlite" else "CELERY_BROKER_URL"
    with pytest.raises(CommandError, match=expected):
        call_command("run_embedded")


@pytest.mark.reliability
def test_the_demo_organization_is_seeded_once_with_its_rule(db, tmp_path, monkeypatch):
    """A root, two OUs with one nested, six accounts of which one suspended, and the demo rule."""
    from accounts.models import Organization
    from provisioning import aws, org_services

    server = emulator.start()
    try:
        for name, value in emulator.aws_environ(server.url, tmp_path).items():
            monkeypatch.setenv(name, value)
        aws.sessions.clear()
        first = emulator.seed_organization()
        again = emulator.seed_organization()
        assert first == again
        assert sorted(first.units) == ["Apps", "Apps/Payments", "Platform"]
        assert len(first.accounts) == len(emulator.DEMO_ORGANIZATION.accounts) == 6
        agent = emulator.seed_inventory().agent
        organization = emulator.seed_organization_inventory(first, agent)
        assert emulator.seed_organization_inventory(again, agent) == organization
        assert Organization.objects.count() == 1 and organization.rules.get().ou_ids == [first.units["Apps"]]
        preview = org_services.plan_sync(organization)
        names = {v: k for k, v in first.accounts.items()}
        assert sorted(names[a] for a in preview.sync.onboard_ids) == ["apps-api", "apps-web", "payments-core"]
        legacy = preview.sync.decisions[first.accounts["payments-legacy"]]
        assert legacy.reason == "not ACTIVE (SUSPENDED)"
    finally:
        server.stop()
        aws.sessions.clear()
