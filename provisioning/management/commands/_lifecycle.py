"""Helpers shared by the lifecycle commands (a leading underscore: Django does not list it)."""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from accounts.models import EcrAccount
from provisioning import aws, cli, policies
from provisioning.planner import Plan


def account_or_invalid(account_id: str) -> EcrAccount:
    account = (
        EcrAccount.objects.select_related("agent")
        .prefetch_related("external_ids", "brokers")
        .filter(account_id=account_id)
        .first()
    )
    if account is None:
        raise cli.invalid(ValidationError({"account_id": f"{account_id} is not in the portal."}))
    return account


def plan_or_fail(make: Callable[[], Plan]) -> Plan:
    """Make a preview; bad input exits 2, an AWS or quota error exits 1 with the reason."""
    try:
        return make()
    except ValidationError as exc:
        raise cli.invalid(exc) from None
    except aws.AwsError as exc:
        raise CommandError(
            f"could not read AWS: {exc.code}: {exc.message}", returncode=cli.EXIT_FAILED
        ) from None
    except policies.LayoutError as exc:
        raise CommandError(str(exc), returncode=cli.EXIT_FAILED) from None
