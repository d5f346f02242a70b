"""`lmk serve` and `lmk web`: run the proxy, without or with mitmweb's UI."""

from __future__ import annotations

import argparse
import asyncio
import errno
import socket
import sys
from collections.abc import Sequence

from llamakey import config
from llamakey.cli.common import Subparsers, one_line


def _overrides(sets: Sequence[str]) -> dict[str, str]:
    """The ``--set NAME=VALUE`` options, by name (the last one wins, as with mitmproxy)."""
    found: dict[str, str] = {}
    for item in sets:
        name, sep, value = item.partition("=")
        if sep:
            found[name.strip()] = value.strip()
    return found


def _port_problem(host: str, port: int, setting: str, option: str, path: object) -> str | None:
    """Why the proxy could not listen on ``host:port``, as one line naming the setting; None
    when it can (or when only trying would tell). A listening socket is what makes a port
    taken, so the probe binds as mitmproxy does (``SO_REUSEADDR``) and closes at once."""
    if port == 0:
        return None
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return None  # mitmproxy says what is wrong with the host
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                where = f"{host or '*'}:{port}"
                if error.errno == errno.EADDRINUSE:
                    return (
                        f"port {port} is already in use on {host or 'every address'} "
                        f"(another `lmk serve` or `lmk web`?): stop it, or set {setting} in "
                        f"{path} (or --set {option}=PORT)"
                    )
                host_setting = setting.replace("_port", "_host")
                return (
                    f"cannot listen on {where}: {error.strerror or error}: check {host_setting} "
                    f"and {setting} in {path}"
                )
    return None


def _check_ports(settings: config.Settings, sets: Sequence[str], *, web: bool) -> str | None:
    """The first port the proxy (and mitmweb's UI) would fail to listen on, said as one line."""
    proxy = settings.file.proxy
    given = _overrides(sets)
    wanted = [("listen", proxy.listen_host, proxy.listen_port, "proxy.listen_port")]
    if web:
        wanted.append(("web", proxy.web_host, proxy.web_port, "proxy.web_port"))
    for prefix, host, port, setting in wanted:
        host = given.get(f"{prefix}_host", host)
        try:
            port = int(given.get(f"{prefix}_port", port))
        except ValueError:
            continue  # a bad --set: mitmproxy refuses it with its own message
        problem = _port_problem(host, port, setting, f"{prefix}_port", settings.path)
        if problem:
            return problem
    return None


def cmd_serve(args: argparse.Namespace) -> int:
    from mitmproxy import exceptions

    from llamakey import server  # mitmproxy's master: only for the commands that run it

    sets = list(args.set or [])
    if args.save:
        sets.append(f"save_stream_file={args.save}")
    if args.quiet:
        sets.append("lmk_quiet=true")
    web = args.command == "web"
    try:
        if problem := _check_ports(config.load(args.config), sets, web=web):
            print(f"lmk: {problem}", file=sys.stderr)
            return 1
        status: int = asyncio.run(server.run(args.config, sets, web=web))
        return status
    except (config.ConfigError, exceptions.OptionsError) as error:
        # The configuration (or the CA it needs) is wrong: a failure, as with `lmk check`.
        print(f"lmk: {one_line(str(error))}", file=sys.stderr)
        return 1


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
        run.add_argument(
            "-q",
            "--quiet",
            action="store_true",
            help="no line per request (time, user, provider, model, status, tokens, cost)",
        )
        run.set_defaults(func=cmd_serve)
