"""Text that reaches the operator's terminal shows every character, never obeys one.

Names, emails, provider answers, bounce fields and campaign files are data from outside: an
escape sequence in a contact's name must not clear the screen or retitle the window, and a
right-to-left override must not make ``gpj.exe`` read ``exe.jpg``. The importer strips such
characters, but a database written by an older version, SQL, or a provider's answer can still
hold them, so the guard sits on the way out: ``notify``'s entry point (``install``) replaces
``sys.stdout`` and ``sys.stderr`` with a ``SafeStream`` that writes every control, bidi or
invisible format character visibly escaped (``escape``). Everything printed, whichever way
(click.echo, print, logging, click's own errors, tracebacks), goes through it.

What stays exact:

* bytes: ``sys.stdout.buffer`` is the real one, so ``-o -`` CSV is byte-equal to the file;
* JSON: json.dumps already escapes C0 controls, and what this module adds for the rest
  (``\\u202e``, ``\\u0085``) is a valid JSON escape of the same character, so ``--json``
  output still parses to the same values;
* notify's own terminal drawing (progress bars): those displays write to ``raw(stream)`` and
  escape the text they draw themselves.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any, TextIO

# Every character of Unicode categories Cc (controls), Cf (invisible format characters: bidi
# marks, embeddings, overrides and isolates, zero-width space, soft hyphen, BOM, tags...), Zl
# and Zp (line and paragraph separators) and Cs (lone surrogates, from undecodable file names),
# except newline and tab (layout) and the zero-width (non-)joiner U+200C/U+200D, which Persian,
# Indic scripts and emoji need to display correctly. A carriage return is kept when a
# line feed follows (the CRLF line ends of CSV on stdout move the cursor as LF alone does);
# alone, it could overwrite what is on the line, so it is escaped. Written out rather than
# computed so that the CLI does not scan Unicode at each start; tests/test_terminal.py checks
# it against unicodedata.
UNSAFE = re.compile(
    "\r(?!\n)|[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f"
    "\u0890-\u0891\u08e2\u180e\u200b\u200e-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ud800-\udfff\ufeff"
    "\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if code < 0x20:
        return f"\\x{code:02x}"  # ESC -> \x1b, the form people know from shells
    if code < 0x10000:
        return f"\\u{code:04x}"  # also a JSON escape, so --json lines stay valid JSON
    code -= 0x10000  # JSON has no \U: a surrogate pair, as json.dumps writes it
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def escape(text: str) -> str:
    """``text`` with each control, bidi or invisible format character written as an escape.

    ESC becomes ``\\x1b``, U+202E ``\\u202e``; newline, tab and CRLF are kept. The result holds
    only printable characters, so escaping it again changes nothing.
    """
    return UNSAFE.sub(_visible, text)


class SafeStream:
    """A text stream writing ``escape``d text to ``raw``; everything else is ``raw``'s.

    Bytes are not touched: ``.buffer`` is ``raw``'s, for outputs that must be byte-exact.
    """

    def __init__(self, raw: TextIO) -> None:
        self.raw = raw

    def write(self, text: str) -> int:
        """Write ``text`` escaped; returns ``len(text)`` as callers expect of a text stream."""
        if not isinstance(text, str):  # click probes streams with b"" to tell binary ones
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.raw.write(escape(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        """Write each of ``lines`` escaped."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Flush ``raw``."""
        self.raw.flush()

    def isatty(self) -> bool:
        """Whether ``raw`` is a terminal (click and rich decide colours and redraws on it)."""
        return self.raw.isatty()

    @property
    def errors(self) -> str | None:
        """``strict`` over a UTF encoding, as escaped text cannot fail to encode there.

        Python opens stdout with ``surrogateescape`` under the C locale, and click's
        ``get_text_stream`` (errors ``strict`` by default) would then find this stream
        incompatible and write to ``.buffer`` directly, past the escaping. Escaped text
        holds no surrogate, so on UTF-8 the two policies write the same bytes.
        """
        encoding = (getattr(self.raw, "encoding", None) or "").lower().replace("-", "")
        return "strict" if encoding.startswith("utf") else getattr(self.raw, "errors", None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __getattr__(self, name: str) -> Any:
        # encoding, errors, buffer, fileno, closed...: the underlying stream's.
        return getattr(self.raw, name)


def raw(stream: IO[str]) -> IO[str]:
    """The stream under ``stream``'s escaping, for notify's own drawing (progress bars),
    which must send its cursor movements as they are and escapes its text itself."""
    while isinstance(stream, SafeStream):
        stream = stream.raw
    return stream


@contextmanager
def installed() -> Iterator[None]:
    """Escape everything written to ``sys.stdout`` and ``sys.stderr`` while inside.

    In a real process (the streams are the interpreter's own) the escaping stays on after
    the block, so that what Python prints on the way out, such as a traceback, is escaped
    too; otherwise (CliRunner, an embedding program) the previous streams come back.
    """
    old_out, old_err = sys.stdout, sys.stderr
    if not isinstance(old_out, SafeStream) and old_out is not None:
        sys.stdout = SafeStream(old_out)
    if not isinstance(old_err, SafeStream) and old_err is not None:
        sys.stderr = SafeStream(old_err)
    try:
        yield
    finally:
        if old_out is not sys.__stdout__:
            sys.stdout = old_out
        if old_err is not sys.__stderr__:
            sys.stderr = old_err
