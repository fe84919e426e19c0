"""Writing a batch file so that it is either whole or absent: a temporary file beside
it, flushed to disk, then given its name; readable by its owner only (it is encrypted,
but whoever holds it holds the operator's copy of the batch)."""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

# what link() answers where the file system has no hard links (FAT, exFAT, some SMB
# shares and FUSE file systems) or refuses them
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.ENOSYS,
             errno.EMLINK}


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
        _name(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    except OSError as exc:  # some FUSE and SMB mounts cannot sync a directory
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
    finally:
        os.close(directory)


def _name(temporary: Path, path: Path) -> None:
    """Give the whole file its name: a hard link, which never replaces a file made
    meanwhile; where the file system has none, a rename once the name is checked free
    (a file made in between those two steps would be replaced)."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        if path.exists():
            raise FileExistsError(f"{path} exists already: choose another file") from None
        os.replace(temporary, path)
