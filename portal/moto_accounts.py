"""moto finds the account of every request by looking for its access key in every account it has
seen (`moto.iam.models.get_account_id_from`), so each call costs more as accounts accumulate: with
3,000 accounts the emulator answered a third as many calls per second as with none, most of its CPU
in that scan (and a benchmark's later scenarios met a slower AWS than its first). AWS does not slow
down with accounts. `install()` gives the same answers in constant time: keys are remembered where
moto creates them (or where a scan found one made before), a remembered account is checked to still
hold its key (a deleted key, or one from before a reset, is looked for again), and a key found in no
account (the base credentials) is remembered as such until a key of that id is created.
"""

from __future__ import annotations

from typing import Any

_found: dict[str, tuple[str, str]] = {}  # access key -> (account, partition)
_unknown: set[str] = set()  # access keys no account held when last looked for


def install() -> None:
    """Replace moto's account lookup with the remembering one (once per process)."""
    from moto.iam import models  # noqa: PLC0415  moto loads only when an emulator starts

    if getattr(models.get_account_id_from, "remembers", False):
        return
    models.get_account_id_from = _remembering(models)
    for name in ("create_access_key", "create_temp_access_key"):  # every way moto makes a key
        setattr(models.IAMBackend, name, _noting_keys(getattr(models.IAMBackend, name)))


def _noting_keys(create: Any) -> Any:
    def noting(backend: Any, *args: Any, **kwargs: Any) -> Any:
        key = create(backend, *args, **kwargs)
        _found[key.physical_resource_id] = (backend.account_id, backend.partition)
        _unknown.discard(key.physical_resource_id)
        return key

    return noting


def _remembering(models: Any) -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID  # noqa: PLC0415  as above
    from moto.utilities.utils import PARTITION_NAMES  # noqa: PLC0415  as above

    def get_account_id_from(access_key: str) -> str:
        found = _found.get(access_key)
        if found and access_key in models.iam_backends[found[0]][found[1]].access_keys:
            return found[0]
        if access_key not in _unknown:
            for account_id, account in list(models.iam_backends.items()):  # moto's own scan
                for partition in PARTITION_NAMES:
                    if access_key in account[partition].access_keys:
                        _found[access_key] = (account_id, partition)
                        return account_id
            _unknown.add(access_key)
        return str(DEFAULT_ACCOUNT_ID)

    get_account_id_from.remembers = True  # type: ignore[attr-defined]
    return get_account_id_from
