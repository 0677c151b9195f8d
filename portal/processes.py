"""Child processes that die with their parent (Linux `PR_SET_PDEATHSIG`; elsewhere a no-op).

A process whose parent was SIGKILLed is re-parented and runs on: an embedded beat kept sending
tasks, an emulator kept its port. Asking the kernel for a signal at the parent's death closes
that gap whatever killed the parent.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Looked up once here, not in a child between fork and exec (subprocess's preexec_fn).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """Linux: have the kernel send `sig` to this process when its parent exits; elsewhere nothing.

    `parent` is the pid the caller expects as parent: if it is gone already (it died between the
    fork and this call), the signal is sent now.
    """
    if _prctl is None:
        return
    if _prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        return  # not allowed here (a sandbox): the beat's lock still guards against a second beat
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


def preexec_die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A subprocess `preexec_fn`: the child gets `sig` when this process exits (Linux)."""
    parent = os.getpid()
    return None if _prctl is None else (lambda: die_with_parent(parent, sig))
