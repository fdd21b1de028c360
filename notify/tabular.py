"""Reading a customer list, whatever a data team hands over, into a pandas DataFrame.

The format is told by the file's content, never its name: a workbook saved as ``.csv`` is read
as the workbook it is. What comes back (:class:`Table`) is a frame of text cells (``""`` for
an empty cell) with, for every data row, the line a person finds it on: the physical line of a
text file (header = 1; a quoted newline shifts the rows after it), the row number of a sheet,
the line of a JSON Lines record. The header is found, not assumed (``find_header``).

Engines (docs/architecture.md says why): CSV/TSV through pandas' C parser; workbooks (XLSX,
XLSM, XLS, ODS) through python-calamine (Rust: several times faster than openpyxl, xlrd or
odfpy, and its XML parser expands no entities); Parquet through pyarrow; JSON through pandas.
Zip-based workbooks are measured before parsing (``check_workbook_bounds``).
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import json
import lzma
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from notify.errors import NotifyError

SAMPLE = 64 * 1024
HEADER_SCAN = 20  # the header is among the first 20 non-empty rows
MAX_WORKBOOK_BYTES = 200 * 1000 * 1000  # uncompressed parts of a zip workbook, in total
MAX_RATIO = 100  # uncompressed / compressed: beyond it, a decompression bomb
MAX_TEXT_BYTES = 4 * 1000 * 1000 * 1000  # a decompressed text list (a bound, not a goal)
CSV_CELL_LIMIT = 1 << 20  # beyond 1 MiB a cell is an unclosed quote, not data
FORMATS = "CSV, TSV, XLSX, XLSM, XLS, ODS, Parquet, JSON Lines or a JSON array"
#: Why a row on a line holding a NUL byte is rejected: the CSV parser dropped the NUL, so
#: the cells read are not the cells written.
NUL_REASON = "a NUL character (byte 0) in the row; fix or remove the row"

#: Whether one header cell (as written) names a field the importer knows.
Recognizer = Callable[[str], bool]
#: Called with the fraction (0..1) of the file read so far.
ReadProgress = Callable[[float], None]


@dataclass
class Table:
    """The data rows of a list, as text, each with the line a person finds it on."""

    frame: pd.DataFrame  # columns 0..width-1, str cells, "" when empty
    lines: np.ndarray  # int64: the line (sheet row) of each data row
    header: list[str]
    header_line: int
    kind: str  # "CSV", "TSV", "XLSX workbook", "Parquet", ...
    sheet: str | None = None
    notes: list[str] = field(default_factory=list)  # what was inferred (sheet, title rows)
    bad_rows: list[tuple[int, str]] = field(default_factory=list)  # unparseable rows
    nul_lines: list[int] = field(default_factory=list)  # lines holding a NUL the parser dropped

    def nul_rows(self) -> set[int]:
        """Positions of the data rows that start on or span a line of ``nul_lines``."""
        found = np.searchsorted(self.lines, self.nul_lines, side="right") - 1
        return {int(row) for row in found if row >= 0}


@dataclass
class _Grid:
    """Rows before the header is known: text cells and the line each row starts on."""

    frame: pd.DataFrame
    lines: np.ndarray
    kind: str
    sheet: str | None = None
    bad_rows: list[tuple[int, str]] = field(default_factory=list)
    named_columns: bool = False  # Parquet / JSON: the columns are the header
    nul_lines: list[int] = field(default_factory=list)


def read_table(
    path: Path,
    recognizes: Recognizer,
    *,
    sheet: str | None = None,
    header_row: int | None = None,
    progress: ReadProgress | None = None,
) -> Table:
    """Read ``path`` (any supported format) and find its header; one-line errors otherwise."""
    data = _read_bytes(path, progress)
    kind, data = _unwrap(path, data)
    if kind == "workbook":
        return _workbook_table(path, data, recognizes, sheet, header_row)
    if sheet is not None:
        raise NotifyError(f"--sheet {sheet}: {path} is not a workbook (it has no sheets)")
    if kind == "parquet":
        grid = _parquet_grid(path, data)
    else:
        text_kind, data = _text(path, data)
        if text_kind == "json":
            grid = _json_grid(path, data)
        else:
            grid = _csv_grid(path, data, recognizes)
    if grid.named_columns:
        if header_row is not None:
            raise NotifyError(
                f"--header-row {header_row}: {path} is {grid.kind}; its column names are the header"
            )
        return _named_table(grid)
    return _headed(path, grid, recognizes, header_row)


# --------------------------------------------------------------------------- bytes


def _read_bytes(path: Path, progress: ReadProgress | None) -> bytes:
    """The whole file (lists are read whole by pandas anyway), with the usual errors."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()  # one read: one copy of the file in memory
        if progress:
            progress(1.0)
    except FileNotFoundError:
        raise NotifyError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise NotifyError(f"{path}: is a folder, not a contact list") from None
    except PermissionError:
        raise NotifyError(f"{path}: permission denied") from None
    except OSError as exc:
        raise NotifyError(f"{path}: cannot read: {exc.strerror}") from None
    if not data[:SAMPLE].strip(b" \t\r\n\xef\xbb\xbf") and not data.strip(b" \t\r\n\xef\xbb\xbf"):
        raise NotifyError(
            f"{path}: the file is empty (expected a header row, then one row per customer)"
        )
    return data


def _unwrap(path: Path, data: bytes) -> tuple[str, bytes]:
    """("workbook" | "parquet" | "text", bytes), decompressing gzip, bzip2, xz and zip."""
    for _ in range(2):  # a .csv.gz inside nothing else; never a compressed compressed file
        if data.startswith(b"PK\x03\x04") or data.startswith(b"\xd0\xcf\x11\xe0"):
            if data.startswith(b"PK"):
                inner = _zipped_text(path, data)
                if inner is None:
                    return "workbook", data
                data = inner
                continue
            return "workbook", data
        if data.startswith(b"PAR1"):
            return "parquet", data
        opener = _DECOMPRESSORS.get(data[:3]) or _DECOMPRESSORS.get(data[:6])
        if opener is None:
            return "text", data
        data = _decompress(path, opener, data)
    return "text", data


_DECOMPRESSORS: dict[bytes, Callable[[io.BytesIO], Any]] = {
    b"\x1f\x8b\x08": lambda raw: gzip.GzipFile(fileobj=raw),
    b"BZh": lambda raw: bz2.BZ2File(raw),
    b"\xfd7zXZ\x00": lambda raw: lzma.LZMAFile(raw),
}


def _decompress(path: Path, opener: Callable[[io.BytesIO], Any], data: bytes) -> bytes:
    """A compressed text list, inflated within MAX_TEXT_BYTES."""
    try:
        with opener(io.BytesIO(data)) as stream:
            inflated = stream.read(MAX_TEXT_BYTES + 1)
    except (OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        raise NotifyError(f"{path}: a damaged compressed file ({exc})") from None
    if len(inflated) > MAX_TEXT_BYTES:
        raise NotifyError(
            f"{path}: decompresses to more than {MAX_TEXT_BYTES:,} bytes; nothing was imported"
        )
    return inflated


def _zipped_text(path: Path, data: bytes) -> bytes | None:
    """A zip holding one list (CSV, JSON...) -> its bytes; None when it is a workbook."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            if "[Content_Types].xml" in names or "mimetype" in names:
                return None
            files = [
                i
                for i in archive.infolist()
                if not i.is_dir() and not i.filename.startswith(("__MACOSX/", "."))
            ]
            if len(files) != 1:
                raise NotifyError(
                    f"{path}: not a readable workbook, and a zip of {len(files)} files: "
                    "zip one list at a time"
                )
            _check_parts(path, files)
            return archive.read(files[0])
    except zipfile.BadZipFile as exc:
        raise NotifyError(f"{path}: not a readable workbook or zip ({exc})") from None


def _check_parts(path: Path, parts: list[zipfile.ZipInfo]) -> None:
    """Refuse a zip whose parts inflate beyond MAX_WORKBOOK_BYTES or MAX_RATIO: one line."""
    total = sum(p.file_size for p in parts)
    packed = sum(p.compress_size for p in parts)
    if total > MAX_WORKBOOK_BYTES:
        raise NotifyError(
            f"{path}: its parts are {total:,} bytes uncompressed (limit "
            f"{MAX_WORKBOOK_BYTES:,}); nothing was imported"
        )
    ratios = [(p.file_size / max(1, p.compress_size), p) for p in parts if p.file_size > 1_000_000]
    overall = total / max(1, packed)
    worst = max(ratios, key=lambda r: r[0], default=(overall, None))
    ratio = max(overall, worst[0]) if total > 1_000_000 else 0
    if ratio > MAX_RATIO:
        raise NotifyError(
            f"{path}: compressed {ratio:,.0f}:1 (limit {MAX_RATIO}:1), a "
            "decompression bomb; nothing was imported"
        )


def check_workbook_bounds(path: Path, data: bytes) -> None:
    """Before parsing a zip workbook (XLSX, XLSM, ODS): sizes and ratios within bounds."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            _check_parts(path, archive.infolist())
    except zipfile.BadZipFile as exc:
        raise NotifyError(f"{path}: not a readable workbook ({exc})") from None


# --------------------------------------------------------------------------- workbooks


def _workbook_kind(data: bytes) -> str:
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        return "XLS workbook"
    if b"opendocument.spreadsheet" in data[:200]:
        return "ODS workbook"
    return "XLSM workbook" if b"macroEnabled" in data[: SAMPLE * 4] else "XLSX workbook"


def _workbook_table(
    path: Path,
    data: bytes,
    recognizes: Recognizer,
    sheet: str | None,
    header_row: int | None,
) -> Table:
    """The chosen sheet (``--sheet``), else the first whose header is recognizable."""
    kind = _workbook_kind(data)
    if data.startswith(b"PK"):
        check_workbook_bounds(path, data)
    try:
        book = pd.ExcelFile(io.BytesIO(data), engine="calamine")
        names = [str(n) for n in book.sheet_names]
    except Exception as exc:  # calamine's errors: damaged, encrypted, entity tricks...
        raise NotifyError(
            f"{path}: not a readable workbook ({_one_line(exc)}); nothing was imported"
        ) from None
    if sheet is not None:
        chosen = _choose_sheet(path, names, sheet)
        return _headed(
            path, _sheet_grid(path, book, chosen, kind), recognizes, header_row, said_sheet=False
        )
    grids = []
    for name in names:
        grid = _sheet_grid(path, book, name, kind)
        if not len(grid.frame):
            continue
        grids.append(grid)
        if _header_index(grid, recognizes) is not None:
            table = _headed(path, grid, recognizes, header_row, said_sheet=len(names) > 1)
            return table
    if not grids:
        raise NotifyError(f"{path}: every sheet of the workbook is empty (expected a header row)")
    return _headed(path, grids[0], recognizes, header_row, said_sheet=len(names) > 1)


def _choose_sheet(path: Path, names: list[str], wanted: str) -> str:
    """``--sheet NAME`` (exact, then ignoring case) or ``--sheet N`` (1 = the first)."""
    if wanted in names:
        return wanted
    folded = [n for n in names if n.casefold() == wanted.strip().casefold()]
    if folded:
        return folded[0]
    if wanted.strip().isdigit() and 1 <= int(wanted) <= len(names):
        return names[int(wanted) - 1]
    listed = ", ".join(repr(n) for n in names[:12])
    raise NotifyError(f"--sheet {wanted}: {path} has no such sheet (sheets: {listed})")


def _sheet_grid(path: Path, book: pd.ExcelFile, name: str, kind: str) -> _Grid:
    try:
        frame = pd.read_excel(book, sheet_name=name, header=None, dtype=object)
    except Exception as exc:
        raise NotifyError(
            f"{path}: not a readable workbook (sheet {name!r}: "
            f"{_one_line(exc)}); nothing was imported"
        ) from None
    frame = _as_text(frame)
    frame.columns = range(frame.shape[1])
    # The sheet is read from A1, so position + 1 is the row number Excel shows.
    lines = np.arange(1, len(frame) + 1, dtype=np.int64)
    return _Grid(frame, lines, kind, sheet=name)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


# --------------------------------------------------------------------------- cells as text


def cell_text(value: Any) -> str:
    """A typed cell as the text a person sees: 4155550134 not 4155550134.0, dates as ISO."""
    if value is None or value is pd.NaT:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        if value != value:  # NaN
            return ""
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, datetime | pd.Timestamp):
        return value.date().isoformat() if value.time() == time(0) else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, np.ndarray):
        return json.dumps(value.tolist(), ensure_ascii=False, default=str)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Every column as text cells; typed columns converted without a per-cell call if we can."""
    out = {}
    for position, column in enumerate(frame.columns):
        series = frame[column]
        dtype = series.dtype
        if pd.api.types.is_string_dtype(dtype) and dtype is not np.dtype(object):
            out[position] = series.fillna("").astype(str)
        elif pd.api.types.is_bool_dtype(dtype):
            out[position] = series.map({True: "true", False: "false"}).fillna("").astype(str)
        elif pd.api.types.is_integer_dtype(dtype):
            out[position] = series.astype("Int64").astype(str).replace("<NA>", "")
        else:
            out[position] = series.map(cell_text, na_action=None).astype(str)
    result = pd.DataFrame(out)
    result.columns = list(frame.columns)
    return result


# --------------------------------------------------------------------------- Parquet, JSON


def _parquet_grid(path: Path, data: bytes) -> _Grid:
    try:
        frame = pd.read_parquet(io.BytesIO(data), engine="pyarrow")
    except Exception as exc:
        raise NotifyError(f"{path}: not a readable Parquet file ({_one_line(exc)})") from None
    return _named_grid(frame, "Parquet", None)


def _named_grid(frame: pd.DataFrame, kind: str, lines: np.ndarray | None) -> _Grid:
    """Columns that carry their names: the names become row "0" of a text grid."""
    names = [str(c) for c in frame.columns]
    text = _as_text(frame)
    text.columns = range(len(names))
    header = pd.DataFrame([names], columns=range(len(names)))
    grid = pd.concat([header, text], ignore_index=True) if len(names) else text
    if lines is None:  # record n is "line" n + 1: the line it would be on in a CSV export
        lines = np.arange(2, len(frame) + 2, dtype=np.int64)
    return _Grid(
        grid.fillna("").astype(str),
        np.concatenate([[1], lines]).astype(np.int64),
        kind,
        named_columns=True,
    )


_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\]]|\n')


def _json_grid(path: Path, data: bytes) -> _Grid:
    """JSON Lines (one object a line) or one array of objects; the line each record starts."""
    stripped = data.lstrip()
    try:
        if stripped.startswith(b"["):
            frame = pd.read_json(
                io.BytesIO(data),
                orient="records",
                dtype=False,  # no conversion at all, dates included
                convert_axes=False,
            )
            lines = _array_record_lines(data)
            kind = "JSON array"
        else:
            frame = pd.read_json(io.BytesIO(data), lines=True, dtype=False, convert_axes=False)
            lines = np.array(
                [n for n, line in enumerate(data.splitlines(), 1) if line.strip()], dtype=np.int64
            )
            kind = "JSON Lines"
    except ValueError as exc:
        raise NotifyError(
            f"{path}: not readable JSON ({_one_line(exc)}); expected one object "
            "per line, or an array of objects"
        ) from None
    if len(lines) != len(frame):
        raise NotifyError(f"{path}: expected JSON objects (one per customer), found other values")
    return _named_grid(frame, kind, lines)


def _array_record_lines(data: bytes) -> np.ndarray:
    """Line of each top-level object's ``{`` in a JSON array."""
    line, depth, starts = 1, 0, []
    for match in _JSON_TOKEN.finditer(data):
        token = match.group()
        if token == b"\n":
            line += 1
        elif token in (b"{", b"["):
            if depth == 1 and token == b"{":
                starts.append(line)
            depth += 1
        elif token in (b"}", b"]"):
            depth -= 1
        else:
            line += token.count(b"\n")  # not valid JSON, but keep counting honestly
    return np.array(starts, dtype=np.int64)


# --------------------------------------------------------------------------- text: CSV / TSV


def _text(path: Path, data: bytes) -> tuple[str, bytes]:
    """("json" | "csv", UTF-8 bytes): UTF-16 (BOM) transcoded, binary refused."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            data = data.decode("utf-16").encode("utf-8")
        except UnicodeDecodeError:
            raise NotifyError(
                f"{path}: not valid UTF-16 text despite its byte-order mark; "
                "re-save the file as UTF-8"
            ) from None
    sample = data[:SAMPLE]
    controls = sum(1 for b in sample if b < 9 or 13 < b < 32)
    # Binary data is rarely valid UTF-8; valid text with a few control characters is a
    # hostile or careless cell (cleaned per field later, with a warning), not a binary file.
    # NULs stay a sign of binary whatever the encoding (UTF-16 without its BOM decodes).
    if controls > len(sample) // 100 + 1 and (
        _invalid_utf8(sample) or sample.count(0) > len(sample) // 100 + 1
    ):
        at = next(i for i, b in enumerate(sample) if b < 9 or 13 < b < 32)
        raise NotifyError(f"{path}: not a {FORMATS} file (binary data at byte {at})")
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if head in (b"[", b"{"):
        return "json", data
    return "csv", data


def _invalid_utf8(sample: bytes) -> bool:
    """Whether a sample is not UTF-8 (a sequence cut at the sample's end does not count)."""
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(sample) - 3
    return False


def _not_utf8(path: Path, data: bytes) -> NotifyError:
    """Locate the first byte that is not UTF-8: line, offset, and what it looks like."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = exc.start
        line_no = data.count(b"\n", 0, at) + 1
        start = max(0, at - 12)
        guess = data[start : at + 12].decode("cp1252", "replace").strip()
        return NotifyError(
            f"{path}, line {line_no}: not UTF-8 (byte 0x{data[at]:02X} at offset {at}, "
            f"around {guess!r}, looks like Latin-1/Windows-1252); re-save the file as UTF-8 "
            "(Excel: Save As > CSV UTF-8)"
        )
    return NotifyError(f"{path}: not UTF-8 text; re-save the file as UTF-8")


def _split_line(line: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delimiter))
    except (csv.Error, StopIteration):
        return line.split(delimiter)


def _delimiter(path: Path, text: str, recognizes: Recognizer) -> tuple[str, bool]:
    """(delimiter, whether the first line is Excel's ``sep=X`` hint).

    The header decides: the first of the first lines that, split by a candidate, names at
    least two fields. Data rows legitimately hold commas and semicolons (``passwords; card``)
    while header names almost never do. Without such a line, the candidate the first line
    holds most often; csv.Sniffer breaks ties.
    """
    lines = [line for line in text.lstrip("\ufeff").splitlines()[: HEADER_SCAN * 2] if line.strip()]
    first = lines[0] if lines else ""
    if re.fullmatch(r"sep=.", first.strip()):
        return first.strip()[4], True
    candidates = (
        ("\t", ",", ";", "|") if path.suffix.lower() in (".tsv", ".tab") else (",", ";", "\t", "|")
    )
    for line in lines[:HEADER_SCAN]:
        for delimiter in candidates:
            if delimiter in line and sum(map(recognizes, _split_line(line, delimiter))) >= 2:
                return delimiter, False
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t", False
    counts = {d: _count_outside_quotes(first, d) for d in (",", ";", "\t", "|")}
    best = max(counts.values())
    winners = [d for d, n in counts.items() if n == best]
    if best and len(winners) == 1:
        return winners[0], False
    try:
        return csv.Sniffer().sniff(text[: SAMPLE // 4], delimiters=",;\t|").delimiter, False
    except csv.Error:
        return ",", False


def _count_outside_quotes(line: str, char: str) -> int:
    return sum(part.count(char) for part in line.split('"')[::2])


def _line_breaks(data: bytes) -> int:
    """Physical line breaks in the bytes (CRLF, LF or CR each count once)."""
    lf = data.count(b"\n")
    if b"\r" not in data:
        return lf
    return lf + data.count(b"\r") - data.count(b"\r\n")


def _no_nulls(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing cells (a short row) as "": only the columns that have any, no copy of the rest."""
    for column in frame.columns:
        if frame[column].hasnans:
            frame[column] = frame[column].fillna("")
    return frame


def _quoted_breaks(body: bytes) -> bool:
    """Whether a line break falls inside double quotes (a cell spanning lines).

    A break is inside quotes exactly when an odd number of quote characters precede it; the
    parity is a running sum mod 2 (uint8 wraps and keeps it), in blocks to bound memory.
    """
    if b'"' not in body:
        return False
    carry = 0
    block = 16 << 20
    for start in range(0, len(body), block):
        chunk = np.frombuffer(
            body, dtype=np.uint8, count=min(block, len(body) - start), offset=start
        )
        parity = (np.cumsum(chunk == 34, dtype=np.uint8) + carry) & 1
        breaks = (chunk == 10) | (chunk == 13)
        if parity[breaks].any():
            return True
        carry = int(parity[-1]) if len(parity) else carry
    return False


def _csv_grid(path: Path, data: bytes, recognizes: Recognizer) -> _Grid:
    """A CSV/TSV grid, with the lines of any NUL byte (pandas' parser drops them)."""
    grid = _csv_cells(path, data, recognizes)
    if b"\x00" in data:
        body = data[3:] if data.startswith(codecs.BOM_UTF8) else data
        at, lines = body.find(b"\x00"), list[int]()
        while at >= 0 and len(lines) < 100_000:
            lines.append(body.count(b"\n", 0, at) + 1)
            at = body.find(b"\x00", at + 1)
        grid.nul_lines = sorted(set(lines))
    return grid


def _csv_cells(path: Path, data: bytes, recognizes: Recognizer) -> _Grid:
    """pandas' C parser; line numbers rebuilt from the rows' own line breaks.

    Blank lines are kept as empty rows (skip_blank_lines=False) so that every physical line is
    accounted for: a row spans 1 + the line breaks inside its quoted cells. When the sum does
    not match the file's own count, or pandas refuses the file (a row with more cells than
    any row of the sample, a quote never closed), the stdlib csv module reads it instead,
    which can say which rows are bad.
    """
    body = data[3:] if data.startswith(codecs.BOM_UTF8) else data
    sample = body[:SAMPLE].decode("utf-8", "replace")
    delimiter, hinted = _delimiter(path, sample, recognizes)
    kind = "TSV" if delimiter == "\t" else "CSV"
    skip = 1 if hinted else 0
    sample_rows = list(csv.reader(io.StringIO(sample), delimiter=delimiter))
    # The last sample row may be cut short by the sample's end (when there is more).
    complete = sample_rows[skip:-1] if len(body) > SAMPLE else sample_rows[skip:]
    width = max((len(r) for r in complete), default=1) or 1
    expected = _line_breaks(body) + (0 if body.endswith((b"\n", b"\r")) else 1) - skip
    if not _quoted_breaks(body):
        # pyarrow's parser: several times faster, and no Python object per cell. Each row is
        # then one line, unless it skipped blank lines or refused a ragged row: the count
        # tells, and the C parser below takes over.
        try:
            frame = pd.read_csv(
                io.BytesIO(body),
                sep=delimiter,
                header=None,
                names=range(width),
                dtype=str,
                keep_default_na=False,
                skiprows=skip,
                encoding="utf-8",
                engine="pyarrow",
            )
        except Exception:  # noqa: BLE001 - any refusal: the C parser decides and explains
            frame = None
        if (
            frame is not None
            and len(frame) == expected
            and frame.shape[1] == width
            and isinstance(frame.index, pd.RangeIndex)
        ):
            lines = np.arange(1 + skip, 1 + skip + len(frame), dtype=np.int64)
            return _Grid(_no_nulls(frame), lines, kind)
    try:
        frame = pd.read_csv(
            io.BytesIO(body),
            sep=delimiter,
            header=None,
            names=range(width),
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            skiprows=skip,
            encoding="utf-8",
            quotechar='"',
            doublequote=True,
            engine="c",
            index_col=False,
        )
    except UnicodeDecodeError:
        raise _not_utf8(path, body) from None
    except (pd.errors.ParserError, ValueError, csv.Error):
        return _stdlib_grid(path, body, delimiter, skip, kind)
    except pd.errors.EmptyDataError:
        raise NotifyError(f"{path}: the file is empty (expected a header row)") from None
    frame = _no_nulls(frame)
    spans = np.ones(len(frame), dtype=np.int64)
    if expected != len(frame):  # quoted line breaks: count them where they are
        for column in frame.columns:
            cells = frame[column]
            has = cells.str.contains("[\r\n]", regex=True)
            if has.any():
                spans += cells.str.count(r"\r\n|\r|\n").to_numpy(dtype=np.int64)
        if int(spans.sum()) != expected:
            return _stdlib_grid(path, body, delimiter, skip, kind)
    lines = np.cumsum(spans) - spans + 1 + skip
    return _Grid(frame, lines.astype(np.int64), kind)


def _stdlib_grid(path: Path, body: bytes, delimiter: str, skip: int, kind: str) -> _Grid:
    """The csv module, row by row: for a file pandas refuses; bad rows are reported, not
    fatal, unless the file cannot be read at all (an unclosed quote)."""
    csv.field_size_limit(CSV_CELL_LIMIT)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _not_utf8(path, body) from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[list[str]] = []
    lines: list[int] = []
    bad: list[tuple[int, str]] = []
    prev = 0
    while True:
        start = prev + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            message = str(exc)
            if "end of data" in message:
                raise NotifyError(
                    f"{path}, line {start}: a quote opened here is never closed"
                ) from None
            if "field larger" in message:
                raise NotifyError(
                    f"{path}, line {start}: a cell is longer than "
                    f"{CSV_CELL_LIMIT:,} characters (an unclosed quote?)"
                ) from None
            prev = reader.line_num
            bad.append((start, f"malformed quoting ({message})"))
            continue
        prev = reader.line_num
        if start <= skip:
            continue
        rows.append(cells)
        lines.append(start)
    width = max((len(r) for r in rows), default=1)
    frame = pd.DataFrame(
        [r + [""] * (width - len(r)) for r in rows], columns=range(width), dtype=str
    )
    return _Grid(frame.fillna(""), np.array(lines, dtype=np.int64), kind, bad_rows=bad)


# --------------------------------------------------------------------------- header


def _nonempty(frame: pd.DataFrame) -> np.ndarray:
    """Boolean per row: some cell holds more than spaces."""
    if frame.shape[1] == 0 or not len(frame):
        return np.zeros(len(frame), dtype=bool)
    mask = np.zeros(len(frame), dtype=bool)
    for column in frame.columns:
        mask |= (frame[column].str.strip() != "").to_numpy()
    return mask


def _header_index(grid: _Grid, recognizes: Recognizer) -> int | None:
    """Position of the first of the first HEADER_SCAN non-empty rows naming >= 2 fields."""
    seen = 0
    for position in range(len(grid.frame)):
        cells = grid.frame.iloc[position].tolist()
        if not any(c.strip() for c in cells):
            continue
        if sum(1 for c in cells if c.strip() and recognizes(c)) >= 2:
            return position
        seen += 1
        if seen >= HEADER_SCAN:
            return None
    return None


def _headed(
    path: Path,
    grid: _Grid,
    recognizes: Recognizer,
    header_row: int | None,
    said_sheet: bool = False,
) -> Table:
    """Split a grid at its header: ``--header-row``, else found, else the first row."""
    frame, lines = grid.frame, grid.lines
    where = f"sheet {grid.sheet!r}, " if grid.sheet is not None else ""
    notes = []
    nonempty = _nonempty(frame)
    if header_row is not None:
        hits = np.flatnonzero(lines == header_row)
        if not len(hits) or not nonempty[hits[0]]:
            raise NotifyError(
                f"--header-row {header_row}: {path}, {where}line {header_row} "
                "is empty or not the start of a row"
            )
        position = int(hits[0])
    else:
        found = _header_index(grid, recognizes)
        if found is None:
            first = np.flatnonzero(nonempty)
            if not len(first):
                what = f"sheet {grid.sheet!r}" if grid.sheet is not None else "the file"
                raise NotifyError(f"{path}: {what} is empty (expected a header row)")
            position = int(first[0])
        else:
            position = found
            skipped = [int(n) for n in lines[:position][nonempty[:position]]]
            if skipped:
                rows = _span(skipped)
                notes.append(
                    f"the header is on {where}line {int(lines[position])}; "
                    f"{rows} above it skipped (a title?); choose with --header-row"
                )
    if said_sheet and grid.sheet is not None and not any(grid.sheet in n for n in notes):
        notes.insert(
            0,
            f"read sheet {grid.sheet!r} (the first with a recognizable header; "
            "choose another with --sheet)",
        )
    header = [h.strip().lstrip("\ufeff") for h in frame.iloc[position].tolist()]
    while header and not header[-1]:  # trailing empty cells are not columns
        header.pop()
    keep = nonempty.copy()
    keep[: position + 1] = False
    if keep[position + 1 :].all():  # no blank row: a slice, which copies nothing
        data = frame.iloc[position + 1 :].reset_index(drop=True)
    else:
        data = frame[keep].reset_index(drop=True)
    bad = [(line, why) for line, why in grid.bad_rows if line > int(lines[position])]
    header_line = int(lines[position])
    return Table(
        data,
        lines[keep],
        header,
        header_line,
        grid.kind,
        grid.sheet,
        notes,
        bad,
        [n for n in grid.nul_lines if n > header_line],
    )


def _span(lines: list[int]) -> str:
    if len(lines) == 1:
        return f"line {lines[0]}"
    return (
        f"lines {lines[0]}-{lines[-1]}"
        if lines[-1] - lines[0] == len(lines) - 1
        else "lines " + ", ".join(map(str, lines))
    )


def _named_table(grid: _Grid) -> Table:
    frame = grid.frame
    header = [str(h).strip() for h in frame.iloc[0].tolist()] if len(frame) else []
    data = frame.iloc[1:]
    data.index = range(len(data))
    keep = _nonempty(data)
    data = data[keep]
    data.index = range(len(data))
    return Table(data, grid.lines[1:][keep], header, 1, grid.kind, None, [], [])
