"""The rejects file of ``contacts import`` and ``resets complete``: rows not applied, and why.

One CSV format for both (docs/contracts.md): ``line`` (the row's line in the source file,
header = line 1), ``reason``, then the source columns, every cell neutralized as in the exports
(``csvsafe.neutralize``: a spreadsheet opening the file runs no formula). It is written to a
temporary file beside the target that replaces it only when the command finished its work, so
a failed run never leaves a half report, nor overwrites the previous one.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import IO, Any

from notify.csvsafe import neutralize
from notify.errors import NotifyError


def check_rejects_path(rejects_path: str | os.PathLike[str] | None, source: Path) -> Path | None:
    """Refuse a --rejects target that cannot be written before any work is done."""
    if rejects_path is None:
        return None
    target = Path(rejects_path)
    if target.is_dir():
        raise NotifyError(f"--rejects {target}: is a folder; give a file name")
    if not target.parent.is_dir():
        raise NotifyError(f"--rejects {target}: folder {target.parent} does not exist")
    if source.exists() and target.exists() and target.resolve() == source.resolve():
        raise NotifyError(f"--rejects {target}: is the file being imported")
    return target


class RejectsFile:
    """The rejects CSV, written to a temporary file that replaces the target only on success.

    A context manager: leaving it without an error puts the file in place, with an error
    removes the temporary file. With no target (no ``--rejects``) it writes nothing.
    """

    def __init__(self, target: Path | None, header: list[str]) -> None:
        self.target = target
        self.header = header
        self.handle: IO[str] | None = None
        self.tmp: Path | None = None
        self.writer: Any = None

    def __enter__(self) -> RejectsFile:
        if self.target is not None:
            try:
                fd, tmp = tempfile.mkstemp(
                    dir=self.target.parent, prefix=f".{self.target.name}.", suffix=".tmp"
                )
            except OSError as exc:
                raise NotifyError(
                    f"--rejects {self.target}: cannot write: {exc.strerror}"
                ) from None
            self.tmp = Path(tmp)
            self.handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
            self.writer = csv.writer(self.handle)
            self.writer.writerow(["line", "reason", *map(neutralize, self.header)])
        return self

    def write(self, line: int, reason: str, cells: list[str]) -> None:
        """One rejected row: its line, why, and its cells, formula-looking ones neutralized."""
        if self.writer is not None:
            self.writer.writerow([line, neutralize(reason), *map(neutralize, cells)])

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.handle is None or self.tmp is None or self.target is None:
            return
        self.handle.close()
        if exc_type is None:
            os.replace(self.tmp, self.target)
        else:
            os.unlink(self.tmp)
