"""Safe file writes: every result file appears whole or not at all (temp file + rename); a file's stamp, which a
rewrite changes; private folders."""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temp path next to `path`; on success rename it over `path`, else delete it.

    Durable: the file's data reaches the disk (fsync) before the rename, and the rename itself (fsync of the folder)
    before this returns, so after a crash or a power loss `path` holds the old content or the new, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
        _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    finally:
        Path(tmp).unlink(missing_ok=True)


def _fsync(path: str | Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str, only_if_changed: bool = False) -> bool:
    """Write `text` atomically; with only_if_changed, leave an identical file (and its mtime) alone."""
    path = Path(path)
    if only_if_changed and path.is_file() and path.read_text() == text:
        return False
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return True


def stamp(path: str | Path) -> list[int] | None:
    """(size, mtime_ns, ctime_ns, inode) of a file, None if it is missing: a rewrite changes at least one (a whole
    one, by rename, its inode; one in place, its ctime, which no user can set back)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def private_dir(folder: Path) -> Path:
    """`folder`, created if missing, readable and writable by its owner only (0700): for files that get unpickled
    (Ray's experiment state, submitit's jobs). One that another user made is refused (PermissionError naming it):
    making it private would not make its files ours, and whoever owns it could have put a pickle there."""
    folder.mkdir(parents=True, exist_ok=True)
    owner = folder.stat().st_uid
    if owner != os.getuid():
        raise PermissionError(
            errno.EPERM,
            f"owned by uid {owner}, not by this user (uid {os.getuid()}); ssmpipe loads pickled state from it, so "
            f"only a folder of your own will do: move it aside",
            str(folder),
        )
    folder.chmod(0o700)
    return folder
