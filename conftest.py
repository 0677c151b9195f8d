"""Shared fixtures: personas (healthchecks-style), in-process moto, worker-process helpers; the two
passes of `make test` (--suite-pass)."""

import os
import shutil

import pytest

from portal.testing import isolate_session

# Tests never reach a real AWS account: fake credentials, no endpoint unless a test sets one.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_SESSION_TOKEN", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_PROFILE", None)
# Worker processes started by one test session consume only that session's messages.
SESSION_DIR = isolate_session()

# Tests that start worker processes, servers or Chromium: `make test` runs them after the others,
# one at a time (see the Makefile).
SERIAL_MARKS = ("reliability", "browser")


def pytest_addoption(parser):
    parser.addoption(
        "--suite-pass",
        choices=("parallel", "serial"),
        default=None,
        help=f"Only the tests marked {' or '.join(SERIAL_MARKS)} (serial), or only the others (parallel).",
    )


# Whether the tests PYTEST_ARGS chose include some of the other pass's (unknown to xdist's controller,
# which collects nothing itself).
OTHER_PASS_HAS_TESTS = pytest.StashKey[bool]()


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected theirs
def pytest_collection_modifyitems(config, items):
    wanted = config.getoption("suite_pass")
    if wanted is None:
        return
    keep, drop = [], []
    for item in items:
        serial = any(item.get_closest_marker(mark) for mark in SERIAL_MARKS)
        (keep if serial == (wanted == "serial") else drop).append(item)
    config.stash[OTHER_PASS_HAS_TESTS] = bool(drop)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if (
        config.getoption("suite_pass")
        and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED
        and config.stash.get(OTHER_PASS_HAS_TESTS, True)
    ):
        session.exitstatus = pytest.ExitCode.OK  # PYTEST_ARGS chose tests of the other pass only
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        shutil.rmtree(SESSION_DIR, ignore_errors=True)  # kept after a failure: it has the worker logs


@pytest.fixture
def aws():
    """In-process moto with a clean session cache and call counter (and the Pod Identity fake)."""
    from moto import mock_aws

    from portal import moto_eks
    from provisioning import aws as aws_module

    moto_eks.install()

    with mock_aws():
        aws_module.sessions.clear()
        aws_module.calls.clear()
        yield aws_module
        aws_module.sessions.clear()


def _transactional(request) -> bool:
    return _transactional_test(request.node)


@pytest.fixture(autouse=True)
def _runs_in_one_thread_inside_a_test_transaction(request, settings):
    """A test's open transaction would lock SQLite against the engine's account threads (and a run's
    heartbeat thread: it beats only after an interval no such test's run lasts)."""
    if not _transactional(request):
        settings.RECONCILE_CONCURRENCY = 1
        settings.RUN_HEARTBEAT_INTERVAL = 3600


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Transactional tests end with a flush, which drops the groups the roles migration made.

    They are made again once every fixture of the test is torn down: the flush of a test marked
    django_db(transaction=True) comes after any fixture of this file is torn down."""
    result = yield
    if nextitem is not None and _transactional_test(item):  # after the last, the database is gone
        from pytest_django.plugin import blocking_manager_key

        from portal.roles import ensure_role_groups

        with item.config.stash[blocking_manager_key].unblock():
            ensure_role_groups()
    return result


def _transactional_test(item) -> bool:
    marker = item.get_closest_marker("django_db")
    return bool({"transactional_db", "live_server"} & set(getattr(item, "fixturenames", ()))) or bool(
        marker and marker.kwargs.get("transaction")
    )


def _user(django_user_model, username, role):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user(username=username, password="pw-" + username)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def viewer(db, django_user_model):
    return _user(django_user_model, "vera-viewer", "viewer")


@pytest.fixture
def operator(db, django_user_model):
    return _user(django_user_model, "otto-operator", "operator")


@pytest.fixture
def admin_user(db, django_user_model):
    return _user(django_user_model, "ada-admin", "admin")


@pytest.fixture
def outsider(db, django_user_model):
    """Logged in, but in no role group."""
    return _user(django_user_model, "oscar-outsider", None)
