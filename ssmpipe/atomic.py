"""Safe file writes: every result file appears whole or not at all (temp file + rename); private folders."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temp path next to `path`; on success rename it over `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text(path: str | Path, text: str, only_if_changed: bool = False) -> bool:
    """Write `text` atomically; with only_if_changed, leave an identical file (and its mtime) alone."""
    path = Path(path)
    if only_if_changed and path.is_file() and path.read_text() == text:
        return False
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return True


def private_dir(folder: Path) -> Path:
    """`folder`, created if missing, readable and writable by its owner only (0700): for files that get unpickled."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder
