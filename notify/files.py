"""Files and folders that hold personal data or working secrets, private to their owner.

The SQLite database (with its -wal and -shm files) holds contacts and events; the outbox
holds the notices themselves, with working password-reset links. Whatever the umask, what
notify creates for them is 0600 (files) and 0700 (folders). Existing files and folders are
left as the operator set them.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: str | Path) -> Path:
    """Create ``path`` and any missing parents as 0700 (an existing folder is left alone)."""
    path = Path(path)
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:  # another process made it meanwhile: theirs to set
            continue
        os.chmod(folder, DIR_MODE)  # the umask may have taken bits away, or a parent's ACL
    return path


def create_private(path: str | Path, flags: int = os.O_WRONLY) -> int | None:
    """Create ``path`` as a new 0600 file and return its descriptor; None if it exists.

    The mode is set on the descriptor before anything is written, so no other user can
    open the file while it holds data (nor keep a descriptor opened while it was empty).
    """
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return None
    os.fchmod(fd, FILE_MODE)
    return fd


def open_private(path: str | Path, flags: int) -> int:
    """Open ``path`` with ``flags``, creating it 0600 when it does not exist yet."""
    fd = create_private(path, flags)
    return fd if fd is not None else os.open(path, flags)


def prepare_sqlite_file(database: str | None) -> None:
    """Before SQLite opens ``database``: if it does not exist, create it empty and 0600.

    SQLite gives the -wal and -shm files the mode of the database file, so the three stay
    private. Memory databases and URI filenames are left to SQLite.
    """
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    folder = Path(database).expanduser().resolve().parent
    if not folder.is_dir():
        # SQLite would say "unable to open database file", which reads as an outage.
        from notify.errors import NotifyError

        raise NotifyError(
            f"cannot create the database {database}: folder {folder} does not "
            "exist (create it first, or choose another path with --db)"
        )
    try:
        fd = create_private(database)
    except OSError:  # no permission: SQLite reports it in its own words
        return
    if fd is not None:
        os.close(fd)
