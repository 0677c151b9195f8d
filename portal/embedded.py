"""The embedded run's data folder (var/): private to its user, holding the install's own encryption key.

var/ holds the SQLite database (broker tokens in it), the filesystem queue and the lock files, so
the embedded run makes it 0700, takes group and other access from what is already in it, and sets
the umask 077 that its children (worker, web) inherit: every file they create is 0600. Without
ENCRYPTION_KEYS the tokens were encrypted with a key derived from SECRET_KEY, whose development
default is public; the embedded run generates a random key per install instead and keeps it here.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

KEY_FILE = "encryption.key"
PRIVATE_UMASK = 0o077


def make_private(var_dir: Path) -> None:
    """var/ and everything in it for its owner only; files created from now on too (the umask)."""
    os.umask(PRIVATE_UMASK)
    var_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in [var_dir, *var_dir.rglob("*")]:
        with contextlib.suppress(FileNotFoundError):  # a queue message claimed meanwhile
            mode = stat.S_IMODE(path.lstat().st_mode)
            if not path.is_symlink() and mode & 0o077:
                path.chmod(mode & 0o700)


def encryption_key(var_dir: Path) -> str:
    """This install's Fernet key: generated at the first start, read back at every other."""
    path = var_dir / KEY_FILE
    if not path.exists():
        staged = path.with_name(f".{KEY_FILE}.{os.getpid()}")
        descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(Fernet.generate_key().decode() + "\n")
        try:
            os.link(staged, path)  # whole or not at all; a concurrent start's key wins if it came first
        except FileExistsError:
            pass
        finally:
            staged.unlink()
    key = path.read_text().strip()
    try:
        Fernet(key.encode())
    except (ValueError, TypeError):
        raise ImproperlyConfigured(
            f"{path} does not hold a Fernet key. The broker tokens are encrypted with it: restore it "
            "from a backup, or move it away to start with a new key (the tokens stored with it "
            "become unreadable and have to be entered again)."
        ) from None
    return key
