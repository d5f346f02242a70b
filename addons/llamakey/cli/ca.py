"""`lmk ca init`: the proxy's name-constrained CA and the client bundle."""

from __future__ import annotations

import argparse

from llamakey import ca
from llamakey.cli.common import Subparsers, load_settings


def cmd_ca_init(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    cert = ca.init_ca(settings.certs_dir, settings.index.host_patterns(), force=args.force)
    print(f"CA certificate: {cert}\nclient bundle:  {settings.certs_dir / ca.BUNDLE_FILE}")
    return 0


def add_parser(subparsers: Subparsers) -> None:
    ca_parser = subparsers.add_parser("ca", help="the proxy's CA").add_subparsers(
        dest="ca_command", required=True
    )
    init = ca_parser.add_parser("init", help="create the name-constrained CA and the client bundle")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.set_defaults(func=cmd_ca_init)
