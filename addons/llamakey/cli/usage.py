"""`lmk usage`: usage and cost from the audit log."""

from __future__ import annotations

import argparse

from llamakey.cli.common import Subparsers, load_settings


def cmd_usage(args: argparse.Namespace) -> int:
    from llamakey import audit as auditdb  # the audit store: only for the commands that read it

    settings = load_settings(args.config)
    if not settings.audit_path.exists():
        raise SystemExit(f"lmk: no audit database at {settings.audit_path} yet")
    since = auditdb.parse_since(args.since) if args.since else None
    report = auditdb.usage_report(settings.audit_path, since=since, by=args.by)
    print(auditdb.format_report(report, args.format))
    return 0


def add_parser(subparsers: Subparsers) -> None:
    usage = subparsers.add_parser("usage", help="usage and cost from the audit log")
    usage.add_argument("--since", help="7d, 24h, 30m or an ISO date (default: everything)")
    usage.add_argument(
        "--by", default="user", choices=["user", "group", "provider", "model", "day"]
    )
    usage.add_argument("--format", default="table", choices=["table", "csv", "json"])
    usage.set_defaults(func=cmd_usage)
