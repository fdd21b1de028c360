"""The affected-customer list -> the ``contacts`` table (DESIGN.md, "Affected-customer list").

The pipeline streams, so memory stays bounded by the number of distinct keys, not the file:

1. ``_open_source`` yields ``(line, cells)`` from a CSV/TSV (csv module, sniffed delimiter) or an
   XLSX (openpyxl, read-only). Line numbers are physical lines of the source file (header = 1),
   so a quoted newline shifts the rows after it, as an editor shows them.
2. ``_layout`` maps the header to fields through aliases (``exposures.squash``) and ``--map``.
3. ``_Importer.row`` cleans one row into a contact or a rejection; cheap regex fast paths run
   before phonenumbers / email-validator (each costs ~60 us a call, too slow for a million rows).
4. Rows with a key already seen (earlier in the file or stored for the campaign) are merged:
   exposures united, blank fields filled, nothing else overwritten (a different email or phone
   keeps the first and warns; ``extra`` stays the first row's). Re-importing a file therefore
   writes nothing.
5. New contacts are written in chunks with plain driver-level statements (executemany on SQLite,
   COPY on PostgreSQL), merged changes with one UPDATE per contact at the end, all inside the
   caller's transaction: the import is all-or-nothing.

Why not pandas: the rejects file and messages must give the physical line of every row, which
pandas' readers cannot report once a cell holds a newline; and without pyarrow its string
methods run per element in Python anyway, so a tight loop with caches is as fast and simpler.

Encoding: UTF-8 (with or without BOM), or UTF-16 with a BOM (Excel's "Unicode text"). Other
bytes are a one-line error naming the line and offset, with the hint to re-save as UTF-8. We do
not guess Windows-1252: a file that is mostly UTF-8 with one stray byte would have every accented
name silently mangled, and these names go into legal notices.
"""

from __future__ import annotations

import codecs
import csv
import gc
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import date, datetime, time
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, NamedTuple

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from notify import exposures
from notify.csvsafe import neutralize
from notify.errors import NotifyError
from notify.models import Campaign, Contact, utcnow

# Limits: a cell longer than this in a text field is dropped with a warning (a pasted document
# or a runaway quote, never a name); the key must fit the column.
MAX_TEXT = 1000
MAX_KEY = 320
MAX_EMAIL = 254  # RFC 5321 path limit, as email-validator enforces
MAX_PHONE = 64
_COLUMN_LIMITS = {"country": 64, "state": 64, "locale": 32}  # String(n) columns
CSV_CELL_LIMIT = 1 << 20  # beyond 1 MiB a cell is an unclosed quote, not data
CHUNK = 5000  # rows per insert batch: big enough to amortize, small enough to stream
PROBLEM_CAP = 100_000  # per-row problems kept in the summary; the rejects file has them all
SAMPLE = 64 * 1024

SINGLE_FIELDS = (
    "key", "name", "first_name", "last_name", "email", "phone", "country", "state", "locale",
)
FIELDS = (*SINGLE_FIELDS, "exposure", *exposures.RANKED)

_FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "key": (
        "key", "id", "customer id", "customer no", "customer number", "client id",
        "client number", "account id", "account", "account number", "account no", "user id",
        "member id", "contact id",
    ),
    "name": ("name", "full name", "customer name", "client name", "contact name", "display name"),
    "first_name": ("first name", "firstname", "given name", "forename", "first"),
    "last_name": ("last name", "lastname", "surname", "family name", "last"),
    "email": (
        "email", "e-mail", "email address", "e-mail address", "mail", "email addr",
        "contact email", "customer email",
    ),
    "phone": (
        "phone", "mobile", "cell", "phone number", "sms", "mobile phone", "mobile number",
        "cell phone", "telephone", "tel", "phone no", "sms number",
    ),
    "exposure": (
        "exposure", "exposures", "exposure type", "exposed", "data exposed", "exposed data",
        "data type", "data types",
    ),
    "country": ("country", "country code", "nation"),
    "state": ("state", "region", "province", "state/province", "state or province"),
    "locale": ("locale", "language", "lang", "preferred language"),
}
_HEADER_FIELD = {exposures.squash(a): f for f, names in _FIELD_ALIASES.items() for a in names}
_MAP_TARGET = {exposures.squash(f): f for f in FIELDS}

_BITS = {"passwords": 1, "card": 2, "identity": 4}
_JOINED = [exposures.join(k for k, b in _BITS.items() if mask & b) for mask in range(8)]
_TRUE = frozenset({"yes", "y", "true", "t", "1", "x", "✓", "✔", "on"})
_FALSE = frozenset({"", "no", "n", "false", "f", "0", "-", "off"})

# Bits of the fields a later row may fill when the contact has them blank.
_FILL = {"name": 1, "country": 2, "state": 4, "locale": 8}

# json.dumps(ensure_ascii=False)'s string encoder (C): _Importer._extra builds the JSON text
# models.JSONText would store.
_json_string = json.encoder.encode_basestring

_DB_COLUMNS = (
    "campaign_id", "key", "name", "email", "phone", "exposures", "country", "state", "locale",
    "extra", "created_at", "updated_at",
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
    contacts a merge changed (wider exposures, blanks filled).
    """

    source: str = ""
    read: int = 0
    rejected: int = 0
    merged: int = 0
    imported: int = 0
    warnings: int = 0
    updated: int = 0
    dry_run: bool = False
    rejects: list[Problem] = field(default_factory=list)
    warned: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # file-level remarks (e.g. no exposure column)

    def counts(self) -> dict[str, int]:
        """The five integers of the ``--json`` contract, in the order the summary line uses."""
        return {
            "read": self.read, "imported": self.imported, "merged": self.merged,
            "warnings": self.warnings, "rejected": self.rejected,
        }


def import_contacts(
    session: Session,
    campaign: Campaign,
    path: str | os.PathLike[str],
    *,
    default_region: str = "US",
    mapping: dict[str, str] | None = None,
    rejects_path: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Import the affected-customer list at ``path`` into ``campaign`` in the session's transaction.

    Nothing is committed here: the caller's ``session_scope`` commits (with its audit record) or
    rolls back, so a crash or Ctrl-C leaves the database as it was. ``rejects_path`` is written
    to a temporary file and renamed into place only when the whole file was processed; a dry run
    writes it too (it is a report, not a change) but nothing to the database. ``progress`` is
    called with the number of rows read so far, every few thousand rows.

    Raises NotifyError (one line naming file, line, column or value) when the file cannot be
    read, has no email or phone column, or an option is unusable.
    """
    path = Path(path)
    region = check_region(default_region)
    summary = ImportSummary(source=str(path), dry_run=dry_run)
    target = _check_rejects_path(rejects_path, path)
    with _open_source(path) as (header, rows), _no_cyclic_gc():
        layout = _layout(path, header, mapping or {})
        if not layout.exposure_cols and not layout.flag_cols:
            summary.notes.append(
                "no exposure column (exposure, or passwords/card/identity flags): "
                "every row is rejected"
            )
        conn = session.connection()
        writer = _NullWriter() if dry_run else _make_writer(conn)
        importer = _Importer(layout, region, campaign.id, summary, writer)
        with _RejectsFile(target, header) as rejects, _big_page_cache(conn, not dry_run):
            importer.rejects = rejects
            try:
                importer.load_existing(conn)
                for count, (line, cells) in enumerate(rows, 1):
                    importer.row(line, cells)
                    if progress and count % CHUNK == 0:
                        progress(count)
                importer.finish()
                if summary.read == 0:
                    summary.notes.append("the file has a header but no data rows")
            except IntegrityError:
                raise NotifyError(
                    f"{path}: another import changed campaign {campaign.name!r} meanwhile; "
                    "nothing was imported, run it again"
                ) from None
            except OperationalError as exc:
                raise NotifyError(f"{path}: database error, nothing was imported: "
                                  f"{str(exc.orig).splitlines()[0]}") from None
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
            raise NotifyError(f"--map {item!r}: expected COLUMN=FIELD, e.g. --map \"Cell=phone\"")
        mapping[column.strip()] = target.strip()
    return mapping


# --------------------------------------------------------------------------- values


def _show(value: str, limit: int = 40) -> str:
    """A value quoted for a message: escaped (CR/LF visible) and cut to ``limit`` characters."""
    text = value if len(value) <= limit else value[:limit] + "…"
    return json.dumps(text, ensure_ascii=False)


# The dot-atom local parts nearly every list holds; anything else goes to email-validator.
_ASCII_LOCAL = re.compile(r"[A-Za-z0-9_%+\-]+(?:\.[A-Za-z0-9_%+\-]+)*")
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))


@lru_cache(maxsize=16384)
def _ascii_domain(domain: str) -> tuple[str | None, str | None]:
    """(IDNA domain, None) or (None, problem); one email-validator call per distinct domain."""
    try:
        return validate_email("x@" + domain, check_deliverability=False).ascii_domain, None
    except EmailNotValidError as exc:
        return None, _sentence(exc)


def _sentence(exc: Exception) -> str:
    """email-validator's message, fitted into ours (no trailing period)."""
    return str(exc).strip().rstrip(".")


@lru_cache(maxsize=65536)
def _slow_email(value: str) -> tuple[str | None, str | None]:
    """email-validator itself, for what the fast path does not cover (quoted, UTF-8...)."""
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        return None, _sentence(exc)
    return f"{result.local_part}@{result.ascii_domain}", None


def normalize_email(raw: str) -> tuple[str | None, str | None]:
    """(normalized email, None), (None, problem), or (None, None) for an empty cell.

    Validated with email-validator (no DNS); the domain is lower-cased and stored in IDNA
    (``xn--``) form, the form SMTP and bounce matching use; the local part is kept as written.
    Plain dot-atom local parts take a regex fast path whose domain check is still
    email-validator's, cached per domain, so both paths accept exactly the same addresses.
    """
    value = raw.strip()
    if not value.isascii():  # the check is ~100x cheaper than translate()
        value = value.translate(_INVISIBLE).strip()
    if not value:
        return None, None
    if "\r" in value or "\n" in value:
        return None, "contains a line break"
    if len(value) > MAX_EMAIL:
        return None, f"is {len(value)} characters long (limit {MAX_EMAIL})"
    local, at, domain = value.rpartition("@")
    if at and len(local) <= 64 and _ASCII_LOCAL.fullmatch(local):
        ascii_domain, problem = _ascii_domain(domain.lower())
        if ascii_domain is None:
            return None, problem
        return local + "@" + ascii_domain, None
    return _slow_email(value)


_NANP = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1])
_PHONE_PUNCT = re.compile(r"[\s().\-/\u00a0\u2010-\u2015]")
_EXTENSION = re.compile(r"(?:;?\s*(?:ext\.?|extension|x|#)\s*\d{1,7})\s*$", re.IGNORECASE)
_LETTER = re.compile(r"[^\W\d_]")
_DIGITS = re.compile(r"\+?\d+")
_NANP_DIGITS = re.compile(r"(?:\+1|1)?([2-9]\d{2}[2-9]\d{6})")
# (415) 555-0134, 415.555.0134, +1 415 555 0134, 1-415-555-0134, 4155550134; group 1 is "+1".
_US_FORMAT = re.compile(
    r"\s*(\+1[\s.\-]?|1[\s.\-]?)?\(?([2-9]\d\d)\)?[\s.\-]?([2-9]\d\d)[\s.\-]?(\d{4})\s*"
)
# Leading digits of the NANP members other than US/CA (Caribbean, territories).
_NANP_OTHER = re.compile("(?:" + "|".join(
    md.leading_digits for md in map(phonenumbers.PhoneMetadata.metadata_for_region, _NANP)
    if md is not None and md.leading_digits
) + ")")


@lru_cache(maxsize=65536)
def _nanp_prefix_valid(prefix6: str) -> bool | None:
    """Validity of every number of an area code + exchange, or None: check each number.

    The US and Canadian plans decide validity by these six digits: with this phonenumbers
    release, 30 lines of each of the 618,400 US/CA prefixes agree. The other NANP members are
    told apart by leading digits and their patterns look deeper, so they get the exact check
    (tests/test_import_validation.py compares the two paths on random numbers).
    """
    if _NANP_OTHER.match(prefix6):
        return None
    number = phonenumbers.PhoneNumber(country_code=1, national_number=int(prefix6 + "0134"))
    return phonenumbers.is_valid_number(number)


@lru_cache(maxsize=65536)
def _nanp_valid(national: str) -> bool:
    """phonenumbers' verdict on one Caribbean/territory number (no prefix shortcut)."""
    number = phonenumbers.PhoneNumber(country_code=1, national_number=int(national))
    return phonenumbers.is_valid_number(number)


@lru_cache(maxsize=65536)
def _slow_phone(value: str, region: str) -> tuple[str | None, str | None]:
    """phonenumbers itself: parse in ``region``, validate, format E.164 (~60 us a call)."""
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None, "not a phone number"
    if not phonenumbers.is_valid_number(number):
        return None, "not a valid phone number"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


def _nanp_result(national: str) -> tuple[str | None, str | None]:
    """A ten-digit US/Canada/Caribbean national number -> E.164, if phonenumbers deems it valid."""
    valid = _nanp_prefix_valid(national[:6])
    if valid is None:
        valid = _nanp_valid(national)
    return ("+1" + national, None) if valid else (None, "not a valid phone number")


def normalize_phone(raw: str, region: str = "US") -> tuple[str | None, str | None]:
    """(E.164 number, None), (None, problem), or (None, None) for an empty cell.

    ``region`` applies to national numbers (``(415) 555-0134`` in US). A leading ``00``
    (the international prefix almost everywhere) counts as ``+``. An extension is dropped (SMS
    cannot dial it); letters are refused rather than read as a vanity number. US/Canadian
    formats take a fast path equivalent to phonenumbers' ``is_valid_number``; the rest go to
    phonenumbers itself (cached).
    """
    match = _US_FORMAT.fullmatch(raw)
    if match and (region in _NANP or (match.group(1) or "").startswith("+")):
        # The formats most lists use, in one regex: no substitutions needed.
        area, exchange, line = match.group(2, 3, 4)
        return _nanp_result(area + exchange + line)
    value = raw.strip()
    if not value.isascii():
        value = value.translate(_INVISIBLE).strip()
    if not value:
        return None, None
    if len(value) > MAX_PHONE:
        return None, f"is {len(value)} characters long (limit {MAX_PHONE})"
    value = _EXTENSION.sub("", value)
    if _LETTER.search(value):
        return None, "not a phone number (letters)"
    digits = _PHONE_PUNCT.sub("", value)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    elif digits.startswith("011") and region in _NANP:
        digits = "+" + digits[3:]
    match = _NANP_DIGITS.fullmatch(digits)
    if match and (digits.startswith("+1") or (region in _NANP and not digits.startswith("+"))):
        return _nanp_result(match.group(1))
    if not _DIGITS.fullmatch(digits):
        return _slow_phone(value, region)
    return _slow_phone(digits, region)


@lru_cache(maxsize=4096)
def _exposure_cell(value: str) -> tuple[int, tuple[str, ...]]:
    """An exposure cell as a bit mask and its unknown parts; lists repeat few spellings."""
    known, unknown = exposures.parse_exposures(value)
    mask = 0
    for kind in known:
        mask |= _BITS[kind]
    return mask, tuple(unknown)


_COUNTRY_REGIONS = {
    "usa": "US", "unitedstates": "US", "unitedstatesofamerica": "US", "america": "US",
    "uk": "GB", "unitedkingdom": "GB", "greatbritain": "GB", "england": "GB", "scotland": "GB",
    "wales": "GB", "canada": "CA", "germany": "DE", "deutschland": "DE", "france": "FR",
    "spain": "ES", "italy": "IT", "ireland": "IE", "netherlands": "NL", "australia": "AU",
    "newzealand": "NZ", "mexico": "MX", "brazil": "BR", "india": "IN", "japan": "JP",
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


# --------------------------------------------------------------------------- reading


@dataclass
class _Header:
    line: int
    names: list[str]


class _Sheet(NamedTuple):
    header: _Header
    rows: Iterator[tuple[int, list[str]]]


@contextmanager
def _open_source(path: Path) -> Iterator[tuple[_Header, Iterator[tuple[int, list[str]]]]]:
    """The header and a stream of ``(line, cells)`` for a CSV, TSV or XLSX file."""
    sample = _read_sample(path)
    if sample.startswith(b"PK\x03\x04"):
        with _open_xlsx(path) as sheet:
            yield sheet.header, sheet.rows
        return
    if sample.startswith(b"\xd0\xcf\x11\xe0"):
        raise NotifyError(f"{path}: a legacy .xls or password-protected workbook; save it as "
                          ".xlsx without a password, or as CSV UTF-8")
    encoding = _text_encoding(path, sample)
    with open(path, encoding=encoding, newline="") as handle:
        delimiter, hinted = _delimiter(path, sample.decode(encoding, "replace"))
        sheet = _csv_sheet(path, handle, delimiter, skip_hint=hinted)
        yield sheet.header, sheet.rows


def _read_sample(path: Path) -> bytes:
    """The first bytes, to tell XLSX / text / binary apart; missing or empty is an error."""
    try:
        with open(path, "rb") as handle:
            sample = handle.read(SAMPLE)
    except FileNotFoundError:
        raise NotifyError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise NotifyError(f"{path}: is a folder, not a contact list") from None
    except PermissionError:
        raise NotifyError(f"{path}: permission denied") from None
    except OSError as exc:
        raise NotifyError(f"{path}: cannot read: {exc.strerror}") from None
    if not sample.strip(b" \t\r\n\xef\xbb\xbf"):
        raise NotifyError(f"{path}: the file is empty (expected a header row, then one row "
                          "per customer)")
    return sample


def _text_encoding(path: Path, sample: bytes) -> str:
    """UTF-16 (BOM) or UTF-8 (BOM optional); NUL or control bytes mean binary: an error."""
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    nul = sample.find(b"\x00")
    controls = sum(1 for b in sample if b < 9 or 13 < b < 32)
    if nul >= 0 or controls > len(sample) // 100:
        at = nul if nul >= 0 else next(i for i, b in enumerate(sample) if b < 9 or 13 < b < 32)
        raise NotifyError(f"{path}: not a CSV, TSV or XLSX file (binary data at byte {at})")
    return "utf-8-sig"


def _not_utf8(path: Path) -> NotifyError:
    """Locate the first byte that is not UTF-8: line, offset, and what it looks like."""
    offset = 0
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                start = max(0, exc.start - 12)
                guess = raw[start:exc.start + 12].decode("cp1252", "replace").strip()
                return NotifyError(
                    f"{path}, line {line_no}: not UTF-8 (byte 0x{raw[exc.start]:02X} at offset "
                    f"{offset + exc.start}, around {guess!r}, looks like Latin-1/Windows-1252); "
                    "re-save the file as UTF-8 (Excel: Save As > CSV UTF-8)"
                )
            offset += len(raw)
    return NotifyError(f"{path}: not UTF-8 text; re-save the file as UTF-8")


def _delimiter(path: Path, sample: str) -> tuple[str, bool]:
    """(delimiter, whether the first line is Excel's ``sep=X`` hint).

    Tab for .tsv; else the candidate the header line holds most often, csv.Sniffer breaking
    ties. The header decides because data rows legitimately hold commas and semicolons
    (``passwords; card``) while header names almost never do.
    """
    first = sample.lstrip("\ufeff").splitlines()[0] if sample.strip() else ""
    if re.fullmatch(r"sep=.", first.strip()):
        return first.strip()[4], True
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t", False
    counts = {d: _count_outside_quotes(first, d) for d in (",", ";", "\t", "|")}
    best = max(counts.values())
    winners = [d for d, n in counts.items() if n == best]
    if best and len(winners) == 1:
        return winners[0], False
    try:
        return csv.Sniffer().sniff(sample[:SAMPLE // 4], delimiters=",;\t|").delimiter, False
    except csv.Error:
        return ",", False


def _count_outside_quotes(line: str, char: str) -> int:
    """How often ``char`` occurs in ``line`` outside double quotes."""
    return sum(part.count(char) for part in line.split('"')[::2])


def _csv_sheet(path: Path, handle: IO[str], delimiter: str, *, skip_hint: bool) -> _Sheet:
    """Header and rows of a CSV; each row carries the physical line it starts on."""
    csv.field_size_limit(CSV_CELL_LIMIT)
    reader = csv.reader(handle, delimiter=delimiter, strict=True)
    state = {"prev": 0}

    def records() -> Iterator[tuple[int, list[str] | str]]:
        # Yields (first line, cells), or (first line, problem) for a row csv could not parse.
        while True:
            start = state["prev"] + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                raise _not_utf8(path) from None
            except csv.Error as exc:
                message = str(exc)
                if "end of data" in message:
                    raise NotifyError(f"{path}, line {start}: a quote opened here is never "
                                      "closed") from None
                if "field larger" in message:
                    raise NotifyError(f"{path}, line {start}: a cell is longer than "
                                      f"{CSV_CELL_LIMIT:,} characters (an unclosed quote?)"
                                      ) from None
                state["prev"] = reader.line_num
                yield start, f"malformed quoting ({message})"
                continue
            state["prev"] = reader.line_num
            if cells and any(c.strip() for c in cells):
                yield start, cells

    stream = records()
    first = next(stream, None)
    if first is None:
        raise NotifyError(f"{path}: the file is empty (expected a header row)")
    if skip_hint:  # Excel's "sep=;" line comes before the header
        first = next(stream, None)
        if first is None:
            raise NotifyError(f"{path}: the file is empty (no header row after the sep= line)")
    line, header = first
    if isinstance(header, str):
        raise NotifyError(f"{path}, line {line}: cannot read the header row: {header}")
    header_obj = _Header(line, [h.strip().lstrip("\ufeff") for h in header])

    return _Sheet(header_obj, stream)  # type: ignore[arg-type]


@contextmanager
def _open_xlsx(path: Path) -> Iterator[_Sheet]:
    """The first (active) sheet of a workbook; line numbers are the sheet's row numbers."""
    import openpyxl  # imported here: only XLSX imports pay for it

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # BadZipFile, KeyError, openpyxl's InvalidFileException, ...
        raise NotifyError(f"{path}: not a readable XLSX workbook ({exc})") from None
    try:
        sheet = workbook.active or workbook.worksheets[0]
        # Some exporters write a wrong <dimension> (e.g. A1:A1), which read-only mode trusts
        # and would silently cut rows short; read every cell instead.
        sheet.reset_dimensions()
        rows = (
            (number, [_xlsx_text(v) for v in values])
            for number, values in enumerate(sheet.iter_rows(values_only=True), 1)
        )
        stream = ((n, cells) for n, cells in rows if any(c.strip() for c in cells))
        first = next(stream, None)
        if first is None:
            raise NotifyError(f"{path}: the workbook's first sheet is empty (expected a header "
                              "row)")
        line, header = first
        yield _Sheet(_Header(line, [h.strip() for h in header]), stream)
    finally:
        workbook.close()


def _xlsx_text(value: Any) -> str:
    """A cell as the text a person sees: 4155550134 not 4155550134.0, dates as ISO."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time(0) else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


# --------------------------------------------------------------------------- header


@dataclass
class _Layout:
    """Where each field is: column indexes resolved from the header and ``--map``."""

    width: int
    single: dict[str, int]
    exposure_cols: list[int]
    flag_cols: list[tuple[int, str, str]]  # (index, kind, header)
    extra_cols: list[tuple[int, str, str]]  # (index, extra key, header)


def _layout(path: Path, header: _Header, mapping: dict[str, str]) -> _Layout:
    """Resolve the header: aliases ignoring case and punctuation, ``--map`` taking precedence.

    Two columns read the same way, or two columns claiming one field, are an error naming
    both: silently picking one could send the notice to the wrong address.
    """
    names = header.names
    where = f"{path}, line {header.line}"
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        squashed = exposures.squash(name)
        if not squashed:
            continue
        if squashed in seen:
            first = seen[squashed]
            raise NotifyError(f"{where}: columns {first + 1} {names[first]!r} and {index + 1} "
                              f"{name!r} have the same name (ignoring case and punctuation); "
                              "rename one")
        seen[squashed] = index
    explicit = _explicit_columns(path, names, mapping, seen)
    single: dict[str, int] = {}
    claims: dict[str, list[int]] = {}
    exposure_cols: list[int] = []
    flag_cols: list[tuple[int, str, str]] = []
    extra_cols: list[tuple[int, str, str]] = []
    for index, name in enumerate(names):
        squashed = exposures.squash(name)
        target = explicit.get(index) or _HEADER_FIELD.get(squashed)
        if target is None and squashed in exposures.EXPOSURE_BY_ALIAS:
            target = exposures.EXPOSURE_BY_ALIAS[squashed]
        if target in SINGLE_FIELDS and index not in explicit and target in explicit.values():
            target = None  # --map chose another column for this field: keep this one as extra
        if target in SINGLE_FIELDS:
            claims.setdefault(target, []).append(index)
        elif target == "exposure":
            exposure_cols.append(index)
        elif target in _BITS:
            flag_cols.append((index, target, name))
        if target in ("first_name", "last_name"):
            # Kept under their field name too: "Dear {{ contact.extra.first_name }}".
            extra_cols.append((index, target, name))
        elif target is None and squashed:
            extra_cols.append((index, _snake(name), name))
    for target, indexes in claims.items():
        if len(indexes) > 1:
            a, b = (names[i] for i in indexes[:2])
            raise NotifyError(f"{where}: columns {a!r} and {b!r} both look like the {target}; "
                              f"choose one with --map \"{b}={target}\"")
        single[target] = indexes[0]
    if "email" not in single and "phone" not in single:
        raise NotifyError(f"{path}: no email or phone column (columns: {_columns(names)}); "
                          "name one with --map COLUMN=email or --map COLUMN=phone")
    return _Layout(len(names), single, exposure_cols, flag_cols, extra_cols)


def _columns(names: list[str], limit: int = 12) -> str:
    """The header for a message: a garbage "header" must not become a 4,000-character line."""
    shown = [n if len(n) <= 30 else n[:30] + "…" for n in names if n][:limit]
    more = len([n for n in names if n]) - len(shown)
    return (", ".join(shown) or "none") + (f", ... ({more} more)" if more > 0 else "")


def _explicit_columns(
    path: Path, names: list[str], mapping: dict[str, str], by_squash: dict[str, int]
) -> dict[int, str]:
    explicit: dict[int, str] = {}
    for column, target in mapping.items():
        field_name = _MAP_TARGET.get(exposures.squash(target))
        if field_name is None:
            raise NotifyError(f"--map {column}={target}: unknown field {target!r} (fields: "
                              f"{', '.join(FIELDS)})")
        index = names.index(column) if column in names else by_squash.get(exposures.squash(column))
        if index is None:
            raise NotifyError(f"--map {column}={target}: {path} has no column {column!r} "
                              f"(columns: {_columns(names)})")
        if field_name in SINGLE_FIELDS and field_name in explicit.values():
            raise NotifyError(f"--map: two columns mapped to {field_name}")
        explicit[index] = field_name
    return explicit


# --------------------------------------------------------------------------- writing


class _NullWriter:
    """Dry run: the same calls as a real writer, nothing written."""

    def __init__(self) -> None:
        self.pending: list[tuple] = []  # new contacts, in _DB_COLUMNS order
        self.stamp: Any = utcnow().replace(tzinfo=None)  # created_at/updated_at, naive UTC

    def flush(self) -> None:
        """Write what is queued (the list is emptied in place: the importer holds it)."""
        self.pending.clear()

    def update(self, campaign_id: int, changes: dict[str, dict[str, Any]]) -> None:
        """Apply merged changes, keyed by contact key."""


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
        self.sql = (f"INSERT INTO contacts ({', '.join(_DB_COLUMNS)}) "
                    f"VALUES ({', '.join([marker] * len(_DB_COLUMNS))})")

    def flush(self) -> None:
        if self.pending:
            self.conn.exec_driver_sql(self.sql, self.pending)
            self.pending.clear()

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
                self.conn.execute(stmt, params[start:start + CHUNK])


class _CopyWriter(_Writer):
    """PostgreSQL: COPY is several times faster than INSERT for bulk rows, same transaction."""

    def flush(self) -> None:
        if not self.pending:
            return
        raw = self.conn.connection.driver_connection
        with raw.cursor() as cursor:
            with cursor.copy(f"COPY contacts ({', '.join(_DB_COLUMNS)}) FROM STDIN") as copy:
                for row in self.pending:
                    copy.write_row(row)
        self.pending.clear()


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
    """SQLite: a 200 MB page cache while bulk-inserting, then the connection's own again.

    The default 2 MB cache makes every index insert of a large import spill pages; the cache
    only grows as it is used, so small imports do not pay for it.
    """
    if not wanted or conn.dialect.name != "sqlite":
        yield
        return
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql("PRAGMA cache_size = -200000")
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


def _check_rejects_path(rejects_path: str | os.PathLike[str] | None, source: Path) -> Path | None:
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


class _RejectsFile:
    """The rejects CSV, written to a temporary file that replaces the target only on success."""

    def __init__(self, target: Path | None, header: _Header) -> None:
        self.target = target
        self.header = header
        self.handle: IO[str] | None = None
        self.writer: Any = None

    def __enter__(self) -> _RejectsFile:
        if self.target is not None:
            fd, self.tmp = tempfile.mkstemp(dir=self.target.parent, prefix=f".{self.target.name}.",
                                            suffix=".tmp")
            self.handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
            self.writer = csv.writer(self.handle)
            self.writer.writerow(["line", "reason", *map(neutralize, self.header.names)])
        return self

    def write(self, line: int, reason: str, cells: list[str]) -> None:
        """One rejected row: its line, why, and its cells, formula-looking ones neutralized."""
        if self.writer is not None:
            self.writer.writerow([line, neutralize(reason), *map(neutralize, cells)])

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.handle is None:
            return
        self.handle.close()
        if exc_type is None:
            os.replace(self.tmp, self.target)
        else:
            os.unlink(self.tmp)


# --------------------------------------------------------------------------- rows


class _Importer:
    """Per-row cleaning, validation and merging; holds one small state per known key.

    ``row`` is the hot loop of a million-row import: positions are resolved once, optional
    fields cost nothing when absent, and the slow paths (messages, oversized cells, merges)
    live in helpers that ordinary rows never call.
    """

    def __init__(
        self, layout: _Layout, region: str, campaign_id: int, summary: ImportSummary,
        writer: _NullWriter,
    ) -> None:
        self.layout = layout
        self.width = layout.width
        self.region = region
        self.campaign_id = campaign_id
        self.summary = summary
        self.writer = writer
        self.rejects: _RejectsFile | None = None
        # key -> [exposure mask, email (lower-cased), phone, filled bits, first line or 0 (DB)]
        self.known: dict[str, list[Any]] = {}
        self.changes: dict[str, dict[str, Any]] = {}
        single = layout.single
        self.i_key, self.i_email, self.i_phone, self.i_name, self.i_country = (
            single.get(f, -1) for f in ("key", "email", "phone", "name", "country"))
        # (index, field) of the optional text fields other than country, in _FILL order.
        self.texts = [(single[f], f) for f in ("state", "locale") if f in single]
        self.names = [single[f] for f in ("first_name", "last_name") if f in single]
        # The common layout, one exposure column and no flags, skips the general loop.
        self.one_exposure = (layout.exposure_cols[0] if len(layout.exposure_cols) == 1
                             and not layout.flag_cols else -1)
        self.has_exposure = bool(layout.exposure_cols or layout.flag_cols)
        self.pending = writer.pending  # the writer empties it in place on flush
        self.stamp = writer.stamp
        self.extra_json = [(index, _json_string(key) + ": ", header)
                           for index, key, header in sorted(layout.extra_cols,
                                                            key=lambda col: col[1])]

    def load_existing(self, conn: Connection) -> None:
        """Key -> state of every contact the campaign already has, read once, streamed."""
        t = Contact.__table__
        query = select(t.c.key, t.c.exposures, t.c.email, t.c.phone, t.c.name, t.c.country,
                       t.c.state, t.c.locale).where(t.c.campaign_id == self.campaign_id)
        result = conn.execute(query.execution_options(yield_per=10_000))
        for key, stored, email, phone, name, country, state, locale in result:
            mask = 0
            for kind in exposures.split(stored):
                mask |= _BITS.get(kind, 0)
            self.known[key] = [mask, email.lower() if email else None, phone,
                               _filled(name, country, state, locale), 0]

    def reject(self, line: int, reason: str, cells: list[str]) -> None:
        """Count a rejected row and report it (summary list, rejects file)."""
        self.summary.rejected += 1
        if len(self.summary.rejects) < PROBLEM_CAP:
            self.summary.rejects.append(Problem(line, reason))
        if self.rejects is not None:
            self.rejects.write(line, reason, cells)

    def row(self, line: int, cells: list[str] | str) -> None:
        """Clean one data row: import it, merge it into a known contact, or reject it."""
        summary = self.summary
        summary.read += 1
        if cells.__class__ is str:  # the csv reader could not parse this row
            self.reject(line, cells, [])  # type: ignore[arg-type]
            return
        if len(cells) != self.width:
            cells = self._fit(line, cells)  # type: ignore[arg-type]
            if cells is None:
                return
        raw_email = cells[self.i_email] if self.i_email >= 0 else ""
        raw_phone = cells[self.i_phone] if self.i_phone >= 0 else ""
        country = cells[self.i_country].strip() if self.i_country >= 0 else ""
        region = _region_for_country(country, self.region) if country else self.region
        email, email_problem = normalize_email(raw_email) if raw_email else (None, None)
        phone, phone_problem = normalize_phone(raw_phone, region) if raw_phone else (None, None)
        notes: list[str] = []  # warnings: the row is imported with something dropped
        if self.one_exposure >= 0:
            mask, unknown = _exposure_cell(cells[self.one_exposure][:MAX_TEXT])
        else:
            mask, unknown = self._exposures(cells, notes)
        key = cells[self.i_key].strip() if self.i_key >= 0 else ""
        if not key:  # explicit key, else the email (Ana@X and ana@x are one person), else phone
            key = email.lower() if email else phone or ""
        if (email is None and phone is None) or not mask or len(key) > MAX_KEY:
            reason = self._reasons(raw_email, email_problem, raw_phone, phone_problem,
                                   email or phone, mask, unknown, key)
            self.reject(line, reason, cells)  # type: ignore[arg-type]
            return
        if email_problem or phone_problem or unknown:
            self._contact_notes(raw_email, email_problem, raw_phone, phone_problem, unknown,
                                notes)
        if self.i_name >= 0:
            name = cells[self.i_name].strip()
            if len(name) > 200 or not name.isprintable():  # rare: the careful path
                name = _text(name, "name", MAX_TEXT, notes)
        else:
            name = " ".join(filter(None, (_text(cells[i], "name", MAX_TEXT, notes)
                                          for i in self.names)))
        if country and (len(country) > 64 or not country.isprintable()):
            country = _text(country, "country", 64, notes)
        state = locale = None
        for index, field_name in self.texts:
            value = _text(cells[index], field_name, _COLUMN_LIMITS[field_name], notes)
            if field_name == "state":
                state = value
            else:
                locale = value
        extra = self._extra(cells, notes) if self.extra_json else None
        known = self.known.get(key)
        if known is None:
            self.known[key] = [
                mask, email.lower() if email else None, phone,
                (1 if name else 0) | (2 if country else 0) | (4 if state else 0)
                | (8 if locale else 0),  # _FILL bits
                line,
            ]
            summary.imported += 1
            pending = self.pending
            pending.append((self.campaign_id, key, name or None, email, phone, _JOINED[mask],
                            country or None, state, locale, extra, self.stamp, self.stamp))
            if len(pending) >= CHUNK:
                self.writer.flush()
        else:
            summary.merged += 1
            self._merge(known, key, (name or None, email, phone, mask, country or None, state,
                                     locale), notes)
        if notes:
            summary.warnings += 1
            if len(summary.warned) < PROBLEM_CAP:
                summary.warned.append(Problem(line, "; ".join(notes)))

    def _contact_notes(
        self, raw_email: str, email_problem: str | None, raw_phone: str,
        phone_problem: str | None, unknown: tuple[str, ...], notes: list[str],
    ) -> None:
        """Warnings of an imported row: the address dropped, the exposures ignored."""
        if email_problem:
            notes.append(f"email {_show(raw_email.strip())}: {email_problem}; "
                         "imported without it")
        if phone_problem:
            notes.append(f"phone {_show(raw_phone.strip())}: {phone_problem}; "
                         "imported without it")
        if unknown:
            notes.append("unknown exposure " + ", ".join(_show(u) for u in unknown[:3])
                         + " ignored")

    def _fit(self, line: int, cells: list[str]) -> list[str] | None:
        """Pad a short row (trailing blanks trimmed); reject one with extra non-empty cells."""
        width = self.width
        if len(cells) > width and any(c.strip() for c in cells[width:]):
            self.reject(line, f"{len(cells)} cells but the header has {width} columns "
                        "(a delimiter inside an unquoted value?)", cells)
            return None
        return cells[:width] + [""] * (width - len(cells))

    def _reasons(
        self, raw_email: str, email_problem: str | None, raw_phone: str,
        phone_problem: str | None, reachable: str | None, mask: int, unknown: tuple[str, ...],
        key: str,
    ) -> str:
        """Why a row is rejected, every reason at once so one fix is enough."""
        reasons = []
        if not reachable:
            details = []
            if email_problem:
                details.append(f"email {_show(raw_email.strip())}: {email_problem}")
            if phone_problem:
                details.append(f"phone {_show(raw_phone.strip())}: {phone_problem}")
            reasons.append("no usable email or phone (" + "; ".join(details) + ")" if details
                           else "no email and no phone")
        if not mask:
            if not self.has_exposure:
                reasons.append("no recognized exposure (the file has no exposure column)")
            elif unknown:
                reasons.append("no recognized exposure ("
                               + ", ".join(_show(u) for u in unknown[:3]) + ")")
            else:
                reasons.append("no exposure (the cell is empty)")
        if len(key) > MAX_KEY:
            reasons.append(f"key is {len(key)} characters long (limit {MAX_KEY})")
        return "; ".join(reasons)

    def _exposures(self, cells: list[str], notes: list[str]) -> tuple[int, tuple[str, ...]]:
        """Exposure columns and yes/no flag columns, united (the general layout)."""
        mask = 0
        unknown: list[str] = []
        for index in self.layout.exposure_cols:
            cell_mask, cell_unknown = _exposure_cell(cells[index][:MAX_TEXT])
            mask |= cell_mask
            unknown.extend(cell_unknown)
        for index, kind, header in self.layout.flag_cols:
            flag = cells[index].strip().lower()
            if flag in _TRUE:
                mask |= _BITS[kind]
            elif flag not in _FALSE:
                # The value is not echoed: a column named "SSN" may hold the numbers themselves.
                notes.append(f"column {header!r} is not yes/no (yes, true, 1, x); ignored")
        return mask, tuple(unknown)

    def _extra(self, cells: list[str], notes: list[str]) -> str:
        """The other columns as the JSON text models.JSONText stores (sorted keys, no escaping
        of non-ASCII), assembled directly: a general encoder costs 6x more per row."""
        parts = []
        for index, prefix, header in self.extra_json:
            value = cells[index].strip()
            if len(value) > MAX_TEXT:
                notes.append(f"column {header!r} is {len(value)} characters long "
                             f"(limit {MAX_TEXT}); dropped")
                value = ""
            parts.append(prefix + _json_string(value))
        return "{" + ", ".join(parts) + "}"

    def _merge(self, known: list[Any], key: str, values: tuple, notes: list[str]) -> None:
        """Unite exposures, fill blanks; a different email or phone keeps the first, with a note."""
        name, email, phone, mask, country, state, locale = values
        changes: dict[str, Any] = {}
        where = f"line {known[4]}" if known[4] else "the stored contact"
        if mask | known[0] != known[0]:
            known[0] |= mask
            changes["exposures"] = _JOINED[known[0]]
        if email:
            if known[1] is None:
                known[1] = email.lower()
                changes["email"] = email
            elif known[1] != email.lower():
                notes.append(f"email {_show(email)} differs from {where} ({_show(known[1])}); "
                             "kept the first")
        if phone:
            if known[2] is None:
                known[2] = phone
                changes["phone"] = phone
            elif known[2] != phone:
                notes.append(f"phone {phone} differs from {where} ({known[2]}); kept the first")
        for (field_name, bit), value in zip(_FILL.items(), (name, country, state, locale),
                                            strict=True):
            if value and not known[3] & bit:
                known[3] |= bit
                changes[field_name] = value
        if changes:
            self.changes.setdefault(key, {}).update(changes)

    def finish(self) -> None:
        """Write the last chunk, then every merged change (one UPDATE per changed contact)."""
        self.writer.flush()
        self.summary.updated = sum(1 for key in self.changes if self.known[key][4] == 0)
        if self.changes:
            self.writer.update(self.campaign_id, self.changes)


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
