"""What the command modules share: loading the configuration, the client env file's name,
the master key's variable, usage errors and failures, writing a private file that a planted
symlink cannot redirect, and the text tables and expiry dates `lmk keys` and `lmk status`
print."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import NoReturn

from llamakey import config
from llamakey.files import NotAFileError, write_atomically

# What `ArgumentParser.add_subparsers()` returns; each command module adds its parsers to it.
type Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

ENV_FILE = "llamakey_local.env"
# Where lmk takes a master key from (or a prompt): never argv, which every local user can read.
KEY_VARIABLE = "LMK_MASTER_KEY"

_PRIVATE_MODE = 0o600


def one_line(text: str) -> str:
    """A message of several lines (a configuration error lists each bad setting on its own) as
    one: ``first: second; third``."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    return f"{lines[0].rstrip(':')}: {'; '.join(lines[1:])}"


def load_settings(path: Path) -> config.Settings:
    """The resolved configuration, or exit with its error (one line ``lmk: …``, status 1)."""
    try:
        return config.load(path)
    except config.ConfigError as error:
        raise SystemExit(f"lmk: {one_line(str(error))}") from None


def usage_error(message: str) -> NoReturn:
    """Exit with status 2 (a usage error, as argparse's own), after one line ``lmk: message``."""
    print(f"lmk: {message}", file=sys.stderr)
    raise SystemExit(2)


def fail(message: str) -> NoReturn:
    """Exit with status 1 and the one line ``lmk: message``."""
    raise SystemExit(f"lmk: {message}")


PrivateFileError = NotAFileError


def write_private_file(path: Path, text: str) -> None:
    """Atomically replace `path` with a regular 0600 file holding `text` (`write_atomically`)."""
    write_atomically(path, text, 0o600)


def expiry_text(moment: date | datetime) -> str:
    """An expiry as written: a day (``2027-01-01``), or an instant when it is not midnight."""
    if isinstance(moment, datetime) and (moment.hour, moment.minute, moment.second) != (0, 0, 0):
        return moment.strftime("%Y-%m-%dT%H:%M:%S%z")
    return moment.strftime("%Y-%m-%d")


def text_table(rows: Sequence[tuple[str, ...]]) -> str:
    """`rows` (the first one the headings) as left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in rows
    )
