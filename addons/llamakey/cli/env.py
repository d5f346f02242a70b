"""`lmk env`: a client's environment (proxy, CA bundle, SDK keys), printed and written.

The master key is read from ``$LMK_MASTER_KEY`` or, in a terminal, from a prompt that does not
echo: never from the command line, which every local user can read in ``/proc/PID/cmdline``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from llamakey import ca, config, credentials
from llamakey.cli.common import (
    ENV_FILE,
    PrivateFileError,
    Subparsers,
    load_settings,
    usage_error,
    write_private_file,
)
from llamakey.providers import BUILTIN_PROVIDERS

KEY_VARIABLE = "LMK_MASTER_KEY"

ARGV_WARNING = (
    "lmk: warning: --key puts the master key in this process's arguments, which every local "
    f"user can read; use {KEY_VARIABLE}=... lmk env NAME, or run lmk env NAME in a terminal"
)


def client_environment(
    settings: config.Settings, user: str, key: str, proxy_host: str
) -> dict[str, str]:
    """The variables a client needs: proxy, CA bundle, and every SDK's key set to the master key."""
    proxy = settings.file.proxy
    credentials_part = f"{user}:{key}@" if proxy.proxy_auth else ""
    url = f"http://{credentials_part}{proxy_host}:{proxy.listen_port}"
    bundle = str(settings.certs_dir / ca.BUNDLE_FILE)
    env = {"HTTPS_PROXY": url, "https_proxy": url}
    for name in (
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "AWS_CA_BUNDLE",
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    ):
        env[name] = bundle
    env["NODE_EXTRA_CA_CERTS"] = str(settings.certs_dir / ca.CA_CERT_FILE)  # Node appends
    env["NODE_USE_ENV_PROXY"] = "1"
    for provider in BUILTIN_PROVIDERS.values():
        for var in provider.key_env:
            env[var] = provider.key_env_prefix + key  # hf_ for Hugging Face's router
    return env


def read_master_key(
    name: str,
    environ: Mapping[str, str],
    stdin: TextIO,
    prompt: Callable[[str], str] = getpass.getpass,
) -> str:
    """The master key: ``$LMK_MASTER_KEY``, else typed at a prompt without echo (stdin a tty).

    With neither, a usage error (status 2) saying how to give it.
    """
    key = environ.get(KEY_VARIABLE, "").strip()
    if key:
        return key
    how = f"{KEY_VARIABLE}=lmk_... lmk env {name}, or run it in a terminal to be prompted"
    if not stdin.isatty():
        usage_error(f"no master key: give it as {how}")
    try:
        key = prompt(f"master key of {name}: ").strip()
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


def cmd_env(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    _check_ca(settings)
    if args.key:
        print(ARGV_WARNING, file=sys.stderr)
        key = args.key.strip()
    else:
        key = read_master_key(args.name, os.environ, sys.stdin)
    key = credentials.normalise(key)
    user = settings.users_by_hash.get(credentials.key_sha256(key))
    if user is None or user.name != args.name:
        raise SystemExit(
            f"lmk: that is not the master key of {args.name!r} in {settings.path}: "
            f"give the key `lmk keys new {args.name}` printed"
        )
    listen = settings.file.proxy.listen_host
    host = args.proxy_host or ("127.0.0.1" if listen in ("0.0.0.0", "::", "") else listen)
    env = client_environment(settings, args.name, key, host)
    lines = [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    out = Path(args.output)
    try:
        write_private_file(out, "\n".join(lines) + "\n")  # it holds the master key
    except PrivateFileError as error:
        raise SystemExit(f"lmk: {error}: give another file with --output") from None
    except OSError as error:
        raise SystemExit(
            f"lmk: cannot write {out}: {error.strerror or error}: "
            "give a writable place with --output"
        ) from None
    _print_exports(lines)
    print(f"# also written to {out} (mode 0600)", file=sys.stderr)
    return 0


def add_parser(subparsers: Subparsers) -> None:
    env = subparsers.add_parser(
        "env",
        help=f"print a client's environment and write {ENV_FILE}",
        description=(
            f"The master key comes from ${KEY_VARIABLE} or, in a terminal, a prompt that does "
            "not echo it."
        ),
    )
    env.add_argument("name")
    # Kept for old scripts only, undocumented: argv is readable by every local user.
    env.add_argument("--key", help=argparse.SUPPRESS)
    env.add_argument("--proxy-host", help="host name clients reach the proxy by")
    env.add_argument("--output", default=ENV_FILE, help=f"file to write (default: {ENV_FILE})")
    env.set_defaults(func=cmd_env)
