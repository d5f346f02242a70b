"""`lmk sidecar`: run a local proxy that adds the credential for an application that cannot
be given a key, and forwards through the central proxy."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
from pathlib import Path

from llamakey import ca
from llamakey.cli.common import Subparsers, fail, usage_error
from llamakey.cli.env_remote import member_dir, parse_proxy_url

DEFAULT_LISTEN = "127.0.0.1:8090"
_KEY_HINT = "put the master key in a 0600 file and give it to --key-file"


def _listen(text: str) -> tuple[str, int]:
    """(host, port) of ``--listen HOST:PORT``, on a loopback address only: whoever reaches the
    sidecar uses its credential."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or int(port) > 65535:
        usage_error(f"--listen {text!r}: expected HOST:PORT, like {DEFAULT_LISTEN}")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        usage_error(
            f"--listen {text!r}: the sidecar listens on a loopback address only (127.0.0.1, "
            "::1): every client that reaches it is sent on with its credential"
        )
    return host, int(port)


def _central_ca(path: Path) -> Path:
    """The central proxy's CA certificate, checked to be one (the sidecar trusts it alone)."""
    try:
        ca.load_ca_certificate(path.read_bytes())
    except OSError as error:
        fail(f"--central-ca {path}: {error.strerror or error}")
    except ca.CAError as error:
        fail(f"--central-ca {path}: {error}")
    return path.resolve()


def cmd_sidecar(args: argparse.Namespace) -> int:
    from llamakey.sidecar import server  # mitmproxy's master: only for the command that runs it
    from llamakey.sidecar.sources import (
        CredentialSource,
        CredentialUnavailable,
        JwtCommand,
        MasterKeyFile,
    )

    central = parse_proxy_url(args.central, "--central", _KEY_HINT)
    settings = server.SidecarSettings(
        central=central,
        central_ca=_central_ca(args.central_ca),
        listen=_listen(args.listen),
        certs_dir=(args.certs_dir or member_dir(os.environ) / "sidecar").resolve(),
        proxy_auth=args.proxy_auth,
    )
    source: CredentialSource
    try:
        if args.key_file is not None:
            source = MasterKeyFile(args.key_file)
        else:
            command = JwtCommand(args.jwt_command)
            command.fetch()  # a command that does not work is said now, not at the first request
            source = command
    except CredentialUnavailable as error:
        fail(str(error))
    status: int = asyncio.run(server.run(settings, source))
    return status


def add_parser(subparsers: Subparsers) -> None:
    run = subparsers.add_parser(
        "sidecar",
        help="a local proxy adding the credential for an application that cannot hold a key",
        description=(
            "Listen on loopback for an application that sets only HTTPS_PROXY and trusts the "
            "sidecar's CA; add the credential to its provider requests and forward them "
            "through the central LlaMaKey proxy, verified against the central proxy's CA."
        ),
    )
    run.add_argument(
        "--central", required=True, metavar="http://HOST:PORT", help="the central proxy"
    )
    run.add_argument(
        "--central-ca",
        required=True,
        type=Path,
        metavar="PEM",
        help="the central proxy's CA certificate (lmk env --proxy fetches it, checked)",
    )
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--key-file", type=Path, metavar="PATH", help="a master key, in a file of mode 0600"
    )
    source.add_argument(
        "--jwt-command",
        metavar="COMMAND",
        help="a command printing a JWT; run again before the token's exp",
    )
    run.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"a loopback address (default {DEFAULT_LISTEN})",
    )
    run.add_argument(
        "--certs-dir",
        type=Path,
        metavar="DIR",
        help="the sidecar's own CA (default ~/.config/llamakey/sidecar)",
    )
    run.add_argument(
        "--proxy-auth",
        action="store_true",
        help="also send the credential as proxy credentials on every CONNECT to the central "
        "proxy (needed when it has proxy_auth = true; in clear on that hop)",
    )
    run.set_defaults(func=cmd_sidecar)
