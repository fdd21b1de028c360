"""International numbers in E.164 form judged without phonenumbers' parse().

The importer asks :func:`verdict` for every distinct ``+<digits>`` number of a file; a big
list (tens of thousands of foreign customers) is judged in a helper process
(``python -m notify.intl_phones``, numbers on stdin, one verdict a line on stdout) while the
importer cleans the other columns: on a 2-core machine the two run side by side.
"""

from __future__ import annotations

import re
import sys
from functools import cache

import phonenumbers

INVALID = "not a valid phone number"


@cache
def _national_prefix(code: int) -> re.Pattern[str] | None:
    """The pattern parse() strips a national prefix with (the code's main region), if any."""
    region = phonenumbers.region_code_for_country_code(code)
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if meta is None:
        return re.compile("")  # unknown metadata: always ask parse()
    pattern = meta.national_prefix_for_parsing or meta.national_prefix
    return re.compile(pattern) if pattern else None


def verdict(digits: str) -> tuple[str | None, str | None] | None:
    """``+442079460958`` -> normalize_phone's answer, without parse(); None: ask parse().

    The country code is taken as parse() takes it (the first of 1, 2, 3 digits that is one);
    a national part starting with 0 (Italy keeps it), or one that the country's national
    prefix pattern matches (GB's 180020, RU's 8, ...), goes to parse(), which may strip it;
    for the rest parse() builds this very number, so the verdict is the same
    (tests/test_import_keys.py compares the two, on chosen and random numbers).
    """
    if not 8 <= len(digits) <= 16:
        return None
    for size in (1, 2, 3):
        code = int(digits[1 : 1 + size])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = digits[1 + size :]
    prefix = _national_prefix(code)
    if (
        code == 1
        or not national
        or national[0] == "0"
        or (prefix is not None and prefix.match(national))
    ):
        return None  # parse() might strip a prefix: its number could differ from ours
    number = phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
    if _is_valid(number, code, national):
        return digits, None
    return None, INVALID


# phonenumbers' own per-region type test; without it (another version) we ask is_valid_number.
_type_of = getattr(phonenumbers.phonenumberutil, "_number_type_helper", None)
_UNKNOWN = phonenumbers.PhoneNumberType.UNKNOWN


def _is_valid(number: phonenumbers.PhoneNumber, code: int, national: str) -> bool:
    """``phonenumbers.is_valid_number(number)``, once instead of twice for a code several
    regions share (+44: GB, GG, IM, JE; +7: RU, KZ).

    is_valid_number finds the region as the first of the code's regions whose leading digits
    match or whose number patterns take the number, then tests that region's patterns again:
    when the region was found by its patterns, that second test is the same and passes.
    """
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ())
    if _type_of is None or len(regions) < 2:
        return phonenumbers.is_valid_number(number)
    for region in regions:
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region.upper(), None)
        if meta is None:
            continue
        if meta.leading_digits is not None:
            if re.match(meta.leading_digits, national):
                return phonenumbers.is_valid_number(number)  # its own full test
        elif _type_of(national, meta) != _UNKNOWN:
            if phonenumbers.country_code_for_valid_region(region) != code:
                return phonenumbers.is_valid_number(number)
            return True
    return False  # no region: is_valid_number says False


def encode(result: tuple[str | None, str | None] | None) -> str:
    """A verdict as the helper writes it: V valid, I invalid, ? ask parse()."""
    if result is None:
        return "?"
    return "V" if result[1] is None else "I"


def decode(digits: str, letter: str) -> tuple[str | None, str | None] | None:
    """The verdict the helper's letter stands for (the inverse of :func:`encode`)."""
    if letter == "V":
        return digits, None
    if letter == "I":
        return None, INVALID
    return None


def main() -> None:
    """Helper process: ``+<digits>`` numbers on stdin, one a line; a letter each on stdout."""
    numbers = sys.stdin.read().split("\n")
    sys.stdout.write("".join(encode(verdict(n)) if n else "?" for n in numbers))


if __name__ == "__main__":
    main()
