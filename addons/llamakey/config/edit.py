"""Edits of `lmk_config.toml` that keep its comments and layout (what `lmk keys new/revoke` do).

The file is read with tomlkit, changed in place, and written back only if it is still a valid
configuration, atomically (a temporary file renamed over it) and with the file's mode kept::

    doc = edit.open_document(path)
    edit.add_user(doc, "alice", credentials.key_sha256(key), ["research"])
    edit.save_document(path, doc)

A running proxy picks the change up on its next reload.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from pathlib import Path

import tomlkit

from llamakey.config.schema import ConfigError, parse
from llamakey.files import write_atomically


class UserExistsError(ConfigError):
    """`add_user`: there is already a [users.NAME] table."""


class NoSuchUserError(ConfigError):
    """`remove_user`: there is no [users.NAME] table."""


def open_document(path: Path) -> tomlkit.TOMLDocument:
    """The file as an editable tomlkit document; ConfigError if it does not exist."""
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    return tomlkit.parse(path.read_text(encoding="utf-8"))


def save_document(path: Path, doc: tomlkit.TOMLDocument) -> None:
    """Write `doc` to `path` only if it is still a valid configuration.

    Raises ConfigError (``not saved: …``, naming the bad TOML path) and leaves the file as it
    was otherwise. The text goes to ``PATH.tmp`` first, which then replaces the file in one
    rename, so a reader (the proxy's reload) sees the old file or the new one, never half of
    it. The new file has the old one's permission bits (a 0600 file stays 0600).
    """
    text = tomlkit.dumps(doc)
    try:
        parse(tomlkit.parse(text).unwrap(), str(path))
    except ConfigError as error:
        raise ConfigError(f"not saved: {error}") from None
    _replace(path, text)


def add_user(
    doc: tomlkit.TOMLDocument, name: str, key_sha256: str, groups: Iterable[str] = ()
) -> None:
    """Add ``[users.NAME]`` with the hash of the user's master key and their groups.

    A group without a ``[groups.GROUP]`` table gets an empty one. Raises UserExistsError,
    leaving `doc` unchanged, if the user is there already.
    """
    users = doc.setdefault("users", tomlkit.table(is_super_table=True))
    if name in users:
        raise UserExistsError(f"users.{name} exists")
    group_list = list(groups)
    known = doc.setdefault("groups", tomlkit.table(is_super_table=True))
    for group in group_list:
        if group not in known:
            known[group] = tomlkit.table()
    user = tomlkit.table()
    user["key_sha256"] = key_sha256
    if group_list:
        user["groups"] = group_list
    users[name] = user


def remove_user(doc: tomlkit.TOMLDocument, name: str) -> None:
    """Remove ``[users.NAME]`` (its groups stay); NoSuchUserError if there is none."""
    users = doc.get("users", {})
    if name not in users:
        raise NoSuchUserError(f"no user {name!r}")
    del users[name]


def _replace(path: Path, text: str) -> None:
    """Atomically replace `path` with `text`, keeping its permission bits if it exists (a
    planted symlink is replaced, never written through)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644  # the configuration holds no secret: key hashes only
    write_atomically(path, text, mode)
