"""`lmk env`: a client's environment (proxy, CA bundle, SDK keys), printed and written.

Two ways to get it. `lmk env NAME` on a machine with the admin's configuration and CA.
`lmk env --proxy URL` on any machine, with nothing of the admin's: it asks the proxy itself,
at the onboarding address `http://lmk.invalid/` reached through the proxy (`steps/onboard.py`
answers there), for the CA certificate (checked against `--fingerprint`, else trusted on
first use, loudly) and for the environment, which the proxy computes with `client_environment`
as `lmk env NAME` does. The CA, a client bundle (system roots + our CA) and the env file go to
the member's own config directory, each 0600.

The proxy never puts the master key in its answer (a flow is shown by mitmweb, saved by
``-w`` and logged, and every master key in one is masked): it writes `KEY_PLACEHOLDER` where
the key goes, and the member's side puts the key in. The answer comes over plain HTTP, so
it is checked line by line before anything is written: only the variables `client_environment`
makes, with the values it makes for this member's address and files.

The master key is read from ``$LMK_MASTER_KEY`` or, in a terminal, from a prompt that does not
echo: never from the command line, which every local user can read in ``/proc/PID/cmdline``.
"""

from __future__ import annotations

import argparse
import getpass
import http.client
import os
import re
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path, PurePath
from typing import NoReturn, TextIO
from urllib.parse import quote, urlencode, urlsplit

from cryptography.hazmat.primitives import serialization

from llamakey import ca, config, credentials
from llamakey.cli.common import (
    ENV_FILE,
    PrivateFileError,
    Subparsers,
    load_settings,
    usage_error,
    write_private_file,
)
from llamakey.files import write_atomically
from llamakey.providers import BUILTIN_PROVIDERS

KEY_VARIABLE = "LMK_MASTER_KEY"

ARGV_WARNING = (
    "lmk: warning: --key puts the master key in this process's arguments, which every local "
    f"user can read; use {KEY_VARIABLE}=... lmk env NAME, or run lmk env NAME in a terminal"
)

# The onboarding address: a name under `.invalid`, which RFC 6761 reserves so that it never
# resolves anywhere. Only the proxy answers it (plain HTTP through the proxy, like mitm.it).
ONBOARD_HOST = "lmk.invalid"
ONBOARD_URL = f"http://{ONBOARD_HOST}"
# Where the master key goes in the proxy's answer to GET /env (see the module doc).
KEY_PLACEHOLDER = "@LMK_MASTER_KEY@"
# The answer names whose environment it is.
USER_HEADER = "lmk-user"
# The env file `lmk env --proxy` writes in the member's config directory.
MEMBER_ENV_FILE = "llamakey.env"
DEFAULT_PROXY_PORT = 8080

# Variables that replace the default roots: they get the bundle (system roots + our CA).
BUNDLE_VARIABLES = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "AWS_CA_BUNDLE",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A key variable a newer proxy knows and this lmk does not: it may only get the master key.
_KEY_NAME = re.compile(r"[A-Z][A-Z0-9_]*_(?:KEY|TOKEN)")
_MAX_ANSWER = 2**20  # bytes: the CA or the env lines are a few kilobytes


def proxy_authority(host: str, port: int) -> str:
    """``host:port`` as a URL carries it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def client_environment(
    user: str, key: str, proxy: str, *, proxy_auth: bool, certs_dir: PurePath
) -> dict[str, str]:
    """The variables a client needs: proxy, CA bundle, and every SDK's key set to the master key.

    `proxy` is the ``host:port`` clients dial; `certs_dir` the directory that holds the client
    bundle and our CA certificate on the client's machine (the admin's certs directory for
    `lmk env NAME`, the member's own for `lmk env --proxy`). The proxy's onboarding answer is
    this with `KEY_PLACEHOLDER` for `key`.
    """
    credentials_part = f"{quote(user, safe='')}:{key}@" if proxy_auth else ""
    url = f"http://{credentials_part}{proxy}"
    bundle = str(certs_dir / ca.BUNDLE_FILE)
    env = {"HTTPS_PROXY": url, "https_proxy": url}
    for name in BUNDLE_VARIABLES:
        env[name] = bundle
    env["NODE_EXTRA_CA_CERTS"] = str(certs_dir / ca.CA_CERT_FILE)  # Node appends
    env["NODE_USE_ENV_PROXY"] = "1"
    for provider in BUILTIN_PROVIDERS.values():
        for var in provider.key_env:
            env[var] = provider.key_env_prefix + key  # hf_ for Hugging Face's router
    return env


def export_lines(env: Mapping[str, str]) -> list[str]:
    """The lines a shell sources (or evaluates) to set `env`."""
    return [f"export {name}={shlex.quote(value)}" for name, value in env.items()]


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


# --------------------------------------------------------------------------------------------
# `lmk env --proxy URL`: onboarding from the proxy itself
# --------------------------------------------------------------------------------------------


def member_dir(environ: Mapping[str, str]) -> Path:
    """The member's own LlaMaKey directory: ``$XDG_CONFIG_HOME/llamakey``, else
    ``~/.config/llamakey`` (a relative XDG_CONFIG_HOME is ignored, as the spec says)."""
    xdg = environ.get("XDG_CONFIG_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "llamakey"
    home = environ.get("HOME", "")
    return (Path(home) if home else Path.home()) / ".config" / "llamakey"


def parse_proxy_url(text: str) -> tuple[str, int]:
    """(host, port) of ``http://host:port``, ``host:port`` or ``host`` (port 8080); a usage
    error for anything else, and for credentials in it (they would be this process's
    arguments: the key comes from $LMK_MASTER_KEY)."""
    value = text.strip()
    if "://" not in value:
        value = "http://" + value
    bad = f"--proxy {text!r}: expected the proxy's address, like http://gw.example:8080"
    try:
        url = urlsplit(value)
        host, port = url.hostname, url.port
    except ValueError:
        usage_error(bad)
    if url.username is not None or url.password is not None:
        usage_error(
            f"--proxy takes no credentials: give the master key as {KEY_VARIABLE}=lmk_... "
            "lmk env --proxy URL"
        )
    if url.scheme != "http" or not host or url.path not in ("", "/") or url.query:
        usage_error(bad)
    return host, port or DEFAULT_PROXY_PORT


class OnboardingError(Exception):
    """The proxy could not be asked, or its answer is not what onboarding expects."""


def fetch(
    proxy: tuple[str, int], path: str, headers: Mapping[str, str] | None = None
) -> tuple[int, str, bytes]:
    """GET `path` of the onboarding address through `proxy`: (status, the answer's user
    header, body). Plain HTTP to the proxy itself, whatever the environment's proxy settings
    (an `HTTP_PROXY` or `NO_PROXY` must not send this elsewhere)."""
    host, port = proxy
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request("GET", ONBOARD_URL + path, headers=dict(headers or {}))
        response = connection.getresponse()
        body = response.read(_MAX_ANSWER + 1)
    except (OSError, http.client.HTTPException) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise OnboardingError(
            f"cannot ask the proxy at {proxy_authority(host, port)}: {reason}"
        ) from None
    finally:
        connection.close()
    if len(body) > _MAX_ANSWER:
        raise OnboardingError(f"the answer to {path} is larger than any onboarding answer")
    return response.status, response.headers.get(USER_HEADER, ""), body


def _said(body: bytes) -> str:
    """The first line of a refusal, printable and short: it goes into our one-line error."""
    line = body.decode("utf-8", "replace").strip().splitlines()[:1]
    text = "".join(c for c in (line[0] if line else "") if c.isprintable())
    return text[:200]


def parse_exports(text: str) -> dict[str, str]:
    """The variables of ``export NAME=VALUE`` lines (each value one shell word); ValueError
    for any other line: the text is about to be evaluated by a shell."""
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        try:
            words = shlex.split(value) if sep else []
        except ValueError:
            words = []
        if not line.startswith("export ") or not _NAME.fullmatch(name) or len(words) != 1:
            raise ValueError(f"line {number} is not an export line")
        env[name] = words[0]
    return env


def check_proxy_environment(
    given: Mapping[str, str], user: str, proxy: str, certs_dir: PurePath
) -> dict[str, str]:
    """`given` (the proxy's answer, `KEY_PLACEHOLDER` for the key) checked against what
    `client_environment` makes for `user` at `proxy` with CA files in `certs_dir`: every
    variable it names must be one of those with that value (the proxy URL with or without
    credentials, as the proxy's `proxy_auth` says), or a key variable (``*_KEY``,
    ``*_TOKEN``) of a provider this lmk does not know yet, set to the master key. Returns
    `given`; ValueError naming the first variable that does not fit."""
    if "HTTPS_PROXY" not in given:
        raise ValueError("it sets no HTTPS_PROXY")
    expected = {
        auth: client_environment(user, KEY_PLACEHOLDER, proxy, proxy_auth=auth, certs_dir=certs_dir)
        for auth in (False, True)
    }
    matching = [e for e in expected.values() if e["HTTPS_PROXY"] == given["HTTPS_PROXY"]]
    if not matching:
        raise ValueError(f"HTTPS_PROXY is not the proxy at {proxy}")
    mine = matching[0]
    for name, value in given.items():
        if name in mine:
            fits = value == mine[name]
        else:
            fits = bool(_KEY_NAME.fullmatch(name)) and value in (
                KEY_PLACEHOLDER,
                credentials.HF_PREFIX + KEY_PLACEHOLDER,
            )
        if not fits:
            raise ValueError(f"{name} is not what lmk sets")
    return dict(given)


def _fail(message: str) -> NoReturn:
    raise SystemExit(f"lmk: {message}")


def _trust_ca(pem: bytes, pinned: str | None, trusted_before: Path) -> tuple[bytes, str | None]:
    """Check the proxy's CA; exit (status 1) when it is not to be trusted: it is no single CA
    certificate, it differs from `--fingerprint`, or (without one) from the CA trusted before
    in `trusted_before`. Returns the certificate's PEM (as we write it: nothing around it), and
    its fingerprint when this is a first use without one to check it against."""
    try:
        cert = ca.load_ca_certificate(pem)
    except ca.CAError as error:
        _fail(f"the proxy's /ca.pem is no CA certificate ({error}): nothing written")
    ours, fingerprint = cert.public_bytes(serialization.Encoding.PEM), ca.fingerprint(cert)
    if pinned is not None:
        if fingerprint != pinned:
            _fail(
                f"the proxy's CA has the fingerprint {fingerprint}, not the {pinned} you gave: "
                "nothing written; do not use this proxy, ask your admin (`lmk ca fingerprint`)"
            )
        return ours, None
    try:
        before = ca.fingerprint(ca.load_ca_certificate(trusted_before.read_bytes()))
    except FileNotFoundError:
        return ours, fingerprint
    except (OSError, ca.CAError):
        before = "unreadable"
    if before != fingerprint:
        _fail(
            f"the proxy's CA (fingerprint {fingerprint}) is not the one trusted before in "
            f"{trusted_before} ({before}): nothing written; if your admin has issued a new CA, "
            "run again with --fingerprint and the fingerprint they give you"
        )
    return ours, None


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
    address = proxy_authority(*proxy)
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
    try:
        status, _, pem = fetch(proxy, "/ca.pem")
        if status != 200:
            _fail(
                f"the proxy at {address} answered {status} for {ONBOARD_URL}/ca.pem "
                f"({_said(pem)}): is it a LlaMaKey proxy?"
            )
        pem, first_use = _trust_ca(pem, pinned, ca_file)
        query = urlencode({"dir": str(directory), "proxy": address})
        status, user, answer = fetch(proxy, f"/env?{query}", {"authorization": f"Bearer {key}"})
    except OnboardingError as error:
        _fail(f"{error}: nothing written")
    if status == 401:
        _fail(f"the proxy refused the master key ({status}: {_said(answer)}): nothing written")
    if status != 200:
        _fail(f"the proxy answered {status} for /env ({_said(answer)}): nothing written")
    if not user:
        _fail(f"the proxy's answer for /env names no user: is {address} a LlaMaKey proxy?")
    if args.name is not None and user != args.name:
        _fail(f"that is the master key of {user!r}, not of {args.name!r}: nothing written")
    try:
        given = parse_exports(answer.decode("utf-8"))
        env = check_proxy_environment(given, user, address, directory)
    except (UnicodeDecodeError, ValueError) as error:
        _fail(f"the proxy's environment is not what lmk expects ({error}): nothing written")
    lines = export_lines({n: v.replace(KEY_PLACEHOLDER, key) for n, v in env.items()})
    try:
        # The roots as `lmk ca init` finds them; comments in some are not ASCII.
        bundle = ca.client_bundle(pem, bundle_file).decode("utf-8", "replace")
    except ca.CAError as error:
        _fail(f"{error}: nothing written")
    if first_use is not None:
        _warn_first_use(first_use, directory)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(ca_file, pem.decode("ascii"), 0o600)
        write_atomically(bundle_file, bundle, 0o600)
    except OSError as error:
        _fail(f"cannot write the CA files in {directory}: {error.strerror or error}")
    _write_env_file(out, lines)
    _print_exports(lines)
    print(
        f"# the environment of {user}, written to {out} (mode 0600), with the proxy's CA in "
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
