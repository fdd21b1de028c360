"""SMS segments: how many parts a text takes on the wire, GSM-7 or UCS-2 (3GPP TS 23.038).

The budget of a notice (``templates.MAX_SMS_SEGMENTS``), the plan's cost and the preview all
count with these, so what is checked is what the carrier bills.
"""

from __future__ import annotations

# GSM 03.38 default alphabet (without ESC) and the extension table (two septets each).
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")
_GSM7 = _GSM7_BASIC | _GSM7_EXTENDED


def sms_encoding(text: str) -> str:
    """``GSM-7`` when every character is in the GSM alphabet, else ``UCS-2``."""
    return "GSM-7" if set(text) <= _GSM7 else "UCS-2"


def _pack(text: str, wide: frozenset[str] | None, per_part: int) -> int:
    """Parts needed when a two-unit character (GSM escape, UTF-16 surrogate pair) may not be
    split across parts, as phones and carriers do."""
    parts, used = 1, 0
    for char in text:
        cost = 2 if (char in wide if wide is not None else ord(char) > 0xFFFF) else 1
        if used + cost > per_part:
            parts, used = parts + 1, 0
        used += cost
    return parts


def sms_segments(text: str) -> int:
    """Segments an SMS takes: GSM-7 160 alone or 153 per part (extension characters count 2),
    otherwise UCS-2 70 alone or 67 per part (UTF-16 units). 0 for an empty text."""
    if not text:
        return 0
    chars = set(text)
    if chars <= _GSM7:
        extended = chars & _GSM7_EXTENDED
        length = len(text) + sum(text.count(c) for c in extended)
        if length <= 160:
            return 1
        return _pack(text, _GSM7_EXTENDED, 153) if extended else -(-length // 153)
    units = len(text.encode("utf-16-le")) // 2
    if units <= 70:
        return 1
    return _pack(text, None, 67) if units != len(text) else -(-units // 67)
