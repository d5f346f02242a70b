"""`lmk keys new/rotate/disable/enable/revoke/list`: users and their master keys.

Users live in the users file (`proxy.users_file`, default ``lmk_users.toml`` beside the
config: git-ignored, mode 0600), which holds only the SHA-256 of each key. The tracked config
is never written: its ``[groups]`` are read (a user's groups must be defined there), and users
it still holds in ``[users]`` (older files) are listed but not edited.

Arguments that are wrong on their face (a bad name or date) are usage errors (status 2); what
conflicts with the files (no such user, a user that exists, an unknown group) fails with 1.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path

import tomlkit

from llamakey import config, credentials
from llamakey.cli.common import Subparsers, expiry_text, load_settings, text_table, usage_error
from llamakey.config import edit

NEXT_REQUEST = "a running proxy refuses the key from its next request (it reloads every second)"


def _check_name(name: str) -> None:
    if not config.is_user_name(name):
        usage_error(f"{name!r} is not a user name: expected {config.USER_NAME_RULE}")


def _expiry(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError
        expires = date.fromisoformat(text)
    except ValueError:
        usage_error(f"--expires {text!r}: expected a date, YYYY-MM-DD")
    if expires <= datetime.now(UTC).date():
        usage_error(
            f"--expires {text}: expected a date after today (the key is refused from "
            "00:00 UTC that day)"
        )
    return expires


def _fail(message: str) -> SystemExit:
    return SystemExit(f"lmk: {message}")


@contextmanager
def _users_file(config_path: Path) -> Iterator[tuple[config.Settings, tomlkit.TOMLDocument]]:
    """The settings and the users file as an editable document, under the users file's lock;
    the document is saved (validated, 0600) when the block ends without an exception."""
    users_path = load_settings(config_path).users_path
    try:
        with edit.users_lock(users_path):
            settings = load_settings(config_path)  # again, now that no other edit runs
            doc = edit.open_users(settings.users_path)
            yield settings, doc
            edit.save_users(settings.users_path, doc, settings.file, settings.path)
    except config.ConfigError as error:
        raise _fail(str(error)) from None
    except OSError as error:
        raise _fail(f"{users_path}: cannot write: {error.strerror or error}") from None


class _Unchanged(Exception):
    """Leave the users file as it is (the change asked for was there already)."""


def _edit_user(
    args: argparse.Namespace, change: Callable[[config.Settings, tomlkit.TOMLDocument], None]
) -> config.Settings:
    """Run `change` on the users file for the existing user `args.name`, then save it.

    A user that is only in the tracked config, or nowhere, fails with one line."""
    _check_name(args.name)
    try:
        with _users_file(args.config) as (settings, doc):
            if args.name in settings.file.users:
                raise _fail(
                    f"users.{args.name} is in {settings.path}, which `lmk keys` does not edit: "
                    f"move its [users.{args.name}] table to {settings.users_path}, or edit it "
                    "there"
                )
            try:
                change(settings, doc)
            except edit.NoSuchUserError:
                raise _fail(
                    f"no user {args.name!r} in {settings.users_path} (`lmk keys list` lists them)"
                ) from None
    except _Unchanged:
        pass
    return settings


def _key_lines(name: str, settings: config.Settings, what: str) -> str:
    return (
        f"# {what} of {name!r}, shown once; only its SHA-256 is kept in "
        f"{settings.users_path}.\n# Client set-up: LMK_MASTER_KEY=... lmk env {name}"
    )


def cmd_keys_new(args: argparse.Namespace) -> int:
    _check_name(args.name)
    expires = _expiry(args.expires)
    groups = list(dict.fromkeys(args.group or []))
    subject: str | None = args.jwt_subject
    if subject is not None and not subject.strip():
        usage_error("--jwt-subject: give the identity claim's value (e.g. the user's oid)")
    key = None if subject is not None else credentials.new_master_key()
    with _users_file(args.config) as (settings, doc):
        if args.name in settings.file.users:
            raise _fail(f"users.{args.name} exists in {settings.path}")
        if args.name in doc.get("users", {}):
            raise _fail(
                f"users.{args.name} exists in {settings.users_path}; `lmk keys rotate "
                f"{args.name}` gives a new key, `lmk keys revoke {args.name}` removes the user"
            )
        for group in groups:
            if group not in settings.file.groups:
                raise _fail(
                    f"users.{args.name}.groups: no group {group!r}; add a [groups.{group}] "
                    f"table to {settings.path} first"
                )
        digest = credentials.key_sha256(key) if key is not None else None
        edit.add_user(doc, args.name, digest, groups, expires, subject)
    if key is None:
        print(
            f"# {args.name} is the JWT identity {subject!r} ([jwt] identity_claim), with no "
            f"master key (`lmk keys rotate {args.name}` gives one).",
            file=sys.stderr,
        )
        return 0
    print(key)
    print(_key_lines(args.name, settings, "The master key"), file=sys.stderr)
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    key = credentials.new_master_key()
    refusal: list[str] = []

    def rotate(settings: config.Settings, doc: tomlkit.TOMLDocument) -> None:
        edit.set_key(doc, args.name, credentials.key_sha256(key))
        user = _user_named(settings, args.name)
        if user is not None and (why := user.refusal(datetime.now(UTC))):
            refusal.append(why)

    settings = _edit_user(args, rotate)
    print(key)
    print(_key_lines(args.name, settings, "The new master key"), file=sys.stderr)
    print(f"# The old key is refused from now on: {NEXT_REQUEST}.", file=sys.stderr)
    if refusal:
        print(f"# {args.name} is {refusal[0]}: the new key is refused too.", file=sys.stderr)
    return 0


def cmd_keys_disable(args: argparse.Namespace) -> int:
    return _set_disabled(args, True)


def cmd_keys_enable(args: argparse.Namespace) -> int:
    return _set_disabled(args, False)


def _set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    word = "disabled" if disabled else "enabled"
    changed: list[bool] = []

    def change(settings: config.Settings, doc: tomlkit.TOMLDocument) -> None:
        changed.append(edit.set_disabled(doc, args.name, disabled))
        if not changed[-1]:
            raise _Unchanged

    settings = _edit_user(args, change)
    if not changed[-1]:
        print(f"{args.name} was already {word}")
    elif disabled:
        print(f"disabled {args.name}: {NEXT_REQUEST}")
    else:
        print(f"enabled {args.name}: a running proxy accepts the key from its next reload")
    user = _user_named(settings, args.name)
    if (
        not disabled
        and user is not None
        and user.expires is not None
        and datetime.now(UTC) >= user.expires
    ):
        print(
            f"# {args.name} expired on {expiry_text(user.expires)}, so the key stays refused: "
            f"move users.{args.name}.expires in {settings.users_path} to let it in",
            file=sys.stderr,
        )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    removed: list[edit.Removed] = []

    def revoke(settings: config.Settings, doc: tomlkit.TOMLDocument) -> None:
        removed.append(edit.remove_user(doc, args.name))

    _edit_user(args, revoke)
    (user,) = removed
    expires = expiry_text(user.expires) if user.expires is not None else "never"
    disabled = ", was disabled" if user.disabled else ""
    print(
        f"revoked {user.name} (groups: {', '.join(user.groups) or 'none'}; expires: {expires}"
        f"{disabled}): {NEXT_REQUEST}"
    )
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    now = datetime.now(UTC)
    rows = [("NAME", "GROUPS", "STATUS", "EXPIRES")]
    for user in sorted(settings.users.values(), key=lambda u: u.name):
        rows.append(
            (
                user.name,
                ",".join(user.groups) or "-",
                user.refusal(now) or "active",
                expiry_text(user.expires) if user.expires is not None else "-",
            )
        )
    print(text_table(rows), end="")
    legacy = sorted(settings.file.users)
    if legacy:
        print(
            f"# in {settings.path} (not edited by `lmk keys`): {', '.join(legacy)}; "
            f"the others are in {settings.users_path}",
            file=sys.stderr,
        )
    return 0


def _user_named(settings: config.Settings, name: str) -> config.User | None:
    return settings.users.get(name)


def add_parser(subparsers: Subparsers) -> None:
    keys = subparsers.add_parser(
        "keys", help="users and their master keys (kept in the users file)"
    ).add_subparsers(dest="keys_command", required=True)
    new = keys.add_parser("new", help="add a user and print their master key (once)")
    new.add_argument("name")
    new.add_argument(
        "--group", action="append", help="a group of lmk_config.toml [groups] (repeatable)"
    )
    new.add_argument(
        "--expires", metavar="YYYY-MM-DD", help="the key is refused from 00:00 UTC that day"
    )
    new.add_argument(
        "--jwt-subject",
        metavar="VALUE",
        help="a JWT identity instead of a master key: the value of [jwt] identity_claim",
    )
    new.set_defaults(func=cmd_keys_new)
    for name, func, text in (
        ("rotate", cmd_keys_rotate, "give a user a new key (printed once); the old one is refused"),
        ("disable", cmd_keys_disable, "refuse a user's key until `lmk keys enable`"),
        ("enable", cmd_keys_enable, "accept a disabled user's key again"),
        ("revoke", cmd_keys_revoke, "remove a user and their key"),
    ):
        sub = keys.add_parser(name, help=text)
        sub.add_argument("name")
        sub.set_defaults(func=func)
    keys.add_parser("list", help="list users: name, groups, status, expiry").set_defaults(
        func=cmd_keys_list
    )
