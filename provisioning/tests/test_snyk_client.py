"""provisioning/snyk.py against the fake Snyk API: JSON:API, versions, pagination, retries, errors."""

import time

import pytest

from provisioning import snyk


@pytest.fixture
def client(snyk_fake):
    return snyk.Client(snyk.SnykAccess(snyk_fake.url, snyk_fake.tenant_id, snyk_fake.token))


def test_the_connection_test_reads_self_and_the_tenant_admin_membership(snyk_fake, client):
    me = client.self_user()
    assert me["type"] == "user" and me["attributes"]["name"] == "Tenant Admin"
    assert client.is_tenant_admin(me["id"])
    other = snyk_fake.add_user(token="tok-other")
    assert not snyk.Client(snyk.SnykAccess(snyk_fake.url, snyk_fake.tenant_id, "tok-other")).is_tenant_admin(
        other
    )
    assert snyk_fake.log[:2] == ["GET /rest/self", f"GET /rest/tenants/{snyk_fake.tenant_id}/memberships"]


def test_lists_follow_links_next_to_the_last_page(snyk_fake, client):
    group = snyk_fake.group_of(snyk_fake.tenant_id)
    for i in range(8):
        snyk_fake.orgs[f"00000000-0000-4000-8000-00000000000{i}"] = {
            "name": "ECR 222222222222 eu-west-1" + ("-old" if i % 2 else ""),
            "group_id": group,
            "tenant": snyk_fake.tenant_id,
        }
    found = client.orgs_named("ECR 222222222222 eu-west-1", group)
    assert len(found) == 4  # Snyk's name filter matches parts of names: only exact names are kept
    assert snyk_fake.log.count("GET /rest/orgs") == 3  # 8 orgs, 3 per page


def test_429_is_retried_after_retry_after_even_for_a_post(snyk_fake, client):
    snyk_fake.faults.append(("POST /rest/orgs/", 429, "1"))
    org = snyk_fake.org_of(snyk_fake.tenant_id)
    started = time.monotonic()
    answer = client.request(
        "POST",
        f"/rest/orgs/{org}/apps/installs",
        version=snyk.APP_INSTALL_VERSION,
        body={
            "data": {"type": "app_install"},
            "relationships": {"app": {"data": {"id": snyk_fake_app_id(), "type": "app"}}},
        },
    )
    assert time.monotonic() - started >= 1.0
    assert answer.status == 201 and answer.attempts == 2 and answer.request_id
    assert answer.body["data"]["attributes"]["client_secret"]


def snyk_fake_app_id() -> str:
    from portal.snyk_fake import BROKER_APP_ID

    return BROKER_APP_ID


def test_5xx_is_retried_for_reads_but_a_post_is_never_repeated(snyk_fake, client):
    snyk_fake.faults.append(("GET /rest/self", 503, ""))
    assert client.self_user()["id"]
    assert snyk_fake.log.count("GET /rest/self") == 2
    org = snyk_fake.org_of(snyk_fake.tenant_id)
    snyk_fake.faults.append(("POST /rest/orgs/", 502, ""))
    with pytest.raises(snyk.SnykError) as caught:
        client.request("POST", f"/rest/orgs/{org}/apps/installs", version=snyk.APP_INSTALL_VERSION, body={})
    assert caught.value.status == 502
    assert snyk_fake.log.count(f"POST /rest/orgs/{org}/apps/installs") == 1


def test_errors_are_plain_words_with_snyk_request_id_and_never_the_token(snyk_fake):
    bad = snyk.Client(snyk.SnykAccess(snyk_fake.url, snyk_fake.tenant_id, "not-the-token"))
    with pytest.raises(snyk.SnykError) as caught:
        bad.self_user()
    error = caught.value
    assert error.status == 401 and error.request_id
    assert "Unauthorized" in str(error) and "API host" in str(error)
    assert "not-the-token" not in str(error) + repr(bad.access) + error.call
    assert error.call == "GET /rest/self"


def test_wrong_version_or_media_type_is_refused_as_snyk_would(snyk_fake, client):
    with pytest.raises(snyk.SnykError) as caught:
        client.get("/rest/self", version="2023-01-01")
    assert caught.value.status == 404
    org = snyk_fake.org_of(snyk_fake.tenant_id)
    with pytest.raises(snyk.SnykError) as caught:
        client.request(
            "POST",
            f"/rest/orgs/{org}/apps/installs",
            version=snyk.APP_INSTALL_VERSION,
            body={"data": {"type": "app_install"}},
            v1=True,
        )
    assert caught.value.status == 415


def test_unreachable_api_is_an_error_naming_the_host(settings):
    settings.SNYK_RETRIES = 0
    client = snyk.Client(snyk.SnykAccess("http://127.0.0.1:9", "t", "secret-token"))
    with pytest.raises(snyk.SnykError) as caught:
        client.self_user()
    assert caught.value.status == 0 and "127.0.0.1:9" in str(caught.value)
    assert "secret-token" not in str(caught.value)
