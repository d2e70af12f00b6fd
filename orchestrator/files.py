"""Writing a file so that a reader never sees half of it: a killed process, a full disk or
a second writer leaves either the old file or the new one, and no temporary file behind.

This module imports nothing from the project: every layer may use it."""

from __future__ import annotations

import errno
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it: libraries wrap OSError) is a full disk or quota."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


STALE_SECONDS = 600.0     # a write takes seconds: an older temporary file's writer is dead


def _remove_stale(path: Path) -> None:
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime > STALE_SECONDS:
                tmp.unlink()
        except OSError:               # removed meanwhile by another writer
            pass


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` writes the whole content to `tmp` (beside `path`, named for this writer
    alone, so two writers never mix their bytes); it is flushed to disk and renamed over
    `path` in one step. On any failure the temporary file is removed; a full disk is an
    OSError naming `path` and its free bytes. A writer killed outright leaves its
    temporary file: the next write of `path` removes it once it is STALE_SECONDS old."""
    path = Path(path)
    _remove_stale(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())   # the rename must not outrun the bytes (power loss)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            free = shutil.disk_usage(path.parent).free
            raise OSError(errno.ENOSPC, f"{path}: disk full while writing it ({free:,} bytes "
                          "free; the file was left as it was)") from exc
        raise
