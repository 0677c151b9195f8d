"""Use cases of the inventory that are not engine work: handing out broker files (audited)."""

from __future__ import annotations

from portal import audit

from . import renderers
from .models import BrokerInstance


def broker_file_download(*, broker: BrokerInstance, fmt: str, user=None) -> renderers.BrokerFile:
    """Render a token-holding broker file and record who took it.

    Raises renderers.BrokerFileError (nothing recorded) when the file cannot be made.
    """
    broker_file = renderers.render(broker, fmt)
    audit.record(
        user=user,
        action="broker.download",
        account_id=broker.account.account_id,
        obj=broker,
        region=broker.region,
        format=fmt,
        filename=broker_file.filename,
        external_id=renderers.current_external_id(broker.account),
    )
    return broker_file
