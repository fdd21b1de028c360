"""House rules of the package's layout that a reader relies on."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "notify"


def test_no_two_classes_share_a_name():
    """One name, one concept: three ``Throttle`` classes (campaign setting, table row, rate
    limiter) made every import a guess."""
    where: dict[str, list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                where[node.name].append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    shared = {name: places for name, places in where.items() if len(places) > 1}
    assert not shared, f"classes sharing a name: {shared}"


def test_every_module_is_on_the_architecture_map():
    """docs/architecture.md's module table names every module (a command's file under cli/
    is named by its command), so the map a newcomer reads cannot fall behind the code."""
    from notify.cli import COMMANDS

    text = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    commands = {f"cli.{module}" for module in COMMANDS.values()}
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[0] == "migrations" or parts[-1] == "__main__" or parts == ("__init__",):
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name not in commands and f"`{name}`" not in text:
            missing.append(name)
    assert missing == []
