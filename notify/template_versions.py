"""Template sets: read a campaign's notices once, safely, and keep them in the database.

A campaign's notices are its override folder (``templates`` in the campaign file, relative to
that file) over the shipped defaults. ``campaign load`` reads both once and stores them as a
*version*: every file's name and text, identified by the SHA-256 over all of them. Sending,
reminders and previews render from the stored version, so a worker on another machine needs
no templates folder, and a message keeps the version it was rendered from however the
folder changes later (changing the notices means loading the campaign again: a new version).

Reading is where hostile files are stopped. Every entry is resolved with realpath: a symbolic
link (or the folder itself) that leads outside its root, a broken link, a link loop, or
anything that is not a regular file (a FIFO, a device, ``/proc/self/environ`` through a link)
is a one-line error naming it, and nothing is stored. Only ``*.j2`` files are kept; Jinja
then resolves ``include``/``extends`` among the stored names only, never on disk. An
``include``, ``extends`` or ``import`` naming a template outside the set (``/etc/passwd``,
``../x``), or naming it with an expression (which could reach anything at render time), is
refused when the set is read, as a one-line error: a notice that can never render is not
stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from notify.errors import NotifyError
from notify.models import TemplateVersion
from notify.resources import default_templates

SUFFIX = ".j2"
MAX_FILE_BYTES = 1024 * 1024  # a notice is a few KB; a bigger file is a mistake
MAX_SET_BYTES = 16 * 1024 * 1024
MAX_FILES = 2000
# Parts of one notice that must say the same thing: overriding one and not the other sends
# two different texts in one email.
COUNTERPARTS = (
    ("email.txt.j2", "email.html.j2"),
    ("reminder.txt.j2", "reminder.html.j2"),
    ("notice.txt.j2", "notice.html.j2"),
)
OVERRIDE, DEFAULTS = "override", "defaults"
# The defaults are also reachable as ``defaults/<name>`` (notify.templates' loader), so an
# override can extend the default it replaces.
DEFAULTS_PREFIX = "defaults"


class TemplateSetError(NotifyError):
    """A templates folder cannot be stored: ``path: problem`` (one line)."""


@dataclass(frozen=True)
class TemplateSet:
    """The notices of a campaign: ``overrides`` over ``defaults`` (name -> source text).

    ``origin`` is the override folder as the user knows it, for messages only; it is not part
    of the version (the same files loaded from two places are the same notices).
    """

    overrides: Mapping[str, str]
    defaults: Mapping[str, str]
    origin: str | None = None
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", _digest(self.overrides, self.defaults))

    def to_json(self) -> str:
        """What the database stores (``template_versions.files``)."""
        return json.dumps(
            {OVERRIDE: dict(self.overrides), DEFAULTS: dict(self.defaults)},
            ensure_ascii=False,
            sort_keys=True,
        )


def _digest(overrides: Mapping[str, str], defaults: Mapping[str, str]) -> str:
    """SHA-256 over every layer, name and text, each length-prefixed (unambiguous)."""
    digest = hashlib.sha256()
    for layer, files in ((OVERRIDE, overrides), (DEFAULTS, defaults)):
        for name in sorted(files):
            for part in (layer.encode(), name.encode(), files[name].encode()):
                digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


# --- reading a folder ------------------------------------------------------------------------


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _kind(mode: int) -> str:
    for test, noun in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return noun
    return "not a regular file"


class _Reader:
    """Walks one root, checking every entry, and collects its ``*.j2`` files."""

    def __init__(self, root: Path, shown: str) -> None:
        self.root = os.path.realpath(root)
        self.shown = shown  # the root as messages name it
        self.files: dict[str, str] = {}
        self.total = 0

    def fail(self, rel: str, problem: str) -> TemplateSetError:
        return TemplateSetError(f"{self.shown}/{rel}: {problem}")

    def walk(self, real_dir: str, rel_dir: str, chain: tuple[str, ...]) -> None:
        try:
            entries = sorted(os.scandir(real_dir), key=lambda e: e.name)
        except OSError as exc:
            raise self.fail(rel_dir or ".", f"cannot read the folder: {exc.strerror}") from None
        for entry in entries:
            if entry.name.startswith("."):  # editor and VCS droppings; never read
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            real = os.path.realpath(entry.path)
            if entry.is_symlink():
                if not os.path.lexists(real) or not os.path.exists(entry.path):
                    raise self.fail(rel, "a broken symbolic link")
                if not _inside(real, self.root):
                    raise self.fail(rel, f"a symbolic link to {real}, outside {self.shown}")
            try:
                mode = os.stat(real).st_mode
            except OSError as exc:
                raise self.fail(rel, f"cannot read: {exc.strerror}") from None
            if stat.S_ISDIR(mode):
                if real in chain:
                    raise self.fail(rel, "a symbolic link loop")
                self.walk(real, rel, (*chain, real))
            elif not stat.S_ISREG(mode):
                raise self.fail(rel, f"{_kind(mode)}, not a template file")
            elif entry.name.endswith(SUFFIX):
                self.files[rel] = self.read(real, rel)
                if len(self.files) > MAX_FILES:
                    raise self.fail(rel, f"more than {MAX_FILES} template files")

    def read(self, real: str, rel: str) -> str:
        # O_NOFOLLOW|O_NONBLOCK: a file swapped for a link or a FIFO since the check above
        # fails here instead of being followed or blocking.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(real, flags)
        except OSError as exc:
            raise self.fail(rel, f"cannot read: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise self.fail(rel, "not a regular file")
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise self.fail(rel, f"larger than {MAX_FILE_BYTES // 1024} KB; not a template")
        self.total += len(data)
        if self.total > MAX_SET_BYTES:
            raise self.fail(rel, f"the templates exceed {MAX_SET_BYTES // 2**20} MB in all")
        nul = data.find(b"\0")
        if nul >= 0:
            raise self.fail(rel, f"a NUL byte at byte {nul}; not a text file")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(rel, f"not UTF-8 text (byte {exc.start})") from None


def read_folder(root: Path, shown: str | None = None) -> dict[str, str]:
    """Every ``*.j2`` file under ``root`` (name relative to it, ``/``-separated) -> text.

    Raises TemplateSetError for anything that leaves ``root`` or is not a regular file.
    """
    reader = _Reader(root, shown or str(root))
    if not os.path.isdir(reader.root):
        raise TemplateSetError(f"{reader.shown}: templates folder not found")
    reader.walk(reader.root, "", (reader.root,))
    return reader.files


def read_set(
    override: Path | None, *, shown: str | None = None, defaults: Path | None = None
) -> TemplateSet:
    """The override folder (if any) over the shipped defaults, read once and checked
    (entries by realpath, references by :func:`check_references`)."""
    defaults = defaults or default_templates()
    shipped = read_folder(defaults, "<defaults>")
    if override is None:
        tset = TemplateSet({}, shipped, None)
    else:
        origin = shown or str(override)
        tset = TemplateSet(read_folder(override, origin), shipped, origin)
    check_references(tset)
    return tset


def _referenced(source: str) -> list[tuple[int, str | None]]:
    """(line, name) of every template ``source`` includes, extends or imports; name None
    when it is computed at render time (a variable, a concatenation).

    The same nodes :func:`jinja2.meta.find_referenced_templates` inspects, kept with their
    line so the error can say where.
    """
    # Imported here: campaigns imports this module, and `notify status` must not load Jinja.
    import jinja2
    from jinja2 import nodes

    found: list[tuple[int, str | None]] = []
    ast = jinja2.Environment().parse(source)
    kinds = (nodes.Extends, nodes.FromImport, nodes.Import, nodes.Include)
    for node in ast.find_all(kinds):
        if not isinstance(node, kinds):  # find_all gives only these; says so to the checker
            continue
        target = node.template
        if isinstance(target, nodes.Const) and isinstance(target.value, str):
            found.append((node.lineno, target.value))
        elif (
            isinstance(target, nodes.Const)
            and isinstance(target.value, (tuple, list))
            and all(isinstance(item, str) for item in target.value)
        ):
            found.extend((node.lineno, item) for item in target.value)
        elif isinstance(target, (nodes.Tuple, nodes.List)) and all(
            isinstance(item, nodes.Const) and isinstance(item.value, str) for item in target.items
        ):
            found.extend((node.lineno, item.value) for item in target.items)  # type: ignore[attr-defined]
        else:
            found.append((node.lineno, None))
    return found


def check_references(tset: TemplateSet) -> None:
    """Raise TemplateSetError for the first include/extends/import leaving the stored set.

    The renderer would refuse it too (its loader knows only stored names), but only when
    that notice is rendered, mid-send; the issue's rule is that a reference leaving the root
    is a one-line error at load, with nothing stored. A name computed at render time cannot
    be checked here, so it is refused as well. A file Jinja cannot parse is left to
    ``templates check``, which names the syntax error (it includes nothing).
    """
    import jinja2  # only when a campaign is loaded (see _referenced)

    names = {*tset.overrides, *tset.defaults, *(f"{DEFAULTS_PREFIX}/{n}" for n in tset.defaults)}
    where = f"{tset.origin} or the defaults" if tset.origin else "the defaults"
    for shown, files in (
        (tset.origin or "templates", tset.overrides),
        ("<defaults>", tset.defaults),
    ):
        for name in sorted(files):
            try:
                references = _referenced(files[name])
            except jinja2.TemplateSyntaxError:
                continue
            for line, target in references:
                if target is None:
                    raise TemplateSetError(
                        f"{shown}/{name}, line {line}: includes a template named by an "
                        "expression; name it literally (a stored template)"
                    )
                if target not in names:
                    raise TemplateSetError(
                        f"{shown}/{name}, line {line}: includes {target!r}, which is not in {where}"
                    )


def override_folder(campaign_file: Path, templates: str) -> Path:
    """The ``templates`` folder of a campaign file, which must lie within that file's folder.

    An absolute path, or one leading out (``../../usr``), could make any file on the machine
    a notice; so could a folder that is itself a link to elsewhere.
    """
    base = os.path.realpath(campaign_file.parent)
    target = os.path.realpath(os.path.join(base, templates))
    if Path(templates).is_absolute() or not _inside(target, base):
        raise TemplateSetError(
            f"{campaign_file}: templates: {templates!r} is outside the campaign file's folder "
            f"({base}); keep the overrides beside or below the campaign file"
        )
    if not os.path.isdir(target):
        raise TemplateSetError(
            f"{campaign_file}: templates: {templates!r}: no such folder ({target})"
        )
    return Path(target)


def read_for_campaign(campaign_file: Path, templates: str | None) -> TemplateSet:
    """The set a campaign file names: its override folder (checked) over the defaults."""
    if not templates:
        return read_set(None)
    folder = override_folder(campaign_file, templates)
    return read_set(folder, shown=_shown(folder))


def _shown(folder: Path) -> str:
    """A folder as the user should read it: relative to the working folder when inside."""
    try:
        return str(folder.relative_to(Path.cwd()))
    except ValueError:
        return str(folder)


def counterpart_warnings(tset: TemplateSet) -> list[str]:
    """Overrides that replace one part of a notice (text or HTML) but not the other.

    Not an error (the default part may still fit), but the email's two parts then come from
    different texts, and someone who changed the wording usually meant to change both.
    """
    found: list[str] = []
    for name in sorted(tset.overrides):
        folder, _, base = name.rpartition("/")
        for one, other in COUNTERPARTS:
            for mine, theirs in ((one, other), (other, one)):
                twin = f"{folder}/{theirs}" if folder else theirs
                if base == mine and twin not in tset.overrides and twin in tset.defaults:
                    found.append(
                        f"{tset.origin}/{name} overrides one part of the notice but "
                        f"not {twin}: the other part still says what the default says"
                    )
    return found


# --- the database ---------------------------------------------------------------------------


def store(session: Session, tset: TemplateSet) -> TemplateVersion:
    """The stored version of ``tset`` (inserted the first time; the same files, same row)."""
    found = session.scalar(select(TemplateVersion).where(TemplateVersion.sha256 == tset.sha256))
    if found is not None:
        return found
    version = TemplateVersion(sha256=tset.sha256, files=tset.to_json(), origin=tset.origin)
    try:
        with session.begin_nested():
            session.add(version)
            session.flush()
    except IntegrityError:  # another load stored the same files at the same moment
        found = session.scalar(select(TemplateVersion).where(TemplateVersion.sha256 == tset.sha256))
        if found is None:
            raise
        return found
    return version


def from_row(version: TemplateVersion, origin: str | None = None) -> TemplateSet:
    """The set a stored version holds (``origin`` names the override folder in messages)."""
    files = json.loads(version.files)
    tset = TemplateSet(files.get(OVERRIDE, {}), files.get(DEFAULTS, {}), origin or version.origin)
    if tset.sha256 != version.sha256:  # changed behind notify's back: never send it
        raise TemplateSetError(
            f"stored templates version {version.sha256[:16]} does not match "
            "its files (altered in the database); load the campaign again"
        )
    return tset


def load(session: Session, sha256: str) -> TemplateSet:
    """The stored version ``sha256``; TemplateSetError when there is none."""
    version = session.scalar(select(TemplateVersion).where(TemplateVersion.sha256 == sha256))
    if version is None:
        raise TemplateSetError(f"templates version {sha256[:16]} is not stored in this database")
    return from_row(version)
