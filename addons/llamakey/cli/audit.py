"""`lmk audit verify`: check the audit log's hash chain."""

from __future__ import annotations

import argparse

from llamakey.cli.common import Subparsers, load_settings


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from llamakey import audit as auditdb  # the audit store: only for the commands that read it

    settings = load_settings(args.config)
    result = auditdb.verify(settings.audit_path)
    if result.ok:
        print(
            f"ok: {result.rows_checked} rows chained, {result.unfinished} unfinished"
            f"{f', head {result.head_hash}' if result.head_hash else ''}"
        )
        return 0
    print(
        f"TAMPERED: row {result.first_bad_id} was {result.problem} "
        f"({result.rows_checked} rows checked before it)"
    )
    return 1


def add_parser(subparsers: Subparsers) -> None:
    audit = subparsers.add_parser("audit", help="the audit log").add_subparsers(
        dest="audit_command", required=True
    )
    audit.add_parser(
        "verify", help="check the hash chain; name the first altered, inserted or deleted row"
    ).set_defaults(func=cmd_audit_verify)
