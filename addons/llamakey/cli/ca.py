"""`lmk ca init`: the proxy's name-constrained CA and the client bundle; `lmk ca fingerprint`:
the SHA-256 a member checks the CA against (`lmk env --proxy URL --fingerprint SHA256`)."""

from __future__ import annotations

import argparse

from llamakey import ca
from llamakey.cli.common import Subparsers, load_settings


def cmd_ca_init(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    cert = ca.init_ca(settings.certs_dir, settings.index.host_patterns(), force=args.force)
    print(f"CA certificate: {cert}\nclient bundle:  {settings.certs_dir / ca.BUNDLE_FILE}")
    return 0


def cmd_ca_fingerprint(args: argparse.Namespace) -> int:
    """Print the fingerprint of the CA the proxy signs with (never creates one)."""
    settings = load_settings(args.config)
    try:
        pem = ca.ca_certificate_pem(settings.certs_dir)
        print(ca.fingerprint(ca.load_ca_certificate(pem)))
    except ca.CAError as error:
        raise SystemExit(f"lmk: {error}") from None
    return 0


def add_parser(subparsers: Subparsers) -> None:
    ca_parser = subparsers.add_parser("ca", help="the proxy's CA").add_subparsers(
        dest="ca_command", required=True
    )
    init = ca_parser.add_parser("init", help="create the name-constrained CA and the client bundle")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.set_defaults(func=cmd_ca_init)
    fingerprint = ca_parser.add_parser(
        "fingerprint",
        help="print the CA's SHA-256 fingerprint, for members to check (lmk env --fingerprint)",
    )
    fingerprint.set_defaults(func=cmd_ca_fingerprint)
