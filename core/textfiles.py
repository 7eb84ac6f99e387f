"""Small text files (genotypes, multi-channel paths, run records) and images: read with one clear
error, written atomically so that a reader never sees half a file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from errors import UserError

MAX_TEXT_BYTES = 16 * 1024 * 1024   # these files are a few KiB; refuse absurd inputs early


def read_text(path: Path, what: str, error: type[UserError]) -> str:
    """The UTF-8 text of `path` (a `what`, for the message); any failure is one `error` sentence."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise error(f"{path}: is {size} bytes, too large for a {what}")
        return path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: is not UTF-8 text ({e.reason} at byte {e.start})") from None


def write_text_atomic(path: Path, text: str) -> None:
    """A temporary file in the same folder, flushed to disk, then renamed over `path` (UTF-8)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """A temporary file in the same folder, flushed to disk, then renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
