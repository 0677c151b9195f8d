"""Notification of new high-severity findings: a WARNING log line and a webhook task per finding."""

from __future__ import annotations

import logging
from typing import Any

import requests
from django.conf import settings

from portal.celery import app
from portal.text import counted

from ..models import Run
from .catalogue import CHECKS

WEBHOOK_TASK = "provisioning.tasks.post_audit_webhook"

log = logging.getLogger(__name__)


class WebhookError(Exception):
    """The webhook answered with an error status: the task retries."""


def webhook_payload(run: Run, finding: dict[str, Any]) -> dict[str, Any]:
    return {
        "event": "audit.finding",
        "run_id": run.pk,
        "observed_at": (run.result or {}).get("observed_at", ""),
        "account_id": finding.get("account_id", ""),
        "agent": finding.get("agent", ""),
        "code": finding["code"],
        "severity": finding["severity"],
        "title": CHECKS[finding["code"]].title,
        "message": finding["message"],
    }


def notify_new_findings(run: Run, new_high: list[dict[str, Any]]) -> None:
    """WARNING log lines, and one webhook task per finding. Never raises: the audit has its result."""
    url = settings.AUDIT_WEBHOOK_URL
    for finding in new_high:
        where = finding.get("account_id") or f"agent {finding.get('agent')}"
        log.warning(
            "new %s audit finding %s on %s: %s",
            finding["severity"],
            finding["code"],
            where,
            finding["message"],
        )
        if not url:
            continue
        try:
            # By name: tasks.py sits above the audit (its tasks run it). A signature still runs
            # eagerly where the task is registered and eager mode is on (tests).
            app.signature(WEBHOOK_TASK, args=[webhook_payload(run, finding)]).apply_async(retry=False)
        except Exception as exc:  # a broker outage must not fail a finished audit
            log.error("could not queue the audit webhook for %s on %s: %s", finding["code"], where, exc)
    if new_high:
        found = counted(len(new_high), "new high-severity finding", "new high-severity findings")
        run.log(found, level="WARNING")


def post_webhook(payload: dict[str, Any]) -> int:
    """POST one finding as JSON; an error status raises WebhookError so the task retries."""

    response = requests.post(
        settings.AUDIT_WEBHOOK_URL,
        json=payload,
        timeout=10,
        headers={"User-Agent": "ecr-broker-portal-audit"},
    )
    if response.status_code >= 400:
        raise WebhookError(f"the webhook answered {response.status_code}")
    return response.status_code
