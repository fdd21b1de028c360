"""Safe CSV output: cells a spreadsheet will not run as formulas (CSV injection), and files
written atomically (a failed write never leaves a half file under the final name)."""

from __future__ import annotations

import csv
import io
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from notify.errors import NotifyError

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def neutralize(value: object) -> str:
    """The cell as text, prefixed with ``'`` when a spreadsheet would treat it as a formula.

    A cell that is only a number (``-12.5``) or an E.164 phone (``+14155550100``) stays as it
    is, so exports remain usable.
    """
    if value is None:
        return ""
    text = str(value)
    if not text.startswith(_FORMULA_START):
        return text
    if _NUMBER.match(text) or _E164.match(text):
        return text
    return "'" + text


STDOUT = "-"


def is_stdout(path: str | Path | None) -> bool:
    """Whether ``path`` is ``-``: standard output, as every ``-o FILE`` accepts."""
    return path is not None and str(path) == STDOUT


@contextmanager
def atomic_csv(path: str | Path, bom: bool = False) -> Iterator[Any]:
    """A csv writer on a temporary file beside ``path``, renamed to ``path`` on success.

    The file is created readable by its owner only: exports hold personal data. ``-``
    writes to standard output instead (byte for byte what the file would hold), for a pipe.
    ``bom`` starts the file with a UTF-8 byte-order mark, which Excel needs to read UTF-8.
    """
    if is_stdout(path):
        with _stdout_csv(bom) as writer:
            yield writer
        return
    target = Path(path)
    if target.is_dir():
        raise NotifyError(f"{target}: is a folder; give a file name, e.g. {target}/export.csv")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise NotifyError(f"{target}: folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".part")
    except OSError as exc:
        raise NotifyError(f"{target}: cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            if bom:
                handle.write("\ufeff")
            yield csv.writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _stdout_csv(bom: bool = False) -> Iterator[Any]:
    """A csv writer on standard output's bytes, UTF-8 and CRLF as in the files."""
    sys.stdout.flush()  # whatever was printed before comes first
    handle = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
    if bom:
        handle.write("\ufeff")
    try:
        yield csv.writer(handle)
        handle.flush()
    finally:
        handle.detach()  # standard output stays open for what follows
