"""Kombu's filesystem transport, made safe for several processes.

Upstream writes a message file in place, so a polling worker can pick it up half written, fail to
decode it and lose it (kombu issue 1551). Here a message is written under a temporary name and
renamed into the queue folder (rename is atomic on one filesystem), and a consumer claims a
message by renaming it into its own folder on the same filesystem (upstream moves it to the
system temp dir, which is a copy when /tmp is another filesystem, so two workers can both get it).
"""

import os
import uuid
from queue import Empty
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads


class Channel(filesystem.Channel):
    def _folders(self) -> tuple[str, str, str]:
        out = self.data_folder_out
        tmp = os.path.join(out, ".tmp")
        claimed = os.path.join(out, ".claimed")
        for folder in (out, tmp, claimed):
            os.makedirs(folder, exist_ok=True)
        return out, tmp, claimed

    def _put(self, queue, payload, **kwargs):
        out, tmp, _ = self._folders()
        name = f"{int(round(monotonic() * 1000)):015d}_{uuid.uuid4()}.{queue}.msg"
        staging = os.path.join(tmp, name)
        try:
            with open(staging, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
                f.flush()
                os.fsync(f.fileno())
            os.rename(staging, os.path.join(out, name))
        except OSError as exc:
            raise ChannelError(f"Cannot add message {name!r} to the queue folder") from exc

    def _get(self, queue):
        folder, _, claimed_dir = self._folders()
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
    global_state = filesystem.virtual.BrokerState()
    driver_type = "portalfs"
