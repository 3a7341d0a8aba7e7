"""Atomic file writes: every final file is written to a temporary file in its own folder, then
renamed into place, so a kill leaves either the old file or the new one, never half of one.
No torch or fairseq import (the space, ranking and search layers use it too)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Union

PathLike = Union[str, "os.PathLike[str]"]


def atomic_save(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary path next to `path` (same suffix, so writers that pick a
    format from the name, like matplotlib's savefig, pick the right one), then rename it to `path`.
    The temporary file is removed if `write` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=str(path.parent))
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """`data` into `path`, flushed to disk before the rename."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    atomic_save(path, write)


def atomic_write_text(path: PathLike, text: str) -> None:
    """UTF-8 `text` into `path`, atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
