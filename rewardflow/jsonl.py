"""Reading and writing JSONL the way users hand it over: files, ``-``, pipes, ``.gz``, broken bytes.

Reading (:func:`open_input`, :func:`read_lines`) is one streaming pass: nothing counts the lines first, so a pipe
(``cat rows.jsonl | rewardflow score - ...``, ``<(...)``) gives every row. Gzip is recognised by its magic bytes,
not by the file name, so a ``.jsonl.gz`` file or a gzipped stream both work. Lines end at ``\\n`` only (a lone
``\\r`` inside a string is data, not a line break). Each line is decoded as UTF-8 on its own: a line with invalid
bytes is reported with its line number and byte offset (or repaired with U+FFFD when asked), never silently
altered.

Writing (:class:`AtomicOutput`) goes to a temporary file in the output's own folder, renamed into place at the
end, so a run that fails or is interrupted never truncates an existing file; what was scored before an
interruption is kept as ``<output>.partial``.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Literal

from rewardflow.errors import ConfigError
from rewardflow.types import json_type

__all__ = ["AtomicOutput", "Line", "json_type", "open_input", "read_lines", "same_file"]

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"


def is_stdin(path: str | Path) -> bool:
    return str(path) == "-"


def open_input(path: str | Path) -> BinaryIO:
    """Open ``path`` (``-`` for stdin) for one binary pass, decompressing gzip transparently.

    Raises :class:`~rewardflow.errors.ConfigError` with one clear line for a missing file, a directory or an
    unreadable file.
    """
    if is_stdin(path):
        raw: BinaryIO = sys.stdin.buffer
    else:
        p = Path(path)
        if p.is_dir():
            raise ConfigError(f"input {str(p)!r} is a directory, not a JSONL file")
        try:
            raw = open(p, "rb")
        except FileNotFoundError as exc:
            raise ConfigError(f"input file {str(p)!r} does not exist") from exc
        except OSError as exc:
            raise ConfigError(f"cannot read input {str(p)!r}: {exc.strerror}") from exc
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type]
    if buffered.peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    return buffered  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Line:
    """One input line: its 1-based number, its text (``None`` if it could not be decoded) and the problem."""

    number: int
    text: str | None
    problem: str | None = None


def read_lines(stream: BinaryIO, *, errors: Literal["strict", "replace"] = "strict") -> Iterator[Line]:
    """Yield every line of ``stream`` (ending at ``\\n`` only), decoded as UTF-8; a leading BOM is dropped.

    With ``errors="strict"`` a line holding invalid UTF-8 comes back with ``text=None`` and a ``problem`` naming
    the byte offset in the line and in the input; ``"replace"`` substitutes U+FFFD instead.
    """
    offset = 0  # byte offset of the current line in the (decompressed) input
    for number, raw in enumerate(stream, start=1):
        data = raw[:-1] if raw.endswith(b"\n") else raw
        skip = len(_BOM) if number == 1 and data.startswith(_BOM) else 0
        try:
            text = data[skip:].decode("utf-8", errors=errors)
        except UnicodeDecodeError as exc:
            at = skip + exc.start
            yield Line(
                number,
                None,
                f"invalid UTF-8 (byte 0x{data[at : at + 1].hex()} at byte offset {at} of the line, {offset + at} "
                "of the input); fix the file or pass --encoding-errors replace",
            )
        else:
            yield Line(number, text)
        offset += len(raw)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file: same resolved path, or the same inode (hard links, symlinks)."""
    if is_stdin(a) or is_stdin(b):
        return False
    pa, pb = Path(a), Path(b)
    if pa.resolve() == pb.resolve():
        return True
    try:
        return os.path.samefile(pa, pb)
    except OSError:
        return False


class AtomicOutput:
    """A text file written under a temporary name in the target's folder and renamed into place by :meth:`commit`.

    :meth:`keep_partial` instead renames what was written to ``<target>.partial`` (for an interrupted run) and
    :meth:`discard` removes it (nothing was written). An existing target is only ever replaced by a complete file.
    """

    def __init__(self, target: str | Path, *, encoding: str = "utf-8") -> None:
        self.target = Path(target)
        folder = self.target.parent
        if self.target.is_dir():
            raise ConfigError(f"output {str(self.target)!r} is a directory")
        if not folder.is_dir():
            raise ConfigError(f"output folder {str(folder)!r} does not exist")
        try:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{self.target.name}.", suffix=".tmp")
        except OSError as exc:
            raise ConfigError(f"cannot write to {str(folder)!r}: {exc.strerror}") from exc
        self.tmp = Path(tmp)
        self.file: IO[str] = open(fd, "w", encoding=encoding)

    @property
    def partial_path(self) -> Path:
        return self.target.with_name(self.target.name + ".partial")

    def write(self, text: str) -> int:
        return self.file.write(text)

    def flush(self) -> None:
        self.file.flush()

    def commit(self) -> Path:
        """Close and rename the finished file over the target; a stale ``.partial`` of an earlier run goes."""
        self.file.close()
        if self.target.exists():
            # keep the target's permissions, as a plain rewrite would
            try:
                os.chmod(self.tmp, self.target.stat().st_mode & 0o7777)
            except OSError:
                pass
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)
        os.replace(self.tmp, self.target)
        self.partial_path.unlink(missing_ok=True)
        return self.target

    def keep_partial(self) -> Path:
        """Close and keep what was written as ``<target>.partial``; the target itself is left untouched."""
        self.file.close()
        os.replace(self.tmp, self.partial_path)
        return self.partial_path

    def discard(self) -> None:
        try:
            self.file.close()
        finally:
            self.tmp.unlink(missing_ok=True)
