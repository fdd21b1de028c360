"""The affected-customer list -> the ``contacts`` table (docs/contracts.md).

The pipeline works on whole columns, so a million-row list costs a few seconds:

1. ``tabular.read_table`` reads the file with pandas, whatever its format (told by content),
   finds the header and gives each data row the line a person finds it on (physical line of
   a text file, header = 1; the sheet's row number in a workbook).
2. ``_layout`` maps the header to fields through aliases (``exposures.squash``) and ``--map``.
3. ``_Columns`` cleans each field over the whole column: control characters, then regex fast
   paths (pyarrow-backed string operations) for the emails and phones nearly every list holds;
   email-validator and phonenumbers are called only for the values the fast paths do not
   settle, once per distinct value. Exposures, flags and countries are factorized: one parse
   per distinct spelling.
4. Rows that interact (a key seen twice, in the file or the database; an email or phone that
   another key already has) are settled one by one in file order, the rest in bulk: merged
   rows unite exposures and fill blanks; a different email or phone keeps the first and warns
   (``--update``: the row replaces email, phone and name). Re-importing a file writes nothing.
5. New contacts are written in chunks with plain driver-level statements (executemany on
   SQLite, COPY on PostgreSQL), merged changes with one UPDATE per contact at the end, all
   inside the caller's transaction: the import is all-or-nothing.

Encoding: UTF-8 (with or without BOM), or UTF-16 with a BOM (Excel's "Unicode text"). Other
bytes are a one-line error naming the line and offset, with the hint to re-save as UTF-8. We do
not guess Windows-1252: a file that is mostly UTF-8 with one stray byte would have every accented
name silently mangled, and these names go into legal notices.
"""

from __future__ import annotations

import gc
import json
import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from notify import exposures, intl_phones, tabular
from notify.addresses import (
    MAX_EMAIL,
    NANP_REGIONS,
    email_domain,
    nanp_prefix_valid,
    nanp_valid,
    normalize_email,
    normalize_phone,
)
from notify.errors import NotifyError
from notify.models import Campaign, Contact, utcnow
from notify.rejects import RejectsFile, check_rejects_path

# Limits: a cell longer than this in a text field is dropped with a warning (a pasted document
# or a runaway quote, never a name); the key must fit the column.
MAX_TEXT = 1000
MAX_KEY = 320
_COLUMN_LIMITS = {"country": 64, "state": 64, "locale": 32}  # String(n) columns
CHUNK = 5000  # rows per UPDATE batch
BLOCK = 20_000  # new contacts converted to Python objects at a time (bounded memory)
MAX_BOUND = 999  # values bound per multi-row INSERT: SQLite's oldest limit
PROBLEM_CAP = 100_000  # per-row problems kept in the summary; the rejects file has them all
HELPER_PHONES = 10_000  # distinct international numbers judged in a helper process
INDEX_SORT_KB = 4000  # SQLite: page cache while building indexes (its sort chunks)
BULK_TALLY = 20_000  # SQLite: from this many new contacts, count them once (see _Writer)

SINGLE_FIELDS = (
    "key",
    "name",
    "first_name",
    "last_name",
    "email",
    "phone",
    "country",
    "state",
    "locale",
)
FIELDS = (*SINGLE_FIELDS, "exposure", *exposures.RANKED)
MERGE_ON = ("email", "phone")

_KEY_OWNERS = (
    "customer",
    "cust",
    "client",
    "account",
    "acct",
    "member",
    "user",
    "subscriber",
    "patient",
    "policy",
    "record",
)
_KEY_SUFFIXES = ("id", "no", "nr", "num", "number", "#", "code", "ref", "reference", "key")
_FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "key": (
        "key",
        "id",
        "account",
        "customer key",
        "unique id",
        "uid",
        "external id",
        "contact id",
        *(f"{owner} {suffix}" for owner in _KEY_OWNERS for suffix in _KEY_SUFFIXES),
        *(f"{owner}{suffix}" for owner in _KEY_OWNERS for suffix in ("id", "no", "nr", "num")),
    ),
    "name": (
        "name",
        "full name",
        "customer name",
        "client name",
        "contact name",
        "display name",
        "account name",
        "member name",
        "account holder",
        "holder name",
    ),
    "first_name": ("first name", "firstname", "given name", "forename", "first"),
    "last_name": ("last name", "lastname", "surname", "family name", "last"),
    "email": (
        "email",
        "e-mail",
        "email address",
        "e-mail address",
        "mail",
        "email addr",
        "contact email",
        "customer email",
        "primary email",
        "work email",
    ),
    "phone": (
        "phone",
        "mobile",
        "cell",
        "phone number",
        "sms",
        "mobile phone",
        "mobile number",
        "cell phone",
        "telephone",
        "tel",
        "phone no",
        "sms number",
        "cell number",
        "contact number",
        "phone #",
        "mobile #",
    ),
    "exposure": (
        "exposure",
        "exposures",
        "exposure type",
        "exposed",
        "data exposed",
        "exposed data",
        "data type",
        "data types",
        "data compromised",
        "compromised data",
        "breach type",
        "exposure category",
        "data elements",
        "data involved",
        "information exposed",
    ),
    "country": ("country", "country code", "nation"),
    "state": ("state", "region", "province", "state/province", "state or province"),
    "locale": ("locale", "language", "lang", "preferred language"),
}


def _header_squash(name: str) -> str:
    """``Cust #`` -> ``custnumber``: "#" is a word in a header, not punctuation."""
    return exposures.squash(str(name).replace("#", " number "))


_HEADER_FIELD = {_header_squash(a): f for f, names in _FIELD_ALIASES.items() for a in names}
_MAP_TARGET = {exposures.squash(f): f for f in FIELDS}

_BITS = {"passwords": 1, "card": 2, "identity": 4}
_JOINED = [exposures.join(k for k, b in _BITS.items() if mask & b) for mask in range(8)]
_TRUE = frozenset(exposures.TRUE_WORDS)
_FALSE = frozenset(exposures.FALSE_WORDS)

# Bits of the fields a later row may fill when the contact has them blank.
_FILL = {"name": 1, "country": 2, "state": 4, "locale": 8}

# C0 and C1 control characters (tab, CR and LF are whitespace, handled per field) and the bidi
# overrides and isolates: removed from every field, with a warning. NUL rejects its row.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_PATTERN = "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f\u202a-\u202e\u2066-\u2069]"

# json.dumps(ensure_ascii=False)'s string encoder (C): the extra JSON text is built by hand.
_json_string = json.encoder.encode_basestring

_DB_COLUMNS = (
    "campaign_id",
    "key",
    "name",
    "email",
    "phone",
    "exposures",
    "country",
    "state",
    "locale",
    "extra",
    "created_at",
    "updated_at",
)


@dataclass(frozen=True)
class Problem:
    """One row's rejection or warning: its physical line in the source file and why."""

    line: int
    reason: str


@dataclass
class ImportSummary:
    """What an import did (or, for a dry run, would do); the CLI prints it.

    ``imported`` counts contacts new to the campaign, ``merged`` accepted rows whose key was
    already known, so ``imported == read - rejected - merged``. ``updated`` counts stored
    contacts a merge changed (wider exposures, blanks filled). ``possible_duplicates``: new
    contacts whose email or phone another contact of the campaign has under another key.
    ``present`` counts the stored contacts (from before this import) the file names, each
    once: a re-import of the same file is "0 new, N already present, 0 changed".
    """

    source: str = ""
    read: int = 0
    rejected: int = 0
    merged: int = 0
    imported: int = 0
    warnings: int = 0
    updated: int = 0
    possible_duplicates: int = 0
    present: int = 0
    dry_run: bool = False
    kind: str = ""  # "CSV", "XLSX workbook", ...
    sheet: str | None = None
    key_column: str | None = None  # the header of the key column, None: keyed by email/phone
    rejects: list[Problem] = field(default_factory=list)
    warned: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # file-level remarks (e.g. no exposure column)

    def counts(self) -> dict[str, int]:
        """The five integers of the ``--json`` contract, in the order the summary line uses."""
        return {
            "read": self.read,
            "imported": self.imported,
            "merged": self.merged,
            "warnings": self.warnings,
            "rejected": self.rejected,
        }

    def json(self) -> dict[str, int]:
        """``--json``: the five counts, then ``possible_duplicates``."""
        return {**self.counts(), "possible_duplicates": self.possible_duplicates}

    @property
    def all_rejected(self) -> bool:
        """Every data row was rejected: the import fails (exit 1), nothing is kept."""
        return self.read > 0 and self.rejected == self.read


#: Called as the import goes: (stage, rows done, fraction of the whole import done).
Progress = Callable[[str, int, float], None]


def import_contacts(
    session: Session,
    campaign: Campaign,
    path: str | os.PathLike[str],
    *,
    default_region: str = "US",
    mapping: dict[str, str] | None = None,
    rejects_path: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    sheet: str | None = None,
    header_row: int | None = None,
    merge_on: str | None = None,
    update: bool = False,
    value_map: dict[str, str] | None = None,
) -> ImportSummary:
    """Import the affected-customer list at ``path`` into ``campaign`` in the session's transaction.

    Nothing is committed here: the caller's ``session_scope`` commits (with its audit record) or
    rolls back, so a crash or Ctrl-C leaves the database as it was. ``rejects_path`` is written
    to a temporary file and renamed into place only when the whole file was processed; a dry run
    writes it too (it is a report, not a change) but nothing to the database. When every row is
    rejected nothing is written either (``summary.all_rejected``; the CLI exits 1).

    ``sheet``/``header_row`` choose where the header is (default: found); ``merge_on`` ("email"
    or "phone") merges a new key into the contact that already has that address; ``update``
    lets a row replace a known contact's email, phone and name; ``value_map`` adds exposure
    words (squashed word -> kind, see :func:`parse_value_map`).

    Raises NotifyError (one line naming file, line, column or value) when the file cannot be
    read, has no email or phone column, or an option is unusable.
    """
    path = Path(path)
    region = check_region(default_region)
    if merge_on is not None and merge_on not in MERGE_ON:
        raise NotifyError(f"--merge-on {merge_on!r}: expected email or phone")
    summary = ImportSummary(source=str(path), dry_run=dry_run)
    target = check_rejects_path(rejects_path, path)
    mapping = mapping or {}
    value_map = value_map or {}
    recognizes = _recognizer(mapping, value_map)

    def reading(fraction: float) -> None:
        if progress:  # shares of the whole: the bytes 5%, parsing 20%, checks 20%, writes 55%
            progress("read", 0, 0.05 * fraction)

    with _no_cyclic_gc(), _arrow_memory():
        table = tabular.read_table(
            path, recognizes, sheet=sheet, header_row=header_row, progress=reading
        )
        if progress:
            progress("read", len(table.frame), 0.25)
        summary.kind, summary.sheet = table.kind, table.sheet
        summary.notes.extend(table.notes)
        layout = _layout(path, table, mapping, value_map)
        summary.key_column = table.header[layout.single["key"]] if "key" in layout.single else None
        if not layout.exposure_cols and not layout.flag_cols:
            summary.notes.append(
                "no exposure column (exposure, or passwords/card/identity flags): "
                "every row is rejected; map one with --map COLUMN=exposure"
            )
        conn = session.connection()
        writer = _NullWriter() if dry_run else _make_writer(conn)
        work = _Importer(
            table,
            layout,
            region,
            campaign.id,
            summary,
            writer,
            merge_on=merge_on,
            update=update,
            value_map=value_map,
            progress=progress,
        )
        with RejectsFile(target, table.header) as rejects, _big_page_cache(conn, not dry_run):
            work.rejects = rejects
            try:
                work.load_existing(conn)
                work.run()
                if summary.read == 0:
                    summary.notes.append("the file has a header but no data rows")
            except IntegrityError:
                raise NotifyError(
                    f"{path}: another import changed campaign {campaign.name!r} meanwhile; "
                    "nothing was imported, run it again"
                ) from None
            except OperationalError as exc:
                raise NotifyError(
                    f"{path}: database error, nothing was imported: {str(exc.orig).splitlines()[0]}"
                ) from None
    if not dry_run:
        # Contacts the caller had loaded are stale now; the writes bypassed the ORM.
        for obj in list(session.identity_map.values()):
            if isinstance(obj, Contact):
                session.expire(obj)
    return summary


def check_region(region: str) -> str:
    """``--default-region``: the upper-cased region code if phonenumbers knows it, else an error."""
    code = (region or "").strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise NotifyError(f"--default-region {region!r}: not a region code (e.g. US, GB, DE)")
    return code


def parse_mapping(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["Cell=phone", "Kunde=key"]`` (``--map``) -> ``{"Cell": "phone", "Kunde": "key"}``."""
    mapping: dict[str, str] = {}
    for item in items:
        column, sep, target = item.rpartition("=")
        if not sep or not column.strip() or not target.strip():
            raise NotifyError(f'--map {item!r}: expected COLUMN=FIELD, e.g. --map "Cell=phone"')
        mapping[column.strip()] = target.strip()
    return mapping


def parse_value_map(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["PAN=card"]`` (``--map-value``) -> ``{"pan": "card"}`` (squashed word -> kind)."""
    words: dict[str, str] = {}
    for item in items:
        word, sep, kind = item.rpartition("=")
        kind_name = exposures.EXPOSURE_BY_ALIAS.get(exposures.squash(kind)) if sep else None
        if not sep or not exposures.squash(word):
            raise NotifyError(
                f'--map-value {item!r}: expected WORD=KIND, e.g. --map-value "PAN=card"'
            )
        if kind_name is None or exposures.squash(kind) not in _BITS:
            raise NotifyError(
                f"--map-value {item!r}: unknown kind {kind.strip()!r} (kinds: "
                f"{', '.join(exposures.RANKED)})"
            )
        words[exposures.squash(word)] = kind_name
    return words


# --------------------------------------------------------------------------- values


def _show(value: str, limit: int = 40) -> str:
    """A value quoted for a message: escaped (CR/LF visible) and cut to ``limit`` characters."""
    text = value if len(value) <= limit else value[:limit] + "…"
    return _json_string(text)  # json.dumps(text, ensure_ascii=False), without its overhead


_COUNTRY_REGIONS = {
    "usa": "US",
    "unitedstates": "US",
    "unitedstatesofamerica": "US",
    "america": "US",
    "uk": "GB",
    "unitedkingdom": "GB",
    "greatbritain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "canada": "CA",
    "germany": "DE",
    "deutschland": "DE",
    "france": "FR",
    "spain": "ES",
    "italy": "IT",
    "ireland": "IE",
    "netherlands": "NL",
    "australia": "AU",
    "newzealand": "NZ",
    "mexico": "MX",
    "brazil": "BR",
    "india": "IN",
    "japan": "JP",
}


@lru_cache(maxsize=1024)
def _region_for_country(country: str, default: str) -> str:
    """The phone region a row's country names (``GB``, ``United Kingdom``), else the default."""
    code = country.strip().upper()
    if code in phonenumbers.SUPPORTED_REGIONS:
        return code
    return _COUNTRY_REGIONS.get(exposures.squash(country), default)


def _snake(header: str) -> str:
    """``Loyalty Tier`` -> ``loyalty_tier``: a key templates can use as ``contact.extra.x``."""
    return "_".join(re.findall(r"[0-9a-z]+", header.lower()))


# --------------------------------------------------------------------------- header


def _recognizer(mapping: dict[str, str], value_map: dict[str, str]) -> tabular.Recognizer:
    """Whether a header cell names a field: what finds the header row and the delimiter."""
    mapped = {exposures.squash(column) for column in mapping}

    def recognizes(cell: str) -> bool:
        squashed = _header_squash(cell)
        return bool(squashed) and (
            squashed in _HEADER_FIELD
            or exposures.squash(cell) in mapped
            or bool(exposures.flag_kinds(cell, value_map))
        )

    return recognizes


@dataclass
class _Layout:
    """Where each field is: column indexes resolved from the header and ``--map``."""

    width: int
    single: dict[str, int]
    exposure_cols: list[int]
    flag_cols: list[tuple[int, int, str]]  # (index, exposure bits, header)
    extra_cols: list[tuple[int, str, str]]  # (index, extra key, header)


def _layout(
    path: Path, table: tabular.Table, mapping: dict[str, str], value_map: dict[str, str]
) -> _Layout:
    """Resolve the header: aliases ignoring case and punctuation, ``--map`` taking precedence.

    Two columns read the same way, or two columns claiming one field, are an error naming
    both: silently picking one could send the notice to the wrong address.
    """
    names = table.header
    where = f"{path}, line {table.header_line}"
    if table.sheet is not None:
        where = f"{path}, sheet {table.sheet!r}, row {table.header_line}"
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        squashed = _header_squash(name)
        if not squashed:
            continue
        if squashed in seen:
            first = seen[squashed]
            raise NotifyError(
                f"{where}: columns {first + 1} {names[first]!r} and {index + 1} "
                f"{name!r} have the same name (ignoring case and punctuation); "
                "rename one"
            )
        seen[squashed] = index
    explicit = _explicit_columns(path, names, mapping)
    single: dict[str, int] = {}
    claims: dict[str, list[int]] = {}
    exposure_cols: list[int] = []
    flag_cols: list[tuple[int, int, str]] = []
    extra_cols: list[tuple[int, str, str]] = []
    for index, name in enumerate(names):
        squashed = _header_squash(name)
        target = explicit.get(index) or _HEADER_FIELD.get(squashed)
        bits = 0
        if target is None:
            for kind in exposures.flag_kinds(name, value_map):
                bits |= _BITS[kind]
            target = "flag" if bits else None
        elif target in _BITS:
            bits = _BITS[target]
        if target in SINGLE_FIELDS and index not in explicit and target in explicit.values():
            target = None  # --map chose another column for this field: keep this one as extra
        if target in SINGLE_FIELDS:
            claims.setdefault(target, []).append(index)
        elif target == "exposure":
            exposure_cols.append(index)
        elif bits:
            flag_cols.append((index, bits, name))
        if target in ("first_name", "last_name"):
            # Kept under their field name too: "Dear {{ contact.extra.first_name }}".
            extra_cols.append((index, target, name))
        elif target is None and squashed:
            extra_cols.append((index, _snake(name), name))
    for target, indexes in claims.items():
        if len(indexes) > 1:
            a, b = (names[i] for i in indexes[:2])
            raise NotifyError(
                f"{where}: columns {a!r} and {b!r} both look like the {target}; "
                f'choose one with --map "{b}={target}"'
            )
        single[target] = indexes[0]
    if "email" not in single and "phone" not in single:
        hint = (
            "name one with --map COLUMN=email or --map COLUMN=phone"
            if table.sheet is None
            else "name one with --map COLUMN=email, or choose the sheet (--sheet) and "
            "header row (--header-row)"
        )
        raise NotifyError(f"{path}: no email or phone column (columns: {_columns(names)}); " + hint)
    return _Layout(len(names), single, exposure_cols, flag_cols, extra_cols)


def _columns(names: list[str], limit: int = 12) -> str:
    """The header for a message: a garbage "header" must not become a 4,000-character line."""
    shown = [n if len(n) <= 30 else n[:30] + "…" for n in names if n][:limit]
    more = len([n for n in names if n]) - len(shown)
    return (", ".join(shown) or "none") + (f", ... ({more} more)" if more > 0 else "")


def _explicit_columns(path: Path, names: list[str], mapping: dict[str, str]) -> dict[int, str]:
    by_squash = {exposures.squash(n): i for i, n in reversed(list(enumerate(names)))}
    explicit: dict[int, str] = {}
    for column, target in mapping.items():
        field_name = _MAP_TARGET.get(exposures.squash(target))
        if field_name is None:
            raise NotifyError(
                f"--map {column}={target}: unknown field {target!r} (fields: {', '.join(FIELDS)})"
            )
        index = names.index(column) if column in names else by_squash.get(exposures.squash(column))
        if index is None:
            raise NotifyError(
                f"--map {column}={target}: {path} has no column {column!r} "
                f"(columns: {_columns(names)})"
            )
        if field_name in SINGLE_FIELDS and field_name in explicit.values():
            raise NotifyError(f"--map: two columns mapped to {field_name}")
        explicit[index] = field_name
    return explicit


# --------------------------------------------------------------------------- columns


_TEXT = pa.large_string()


def _arrow(series: pd.Series) -> pa.Array:
    """The column as one Arrow large_string array (pandas' pyarrow-backed str: no copy of
    the characters; an object column is converted)."""
    if series.dtype == object:
        return pa.array(series.to_numpy(dtype=object), type=_TEXT)
    array = pa.array(series)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.cast(_TEXT)


def _join(*arrays: Any, sep: str) -> pa.Array:
    """Element-wise concatenation of Arrow strings (arrays or plain str), null if any is."""
    wide = [pa.scalar(a, _TEXT) if isinstance(a, str) else pc.cast(a, _TEXT) for a in arrays]
    return pc.binary_join_element_wise(*wide, pa.scalar(sep, _TEXT))


def _patch(array: pa.Array, rows: Any, values: list) -> pa.Array:
    """``array`` with ``values`` at the positions ``rows`` (the few a slow path settled)."""
    if not len(rows):
        return array
    order = np.argsort(rows, kind="stable")
    mask = np.zeros(len(array), dtype=bool)
    mask[np.asarray(rows)[order]] = True
    return pc.replace_with_mask(
        array, pa.array(mask), pa.array([values[i] for i in order], type=array.type)
    )


def _blank_is_null(array: pa.Array) -> pa.Array:
    """Empty strings as nulls: what the database stores for an absent value."""
    return pc.if_else(pc.fill_null(pc.equal(array, ""), True), pa.scalar(None, _TEXT), array)


def _repeated(array: pa.Array) -> np.ndarray:
    """Rows whose value occurs more than once in the column (nulls count as one value):
    pandas' ``duplicated(keep=False)`` from Arrow's hash encoding, at half its cost."""
    encoded = pc.dictionary_encode(array)
    codes = pc.fill_null(encoded.indices, len(encoded.dictionary)).to_numpy(zero_copy_only=False)
    return np.bincount(codes, minlength=len(encoded.dictionary) + 1)[codes] > 1


class _Objects:
    """A column's values as the Python objects the driver binds, made block by block.

    A column with few distinct values (exposures, country, a plan in the extra columns)
    shares one object per value, taken by code: making a new string per row is most of
    what converting a column costs. ``shared=False``: a column of distinct values.
    """

    def __init__(self, array: pa.Array, *, shared: bool = True) -> None:
        self.array = array
        self.codes: np.ndarray | None = None
        self.values: np.ndarray | None = None
        if not shared:
            return
        encoded = array if pa.types.is_dictionary(array.type) else pc.dictionary_encode(array)
        if len(encoded.dictionary) * 2 > len(array):
            return
        values = encoded.dictionary.to_pylist()
        self.values = np.empty(len(values) + 1, dtype=object)  # the last: null
        self.values[:-1] = values
        self.codes = pc.fill_null(encoded.indices, len(values)).to_numpy(zero_copy_only=False)

    def at(self, rows: np.ndarray) -> np.ndarray:
        """The values at ``rows`` (None for null), as a numpy object array."""
        if self.codes is not None and self.values is not None:
            return self.values[self.codes[rows]]
        return pc.take(self.array, pa.array(rows)).to_numpy(zero_copy_only=False)


def _at(array: pa.Array, rows: Any) -> list:
    """The values at a few positions, as Python objects."""
    return pc.take(array, pa.array(np.asarray(rows, dtype=np.int64))).to_pylist()


def _numpy(mask: Any) -> np.ndarray:
    """An Arrow boolean (nulls as False) as a numpy bool array."""
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


_FAST_EMAIL = (
    r"^(?P<local>[A-Za-z0-9_%+\-]+(?:\.[A-Za-z0-9_%+\-]+)*)@"
    r"(?P<domain>[A-Za-z0-9.\-]+)$"
)
_FAST_PHONE = (
    r"^\s*(?P<cc>\+1[\s.\-]?|1[\s.\-]?)?\(?(?P<a>[2-9]\d\d)\)?[\s.\-]?"
    r"(?P<e>[2-9]\d\d)[\s.\-]?(?P<l>\d{4})\s*$"
)


def _emails(raw: pd.Series) -> tuple[pa.Array, dict[int, str]]:
    """Every email of a column normalized (null when absent or unusable); problems by row.

    The dot-atom addresses nearly every list holds are split by one regex over the column,
    their domains checked by email-validator once per distinct domain; every other value
    goes through :func:`normalize_email` once per distinct value.
    """
    stripped = _arrow(raw.str.strip())
    parts = pc.extract_regex(stripped, _FAST_EMAIL)
    local = pc.struct_field(parts, [0])
    fast = _numpy(
        pc.and_(
            pc.less_equal(pc.utf8_length(local), 64),
            pc.less_equal(pc.utf8_length(stripped), MAX_EMAIL),
        )
    )
    domains = pc.dictionary_encode(pc.utf8_lower(pc.struct_field(parts, [1])))
    checked = [email_domain(d) for d in domains.dictionary.to_pylist()]
    ascii_domains = pa.array([c[0] for c in checked], type=_TEXT)
    emails = _join(local, pc.take(ascii_domains, domains.indices), sep="@")
    problems: dict[int, str] = {}
    bad = [i for i, c in enumerate(checked) if c[0] is None]
    if bad:
        codes = domains.indices.to_numpy(zero_copy_only=False)
        for row in np.flatnonzero(fast & np.isin(codes, bad)):
            problems[int(row)] = checked[codes[row]][1] or "not a valid email address"
    slow = np.flatnonzero(~fast & _numpy(pc.not_equal(stripped, "")))
    if len(slow):
        settled = [normalize_email(value) for value in _at(stripped, slow)]
        emails = _patch(emails, slow, [email for email, _ in settled])
        for row, (_, problem) in zip(slow, settled, strict=True):
            if problem:
                problems[int(row)] = problem
    return emails, problems


class _Regions(NamedTuple):
    """The phone region of each row: ``names[codes[row]]`` (few distinct regions)."""

    codes: np.ndarray
    names: list[str]


def _phones(raw: pd.Series, regions: _Regions) -> Callable[[], tuple[pa.Array, dict[int, str]]]:
    """Every phone of a column in E.164 (null when absent or unusable); problems by row.

    US/Canadian formats are parsed by one regex over the column and validated by area code +
    exchange (cached per prefix, see ``nanp_prefix_valid``); every other value goes through
    :func:`normalize_phone` once per distinct (value, region). Returns a function giving the
    result: many distinct international numbers are judged in a helper process meanwhile
    (see :class:`_Verdicts`), so the caller cleans other columns before calling it.
    """
    array = _arrow(raw)
    parts = pc.extract_regex(array, _FAST_PHONE)
    matched = _numpy(pc.is_valid(parts))
    national = _join(
        pc.struct_field(parts, [1]),
        pc.struct_field(parts, [2]),
        pc.struct_field(parts, [3]),
        sep="",
    )
    plus = _numpy(pc.starts_with(pc.struct_field(parts, [0]), "+"))
    nanp = np.array([r in NANP_REGIONS for r in regions.names], dtype=bool)[regions.codes]
    fast = matched & (nanp | plus)
    slow = np.flatnonzero(~fast & _numpy(pc.not_equal(array, "")))
    slow_values = _at(array, slow) if len(slow) else []
    # "+44 20 7946 0958" -> "+442079460958": judged without parse() (see _other_phone).
    digits = [
        "+" + _NOT_DIGIT.sub("", v) if _INTERNATIONAL.fullmatch(v) else None for v in slow_values
    ]
    verdicts = _Verdicts(digits)
    # Validity by area code + exchange, once per distinct prefix (None: check the number).
    prefixes = pc.dictionary_encode(pc.utf8_slice_codeunits(national, 0, 6))
    prefix_verdicts = [nanp_prefix_valid(u) for u in prefixes.dictionary.to_pylist()]
    codes = pc.fill_null(prefixes.indices, len(prefix_verdicts)).to_numpy(zero_copy_only=False)
    valid = np.array([v is True for v in prefix_verdicts] + [False], dtype=bool)[codes] & fast
    exact = np.array([v is None for v in prefix_verdicts] + [False], dtype=bool)[codes] & fast
    e164 = _join("+1", national, sep="")
    phones = pc.if_else(pa.array(valid), e164, pa.scalar(None, _TEXT))
    problems: dict[int, str] = {}
    rows = np.flatnonzero(exact)
    if len(rows):
        numbers = _at(e164, rows)
        good = [n if nanp_valid(n[2:]) else None for n in numbers]
        phones = _patch(phones, rows, good)
        for row, number in zip(rows, good, strict=True):
            if number is None:
                problems[int(row)] = "not a valid phone number"
    for row in np.flatnonzero(fast & ~valid & ~exact):
        problems[int(row)] = "not a valid phone number"

    def result() -> tuple[pa.Array, dict[int, str]]:
        if not len(slow):
            return phones, problems
        judged = verdicts.result()
        settled = []
        for row, value, number in zip(slow, slow_values, digits, strict=True):
            verdict = judged.get(number) if number is not None else None
            settled.append(
                verdict
                if verdict is not None
                else _phone_cached(value, regions.names[regions.codes[row]])
            )
        for row, (_, problem) in zip(slow, settled, strict=True):
            if problem:
                problems[int(row)] = problem
        return _patch(phones, slow, [phone for phone, _ in settled]), problems

    return result


class _Verdicts:
    """:func:`notify.intl_phones.verdict` for the distinct numbers of a list.

    From ``HELPER_PHONES`` distinct numbers (~20 us each with phonenumbers) they are judged
    in a helper process started at once, the importer meanwhile cleaning other columns; if
    the helper cannot run or answers wrongly, they are judged here, with the same answers.
    """

    def __init__(self, digits: list[str | None]) -> None:
        self.numbers = list(dict.fromkeys(d for d in digits if d is not None))
        self.output: list[str] = []
        self.thread: threading.Thread | None = None
        if len(self.numbers) < HELPER_PHONES:
            return
        try:
            helper = subprocess.Popen(
                [sys.executable, "-m", "notify.intl_phones"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                encoding="ascii",
            )
        except OSError:
            return  # judged here
        request = "\n".join(self.numbers)

        def talk() -> None:  # a thread: writing to the pipe waits for the helper to read
            with suppress(Exception):
                out, _ = helper.communicate(request)
                if helper.returncode == 0:
                    self.output.append(out)

        self.thread = threading.Thread(target=talk, daemon=True)
        self.thread.start()

    def result(self) -> dict[str, tuple[str | None, str | None] | None]:
        """Each distinct number's verdict (None: ask normalize_phone)."""
        if self.thread is not None:
            self.thread.join()
        letters = self.output[0] if self.output else ""
        if len(letters) == len(self.numbers):
            return {n: intl_phones.decode(n, c) for n, c in zip(self.numbers, letters, strict=True)}
        return {n: _international(n) for n in self.numbers}


@lru_cache(maxsize=65536)
def _phone_cached(value: str, region: str) -> tuple[str | None, str | None]:
    return normalize_phone(value, region)


# "+44 20 7946 0958": a plus, then only digits and the usual punctuation.
_INTERNATIONAL = re.compile(r"\s*\+[\d\s().\-/\u00a0]{7,30}")
_NOT_DIGIT = re.compile(r"\D")


def _other_phone(value: str, region: str) -> tuple[str | None, str | None]:
    """A phone the NANP regex did not take: an international number in E.164 form is
    validated without phonenumbers' parse (half its cost) when that gives the same answer;
    anything else, or anything that fails, gets :func:`normalize_phone`'s full verdict."""
    if _INTERNATIONAL.fullmatch(value):
        verdict = _international("+" + _NOT_DIGIT.sub("", value))
        if verdict is not None:
            return verdict
    return _phone_cached(value, region)


@lru_cache(maxsize=131072)
def _international(digits: str) -> tuple[str | None, str | None] | None:
    """:func:`notify.intl_phones.verdict`, cached (a number repeated in the file is judged once)."""
    return intl_phones.verdict(digits)


def _factorized(series: pd.Series, parse: Callable[[str], Any]) -> tuple[np.ndarray, list[Any]]:
    """(codes per row, parse(value) per distinct value): one call per spelling."""
    codes, uniques = pd.factorize(series)
    return codes, [parse(u) for u in uniques]


# --------------------------------------------------------------------------- rows


class _Importer:
    """Cleans whole columns, settles the rows that interact one by one, writes the rest in bulk.

    Row-level results are kept by position (0 = first data row); ``reasons`` holds why a row
    is rejected, ``notes`` the warnings of a row imported with something dropped.
    """

    def __init__(
        self,
        table: tabular.Table,
        layout: _Layout,
        region: str,
        campaign_id: int,
        summary: ImportSummary,
        writer: _NullWriter,
        *,
        merge_on: str | None = None,
        update: bool = False,
        value_map: dict[str, str] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.table = table
        self.layout = layout
        self.region = region
        self.campaign_id = campaign_id
        self.summary = summary
        self.writer = writer
        self.merge_on = merge_on
        self.update = update
        self.value_map = value_map or {}
        self.progress = progress
        self.rejects: RejectsFile | None = None
        # key -> [exposure mask, email (lower-cased), phone, filled bits, first line or 0 (DB),
        #         pending insert row (list) or None, name]
        self.known: dict[str, list[Any]] = {}
        self.email_owner: dict[str, str] = {}  # lower-cased email -> key
        self.phone_owner: dict[str, str] = {}
        self.changes: dict[str, dict[str, Any]] = {}
        self.present: set[str] = set()  # stored contacts this file names (summary.present)
        self.reasons: dict[int, str] = {}
        self.notes: dict[int, list[str]] = {}
        self.pending = writer.pending  # the writer empties it in place on flush
        self.stamp = writer.stamp

    def load_existing(self, conn: Connection) -> None:
        """Key -> state of every contact the campaign already has, read once, streamed."""
        t = Contact.__table__
        query = select(
            t.c.key,
            t.c.exposures,
            t.c.email,
            t.c.phone,
            t.c.name,
            t.c.country,
            t.c.state,
            t.c.locale,
        ).where(t.c.campaign_id == self.campaign_id)
        result = conn.execute(query.execution_options(yield_per=10_000))
        for key, stored, email, phone, name, country, state, locale in result:
            mask = 0
            for kind in exposures.split(stored):
                mask |= _BITS.get(kind, 0)
            email_lower = email.lower() if email else None
            self.known[key] = [
                mask,
                email_lower,
                phone,
                _filled(name, country, state, locale),
                0,
                None,
                name,
            ]
            if email_lower:
                self.email_owner.setdefault(email_lower, key)
            if phone:
                self.phone_owner.setdefault(phone, key)

    # ----------------------------------------------------------------- the columns

    def note(self, row: int, text: str) -> None:
        self.notes.setdefault(row, []).append(text)

    def run(self) -> None:
        """Clean, validate, settle and write every row, then report them in line order."""
        table, layout = self.table, self.layout
        frame = table.frame
        count = len(frame)
        self.summary.read = count + len(table.bad_rows)
        single = layout.single
        cells = {
            i: frame[i] if i in frame.columns else pd.Series([""] * count, dtype=str)
            for i in range(layout.width)
        }
        self._surplus(frame)
        for index in range(layout.width):
            cells[index] = self._clean(index, cells[index])
        self._nul_lines()

        def column(name: str) -> pd.Series | None:
            return cells[single[name]] if name in single else None

        country_col = column("country")
        regions = _Regions(np.zeros(count, dtype=np.int64), [self.region])
        if country_col is not None:
            stripped = country_col.str.strip()
            codes, found = _factorized(
                stripped, lambda c: _region_for_country(c, self.region) if c else self.region
            )
            regions = _Regions(np.where(codes < 0, 0, codes), found or [self.region])
        countries = self._texts(country_col, "country", 64)
        email_col, phone_col = column("email"), column("phone")
        nothing = pa.nulls(count, _TEXT)
        # The phones first: their international numbers may be judged in a helper process
        # while the other columns are cleaned here.
        phones_done = _phones(phone_col, regions) if phone_col is not None else None
        emails, email_problems = _emails(email_col) if email_col is not None else (nothing, {})
        masks, unknown = self._exposures(cells)
        names = self._names(cells)
        states = self._texts(column("state"), "state", 64)
        locales = self._texts(column("locale"), "locale", 32)
        extras = self._extras(cells)
        phones, phone_problems = phones_done() if phones_done is not None else (nothing, {})
        keys = (
            _arrow(cells[single["key"]].str.strip())
            if "key" in single
            else pa.array([""] * count, type=_TEXT)
        )
        # No key: the email (Ana@X and ana@x are one person), else the phone.
        fallback = pc.coalesce(pc.utf8_lower(emails), phones, pa.scalar("", _TEXT))
        keys = pc.if_else(pc.equal(keys, ""), fallback, keys)
        if self.progress:
            self.progress("check", count, 0.45)
        # Rejections: no address, no exposure, key too long; warnings for what was dropped.
        unreachable = _numpy(pc.and_(pc.is_null(emails), pc.is_null(phones)))
        long_keys = _numpy(pc.greater(pc.utf8_length(keys), MAX_KEY))
        suspect = set(email_problems) | set(phone_problems) | set(unknown)
        suspect.update(np.flatnonzero((masks == 0) | unreachable | long_keys).tolist())
        suspect -= set(self.reasons)
        rows = sorted(suspect)
        raw_email = (
            dict(zip(rows, _at(_arrow(email_col), rows), strict=True))
            if email_col is not None
            else {}
        )
        raw_phone = (
            dict(zip(rows, _at(_arrow(phone_col), rows), strict=True))
            if phone_col is not None
            else {}
        )
        key_at = dict(zip(rows, _at(keys, rows), strict=True))
        has_exposure = bool(layout.exposure_cols or layout.flag_cols)
        for row in rows:
            e_problem, p_problem = email_problems.get(row), phone_problems.get(row)
            reachable = not unreachable[row]
            if not reachable or not masks[row] or long_keys[row]:
                self.reasons[row] = _reasons(
                    raw_email.get(row, ""),
                    e_problem,
                    raw_phone.get(row, ""),
                    p_problem,
                    reachable,
                    int(masks[row]),
                    unknown.get(row, ()),
                    key_at[row] or "",
                    has_exposure,
                )
                continue
            if e_problem:
                self.note(
                    row, f"email {_show(raw_email[row].strip())}: {e_problem}; imported without it"
                )
            if p_problem:
                self.note(
                    row, f"phone {_show(raw_phone[row].strip())}: {p_problem}; imported without it"
                )
            if unknown.get(row):
                self.note(
                    row,
                    "unknown exposure "
                    + ", ".join(_show(u) for u in unknown[row][:3])
                    + " ignored",
                )
        cells.clear()  # the cleaned columns: not needed any more
        joined = pa.DictionaryArray.from_arrays(
            pa.array(masks, type=pa.int8()), pa.array(_JOINED, type=_TEXT)
        )
        self._settle(keys, [names, emails, phones, joined, countries, states, locales, extras])
        self.finish()
        self._report()

    def _surplus(self, frame: pd.DataFrame) -> None:
        """Rows with non-empty cells beyond the header's columns are rejected."""
        width = self.layout.width
        extra_columns = [c for c in frame.columns if c >= width]
        if not extra_columns:
            return
        beyond = np.zeros(len(frame), dtype=bool)
        for column in extra_columns:
            beyond |= (frame[column].str.strip() != "").to_numpy()
        for row in np.flatnonzero(beyond):
            values = frame.iloc[row].tolist()
            used = max(i for i, v in enumerate(values) if v.strip()) + 1
            hint = (
                "a delimiter inside an unquoted value?"
                if self.table.kind in ("CSV", "TSV")
                else "is the header row right? see --header-row"
            )
            self.reasons[int(row)] = f"{used} cells but the header has {width} columns ({hint})"

    def _clean(self, index: int, series: pd.Series) -> pd.Series:
        """Control characters and bidi overrides removed (warned); a NUL rejects the row."""
        flagged = series.str.contains(_CONTROL_PATTERN, regex=True).to_numpy(dtype=bool)
        if not flagged.any():
            return series
        header = self.table.header[index] if index < len(self.table.header) else str(index + 1)
        rows = np.flatnonzero(flagged)
        for row, value in zip(rows, series.iloc[rows].tolist(), strict=True):
            if "\x00" in value:
                self.reasons.setdefault(
                    int(row),
                    f"column {header!r} holds a NUL character (byte 0); fix or remove the row",
                )
            self.note(int(row), f"control characters removed from column {header!r}")
        return series.str.replace(_CONTROL_PATTERN, "", regex=True)

    def _nul_lines(self) -> None:
        """NULs the CSV parser dropped: the rows on those lines are rejected."""
        for row in self.table.nul_rows():
            self.reasons.setdefault(row, tabular.NUL_REASON)

    def _texts(self, series: pd.Series | None, label: str, limit: int) -> pa.Array:
        """An optional text field: stripped, on one line, dropped with a note when too long;
        null when empty."""
        if series is None:
            return pa.nulls(len(self.table.frame), _TEXT)
        stripped = series.str.strip()
        values = _arrow(stripped)
        odd = _numpy(
            pc.or_(
                pc.greater(pc.utf8_length(values), limit),
                pc.match_substring_regex(values, r"[\t\r\n]"),
            )
        )
        rows = np.flatnonzero(odd)
        if len(rows):
            fixed = []
            for row, value in zip(rows, _at(values, rows), strict=True):
                holder: list[str] = []
                fixed.append(_text(value, label, limit, holder) or "")
                for text in holder:
                    self.note(int(row), text)
            values = _patch(values, rows, fixed)
        return _blank_is_null(values)

    def _names(self, cells: dict[int, pd.Series]) -> pa.Array:
        single = self.layout.single
        if "name" in single:
            return self._texts(cells[single["name"]], "name", MAX_TEXT)
        parts = [
            pc.fill_null(self._texts(cells[single[f]], "name", MAX_TEXT), "")
            for f in ("first_name", "last_name")
            if f in single
        ]
        if not parts:
            return pa.nulls(len(self.table.frame), _TEXT)
        return _blank_is_null(pc.utf8_trim_whitespace(_join(*parts, sep=" ")))

    def _exposures(self, cells: dict[int, pd.Series]) -> tuple[np.ndarray, dict[int, tuple]]:
        """Exposure columns and yes/no flag columns, united; unknown words by row."""
        count = len(self.table.frame)
        masks = np.zeros(count, dtype=np.int64)
        unknown: dict[int, tuple] = {}
        for index in self.layout.exposure_cols:
            codes, parsed = _factorized(cells[index].str.slice(0, MAX_TEXT), self._cell)
            masks |= np.array([m for m, _ in parsed], dtype=np.int64)[codes]
            odd = [i for i, (_, words) in enumerate(parsed) if words]
            if odd:
                for row in np.flatnonzero(np.isin(codes, odd)):
                    unknown[int(row)] = unknown.get(int(row), ()) + parsed[codes[row]][1]
        for index, bits, header in self.layout.flag_cols:
            codes, verdicts = _factorized(cells[index].str.strip().str.lower(), _flag)
            yes = np.array([v is True for v in verdicts], dtype=bool)
            masks |= np.where(yes[codes], bits, 0)
            neither = [i for i, v in enumerate(verdicts) if v is None]
            if neither:
                originals = cells[index].tolist()
                for row in np.flatnonzero(np.isin(codes, neither)):
                    self.reasons.setdefault(
                        int(row),
                        f"column {header!r} is {_flag_value(originals[row])}, "
                        "neither yes nor no (yes, true, 1, x / no, false, 0, empty)",
                    )
        return masks, unknown

    def _cell(self, value: str) -> tuple[int, tuple[str, ...]]:
        known, unknown = exposures.parse_exposures(value, self.value_map)
        mask = 0
        for kind in known:
            mask |= _BITS[kind]
        return mask, tuple(unknown)

    def _extras(self, cells: dict[int, pd.Series]) -> pa.Array:
        """The other columns as the JSON text models.JSONText stores (sorted keys, no escaping
        of non-ASCII), assembled over whole columns: a general encoder costs 6x more per row."""
        columns = sorted(self.layout.extra_cols, key=lambda col: col[1])
        if not columns:
            return pa.nulls(len(self.table.frame), _TEXT)
        pieces = []
        for index, key, header in columns:
            values = _arrow(cells[index].str.strip())
            encoded = _join('"', values, '"', sep="")
            needs = _numpy(
                pc.or_(
                    pc.match_substring_regex(values, r'["\\\x00-\x1f]'),
                    pc.greater(pc.utf8_length(values), MAX_TEXT),
                )
            )
            rows = np.flatnonzero(needs)
            if len(rows):
                fixed = []
                for row, value in zip(rows, _at(values, rows), strict=True):
                    if len(value) > MAX_TEXT:
                        self.note(
                            int(row),
                            f"column {header!r} is {len(value)} characters "
                            f"long (limit {MAX_TEXT}); dropped",
                        )
                        value = ""
                    fixed.append(_json_string(value))
                encoded = _patch(encoded, rows, fixed)
            pieces.append(_join(_json_string(key) + ": ", encoded, sep=""))
        return _join("{", _join(*pieces, sep=", "), "}", sep="")

    # ----------------------------------------------------------------- settling rows

    def _settle(self, keys: pa.Array, columns: list[pa.Array]) -> None:
        """Rows that interact one by one in file order, the others straight to the writer.

        ``columns``: name, email, phone, exposures, country, state, locale, extra (Arrow, null
        for absent), in _DB_COLUMNS order after the key.
        """
        count = len(keys)
        accepted = np.ones(count, dtype=bool)
        if self.reasons:
            accepted[list(self.reasons)] = False
        live = pa.array(accepted)
        blank = pa.scalar("", _TEXT)
        lower = pc.fill_null(pc.utf8_lower(columns[1]), blank)
        phone = pc.fill_null(columns[2], blank)
        special = _repeated(keys)
        if self.known:
            special |= _numpy(pc.is_in(keys, value_set=pa.array(list(self.known), _TEXT)))
        for values, owners in ((lower, self.email_owner), (phone, self.phone_owner)):
            present = pc.if_else(live, values, blank)
            filled = _numpy(pc.not_equal(present, blank))
            special |= _repeated(present) & filled
            if owners:
                special |= _numpy(pc.is_in(present, value_set=pa.array(list(owners), _TEXT)))
        special &= accepted
        del lower, phone
        lines = self.table.lines
        summary = self.summary
        stamp, campaign_id = self.stamp, self.campaign_id
        self.writer.prepare(campaign_id, int(accepted.sum()))
        rows = np.flatnonzero(special)
        if len(rows):
            picked = [_at(keys, rows), *(_at(c, rows) for c in columns)]
            for i, row in enumerate(rows):
                values = [campaign_id, *(p[i] for p in picked), stamp, stamp]
                self._settle_row(int(row), values[1], values, int(lines[row]))
        self.writer.flush()  # the settled rows first (as they were read)
        # Every other accepted row is a contact new to the campaign, written as is.
        bulk = np.flatnonzero(accepted & ~special)
        summary.imported += len(bulk)
        sources = (
            [_Objects(keys, shared=False), *(_Objects(c) for c in columns)]
            if self.writer.writes
            else []
        )
        with self.writer.inserting(len(bulk)) as insert:
            for start in range(0, len(bulk), BLOCK):
                block = bulk[start : start + BLOCK]
                if sources:  # a dry run converts nothing
                    grid = np.empty((len(block), len(sources)), dtype=object)
                    for index, source in enumerate(sources):
                        grid[:, index] = source.at(block)
                    insert(grid)
                if self.progress:
                    done = start + len(block)
                    self.progress("write", done, 0.45 + 0.55 * done / len(bulk))

    def _settle_row(self, row: int, key: str, values: list[Any], line: int) -> None:
        """One row whose key, email or phone is already known: merge, warn or insert."""
        summary = self.summary
        email, phone = values[3], values[4]
        email_lower = email.lower() if email else None
        known = self.known.get(key)
        if known is None:
            other = self.email_owner.get(email_lower) if email_lower else None
            other_phone = self.phone_owner.get(phone) if phone else None
            target = (
                other
                if self.merge_on == "email"
                else other_phone
                if self.merge_on == "phone"
                else None
            )
            if target is not None and target != key:
                summary.merged += 1
                self.note(
                    row,
                    f"merged into contact {_show(target)} (same "
                    f"{self.merge_on}, --merge-on {self.merge_on})",
                )
                self._merge(row, self.known[target], target, values)
                return
            clash = [
                (what, owner)
                for what, owner in (("email", other), ("phone", other_phone))
                if owner is not None and owner != key
            ]
            if clash:
                summary.possible_duplicates += 1
                what, owner = clash[0]
                value = email if what == "email" else phone
                self.note(
                    row,
                    f"possible duplicate: {what} {_show(value or '')} also belongs "
                    f"to key {_show(owner)}, this row's key is {_show(key)}; "
                    f"imported as a new contact (--merge-on {what} merges them)",
                )
            filled = _filled(values[2], values[6], values[7], values[8])
            self.known[key] = [
                _BITS_OF[values[5]],
                email_lower,
                phone,
                filled,
                line,
                values,
                values[2],
            ]
            if email_lower:
                self.email_owner.setdefault(email_lower, key)
            if phone:
                self.phone_owner.setdefault(phone, key)
            summary.imported += 1
            self.pending.append(values)
            return
        summary.merged += 1
        self._merge(row, known, key, values)

    def _merge(self, row: int, known: list[Any], key: str, values: list[Any]) -> None:
        """Unite exposures, fill blanks; a different email or phone keeps the first, with a
        note, unless ``--update``: then the row's email, phone and name replace the stored."""
        name, email, phone = values[2], values[3], values[4]
        mask = _BITS_OF[values[5]]
        country, state, locale = values[6], values[7], values[8]
        changes: dict[str, Any] = {}
        if not known[4] and key not in self.present:  # stored before this import
            self.present.add(key)
            self.summary.present += 1
        where = f"line {known[4]}" if known[4] else "the stored contact"
        if mask | known[0] != known[0]:
            known[0] |= mask
            changes["exposures"] = _JOINED[known[0]]
        if email:
            if known[1] is None or (self.update and known[1] != email.lower()):
                known[1] = email.lower()
                changes["email"] = email
            elif known[1] != email.lower():
                self.note(
                    row,
                    f"email {_show(email)} differs from {where} ({_show(known[1])}); "
                    "kept the first (--update replaces it)",
                )
        if phone:
            if known[2] is None or (self.update and known[2] != phone):
                known[2] = phone
                changes["phone"] = phone
            elif known[2] != phone:
                self.note(
                    row,
                    f"phone {phone} differs from {where} ({known[2]}); kept the "
                    "first (--update replaces it)",
                )
        if self.update and name and name != known[6]:
            changes["name"] = known[6] = name
            known[3] |= _FILL["name"]
        for (field_name, bit), value in zip(
            _FILL.items(), (name, country, state, locale), strict=True
        ):
            if value and not known[3] & bit:
                known[3] |= bit
                changes[field_name] = value
                if field_name == "name":
                    known[6] = value
        if not changes:
            return
        pending = known[5]
        if pending is not None:  # a contact of this file, not yet written: change it in place
            for field_name, value in changes.items():
                pending[_DB_COLUMNS.index(field_name)] = value
            return
        self.changes.setdefault(key, {}).update(changes)

    def finish(self) -> None:
        """Write the last chunk, then every merged change (one UPDATE per changed contact)."""
        self.writer.flush()
        if self.changes:
            self.writer.update(self.campaign_id, self.changes)
        self.writer.close()
        self.summary.updated = len(self.changes)
        if self.progress:
            self.progress("write", self.summary.imported, 1.0)

    def _report(self) -> None:
        """Rejects and warnings in line order: the summary lists and the rejects file."""
        summary, lines = self.summary, self.table.lines
        problems: list[tuple[int, str, int | None]] = [
            (line, reason, None) for line, reason in self.table.bad_rows
        ]
        problems += [(int(lines[row]), reason, row) for row, reason in self.reasons.items()]
        problems.sort(key=lambda p: p[0])
        summary.rejected = len(problems)
        summary.rejects = [Problem(line, reason) for line, reason, _ in problems[:PROBLEM_CAP]]
        if self.rejects is not None and self.rejects.writer is not None:
            frame = self.table.frame
            width = self.layout.width
            for line, reason, row in problems:
                cells: list[str] = (
                    [] if row is None else [str(v) for v in frame.iloc[row].tolist()[:width]]
                )
                self.rejects.write(line, reason, cells)
        warned = sorted(
            (int(lines[row]), "; ".join(texts))
            for row, texts in self.notes.items()
            if row not in self.reasons
        )
        summary.warnings = len(warned)
        summary.warned = [Problem(line, text) for line, text in warned[:PROBLEM_CAP]]


_BITS_OF = {joined: mask for mask, joined in enumerate(_JOINED)}


def _flag_value(value: str) -> str:
    """A flag cell for a message: the value itself, unless it looks like the data (a card or
    social security number in a column named for it), which must not reach a terminal or log."""
    value = value.strip()
    if len(value) > 16 or sum(c.isdigit() for c in value) >= 4:
        return "a value that is not a flag (not shown: it looks like data)"
    return _show(value)


def _flag(value: str) -> bool | None:
    """A flag cell: True (yes), False (no or empty), None (neither: the row is rejected)."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


def _reasons(
    raw_email: str,
    email_problem: str | None,
    raw_phone: str,
    phone_problem: str | None,
    reachable: bool,
    mask: int,
    unknown: tuple[str, ...],
    key: str,
    has_exposure: bool,
) -> str:
    """Why a row is rejected, every reason at once so one fix is enough."""
    reasons = []
    if not reachable:
        details = []
        if email_problem:
            details.append(f"email {_show(raw_email.strip())}: {email_problem}")
        if phone_problem:
            details.append(f"phone {_show(raw_phone.strip())}: {phone_problem}")
        reasons.append(
            "no usable email or phone (" + "; ".join(details) + ")"
            if details
            else "no email and no phone"
        )
    if not mask:
        if not has_exposure:
            reasons.append("no exposure column; map one with --map COLUMN=exposure")
        elif unknown:
            reasons.append(
                "no recognized exposure (" + ", ".join(_show(u) for u in unknown[:3]) + ")"
            )
        else:
            reasons.append("no exposure (the cell is empty)")
    if len(key) > MAX_KEY:
        reasons.append(f"key is {len(key)} characters long (limit {MAX_KEY})")
    return "; ".join(reasons)


def _filled(name: str | None, country: str | None, state: str | None, locale: str | None) -> int:
    """Bits (see _FILL) of the optional fields a contact has."""
    return (1 if name else 0) | (2 if country else 0) | (4 if state else 0) | (8 if locale else 0)


def _text(value: str, label: str, limit: int, notes: list[str]) -> str | None:
    """An optional text field: stripped, on one line, dropped with a note when absurdly long."""
    value = value.strip()
    if not value:
        return None
    if len(value) > limit:
        notes.append(f"{label} is {len(value)} characters long (limit {limit}); dropped")
        return None
    if not value.isprintable():  # a quoted newline or tab must not reach a mail header
        value = " ".join(value.split())
    return value or None


# --------------------------------------------------------------------------- writing


class _NullWriter:
    """Dry run: the same calls as a real writer, nothing written."""

    def __init__(self) -> None:
        self.pending: list[Sequence[Any]] = []  # new contacts, in _DB_COLUMNS order
        self.stamp: Any = utcnow().replace(tzinfo=None)  # created_at/updated_at, naive UTC
        self.campaign_id = 0  # the real writer's prepare() sets it

    writes = False  # a dry run: the bulk rows are not even converted

    def flush(self) -> None:
        """Write what is queued (the list is emptied in place: the importer holds it)."""
        self.pending.clear()

    def insert(self, grid: np.ndarray) -> None:
        """Write new contacts, one per row of ``grid``: an object array of the _DB_COLUMNS
        from key to extra (the writer adds the campaign and the time stamps)."""

    def whole(self, grid: np.ndarray) -> np.ndarray:
        """``grid`` with the campaign and time stamp columns: every _DB_COLUMNS value."""
        full = np.empty((len(grid), len(_DB_COLUMNS)), dtype=object)
        full[:, 0] = self.campaign_id
        full[:, 1:-2] = grid
        full[:, -2:] = self.stamp
        return full

    @contextmanager
    def inserting(self, rows: int) -> Iterator[Callable[[np.ndarray], None]]:
        """A function inserting one grid (see :meth:`insert`), for ``rows`` new contacts;
        everything given is written when the block ends."""
        yield self.insert

    def prepare(self, campaign_id: int, expected: int) -> None:
        """Called once before the first row with how many new contacts may come."""

    def update(self, campaign_id: int, changes: dict[str, dict[str, Any]]) -> None:
        """Apply merged changes, keyed by contact key."""

    def close(self) -> None:
        """After the last write: restore whatever ``prepare`` set aside."""


class _Writer(_NullWriter):
    """Inserts in chunks through the driver: no ORM objects and no per-row type processing."""

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn
        # The exact value models.UTCDateTime would bind (a string on SQLite), computed once.
        stamp_type = Contact.__table__.c.created_at.type.dialect_impl(conn.dialect)
        process = stamp_type.bind_processor(conn.dialect)
        self.stamp = process(self.stamp) if process else self.stamp
        marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        self.sql = (
            f"INSERT INTO contacts ({', '.join(_DB_COLUMNS)}) "
            f"VALUES ({', '.join([marker] * len(_DB_COLUMNS))})"
        )

        self.trigger: str | None = None  # the tally trigger set aside by prepare()
        self.indexes: list[str] = []  # the secondary indexes set aside by prepare()
        self.campaign_id = 0
        self.written = 0

    def prepare(self, campaign_id: int, expected: int) -> None:
        """SQLite, a big import: set the per-row tally trigger aside for this transaction.

        The trigger (migration 0004) upserts the contact count once per inserted row, which
        is two thirds of the time of a million-row insert. Inside this transaction, which
        holds SQLite's only write lock, it is dropped and re-created from its own stored SQL
        by :meth:`close`, which adds the count in one statement: at commit the tallies are
        exactly what the trigger would have made, and a rollback restores the trigger too.
        """
        self.campaign_id = campaign_id
        if self.conn.dialect.name != "sqlite" or expected < BULK_TALLY:
            return
        self.trigger = self.conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' "
            "AND name = 'tally_contacts_insert'"
        ).scalar()
        if self.trigger:
            self.conn.exec_driver_sql("DROP TRIGGER tally_contacts_insert")
        # The secondary indexes too, when the import at least doubles the table: building an
        # index once from sorted rows beats a million random inserts into it; on a table much
        # bigger than the import, rebuilding it would cost more than it saves.
        stored = self.conn.exec_driver_sql("SELECT count(*) FROM contacts").scalar() or 0
        if expected >= stored:
            found = self.conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name = 'contacts' AND sql IS NOT NULL"
            ).all()
            for name, sql in found:
                self.conn.exec_driver_sql(f'DROP INDEX "{name}"')
                self.indexes.append(sql)

    writes = True

    def flush(self) -> None:
        if self.pending:
            rows = [r if r.__class__ is tuple else tuple(r) for r in self.pending]
            self.conn.exec_driver_sql(self.sql, rows)
            self.written += len(self.pending)
            self.pending.clear()

    def insert(self, grid: np.ndarray) -> None:
        """Multi-row INSERTs on the driver's cursor: one statement per ~100 rows costs a third
        less than executemany's one per row (binding and stepping each row from Python). On
        SQLite the campaign and time stamps are literals of the statement, not bound per row."""
        if not len(grid):
            return
        if not self._literals():
            grid = self.whole(grid)
        width = grid.shape[1]
        flat = grid.ravel().tolist()
        step = MAX_BOUND // width * width
        full = len(flat) // step * step
        dialect = self.conn.dialect
        cursor = self.conn.connection.cursor()
        sql = self._multi_sql(step // width)
        try:
            for start in range(0, full, step):
                cursor.execute(sql, flat[start : start + step])
            if full < len(flat):
                sql = self._multi_sql((len(flat) - full) // width)
                cursor.execute(sql, flat[full:])
        except dialect.loaded_dbapi.Error as exc:
            # SQLAlchemy's exception classes, as from any other statement of the import.
            raise DBAPIError.instance(
                sql, None, exc, dialect.loaded_dbapi.Error, hide_parameters=True, dialect=dialect
            ) from exc
        finally:
            cursor.close()
        self.written += len(grid)

    @contextmanager
    def inserting(self, rows: int) -> Iterator[Callable[[np.ndarray], None]]:
        """SQLite, a big import: the grids are inserted by a thread while the caller converts
        the next one. sqlite3 lets go of the GIL while SQLite steps a statement, so on a
        2-core machine SQLite's insert and Python's conversion run side by side. One grid
        waits at most (bounded memory); an error of the insert is raised here, as is."""
        if self.conn.dialect.name != "sqlite" or rows < BULK_TALLY or not self._threadable():
            yield self.insert
            return
        grids: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=1)
        failed: list[BaseException] = []

        def work() -> None:
            while (grid := grids.get()) is not None:
                if not failed:  # after an error the rest is only drained
                    try:
                        self.insert(grid)
                    except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
                        failed.append(exc)

        def insert(grid: np.ndarray) -> None:
            if failed:
                raise failed[0]
            grids.put(grid)

        worker = threading.Thread(target=work, name="notify-sqlite-insert", daemon=True)
        worker.start()
        try:
            yield insert
        finally:
            grids.put(None)
            worker.join()  # the connection is the caller's again, whatever happened
        if failed:
            raise failed[0]

    def _threadable(self) -> bool:
        """Whether the driver connection may be used from another thread (pysqlite refuses
        it for a connection made with check_same_thread, e.g. SQLAlchemy's in-memory one)."""
        raw = self.conn.connection.driver_connection
        ok: list[bool] = []

        def probe() -> None:
            with suppress(Exception):
                raw.execute("SELECT 1").fetchall()  # type: ignore[union-attr]
                ok.append(True)

        probe_thread = threading.Thread(target=probe)
        probe_thread.start()
        probe_thread.join()
        return bool(ok)

    def _literals(self) -> bool:
        """Whether the constant columns can be written into the SQL (SQLite's stamp is text)."""
        return (
            self.conn.dialect.name == "sqlite"
            and isinstance(self.stamp, str)
            and isinstance(self.campaign_id, int)
        )

    def _multi_sql(self, rows: int) -> str:
        """``INSERT ... VALUES (...), (...)`` for ``rows`` rows."""
        head, _, values = self.sql.partition(" VALUES ")
        if self._literals():
            stamp = "'" + str(self.stamp).replace("'", "''") + "'"
            values = values.replace("?", str(int(self.campaign_id)), 1)
            values = values[: values.rindex("?", 0, values.rindex("?"))] + f"{stamp}, {stamp})"
        return head + " VALUES " + ", ".join([values] * rows)

    def close(self) -> None:
        if self.indexes:
            # Building an index sorts its entries in memory chunks as big as the page cache:
            # the 64 MB set for the insert (see _big_page_cache) makes the million-entry sorts
            # miss the CPU caches, a third slower than 4 MB chunks merged (measured: 3.2 s
            # against 2.1 s for the four contacts indexes). _big_page_cache restores it.
            self.conn.exec_driver_sql(f"PRAGMA cache_size = -{INDEX_SORT_KB}")
        for sql in self.indexes:
            self.conn.exec_driver_sql(sql)
        self.indexes = []
        if not self.trigger:
            return
        self.conn.exec_driver_sql(self.trigger)
        if self.written:
            self.conn.exec_driver_sql(
                "INSERT INTO tallies (campaign_id, name, shard, n) VALUES (?, 'contacts', 0, ?) "
                "ON CONFLICT (campaign_id, name, shard) DO UPDATE SET n = n + excluded.n",
                (self.campaign_id, self.written),
            )
        self.trigger = None

    def update(self, campaign_id: int, changes: dict[str, dict[str, Any]]) -> None:
        table = Contact.__table__
        now = utcnow()
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for key, values in changes.items():
            columns = tuple(sorted(values))
            groups.setdefault(columns, []).append({**values, "b_key": key})
        for columns, params in groups.items():
            stmt = (
                table.update()
                .where(table.c.campaign_id == campaign_id, table.c.key == bindparam("b_key"))
                .values({**{c: bindparam(c) for c in columns}, "updated_at": now})
            )
            for start in range(0, len(params), CHUNK):
                self.conn.execute(stmt, params[start : start + CHUNK])


class _CopyWriter(_Writer):
    """PostgreSQL: COPY is several times faster than INSERT for bulk rows, same transaction."""

    def flush(self) -> None:
        if not self.pending:
            return
        raw = self.conn.connection.driver_connection
        if raw is None:  # only a closed connection has none
            raise RuntimeError("the database connection is closed")
        with raw.cursor() as cursor:
            with cursor.copy(f"COPY contacts ({', '.join(_DB_COLUMNS)}) FROM STDIN") as copy:
                for row in self.pending:
                    copy.write_row(row)
        self.pending.clear()

    def insert(self, grid: np.ndarray) -> None:
        self.pending.extend(self.whole(grid).tolist())
        self.flush()


@contextmanager
def _arrow_memory() -> Iterator[None]:
    """Arrow allocations of the import from jemalloc, returning freed pages at once.

    The column work allocates and frees several copies of each column; pyarrow's default
    allocator keeps freed pages for reuse, which put a million-row import past 1 GB of RSS.
    """
    try:
        pool = pa.jemalloc_memory_pool()
        pa.jemalloc_set_decay_ms(0)
    except (NotImplementedError, pa.ArrowNotImplementedError):  # a build without jemalloc
        yield
        return
    before = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    try:
        yield
    finally:
        pa.set_memory_pool(before)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for the import.

    The import allocates millions of long-lived containers (one state per key) and no
    cycles; the collector would rescan them again and again as they accumulate, a third of
    the CPU time of a million-row import.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def _big_page_cache(conn: Connection, wanted: bool) -> Iterator[None]:
    """SQLite: a 64 MB page cache while bulk-inserting, then the connection's own again.

    The default 2 MB cache makes every index insert of a large import spill pages; the cache
    only grows as it is used, so small imports do not pay for it.
    """
    if not wanted or conn.dialect.name != "sqlite":
        yield
        return
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
    conn.exec_driver_sql("PRAGMA cache_size = -64000")
    try:
        yield
    finally:
        # A performance setting: failing to restore it must not hide the import's own error.
        with suppress(Exception):
            conn.exec_driver_sql(f"PRAGMA cache_size = {int(before)}")


def _make_writer(conn: Connection) -> _Writer:
    """COPY on PostgreSQL with psycopg 3, executemany elsewhere."""
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        return _CopyWriter(conn)
    return _Writer(conn)
