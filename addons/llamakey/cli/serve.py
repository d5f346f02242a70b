"""`lmk serve` and `lmk web`: run the proxy, without or with mitmweb's UI."""

from __future__ import annotations

import argparse
import asyncio
import sys

from llamakey import config
from llamakey.cli.common import Subparsers


def cmd_serve(args: argparse.Namespace) -> int:
    from llamakey import server  # mitmproxy's master: only for the commands that run it

    sets = list(args.set or [])
    if args.save:
        sets.append(f"save_stream_file={args.save}")
    try:
        status: int = asyncio.run(server.run(args.config, sets, web=args.command == "web"))
        return status
    except config.ConfigError as error:
        print(f"lmk: {error}", file=sys.stderr)
        return 2


def add_parser(subparsers: Subparsers) -> None:
    for name, text in (
        ("serve", "run the proxy (mitmdump-style)"),
        ("web", "run the proxy with mitmweb's UI on loopback, token-protected"),
    ):
        run = subparsers.add_parser(name, help=text)
        run.add_argument(
            "--set",
            action="append",
            metavar="OPTION=VALUE",
            help="a mitmproxy option, as with mitmdump --set",
        )
        run.add_argument("-w", "--save", metavar="FILE", help="save flows to FILE (redacted)")
        run.set_defaults(func=cmd_serve)
