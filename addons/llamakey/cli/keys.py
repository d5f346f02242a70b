"""`lmk keys new/list/revoke`: the users' master keys, kept in the file as SHA-256 only."""

from __future__ import annotations

import argparse
import sys

from llamakey import config, credentials
from llamakey.cli.common import Subparsers, load_settings
from llamakey.config import edit


def cmd_keys_new(args: argparse.Namespace) -> int:
    try:
        doc = edit.open_document(args.config)
        key = credentials.new_master_key()
        edit.add_user(doc, args.name, credentials.key_sha256(key), args.group or [])
        edit.save_document(args.config, doc)
    except edit.UserExistsError:
        raise SystemExit(
            f"lmk: users.{args.name} exists; `lmk keys revoke {args.name}` first"
        ) from None
    except config.ConfigError as error:
        raise SystemExit(f"lmk: {error}") from None
    print(key)
    print(
        f"# The master key of {args.name!r}, shown once; only its SHA-256 is kept in "
        f"{args.config}.\n# Client set-up: LMK_MASTER_KEY=... lmk env {args.name}",
        file=sys.stderr,
    )
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    for user in sorted(settings.users_by_hash.values(), key=lambda u: u.name):
        state = (
            "disabled"
            if user.disabled
            else (f"expires {user.expires:%Y-%m-%d}" if user.expires else "active")
        )
        print(
            f"{user.name:<20} {state:<20} groups: {', '.join(user.groups) or '-'}  "
            f"sha256: {user.key_sha256[:12]}..."
        )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    try:
        doc = edit.open_document(args.config)
        edit.remove_user(doc, args.name)
        edit.save_document(args.config, doc)
    except edit.NoSuchUserError:
        raise SystemExit(f"lmk: no user {args.name!r} in {args.config}") from None
    except config.ConfigError as error:
        raise SystemExit(f"lmk: {error}") from None
    print(f"revoked {args.name}: a running proxy refuses the key from its next request")
    return 0


def add_parser(subparsers: Subparsers) -> None:
    keys = subparsers.add_parser("keys", help="master keys").add_subparsers(
        dest="keys_command", required=True
    )
    new = keys.add_parser("new", help="create a user's master key (printed once)")
    new.add_argument("name")
    new.add_argument("--group", action="append", help="add the user to this group (repeatable)")
    new.set_defaults(func=cmd_keys_new)
    keys.add_parser("list", help="list users").set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="remove a user's key")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_keys_revoke)
