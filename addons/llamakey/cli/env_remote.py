"""`lmk env --proxy URL`: asking the proxy for its CA and a member's environment, and judging
the answer before anything is written.

The member's machine has nothing of the admin's. It asks the proxy itself, at the onboarding
address `http://lmk.invalid/` reached through the proxy (`steps/onboard.py` answers there), for
the CA certificate (checked against `--fingerprint`, else trusted on first use, loudly) and for
the environment, which the proxy computes with `client_environment` as `lmk env NAME` does.

The answer comes over plain HTTP, so it is checked line by line before anything is written:
only the variables `client_environment` makes, with the values it makes for this member's
address and files. The master key is not in it (`KEY_PLACEHOLDER` stands where it goes):
`cli/env.py` puts the key in and writes the CA, the client bundle (system roots + our CA) and
the env file to the member's own config directory, each 0600.
"""

from __future__ import annotations

import http.client
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from urllib.parse import urlencode, urlsplit

from cryptography.hazmat.primitives import serialization

from llamakey import ca, credentials
from llamakey.cli.common import KEY_VARIABLE, fail, usage_error
from llamakey.clientenv import (
    KEY_PLACEHOLDER,
    ONBOARD_URL,
    USER_HEADER,
    client_environment,
    proxy_authority,
)

__all__ = [
    "DEFAULT_PROXY_PORT",
    "MEMBER_ENV_FILE",
    "OnboardingError",
    "ProxyAnswer",
    "ask_proxy",
    "check_proxy_environment",
    "fetch",
    "member_dir",
    "parse_exports",
    "parse_proxy_url",
]

# The env file `lmk env --proxy` writes in the member's config directory.
MEMBER_ENV_FILE = "llamakey.env"
DEFAULT_PROXY_PORT = 8080

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A key variable a newer proxy knows and this lmk does not: it may only get the master key.
_KEY_NAME = re.compile(r"[A-Z][A-Z0-9_]*_(?:KEY|TOKEN)")
_MAX_ANSWER = 2**20  # bytes: the CA or the env lines are a few kilobytes


def member_dir(environ: Mapping[str, str]) -> Path:
    """The member's own LlaMaKey directory: ``$XDG_CONFIG_HOME/llamakey``, else
    ``~/.config/llamakey`` (a relative XDG_CONFIG_HOME is ignored, as the spec says)."""
    xdg = environ.get("XDG_CONFIG_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "llamakey"
    home = environ.get("HOME", "")
    return (Path(home) if home else Path.home()) / ".config" / "llamakey"


def parse_proxy_url(
    text: str,
    option: str = "--proxy",
    key_hint: str = f"give the master key as {KEY_VARIABLE}=lmk_... lmk env --proxy URL",
) -> tuple[str, int]:
    """(host, port) of ``http://host:port``, ``host:port`` or ``host`` (port 8080); a usage
    error naming `option` for anything else, and for credentials in it (they would be this
    process's arguments: `key_hint` says where the key goes instead)."""
    value = text.strip()
    if "://" not in value:
        value = "http://" + value
    bad = f"{option} {text!r}: expected the proxy's address, like http://gw.example:8080"
    try:
        url = urlsplit(value)
        host, port = url.hostname, url.port
    except ValueError:
        usage_error(bad)
    if url.username is not None or url.password is not None:
        usage_error(f"{option} takes no credentials: {key_hint}")
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


def _trust_ca(pem: bytes, pinned: str | None, trusted_before: Path) -> tuple[bytes, str | None]:
    """Check the proxy's CA; exit (status 1) when it is not to be trusted: it is no single CA
    certificate, it differs from `--fingerprint`, or (without one) from the CA trusted before
    in `trusted_before`. Returns the certificate's PEM (as we write it: nothing around it), and
    its fingerprint when this is a first use without one to check it against."""
    try:
        cert = ca.load_ca_certificate(pem)
    except ca.CAError as error:
        fail(f"the proxy's /ca.pem is no CA certificate ({error}): nothing written")
    ours, fingerprint = cert.public_bytes(serialization.Encoding.PEM), ca.fingerprint(cert)
    if pinned is not None:
        if fingerprint != pinned:
            fail(
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
        fail(
            f"the proxy's CA (fingerprint {fingerprint}) is not the one trusted before in "
            f"{trusted_before} ({before}): nothing written; if your admin has issued a new CA, "
            "run again with --fingerprint and the fingerprint they give you"
        )
    return ours, None


@dataclass(frozen=True)
class ProxyAnswer:
    """What the proxy handed out, checked; nothing of it is written yet."""

    user: str  # whose environment it is: the master key says
    env: dict[str, str]  # `KEY_PLACEHOLDER` where the master key goes
    pem: bytes  # the proxy's CA certificate, as it is to be written
    bundle: str  # the client bundle: the system roots plus that CA
    first_use: str | None  # the CA's fingerprint when it is trusted on first use


def ask_proxy(
    proxy: tuple[str, int], key: str, directory: Path, *, pinned: str | None, name: str | None
) -> ProxyAnswer:
    """The CA and the environment of master key `key` from `proxy`, for CA files in the
    member's `directory`. Exits (status 1, nothing written) when the proxy cannot be asked or
    refuses, its CA is not to be trusted (`pinned`: the fingerprint given, if any), the key is
    not `name`'s (when given), or the environment is not what `client_environment` makes."""
    address = proxy_authority(*proxy)
    ca_file, bundle_file = directory / ca.CA_CERT_FILE, directory / ca.BUNDLE_FILE
    try:
        status, _, pem = fetch(proxy, "/ca.pem")
        if status != 200:
            fail(
                f"the proxy at {address} answered {status} for {ONBOARD_URL}/ca.pem "
                f"({_said(pem)}): is it a LlaMaKey proxy?"
            )
        pem, first_use = _trust_ca(pem, pinned, ca_file)
        query = urlencode({"dir": str(directory), "proxy": address})
        status, user, answer = fetch(proxy, f"/env?{query}", {"authorization": f"Bearer {key}"})
    except OnboardingError as error:
        fail(f"{error}: nothing written")
    if status == 401:
        fail(f"the proxy refused the master key ({status}: {_said(answer)}): nothing written")
    if status != 200:
        fail(f"the proxy answered {status} for /env ({_said(answer)}): nothing written")
    if not user:
        fail(f"the proxy's answer for /env names no user: is {address} a LlaMaKey proxy?")
    if name is not None and user != name:
        fail(f"that is the master key of {user!r}, not of {name!r}: nothing written")
    try:
        given = parse_exports(answer.decode("utf-8"))
        env = check_proxy_environment(given, user, address, directory)
    except (UnicodeDecodeError, ValueError) as error:
        fail(f"the proxy's environment is not what lmk expects ({error}): nothing written")
    try:
        # The roots as `lmk ca init` finds them; comments in some are not ASCII.
        bundle = ca.client_bundle(pem, bundle_file).decode("utf-8", "replace")
    except ca.CAError as error:
        fail(f"{error}: nothing written")
    return ProxyAnswer(user, env, pem, bundle, first_use)
