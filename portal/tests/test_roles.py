"""Roles (DESIGN §4): viewers read; operators onboard, rotate and download; admins also manage
agents and offboard. Groups come from portal/migrations/0002_roles.py."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.http import HttpResponse
from django.test import RequestFactory

from portal import roles

VIEW = set(roles.ROLE_PERMISSIONS[roles.VIEWER])
OPERATE = {roles.CAN_ONBOARD, roles.CAN_DOWNLOAD, roles.CAN_AUDIT}
ADMINISTER = {roles.CAN_MANAGE_AGENTS, roles.CAN_OFFBOARD}


def group_permissions(name: str) -> set[str]:
    group = Group.objects.get(name=name)
    return {
        f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")
    }


@pytest.mark.django_db
@pytest.mark.parametrize("role", sorted(roles.ROLE_PERMISSIONS))
def test_group_has_exactly_the_permissions_of_its_role(role):
    assert group_permissions(role) == set(roles.ROLE_PERMISSIONS[role])


def test_role_table_follows_the_design():
    assert set(roles.ROLE_PERMISSIONS) == {roles.VIEWER, roles.OPERATOR, roles.ADMIN}
    viewer, operator, admin = (
        set(roles.ROLE_PERMISSIONS[r]) for r in (roles.VIEWER, roles.OPERATOR, roles.ADMIN)
    )
    assert all(perm.split(".")[1].startswith("view_") for perm in viewer)
    assert viewer < operator < admin
    assert operator >= OPERATE and not ADMINISTER & operator
    assert admin >= OPERATE | ADMINISTER


def test_viewers_can_view_but_do_nothing_else(viewer):
    assert all(viewer.has_perm(perm) for perm in VIEW)
    forbidden = (set(roles.ROLE_PERMISSIONS[roles.ADMIN]) - VIEW) | OPERATE | ADMINISTER
    assert not [perm for perm in forbidden if viewer.has_perm(perm)]
    assert roles.role_of(viewer) == roles.VIEWER


def test_operators_cannot_manage_agents_or_offboard(operator):
    assert all(operator.has_perm(perm) for perm in VIEW | OPERATE)
    assert not operator.has_perm(roles.CAN_MANAGE_AGENTS)
    assert not operator.has_perm(roles.CAN_OFFBOARD)
    assert not operator.has_perm("auth.add_user")
    assert roles.role_of(operator) == roles.OPERATOR


def test_admins_can_do_everything_a_role_grants(admin_user):
    assert all(admin_user.has_perm(perm) for perm in VIEW | OPERATE | ADMINISTER)
    assert roles.role_of(admin_user) == roles.ADMIN


def test_users_without_a_role_have_no_permissions(outsider):
    everything = set().union(*roles.ROLE_PERMISSIONS.values())
    assert not [perm for perm in everything if outsider.has_perm(perm)]
    assert roles.role_of(outsider) == ""
    assert roles.role_of(AnonymousUser()) == ""


def test_the_highest_role_wins(viewer):
    viewer.groups.add(Group.objects.get(name=roles.OPERATOR))
    viewer = get_user_model().objects.get(pk=viewer.pk)  # drop the permission cache
    assert roles.role_of(viewer) == roles.OPERATOR
    assert viewer.has_perm(roles.CAN_ONBOARD)


@pytest.mark.django_db  # personas come through getfixturevalue: declare the database up front
@pytest.mark.parametrize(
    ("persona", "allowed"),
    [("viewer", False), ("outsider", False), ("operator", True), ("admin_user", True)],
)
def test_permission_required_answers_403_not_a_login_redirect(request, persona, allowed):
    user = request.getfixturevalue(persona)

    @roles.permission_required(roles.CAN_ONBOARD)
    def view(request):
        return HttpResponse("done")

    http_request = RequestFactory().post("/accounts/onboard/")
    http_request.user = user
    if allowed:
        assert view(http_request).content == b"done"
    else:
        with pytest.raises(PermissionDenied, match="onboard_ecraccount"):
            view(http_request)


@pytest.mark.django_db  # personas come through getfixturevalue: declare the database up front
@pytest.mark.parametrize(
    ("persona", "flags"),
    [
        ("viewer", set()),
        ("operator", {"can_onboard", "can_download", "can_download_deployment", "can_audit"}),
        (
            "admin_user",
            {
                "can_onboard",
                "can_download",
                "can_download_deployment",
                "can_audit",
                "can_manage_agents",
                "can_offboard",
            },
        ),
    ],
)
def test_navigation_flags_follow_the_role(request, persona, flags):
    http_request = RequestFactory().get("/")
    http_request.user = request.getfixturevalue(persona)
    context = roles.context_processor(http_request)
    assert {key for key, value in context.items() if key.startswith("can_") and value} == flags


@pytest.mark.django_db
def test_createsuperuser_noinput_with_password_from_environment(monkeypatch, client):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-Passphrase-9271")
    call_command("createsuperuser", "--noinput", username="root", email="root@example.com", verbosity=0)
    user = get_user_model().objects.get(username="root")
    assert user.is_superuser and user.is_staff
    assert user.check_password("a-long-Passphrase-9271")
    assert roles.role_of(user) == roles.ADMIN
    assert all(user.has_perm(perm) for perm in VIEW | OPERATE | ADMINISTER)
    assert client.login(username="root", password="a-long-Passphrase-9271")
