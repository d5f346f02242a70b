"""`lmk audit verify`: check the audit log's hash chain, and the database against its head file."""

from __future__ import annotations

import argparse

from llamakey.cli.common import Subparsers, load_settings


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from llamakey import audit as auditdb  # the audit store: only for the commands that read it

    settings = load_settings(args.config)
    try:
        result = auditdb.verify(settings.audit_path, head=not args.no_head)
    except (auditdb.MissingDatabase, auditdb.UnreadableDatabase) as error:
        raise SystemExit(f"lmk: {error}") from None
    if result.problem is None:
        chained = (
            f"{result.rows_checked} rows chained, {result.unfinished} unfinished"
            f"{f', head {result.head_hash}' if result.head_hash else ''}"
        )
        if result.ok:
            print(f"ok: {chained}{'' if result.head_checked else ' (head file not checked)'}")
            return 0
        print(f"chain intact: {chained}")
    else:
        print(
            f"TAMPERED: row {result.first_bad_id} was {result.problem} "
            f"({result.rows_checked} rows checked before it)"
        )
    for finding in result.head_findings:
        label = "UNANCHORED" if finding.kind == "missing" else "TAMPERED"
        print(f"{label}: {finding.message}")
    if any(f.kind == "missing" for f in result.head_findings):
        print("(lmk audit verify --no-head checks the chain alone, e.g. on a copy of the database)")
    return 1


def add_parser(subparsers: Subparsers) -> None:
    audit = subparsers.add_parser("audit", help="the audit log").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser(
        "verify",
        help="check the hash chain and the head file; name the first altered, inserted or"
        " deleted row, deleted newest rows, a replaced database",
    )
    verify.add_argument(
        "--no-head",
        action="store_true",
        help="check the chain inside the database only, not against its head file (for a copy"
        " of the database, or one from before head files)",
    )
    verify.set_defaults(func=cmd_audit_verify)
