"""Writing a batch file so that it is either whole or absent: a temporary file beside
it, flushed to disk, then renamed; readable by its owner only (it is encrypted, but
whoever holds it holds the operator's copy of the batch)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_whole(path: Path, text: str) -> None:
    """Write `text` to `path`, which must not exist yet; FileExistsError if it does."""
    if path.exists():
        raise FileExistsError(f"{path} exists already: choose another file")
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)  # unlike rename, never replaces a file made meanwhile
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
