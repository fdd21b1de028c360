"""Email addresses and phone numbers: the one place that decides how they are written.

Every module that stores or compares a recipient goes through here (as GOV.UK Notify's
``notifications_utils.recipient_validation``): the importer stores what :func:`normalize_email`
and :func:`normalize_phone` return; lookup, bounce matching and reset completions find those
rows again through :func:`email_key` and :func:`normalize_phone`. Two spellings of one domain
must never come out different: the importer once stored ``anna@xn--strae-oqa.de`` (UTS #46,
IDNA 2008) while reset completions used Python's IDNA 2003 codec (``strasse.de``) and never
matched that contact.
"""

from __future__ import annotations

import re
from functools import lru_cache

import idna
import phonenumbers
from email_validator import EmailNotValidError, validate_email

MAX_EMAIL = 254  # RFC 5321 path limit, as email-validator enforces
MAX_PHONE = 64

# The dot-atom local parts nearly every list holds; anything else goes to email-validator.
_ASCII_LOCAL = re.compile(r"[A-Za-z0-9_%+\-]+(?:\.[A-Za-z0-9_%+\-]+)*")
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))


@lru_cache(maxsize=16384)
def email_domain(domain: str) -> tuple[str | None, str | None]:
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
        ascii_domain, problem = email_domain(domain.lower())
        if ascii_domain is None:
            return None, problem
        return local + "@" + ascii_domain, None
    return _slow_email(value)


NANP_REGIONS = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1])
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
_NANP_OTHER = re.compile(
    "(?:"
    + "|".join(
        md.leading_digits
        for md in map(phonenumbers.PhoneMetadata.metadata_for_region, NANP_REGIONS)
        if md is not None and md.leading_digits
    )
    + ")"
)


@lru_cache(maxsize=65536)
def nanp_prefix_valid(prefix6: str) -> bool | None:
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
def nanp_valid(national: str) -> bool:
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
    valid = nanp_prefix_valid(national[:6])
    if valid is None:
        valid = nanp_valid(national)
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
    if match and (region in NANP_REGIONS or (match.group(1) or "").startswith("+")):
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
    elif digits.startswith("011") and region in NANP_REGIONS:
        digits = "+" + digits[3:]
    match = _NANP_DIGITS.fullmatch(digits)
    national = region in NANP_REGIONS and not digits.startswith("+")
    if match and (digits.startswith("+1") or national):
        return _nanp_result(match.group(1))
    if not _DIGITS.fullmatch(digits):
        return _slow_phone(value, region)
    return _slow_phone(digits, region)


def idna_domain(domain: str) -> str:
    """A domain in lower-case IDNA (``xn--``) form, the form SMTP and our rows use.

    UTS #46 mapping with IDNA 2008 (the ``idna`` package, as email-validator): ``straße.de`` is
    ``xn--strae-oqa.de``, never IDNA 2003's ``strasse.de``. Raises ``idna.IDNAError`` for a
    label IDNA refuses.
    """
    domain = domain.lower()
    if domain.isascii():
        return domain
    return idna.encode(domain, uts46=True).decode("ascii").lower()


def email_key(text: str) -> str | None:
    """What was typed or received, as the importer would have stored it, or None if not an email.

    An address the importer accepts gives exactly its stored form. Anything else is only
    reshaped (whitespace and a trailing dot after the domain dropped, the domain in IDNA form
    where it can be), because lookup, bounce reports and reset completions must still find a
    row for a slightly odd spelling rather than refuse it.
    """
    stored, _problem = normalize_email(text)
    if stored is not None:
        return stored
    local, at, domain = text.strip().rpartition("@")
    if not at or not local or not domain:
        return None
    domain = domain.strip().rstrip(".")
    try:
        domain = idna_domain(domain)
    except idna.IDNAError:  # not IDNA-encodable: compare as typed, lower-cased
        domain = domain.lower()
    return f"{local}@{domain}"


def email_case_variants(email: str) -> set[str]:
    """The spellings of an address's local part that lists hold (as typed, lower, UPPER,
    Capitalized.Words), so that a query in any case is found through the exact-match email
    index. (A local part stored in an odd mix of cases would need an index on lower(email):
    a case-insensitive scan of a million contacts is not instant, and unknown addresses,
    the common support case, would always pay it.)"""
    local, _, domain = email.rpartition("@")
    capitalized = re.sub(r"[^._+\-]+", lambda m: m.group(0).capitalize(), local.lower())
    return {f"{variant}@{domain}" for variant in (local, local.lower(), local.upper(), capitalized)}
