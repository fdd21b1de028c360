"""Every environment variable the code reads is in the README's configuration table.

As datasette tests its settings against its docs: a variable added to the code without a row
of its own (no ``/ _PORT`` shorthand) fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = re.compile(r"(?:NOTIFY|TWILIO)_[A-Z0-9_]+")
ROW = re.compile(r"^\| `((?:NOTIFY|TWILIO)_[A-Z0-9_]+)` \|", re.MULTILINE)
TEST_ONLY = {"NOTIFY_TEST_POSTGRES_URL"}  # read by the test suite, documented under Testing


def names_in_code() -> dict[str, str]:
    """Each NOTIFY_* / TWILIO_* string literal in notify/ (what os.environ and click's envvar
    are given) -> a file that holds it. Constants that only share the prefix, such as
    ``TWILIO_STATUS_MAP``, are identifiers, not strings, so they are not counted."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "notify").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and NAME.fullmatch(node.value)
            ):
                found.setdefault(node.value, str(path.relative_to(ROOT)))
    return found


def documented() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("Environment variables:") :]
    table = table[: table.index("\n\n", table.index("| variable |"))]
    return set(ROW.findall(table))


def test_the_scan_finds_the_variables_it_should():
    code = names_in_code()
    assert {
        "NOTIFY_DATABASE_URL",
        "NOTIFY_LEASE_SECONDS",
        "NOTIFY_ACTOR",
        "TWILIO_AUTH_TOKEN",
    } <= set(code)
    assert "TWILIO_STATUS_MAP" not in code


def test_every_variable_read_has_its_own_row_in_the_readme():
    missing = {
        name: where
        for name, where in names_in_code().items()
        if name not in documented() and name not in TEST_ONLY
    }
    assert not missing, f"read by the code but not in README's environment table: {missing}"


def test_every_row_names_one_variable_the_code_reads():
    stale = documented() - set(names_in_code())
    assert not stale, f"README documents variables the code never reads: {sorted(stale)}"


def test_each_variable_has_one_row():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("Environment variables:") :]
    table = table[: table.index("\n\n", table.index("| variable |"))]
    rows = ROW.findall(table)
    assert sorted(n for n in set(rows) if rows.count(n) > 1) == []
