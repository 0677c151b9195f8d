"""Producer and consumer processes for the filesystem-broker load test (test_kombu_fs.py).

    python -m portal.tests.fs_load produce --folder F --go GO --name p0 --count 200 --size 65536
    python -m portal.tests.fs_load consume --folder F --go GO --out OUT --done DONE

Both wait for the GO file so that every process starts at the same moment on the same folder
(with --connect-after-go they also declare the queue only then, all at once).
A consumer writes one line per message to OUT: "ok <id>", or "bad <id> <why>" when the body does
not match its checksum, or "error <exception>" when the transport fails to hand a message over.
It stops once DONE exists (all producers finished) and the queue has stayed empty for a while.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path
from queue import Empty

from kombu import Connection

QUEUE = "load"
TRANSPORTS = {"portalfs": "portal.kombu_fs:Transport", "upstream": "filesystem"}


def connect(folder: str, transport: str) -> Connection:
    return Connection(
        transport=TRANSPORTS[transport],
        transport_options={
            "data_folder_in": folder,
            "data_folder_out": folder,
            "control_folder": os.path.join(folder, "control") if transport == "upstream" else None,
        },
    )


def wait_for(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.005)


def body_for(name: str, seq: int, size: int) -> dict:
    data = os.urandom(size // 2).hex()
    return {"id": f"{name}-{seq}", "data": data, "sha": hashlib.sha256(data.encode()).hexdigest()}


def produce(args: argparse.Namespace) -> int:
    bodies = [body_for(args.name, seq, args.size) for seq in range(args.count)]
    if args.connect_after_go:
        wait_for(args.go)
    with connect(args.folder, args.transport) as conn:
        queue = conn.SimpleQueue(QUEUE)  # declares the queue and binds it: writes the exchange table
        wait_for(args.go)
        for body in bodies:
            queue.put(body)
        queue.close()
    return 0


def consume(args: argparse.Namespace) -> int:
    out = open(args.out, "a", buffering=1)  # noqa: SIM115 (one line per message, kept open)
    if args.connect_after_go:
        wait_for(args.go)
    with connect(args.folder, args.transport) as conn:
        queue = conn.SimpleQueue(QUEUE)
        wait_for(args.go)
        empty_since = None
        while True:
            try:
                message = queue.get_nowait()
            except Empty:
                now = time.monotonic()
                if os.path.exists(args.done):
                    empty_since = empty_since or now
                    if now - empty_since > args.linger:
                        break
                time.sleep(0.002)
                continue
            except Exception as exc:  # a half-written file: the transport cannot decode it
                out.write(f"error {type(exc).__name__}: {str(exc)[:80]!r}\n")
                continue
            empty_since = None
            body = message.payload
            digest = hashlib.sha256(body["data"].encode()).hexdigest()
            if digest == body["sha"]:
                out.write(f"ok {body['id']}\n")
            else:
                out.write(f"bad {body['id']} checksum\n")
            message.ack()
        queue.close()
    out.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["produce", "consume"])
    parser.add_argument("--folder", required=True)
    parser.add_argument("--go", required=True)
    parser.add_argument("--transport", choices=sorted(TRANSPORTS), default="portalfs")
    parser.add_argument("--name", default="p")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--size", type=int, default=65536)
    parser.add_argument("--out")
    parser.add_argument("--done")
    parser.add_argument("--linger", type=float, default=1.0)
    parser.add_argument("--connect-after-go", action="store_true", help="declare the queue after GO")
    args = parser.parse_args(argv)
    Path(args.folder).mkdir(parents=True, exist_ok=True)
    return produce(args) if args.role == "produce" else consume(args)


if __name__ == "__main__":
    sys.exit(main())
