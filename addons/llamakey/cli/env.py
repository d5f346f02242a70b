"""`lmk env`: a client's environment (proxy, CA bundle, SDK keys), printed and written.

Two ways to get it. `lmk env NAME` on a machine with the admin's configuration and CA.
`lmk env --proxy URL` on any machine, with nothing of the admin's: it asks the proxy itself,
at the onboarding address `http://lmk.invalid/` reached through the proxy, for the CA
certificate (checked against `--fingerprint`, else trusted on first use, loudly) and for the
environment, which the proxy computes with `client_environment` (`llamakey.clientenv`) as
`lmk env NAME` does; `cli/env_remote.py` asks and checks the answer. The CA, a client bundle
(system roots + our CA) and the env file go to the member's own config directory, each 0600.

The master key is read from ``$LMK_MASTER_KEY`` or, in a terminal, from a prompt that does not
echo: never from the command line, which every local user can read in ``/proc/PID/cmdline``.
The proxy's answer never holds it (`KEY_PLACEHOLDER` stands where it goes): it is put in here.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from llamakey import ca, config, credentials
from llamakey.cli.common import (
    ENV_FILE,
    KEY_VARIABLE,
    PrivateFileError,
    Subparsers,
    fail,
    load_settings,
    usage_error,
    write_private_file,
)
from llamakey.cli.env_remote import MEMBER_ENV_FILE, ask_proxy, member_dir, parse_proxy_url
from llamakey.clientenv import KEY_PLACEHOLDER, client_environment, export_lines, proxy_authority
from llamakey.files import write_atomically

ARGV_WARNING = (
    "lmk: warning: --key puts the master key in this process's arguments, which every local "
    f"user can read; use {KEY_VARIABLE}=... lmk env NAME, or run lmk env NAME in a terminal"
)


def read_master_key(
    name: str | None,
    environ: Mapping[str, str],
    stdin: TextIO,
    prompt: Callable[[str], str] = getpass.getpass,
    *,
    command: str | None = None,
) -> str:
    """The master key: ``$LMK_MASTER_KEY``, else typed at a prompt without echo (stdin a tty).

    With neither, a usage error (status 2) saying how to give it (`command`: the command to
    show, by default ``lmk env NAME``).
    """
    key = environ.get(KEY_VARIABLE, "").strip()
    if key:
        return key
    command = command or f"lmk env {name}"
    how = f"{KEY_VARIABLE}=lmk_... {command}, or run it in a terminal to be prompted"
    if not stdin.isatty():
        usage_error(f"no master key: give it as {how}")
    try:
        key = prompt(f"master key of {name}: " if name else "master key: ").strip()
    except EOFError:
        key = ""
    except KeyboardInterrupt:
        print(file=sys.stderr)
        raise SystemExit(130) from None
    if not key:
        usage_error(f"no master key typed: give it as {how}")
    return key


def _check_ca(settings: config.Settings) -> None:
    """Exit (status 1) unless the CA certificate and the client bundle holding it exist.

    `lmk env` never creates a CA: one made here would not be the CA a running proxy signs with,
    and its clients would fail to verify. Only `lmk ca init` and the proxy's first start do.
    """
    certs = settings.certs_dir
    todo = "run `lmk ca init`, or start the proxy once (`lmk serve`), then lmk env again"
    try:
        ours = (certs / ca.CA_CERT_FILE).read_bytes()
        bundle = (certs / ca.BUNDLE_FILE).read_bytes()
    except FileNotFoundError as missing:
        raise SystemExit(f"lmk: no CA yet ({missing.filename} is missing): {todo}") from None
    except OSError as error:
        raise SystemExit(f"lmk: cannot read the CA: {error}") from None
    if ours.strip() not in bundle:
        raise SystemExit(
            f"lmk: {certs / ca.BUNDLE_FILE} does not hold the CA in {certs / ca.CA_CERT_FILE}: "
            f"{todo}"
        )


def _print_exports(lines: list[str]) -> None:
    """Print to stdout; a reader that stops early (``| head -1``) is not an error."""
    try:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # Nothing more can go there, and the interpreter's own flush at exit must not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _write_env_file(out: Path, lines: list[str]) -> None:
    try:
        write_private_file(out, "\n".join(lines) + "\n")  # it holds the master key
    except PrivateFileError as error:
        raise SystemExit(f"lmk: {error}: give another file with --output") from None
    except OSError as error:
        raise SystemExit(
            f"lmk: cannot write {out}: {error.strerror or error}: "
            "give a writable place with --output"
        ) from None


def _key(args: argparse.Namespace, command: str | None = None) -> str:
    if args.key:
        print(ARGV_WARNING, file=sys.stderr)
        key: str = args.key.strip()
    else:
        key = read_master_key(args.name, os.environ, sys.stdin, command=command)
    return credentials.normalise(key)


def cmd_env(args: argparse.Namespace) -> int:
    if args.proxy is not None:
        return _cmd_env_from_proxy(args)
    if args.name is None:
        usage_error(
            "give the user's NAME (on the admin's machine) or --proxy URL (on any other machine)"
        )
    if args.fingerprint is not None:
        usage_error("--fingerprint checks the CA fetched with --proxy URL: give --proxy too")
    settings = load_settings(args.config)
    _check_ca(settings)
    key = _key(args)
    user = settings.users_by_hash.get(credentials.key_sha256(key))
    if user is None or user.name != args.name:
        raise SystemExit(
            f"lmk: that is not the master key of {args.name!r} in {settings.path}: "
            f"give the key `lmk keys new {args.name}` printed"
        )
    proxy = settings.file.proxy
    listen = proxy.listen_host
    host = args.proxy_host or ("127.0.0.1" if listen in ("0.0.0.0", "::", "") else listen)
    env = client_environment(
        args.name,
        key,
        proxy_authority(host, proxy.listen_port),
        proxy_auth=proxy.proxy_auth,
        certs_dir=settings.certs_dir,
    )
    lines = export_lines(env)
    out = Path(args.output or ENV_FILE)
    _write_env_file(out, lines)
    _print_exports(lines)
    print(f"# also written to {out} (mode 0600)", file=sys.stderr)
    return 0


def _warn_first_use(fingerprint: str, directory: Path) -> None:
    print(
        "lmk: WARNING: the proxy's CA is trusted on first use: no --fingerprint to check it.\n"
        f"lmk: WARNING: its SHA-256 fingerprint is {fingerprint}\n"
        "lmk: WARNING: compare it with the one your admin gives you (`lmk ca fingerprint`); "
        f"if they differ, delete {directory} and do not use this proxy.",
        file=sys.stderr,
    )


def _cmd_env_from_proxy(args: argparse.Namespace) -> int:
    if args.proxy_host is not None:
        usage_error("--proxy-host is for lmk env NAME on the admin's machine; --proxy says it")
    proxy = parse_proxy_url(args.proxy)
    pinned = None
    if args.fingerprint is not None:
        pinned = ca.normal_fingerprint(args.fingerprint)
        if pinned is None:
            usage_error(
                f"--fingerprint {args.fingerprint!r}: expected a SHA-256 fingerprint, 64 hex "
                "digits (colons optional), as `lmk ca fingerprint` prints it"
            )
    key = _key(args, command=f"lmk env --proxy {args.proxy}")
    directory = member_dir(os.environ)
    ca_file, bundle_file = directory / ca.CA_CERT_FILE, directory / ca.BUNDLE_FILE
    out = Path(args.output) if args.output else directory / MEMBER_ENV_FILE
    got = ask_proxy(proxy, key, directory, pinned=pinned, name=args.name)
    lines = export_lines({n: v.replace(KEY_PLACEHOLDER, key) for n, v in got.env.items()})
    if got.first_use is not None:
        _warn_first_use(got.first_use, directory)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(ca_file, got.pem.decode("ascii"), 0o600)
        write_atomically(bundle_file, got.bundle, 0o600)
    except OSError as error:
        fail(f"cannot write the CA files in {directory}: {error.strerror or error}")
    _write_env_file(out, lines)
    _print_exports(lines)
    print(
        f"# the environment of {got.user}, written to {out} (mode 0600), with the proxy's CA in "
        f"{ca_file} and {bundle_file}",
        file=sys.stderr,
    )
    return 0


def add_parser(subparsers: Subparsers) -> None:
    env = subparsers.add_parser(
        "env",
        help=f"print a client's environment and write {ENV_FILE}",
        description=(
            f"The master key comes from ${KEY_VARIABLE} or, in a terminal, a prompt that does "
            "not echo it. On the admin's machine: lmk env NAME. On any other machine: "
            "lmk env --proxy URL --fingerprint SHA256 (the CA and the environment come from the "
            f"proxy itself, and go to ~/.config/llamakey/, or $XDG_CONFIG_HOME/llamakey/)."
        ),
    )
    env.add_argument("name", nargs="?", help="the user (optional with --proxy: the key says)")
    # Kept for old scripts only, undocumented: argv is readable by every local user.
    env.add_argument("--key", help=argparse.SUPPRESS)
    env.add_argument("--proxy-host", help="host name clients reach the proxy by")
    env.add_argument(
        "--proxy",
        metavar="URL",
        help="onboard from this proxy (http://host:port), with none of the admin's files",
    )
    env.add_argument(
        "--fingerprint",
        metavar="SHA256",
        help="with --proxy: the CA's fingerprint, from the admin's `lmk ca fingerprint`",
    )
    env.add_argument(
        "--output",
        help=f"file to write (default: {ENV_FILE}; with --proxy, {MEMBER_ENV_FILE} in the "
        "member's config directory)",
    )
    env.set_defaults(func=cmd_env)
