"""CSV cells that a spreadsheet will not run as formulas (CSV injection)."""

from __future__ import annotations

import re

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
