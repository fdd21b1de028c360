"""The kinds of exposed data, their ranking, and how messy spreadsheet values map to them."""

from __future__ import annotations

import re

# Highest first: a contact with several exposures gets the notice of the first one here.
RANKED = ("identity", "card", "passwords")

_ALIASES = {
    "passwords": ("passwords", "password", "credentials", "credential"),
    "card": (
        "card", "cards", "card data", "carddata", "credit card", "creditcard", "payment",
        "payment card", "payments", "debit card",
    ),
    "identity": (
        "identity", "identity data", "ssn", "pii", "social security number",
        "identity theft", "personal data",
    ),
}


def squash(text: str) -> str:
    """Lower-case and keep only letters and digits: ``E-mail Address`` -> ``emailaddress``.

    Used to match headers and exposure values the way a person reads them.
    """
    return re.sub(r"[^0-9a-z]+", "", str(text).lower())


EXPOSURE_BY_ALIAS = {squash(alias): kind for kind, names in _ALIASES.items() for alias in names}

_SPLIT = re.compile(r"[;,|/]")


def parse_exposures(value: str) -> tuple[set[str], list[str]]:
    """Split a cell like ``Passwords; Card Data`` into known kinds and the unknown parts."""
    known: set[str] = set()
    unknown: list[str] = []
    for part in _SPLIT.split(str(value)):
        if not part.strip():
            continue
        kind = EXPOSURE_BY_ALIAS.get(squash(part))
        if kind:
            known.add(kind)
        else:
            unknown.append(part.strip())
    return known, unknown


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


def primary(kinds) -> str:
    """The highest-ranked kind: it picks the template."""
    ranked = ordered(kinds)
    if not ranked:
        raise ValueError("a contact has no exposure")
    return ranked[0]
