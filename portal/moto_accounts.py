"""moto finds the account of every request by looking for its access key in every account it has
seen (`moto.iam.models.get_account_id_from`), so each call costs more as accounts accumulate: with
600 accounts, a fifth of the emulator's CPU went there, and a benchmark's later scenarios met a
slower AWS than its first. AWS does not slow down with accounts. `install()` remembers the account
(and partition) each key was found in and checks that it still holds the key, so the answer is the
scan's, found in constant time: a deleted key, or one from before a reset, is looked for again.
"""

from __future__ import annotations

from typing import Any

# access key -> (account, partition) where the scan found it
_found: dict[str, tuple[str, str]] = {}


def install() -> None:
    """Replace moto's account lookup with the remembering one (once per process)."""
    from moto.iam import models  # noqa: PLC0415  moto loads only when an emulator starts

    if getattr(models.get_account_id_from, "remembers", False):
        return
    models.get_account_id_from = _remembering(models)


def _remembering(models: Any) -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID  # noqa: PLC0415  as above
    from moto.utilities.utils import PARTITION_NAMES  # noqa: PLC0415  as above

    def get_account_id_from(access_key: str) -> str:
        found = _found.get(access_key)
        if found and access_key in models.iam_backends[found[0]][found[1]].access_keys:
            return found[0]
        for account_id, account in list(models.iam_backends.items()):  # moto's own scan
            for partition in PARTITION_NAMES:
                if access_key in account[partition].access_keys:
                    _found[access_key] = (account_id, partition)
                    return account_id
        return str(DEFAULT_ACCOUNT_ID)

    get_account_id_from.remembers = True  # type: ignore[attr-defined]
    return get_account_id_from
