"""What the command modules share: loading the configuration, the client env file's name,
usage errors, and writing a private file that a planted symlink cannot redirect."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import stat
import sys
from pathlib import Path
from typing import NoReturn

from llamakey import config

# What `ArgumentParser.add_subparsers()` returns; each command module adds its parsers to it.
type Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

ENV_FILE = "llamakey_local.env"

_PRIVATE_MODE = 0o600


def load_settings(path: Path) -> config.Settings:
    """The resolved configuration, or exit with its error (``lmk: …``, status 1)."""
    try:
        return config.load(path)
    except config.ConfigError as error:
        raise SystemExit(f"lmk: {error}") from None


def usage_error(message: str) -> NoReturn:
    """Exit with status 2 (a usage error, as argparse's own), after one line ``lmk: message``."""
    print(f"lmk: {message}", file=sys.stderr)
    raise SystemExit(2)


class PrivateFileError(OSError):
    """The target of `write_private_file` cannot be replaced (it is a directory)."""


def write_private_file(path: Path, text: str) -> None:
    """Atomically replace `path` with a regular file of mode 0600 holding `text`.

    The text goes to a new temporary file in the same directory (``O_CREAT | O_EXCL |
    O_NOFOLLOW``, mode 0600 from its creation on, so nobody else can open it even for a moment),
    is fsync'ed and renamed over `path`. Whatever was at `path` is replaced, never written
    through: a symlink someone planted there (to a file they can read, or one of theirs) is
    itself replaced and its target is untouched; an existing file's looser mode does not carry
    over. A directory at `path` is refused (`PrivateFileError`). Every step is relative to one
    open descriptor of the directory, so the directory cannot be swapped half-way. On any
    failure the temporary file is removed and `path` is as it was.
    """
    name = path.name
    if not name or name in (".", ".."):
        raise PrivateFileError(f"{path} is not a file name")
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                raise PrivateFileError(f"{path} is a directory")
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, _PRIVATE_MODE, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), _PRIVATE_MODE)  # whatever the umask
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
