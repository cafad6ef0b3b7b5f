"""File IO: atomic writes, and JSONL read line by line with errors that name the line.

Atomic writes are the one home for the temporary-file, fsync and ``os.replace`` pattern.

A reader never sees a half-written file: the content goes to a hidden temporary sibling
(``.{name}.tmp-{pid}-{thread}-{n}``, the same folder, so the rename is atomic on POSIX),
is flushed and fsync'd, and only then moved over the destination. Whatever stops the
write (an exception, a ``KeyboardInterrupt``) removes the temporary file and leaves the
destination as it was. ``sync_dir=True`` also fsyncs the folder, so the rename itself
survives a power cut (model packs, whose manifests mark a folder complete).

:func:`json_lines` (any stream) and :func:`iter_jsonl` (a file of objects) read JSONL;
a malformed line is a :class:`~hoprank.errors.DatasetError` naming the file and line.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, TextIO, overload

from hoprank.errors import DatasetError

__all__ = [
    "atomic_write",
    "fsync_dir",
    "iter_jsonl",
    "json_line",
    "json_lines",
    "temp_sibling",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

_counter = itertools.count()


def temp_sibling(path: Path) -> Path:
    """A hidden temporary name next to ``path``, unique per process, thread and call."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}-{next(_counter)}")


def fsync_dir(path: Path) -> None:
    """fsync a folder (makes a rename inside it durable); errors are ignored."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@overload
def atomic_write(
    path: str | os.PathLike[str], mode: Literal["w"] = "w", *, sync_dir: bool = False
) -> contextlib.AbstractContextManager[TextIO]: ...
@overload
def atomic_write(
    path: str | os.PathLike[str], mode: Literal["wb"], *, sync_dir: bool = False
) -> contextlib.AbstractContextManager[BinaryIO]: ...
def atomic_write(
    path: str | os.PathLike[str], mode: Literal["w", "wb"] = "w", *, sync_dir: bool = False
) -> contextlib.AbstractContextManager[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing (text is UTF-8); on a clean exit
    it is fsync'd and moved over ``path``, on an exception it is removed."""
    return _atomic_write(Path(path), mode, sync_dir)


@contextlib.contextmanager
def _atomic_write(path: Path, mode: str, sync_dir: bool) -> Iterator[IO[Any]]:
    tmp = temp_sibling(path)
    try:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if sync_dir:
        fsync_dir(path.parent)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, sync_dir: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_write(path, "wb", sync_dir=sync_dir) as f:
        f.write(data)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, sync_dir: bool = False) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    with atomic_write(path, "w", sync_dir=sync_dir) as f:
        f.write(text)


def write_json_atomic(
    path: str | os.PathLike[str],
    data: Any,
    *,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
    sync_dir: bool = False,
) -> None:
    """Replace ``path`` with ``data`` as indented JSON (UTF-8, a final newline) atomically.

    ``default`` is json's hook for values it cannot serialise (``str`` writes them as text).
    """
    text = json.dumps(data, indent=2, sort_keys=sort_keys, ensure_ascii=False, default=default)
    write_text_atomic(path, text + "\n", sync_dir=sync_dir)


def json_line(line: str, where: str) -> Any:
    """``line`` parsed as JSON; a :class:`DatasetError` naming ``where`` if it is not."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{where}: invalid JSON: {e.msg} (column {e.colno})") from None


def json_lines(lines: Iterable[str], name: str) -> Iterator[tuple[int, Any]]:
    """``(line number, JSON value)`` for each non-blank line of ``lines`` (a file or a
    stream called ``name``); a malformed line is a :class:`DatasetError` naming ``name``
    and the line."""
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            yield lineno, json_line(line, f"{name}:{lineno}")


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSONL file of objects;
    errors name the file and line."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    with open(path, encoding="utf-8") as f:
        for lineno, obj in json_lines(f, str(path)):
            if not isinstance(obj, dict):
                raise DatasetError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj
