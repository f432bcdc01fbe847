"""Owner-only folders and files: everything under the data dir holds personal data.

Modes are set explicitly, whatever the process umask (which mkdir and open apply).
"""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path) -> Path:
    """`path` as a 0700 folder: missing folders up to it are made 0700, an existing `path` is tightened."""
    for folder in reversed([path, *path.parents]):
        if not folder.exists():
            folder.mkdir(mode=0o700, exist_ok=True)
            folder.chmod(0o700)  # mkdir's mode passes through the umask
    path.chmod(0o700)
    return path


def _private_opener(path: str, flags: int) -> int:
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode, and the umask applies to a new one
    return fd


def open_private(path: Path, mode: str = "w", **kwargs):
    """`open(path, mode)` for writing a 0600 file."""
    return open(path, mode, opener=_private_opener, **kwargs)
