"""Writing files that a planted symlink cannot redirect and a crash cannot leave half-written;
telling that a file changed."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

type FileStamp = tuple[int, int, int, int] | None
"""What tells a file changed: inode, mtime, ctime, size (None: no file)."""


def file_stamp(path: Path) -> FileStamp:
    """`path`'s `FileStamp` now."""
    try:
        info = path.stat()
    except OSError:
        return None
    # The inode too: `lmk keys` replaces a file (a rename), and one rewritten within a clock
    # tick keeps its size and times.
    return info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size


class NotAFileError(OSError):
    """The target of `write_atomically` cannot be replaced (it is a directory)."""


def write_atomically(path: Path, text: str, mode: int) -> None:
    """Atomically replace `path` with a regular file of `mode` holding `text`.

    The text goes to a new temporary file in the same directory (``O_CREAT | O_EXCL |
    O_NOFOLLOW``, mode 0600 from its creation on, so nobody else can open it even for a moment,
    then `mode`),
    is fsync'ed and renamed over `path`. Whatever was at `path` is replaced, never written
    through: a symlink someone planted there (to a file they can read, or one of theirs) is
    itself replaced and its target is untouched; an existing file's looser mode does not carry
    over. A directory at `path` is refused (`NotAFileError`). Every step is relative to one
    open descriptor of the directory, so the directory cannot be swapped half-way. On any
    failure the temporary file is removed and `path` is as it was.
    """
    name = path.name
    if not name or name in (".", ".."):
        raise NotAFileError(f"{path} is not a file name")
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                raise NotAFileError(f"{path} is a directory")
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), mode)  # whatever the umask
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        with contextlib.suppress(OSError):  # persist the rename (best effort)
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
