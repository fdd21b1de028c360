"""The kinds of exposed data, their ranking, and how messy spreadsheet values map to them."""

from __future__ import annotations

import re

# Highest first: a contact with several exposures gets the notice of the first one here.
RANKED = ("identity", "card", "passwords")

# The words people use, by kind (matched ignoring case and punctuation). docs/cli.md lists them
# (generated from this table); ``--map-value WORD=KIND`` adds more for one import.
VOCABULARY: dict[str, tuple[str, ...]] = {
    "passwords": (
        "passwords",
        "password",
        "credentials",
        "credential",
        "hashed passwords",
        "hashed password",
        "password hashes",
        "login",
        "logins",
        "login credentials",
        "username and password",
        "usernames and passwords",
        "user name and password",
        "security questions",
        "security question",
        "security answers",
        "account credentials",
    ),
    "card": (
        "card",
        "cards",
        "card data",
        "carddata",
        "credit card",
        "credit cards",
        "payment",
        "payments",
        "payment card",
        "payment cards",
        "payment data",
        "debit card",
        "debit cards",
        "PAN",
        "card number",
        "card numbers",
        "CVV",
        "CVV2",
        "CVC",
        "security code",
        "expiry",
        "expiry date",
        "expiration date",
        "card expiry",
    ),
    "identity": (
        "identity",
        "identity data",
        "identity theft",
        "personal data",
        "PII",
        "SSN",
        "social security number",
        "social security",
        "DOB",
        "date of birth",
        "birth date",
        "birthdate",
        "driver's license",
        "drivers license",
        "driver license",
        "driving licence",
        "driver's licence",
        "passport",
        "passport number",
        "national ID",
        "national id number",
        "tax id",
        "tax identification number",
        "TIN",
        "ITIN",
    ),
}
_ALIASES = VOCABULARY

# A column named for a kind and one of these words is a yes/no flag: "Password Exposed",
# "SSN/DOB Exposed (Y/N)", "Card compromised?".
FLAG_WORDS = (
    "exposed",
    "compromised",
    "leaked",
    "affected",
    "breached",
    "involved",
    "impacted",
    "yn",
    "flag",
)
# A column named by one of these alone is a flag column; any other word of the vocabulary
# (PAN, DOB, passport...) names a flag only with a flag word: a column "PAN" holds card numbers.
BARE_FLAGS = (
    "passwords",
    "password",
    "credentials",
    "card",
    "cards",
    "card data",
    "credit card",
    "payment card",
    "identity",
    "identity data",
    "ssn",
    "pii",
)
TRUE_WORDS = ("yes", "y", "true", "t", "1", "x", "✓", "✔", "on")
FALSE_WORDS = ("", "no", "n", "false", "f", "0", "-", "off", "none")


def squash(text: str) -> str:
    """Lower-case and keep only letters and digits: ``E-mail Address`` -> ``emailaddress``.

    Used to match headers and exposure values the way a person reads them.
    """
    return re.sub(r"[^0-9a-z]+", "", str(text).lower())


EXPOSURE_BY_ALIAS = {squash(alias): kind for kind, names in _ALIASES.items() for alias in names}
_BARE = frozenset(squash(word) for word in BARE_FLAGS)

_SPLIT = re.compile(r"[;,|/]")


def parse_exposures(value: str, extra: dict[str, str] | None = None) -> tuple[set[str], list[str]]:
    """Split a cell like ``Passwords; Card Data`` into known kinds and the unknown parts.

    ``extra`` (squashed word -> kind, from ``--map-value``) is consulted before the vocabulary.
    A whole cell that names a kind (``username and password``) wins over its parts.
    """
    known: set[str] = set()
    unknown: list[str] = []
    whole = squash(value)
    kind = (extra or {}).get(whole) or EXPOSURE_BY_ALIAS.get(whole)
    if kind:
        return {kind}, []
    for part in _SPLIT.split(str(value)):
        if not part.strip():
            continue
        squashed = squash(part)
        kind = (extra or {}).get(squashed) or EXPOSURE_BY_ALIAS.get(squashed)
        if kind:
            known.add(kind)
        else:
            unknown.append(part.strip())
    return known, unknown


def flag_kinds(header: str, extra: dict[str, str] | None = None) -> set[str]:
    """The kinds a yes/no column header names (``SSN/DOB Exposed (Y/N)`` -> identity), or none.

    The header is a kind word (``Passwords``), or kind words joined by ``/``, ``&``, ``and``
    or commas followed by a flag word (exposed, compromised, leaked, ...).
    """
    text = re.sub(r"\(\s*y\s*/\s*n\s*\)|\?|\by/n\b", " ", str(header).lower())
    words = text.split()
    while words and squash(words[-1]) in FLAG_WORDS:
        words.pop()
    flagged = len(words) < len(text.split())
    body = " ".join(words)
    lookup = {**EXPOSURE_BY_ALIAS, **(extra or {})}
    if not flagged:
        bare = squash(body)
        kind = (extra or {}).get(bare) or (EXPOSURE_BY_ALIAS.get(bare) if bare in _BARE else None)
        return {kind} if kind else set()
    kind = lookup.get(squash(body))
    if kind:
        return {kind}
    kinds = set()
    for part in re.split(r"[/&,;|+]|\band\b", body):
        if not part.strip():
            continue
        kind = lookup.get(squash(part))
        if kind is None:
            return set()
        kinds.add(kind)
    return kinds


def ordered(kinds: set[str] | list[str] | tuple[str, ...]) -> list[str]:
    """Kinds in rank order (identity, card, passwords), duplicates dropped."""
    chosen = set(kinds)
    return [kind for kind in RANKED if kind in chosen]


def join(kinds) -> str:
    """Stored and exported form: rank-ordered, ``;``-joined (``identity;passwords``)."""
    return ";".join(ordered(kinds))


def split(stored: str | None) -> list[str]:
    """Inverse of :func:`join`."""
    return [k for k in (stored or "").split(";") if k]
