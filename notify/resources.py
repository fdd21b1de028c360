"""Where the shipped data lives: the repo's top-level folders, or their copies in a wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """``templates``, ``campaigns`` or ``contacts``: wheel copy first, then the source tree."""
    wheel_copy = _PACKAGE / "_data" / name
    if wheel_copy.is_dir():
        return wheel_copy
    return _PACKAGE.parent / name


def default_templates() -> Path:
    """The built-in notices, one folder per exposure."""
    return data_dir("templates")
