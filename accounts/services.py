"""Use cases of the inventory that are not engine work: handing out broker files (audited)."""

from __future__ import annotations

from portal import audit

from . import renderers, selectors
from .models import BrokerInstance


def broker_file_download(*, broker: BrokerInstance, fmt: str, user=None) -> renderers.BrokerFile:
    """Render a token-holding broker file and record who took it, once per broker it holds.

    Raises renderers.BrokerFileError (nothing recorded) when the file cannot be made.
    """
    host_brokers = selectors.host_brokers(broker) if fmt == "docker" else ()
    broker_file = renderers.render(broker, fmt, host_brokers=host_brokers)
    for held in broker_file.brokers:
        audit.record(
            user=user,
            action="broker.download",
            account_id=held.account.account_id,
            obj=held,
            region=held.region,
            format=fmt,
            filename=broker_file.filename,
            external_id=renderers.current_external_id(held.account),
        )
    return broker_file
