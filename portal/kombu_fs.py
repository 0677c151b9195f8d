"""Kombu's filesystem transport, made safe for several processes.

Upstream writes a message file in place, so a polling worker can pick it up half written, fail to
decode it and lose it (kombu issue 1551). Here a message is written under a temporary name and
renamed into the queue folder (rename is atomic on one filesystem), and a consumer claims a
message by renaming it into its own folder on the same filesystem (upstream moves it to the
system temp dir, which is a copy when /tmp is another filesystem, so two workers can both get it).

The exchange tables (which queue a routing key goes to, read on every publish) have the same
race when two processes create one at once: upstream opens the file with truncation before it
locks it, so a publisher can read an empty table. Here a table is created whole under a temporary
name and linked into place; upstream's locked read-modify-write then updates it. The tables live
in `<queue folder>/.control` unless `control_folder` is given (upstream: `./control`, wherever
the process happens to run).

Delivery is at most once for a consumer that dies with a message in hand (the message is taken
off the disk when it is read, as upstream does); the run sweeper re-queues such work.
"""

import os
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, virtual
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

TMP, CLAIMED, CONTROL = ".tmp", ".claimed", ".control"


class Channel(filesystem.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for folder in (
            self.data_folder_in,
            self.data_folder_out,
            os.path.join(self.data_folder_out, TMP),
            os.path.join(self.data_folder_in, CLAIMED),
            self.control_folder,
        ):
            os.makedirs(folder, exist_ok=True)

    @property
    def control_folder(self) -> Path:
        given = self.transport_options.get("control_folder")
        return Path(given) if given else Path(self.data_folder_out) / CONTROL

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str | None, queue: str) -> None:
        table: Path = self._exchange_file(exchange)  # type: ignore[attr-defined]  # upstream's, not in the stubs
        if not table.exists():
            staging = table.parent / f"{TMP}-{uuid.uuid4()}-{table.name}"
            staging.write_bytes(str_to_bytes(dumps([])))
            try:
                os.link(staging, table)  # never replaces: the first creator wins, whole
            except FileExistsError:
                pass
            finally:
                staging.unlink()
        super()._queue_bind(exchange, routing_key, pattern, queue)

    # _put and _get keep upstream's filesystem signatures, which differ from the abstract channel's
    # (kombu's stubs mark upstream's methods with the same ignore).
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        out = self.data_folder_out
        # Zero-padded so that sorting the names sorts by time (upstream's names are not padded).
        name = f"{round(monotonic() * 1000):015d}_{uuid.uuid4()}.{queue}.msg"
        staging = os.path.join(out, TMP, name)
        try:
            with open(staging, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
                f.flush()
                os.fsync(f.fileno())
            os.rename(staging, os.path.join(out, name))
        except OSError as exc:
            raise ChannelError(f"Cannot add message {name!r} to the queue folder") from exc

    def _get(self, queue: str) -> dict[str, Any]:  # type: ignore[override]
        folder = self.data_folder_in
        claimed_dir = os.path.join(folder, CLAIMED)
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(folder)):
            if name.startswith(".") or name.partition(".")[2] != wanted:
                continue
            claimed = os.path.join(claimed_dir, f"{os.getpid()}-{name}")
            try:
                os.rename(os.path.join(folder, name), claimed)  # only one consumer wins
            except OSError:
                continue
            try:
                with open(claimed, "rb") as f:
                    payload = f.read()
            finally:
                os.remove(claimed)
            return loads(bytes_to_str(payload))
        raise Empty()


class Transport(filesystem.Transport):
    Channel = Channel
    global_state = virtual.BrokerState()
    driver_type = "portalfs"

    @property
    def default_connection_params(self) -> dict[str, Any]:
        return {}  # no host to connect to (upstream's "localhost" only earns a warning per connection)
