"""Edits that keep a file's comments and layout: the users file (what `lmk keys` does), and the
configuration itself.

A file is read with tomlkit, changed in place, and written back only if it is still valid,
atomically (a temporary file renamed over it). The users file is always written mode 0600::

    with edit.users_lock(users_path):
        doc = edit.open_users(users_path)
        edit.add_user(doc, "alice", credentials.key_sha256(key), ["research"])
        edit.save_users(users_path, doc, settings.file, settings.path)

A running proxy picks the change up on its next reload (within a second).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import tomlkit
import tomlkit.exceptions
from tomlkit.items import AbstractTable

from llamakey.config.load import resolve_users
from llamakey.config.schema import (
    DEFAULT_CONFIG_NAME,
    ConfigError,
    ConfigFile,
    parse,
    parse_users,
)
from llamakey.files import write_atomically

USERS_MODE = 0o600

USERS_HEADER = f"""\
# LlaMaKey users, managed by `lmk keys` (new, rotate, disable, enable, revoke, list).
# Each [users.NAME] holds only the SHA-256 of the user's master key, never the key. Groups are
# policy and are defined in the tracked {DEFAULT_CONFIG_NAME} ([groups.G]). Keep this file out of
# git; it stays mode 0600. Hand edits are fine: a running proxy picks them up within a second.
"""


class UserExistsError(ConfigError):
    """`add_user`: there is already a [users.NAME] table."""


class NoSuchUserError(ConfigError):
    """There is no [users.NAME] table."""


@dataclass(frozen=True, slots=True)
class Removed:
    """What `remove_user` removed."""

    name: str
    groups: tuple[str, ...]
    expires: date | datetime | None
    disabled: bool


# The users file


@contextlib.contextmanager
def users_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for a read-modify-write of the users file at `path`.

    Two `lmk keys` at once would otherwise each write their own edit over the other's (a
    revoked user could come back). The lock is taken on the file's directory, so no lock file
    is left behind; it is released when the block ends, or when the process does.
    """
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def open_users(path: Path) -> tomlkit.TOMLDocument:
    """The users file as an editable document; a new one (a commented header) if it does not
    exist yet. ConfigError, naming the file, if it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return tomlkit.parse(USERS_HEADER)
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text: {error.reason}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    return _parse(path, text)


def save_users(
    path: Path,
    doc: tomlkit.TOMLDocument,
    config_file: ConfigFile,
    config_path: Path | None,
) -> None:
    """Write `doc` to the users file at `path`, mode 0600, only if it is still valid on its own
    and together with the configuration `config_file` (read from `config_path`): its groups
    exist there, no name is in both files, no key is shared.

    Raises ConfigError (``not saved: …``, naming the file and the bad TOML path) and leaves the
    file as it was otherwise. The replacement is atomic (`write_atomically`): a reader (the
    proxy's reload) sees the old file or the new one, never half of it. Blank lines at the end
    (what a removed table leaves) are dropped.
    """
    text = tomlkit.dumps(doc).rstrip("\n") + "\n"
    try:
        users = parse_users(tomlkit.parse(text).unwrap(), str(path))
        resolve_users(config_file, users, str(config_path or DEFAULT_CONFIG_NAME), str(path))
    except ConfigError as error:
        raise ConfigError(f"not saved: {error}") from None
    write_atomically(path, text, USERS_MODE)


def add_user(
    doc: tomlkit.TOMLDocument,
    name: str,
    key_sha256: str | None,
    groups: Iterable[str] = (),
    expires: date | None = None,
    jwt_subject: str | None = None,
) -> None:
    """Add ``[users.NAME]`` with the hash of the user's master key and/or the JWT identity
    that is them (`jwt_subject`), their groups and expiry.

    Raises UserExistsError, leaving `doc` unchanged, if the user is there already.
    """
    users = doc.get("users")
    if users is None:
        users = tomlkit.table(is_super_table=True)
        doc["users"] = users
    elif not isinstance(users, AbstractTable):
        raise ConfigError("users: expected a table of [users.NAME] tables")
    if name in users:
        raise UserExistsError(f"users.{name} exists")
    user = tomlkit.table()
    if key_sha256 is not None:
        user["key_sha256"] = key_sha256
    if jwt_subject is not None:
        user["jwt_subject"] = jwt_subject
    if group_list := list(dict.fromkeys(groups)):
        user["groups"] = group_list
    if expires is not None:
        user["expires"] = expires
    users[name] = user


def user_table(doc: tomlkit.TOMLDocument, name: str) -> AbstractTable:
    """The ``[users.NAME]`` table (or inline table) of `doc`, to change in place;
    NoSuchUserError if there is none."""
    users = doc.get("users")
    table = users.get(name) if isinstance(users, AbstractTable) else None
    if not isinstance(table, AbstractTable):
        raise NoSuchUserError(f"no user {name!r}")
    return table


def set_key(doc: tomlkit.TOMLDocument, name: str, key_sha256: str) -> None:
    """Replace the user's key hash (the old key stops working); NoSuchUserError if none."""
    user_table(doc, name)["key_sha256"] = key_sha256


def set_disabled(doc: tomlkit.TOMLDocument, name: str, disabled: bool) -> bool:
    """Disable or enable the user; False if they already were. NoSuchUserError if none.

    Enabling removes the ``disabled`` line (false is the default)."""
    user = user_table(doc, name)
    if bool(user.get("disabled", False)) == disabled:
        return False
    if disabled:
        user["disabled"] = True
    else:
        del user["disabled"]
    return True


def remove_user(doc: tomlkit.TOMLDocument, name: str) -> Removed:
    """Remove ``[users.NAME]`` and say what it held; NoSuchUserError if there is none."""
    user = user_table(doc, name).unwrap()
    removed = Removed(
        name=name,
        groups=tuple(user.get("groups", ())),
        expires=user.get("expires"),
        disabled=bool(user.get("disabled", False)),
    )
    del doc["users"][name]
    return removed


# The configuration


def open_document(path: Path) -> tomlkit.TOMLDocument:
    """The config file as an editable tomlkit document; ConfigError if it does not exist."""
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    return _parse(path, path.read_text(encoding="utf-8"))


def save_document(path: Path, doc: tomlkit.TOMLDocument) -> None:
    """Write `doc` to the config file `path` only if it is still a valid configuration.

    Raises ConfigError (``not saved: …``, naming the bad TOML path) and leaves the file as it
    was otherwise. The replacement is atomic and keeps the file's permission bits.
    """
    text = tomlkit.dumps(doc)
    try:
        parse(tomlkit.parse(text).unwrap(), str(path))
    except ConfigError as error:
        raise ConfigError(f"not saved: {error}") from None
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644  # the configuration holds no secret
    write_atomically(path, text, mode)


def _parse(path: Path, text: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
