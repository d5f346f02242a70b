"""`lmk audit browse`: the audit log in Datasette, read-only, on loopback, with canned queries
(:mod:`llamakey.browse`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llamakey.cli.common import Subparsers, load_settings, usage_error


def cmd_audit_browse(args: argparse.Namespace) -> int:
    from llamakey.browse import server  # Datasette and the snapshot: only for this command

    try:
        host = server.check_loopback(args.host)
    except ValueError as error:
        usage_error(str(error))
    database: Path = args.db if args.db is not None else load_settings(args.config).audit_path

    def ready(served: server.Served) -> None:
        print(
            f"Serving a read-only snapshot of {served.source} taken {served.taken}"
            " (restart to see newer rows; Ctrl-C stops). Open:",
            flush=True,
        )
        print(served.url, flush=True)

    try:
        return server.serve(database, host=host, port=args.port, on_ready=ready)
    except server.BrowseError as error:
        raise SystemExit(f"lmk: {error}") from None


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return port


def add_parser(subparsers: Subparsers) -> None:
    """Add ``browse`` to the ``audit`` group (made by :mod:`llamakey.cli.audit`, before)."""
    from llamakey import browse

    audit = subparsers.choices["audit"]
    (commands,) = [a for a in audit._actions if isinstance(a, argparse._SubParsersAction)]
    parser = commands.add_parser(
        "browse",
        help="the audit log in Datasette (read-only, loopback only), with canned queries",
        description="Serve a read-only snapshot of the audit database with Datasette on "
        f"loopback, with canned queries, and print its address. Needs {browse.INSTALL_HINT}.",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=browse.DEFAULT_PORT,
        help=f"port to listen on (default: {browse.DEFAULT_PORT}; 0: any free port)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="loopback address to listen on: 127.0.0.1 (default), another 127.x address or ::1",
    )
    parser.add_argument(
        "--db", type=Path, help="audit database to browse (default: the configured audit.path)"
    )
    parser.set_defaults(func=cmd_audit_browse)
