"""`lmk usage`: usage and cost from the audit log."""

from __future__ import annotations

import argparse
import sqlite3

from llamakey.cli.common import Subparsers, load_settings, usage_error

SINCE_FORMATS = "7d, 24h, 30m or an ISO date or time (2025-01-31, 2025-01-31T12:00Z)"


def cmd_usage(args: argparse.Namespace) -> int:
    from llamakey import audit as auditdb  # the audit store: only for the commands that read it

    since = None
    if args.since is not None:  # a mistyped argument is said before anything is read
        try:
            since = auditdb.parse_since(args.since)
        except ValueError:
            usage_error(f"--since {args.since!r} is not a time: use {SINCE_FORMATS}")
    settings = load_settings(args.config)
    path = settings.audit_path
    if not path.exists():
        if not settings.file.audit.enabled:
            raise SystemExit(
                f"lmk: no audit database at {path}: auditing is off "
                f"(audit.enabled = false in {settings.path})"
            )
        raise SystemExit(
            f"lmk: no audit database at {path} yet: the proxy creates it on its first start "
            f"(`lmk serve`), or set audit.path in {settings.path} to where it is"
        )
    try:
        report = auditdb.usage_report(path, since=since, by=args.by)
    except (sqlite3.Error, OSError) as error:
        raise SystemExit(
            f"lmk: cannot read the audit database {path}: {error} "
            f"(check audit.path in {settings.path})"
        ) from None
    print(auditdb.format_report(report, args.format, by=args.by))
    return 0


def add_parser(subparsers: Subparsers) -> None:
    usage = subparsers.add_parser("usage", help="usage and cost from the audit log")
    usage.add_argument("--since", help=f"{SINCE_FORMATS} (default: everything)")
    usage.add_argument(
        "--by", default="user", choices=["user", "group", "provider", "model", "day"]
    )
    usage.add_argument("--format", default="table", choices=["table", "csv", "json"])
    usage.set_defaults(func=cmd_usage)
