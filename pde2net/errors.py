"""The one error type users see, with the source position it points at.

Every stage raises :class:`PdeError` for bad input.  Its :meth:`PdeError.format` renders
``file:line:col: error: ...``, the offending line and a caret under the place, then what was
expected: the form the DSL reference fixes.  The CLI prints that and exits with status 2.
"""
from __future__ import annotations

import difflib
import io
import os
import stat
import unicodedata
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Optional


@dataclass(frozen=True)
class Pos:
    """A 1-based line and column in a source text (``end_col`` exclusive, same line)."""

    line: int
    col: int
    end_col: Optional[int] = None


@dataclass(frozen=True)
class Source:
    """A spec's text and the name it is reported under."""

    text: str
    filename: str = "<string>"

    def line_text(self, line: int) -> str:
        lines = self.text.splitlines()
        return lines[line - 1] if 1 <= line <= len(lines) else ""


class PdeError(Exception):
    """Bad input: a message, where it is, and what was expected there."""

    def __init__(
        self,
        message: str,
        pos: Optional[Pos] = None,
        source: Optional[Source] = None,
        expected: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos
        self.source = source
        self.expected = expected

    def with_source(self, source: Source) -> "PdeError":
        """The same error, attached to ``source`` if it has none yet."""
        if self.source is None:
            self.source = source
        return self

    def format(self) -> str:
        """``file:line:col: error: message``, the line, a caret, and what was expected."""
        where = f"{self.source.filename}: " if self.source else ""
        if self.pos is None:
            out = [f"{where}error: {self.message}"]
        else:
            out = [f"{where[:-2]}:{self.pos.line}:{self.pos.col}: error: {self.message}"]
            line = self.source.line_text(self.pos.line) if self.source else ""
            if line:
                width = 1
                if self.pos.end_col is not None and self.pos.end_col > self.pos.col:
                    width = self.pos.end_col - self.pos.col
                # Tabs are kept so the caret lines up under the same glyph.
                pad = "".join(c if c == "\t" else " " for c in line[: self.pos.col - 1])
                out += [f"    {line}", f"    {pad}{'^' * width}"]
        if self.expected:
            out.append(f"expected: {self.expected}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.format()


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """The valid choices, and the closest one when the word looks like a typo."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    listing = ", ".join(choices) if choices else "(none)"
    return f"one of {listing}" + (f" (did you mean '{close[0]}'?)" if close else "")


def describe_char(ch: str) -> str:
    """A readable name for a character, e.g. ``'а' (U+0430 CYRILLIC SMALL LETTER A)``."""
    name = unicodedata.name(ch, "unnamed character")
    shown = ch if ch.isprintable() else repr(ch)
    return f"'{shown}' (U+{ord(ch):04X} {name})"


def open_bounded(path: str, limit: int, what: str = "file") -> BinaryIO:
    """Opens ``path`` for reading at most ``limit`` bytes, refusing what cannot be read that way.

    A regular file is checked against ``limit`` by its size and returned open.  A FIFO is opened
    without blocking (a FIFO nobody writes to then reads as empty instead of hanging), and FIFOs
    and devices (``/dev/zero``) are read into memory up to ``limit + 1`` bytes, so an endless
    stream is refused as too large instead of being read whole.  Directories and missing or
    unreadable files raise :class:`PdeError` naming the path.
    """
    where = Source("", str(path))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise PdeError(f"cannot read {what} {path}: {exc.strerror or exc}", None, where) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise PdeError(f"{path} is a directory", None, where, f"a {what}")
        too_large = PdeError(f"{what} too large (more than {limit} bytes)", None, where,
                             f"at most {limit} bytes")
        if stat.S_ISREG(st.st_mode):
            if st.st_size > limit:
                raise too_large
            if hasattr(os, "set_blocking"):
                os.set_blocking(fd, True)
            f = os.fdopen(fd, "rb")
            fd = -1
            return f
        if hasattr(os, "set_blocking"):  # a FIFO with a writer: wait for its data, as cat would
            os.set_blocking(fd, True)
        chunks, n = [], 0
        while n <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - n))
            if not chunk:
                break
            chunks.append(chunk)
            n += len(chunk)
        if n > limit:
            raise too_large
        return io.BytesIO(b"".join(chunks))
    except OSError as exc:
        raise PdeError(f"cannot read {what} {path}: {exc.strerror or exc}", None, where) from None
    finally:
        if fd >= 0:
            os.close(fd)
