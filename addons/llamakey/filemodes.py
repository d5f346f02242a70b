"""Files the gateway creates are mode 0600: saved flows, the audit database, bundles.

`lmk serve`/`lmk web` set the process umask before anything is written. Under plain
`mitmdump -s addons/entry.py` the script loads after mitmproxy has already opened its `-w`
file (created with the shell's umask, typically 0644), so `SaveFileMode` tightens that file as
soon as the script is configured, before any flow is written to it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from mitmproxy import ctx

SECRET_UMASK = 0o077
SECRET_MODE = 0o600


def restrict_umask() -> None:
    """Files this process creates from now on are 0600, directories 0700. Files whose mode
    matters otherwise set it explicitly (the CA's public certificates and the client bundle,
    in `ca/files.py`)."""
    os.umask(SECRET_UMASK)


def tighten(save_file: str | None) -> None:
    """Make an existing flow file (`-w FILE`, `+FILE` to append) ours alone: mitmproxy
    truncates or appends to it, keeping whatever mode it had."""
    if not save_file:
        return
    with contextlib.suppress(OSError):
        path = Path(save_file.removeprefix("+")).expanduser()
        if path.is_file() and path.stat().st_uid == os.getuid():
            path.chmod(SECRET_MODE)


def private_file_problem(path: Path) -> str | None:
    """Why `path` is no file only its owner may read (a secret the gateway reads, such as the
    sidecar's master key file), or None when it is one: a regular file of this user, mode
    0600 or stricter."""
    try:
        info = path.stat()
    except OSError as error:
        return f"{path}: {error.strerror or error}"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file"
    if info.st_uid != os.getuid():
        return f"{path} belongs to another user: it must be yours, mode 0600"
    if (mode := stat.S_IMODE(info.st_mode)) & ~SECRET_MODE:
        return f"{path} is mode {mode:04o}, not 0600: it holds a secret (chmod 600 {path})"
    return None


class SaveFileMode:
    """Keeps `save_stream_file` 0600 whenever it is set (for `mitmdump -s addons/entry.py`)."""

    def configure(self, updated: set[str]) -> None:
        if "save_stream_file" in updated:
            tighten(getattr(ctx.options, "save_stream_file", None))
