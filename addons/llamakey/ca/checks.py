"""What `lmk check` and the proxy's CA watch ask about the CA in a certs directory: whether it
is name-constrained, which configured hosts it does not cover, what is wrong with its files,
and how to replace a CA that no longer fits.

A CA that does not cover a provider makes every client refuse that provider's forged
certificates; a CA without name constraints (mitmproxy's own) can sign for any site. Both are
reported with `reissue_hint`, because the fix is a new CA that every client must be given.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from llamakey.ca.constraints import constrains_dns_names, hosts_not_permitted
from llamakey.ca.errors import CAError
from llamakey.ca.files import (
    BUNDLE_FILE,
    CA_CERT_FILE,
    CA_KEY_FILE,
    SECRET_MODE,
    load_ca,
    load_ca_cert,
)

__all__ = [
    "ca_private_key_mode_ok",
    "ca_problems",
    "is_name_constrained",
    "reissue_hint",
    "uncovered_hosts",
]


def is_name_constrained(certs_dir: Path) -> bool:
    """True when the CA in certs_dir restricts DNS names (False e.g. for mitmproxy's own CA)."""
    return constrains_dns_names(load_ca_cert(Path(certs_dir)))


def uncovered_hosts(certs_dir: Path, hosts: Iterable[str]) -> list[str]:
    """Configured provider hosts that the existing CA's name constraints do not permit.

    Same RFC 5280 rules OpenSSL applies: a constraint "example.com" permits example.com and any
    subdomain, ".example.com" only subdomains; a "*.domain" host needs every subdomain permitted.
    Hosts are reported as given, in order, without duplicates; [] when all fit (also for a CA
    without DNS constraints, which permits everything: see is_name_constrained).
    Raises CAError when there is no readable CA or a host pattern is invalid.
    """
    return hosts_not_permitted(load_ca_cert(Path(certs_dir)), hosts)


def reissue_hint(certs_dir: Path) -> str:
    """One sentence telling the admin how to replace a CA that no longer fits the providers."""
    certs_dir = Path(certs_dir)
    return (
        "Run `lmk ca init --force` to issue a new CA for the configured providers, restart the "
        f"gateway, then redistribute {certs_dir / CA_CERT_FILE} (or {certs_dir / BUNDLE_FILE}) "
        "to every client, because clients trusting the old CA will reject the new certificates."
    )


def ca_private_key_mode_ok(certs_dir: Path) -> bool:
    """True when mitmproxy-ca.pem exists and only its owner may read or write it (mode 0600)."""
    try:
        mode = os.stat(Path(certs_dir) / CA_KEY_FILE).st_mode
    except FileNotFoundError:
        return False
    return stat.S_IMODE(mode) == SECRET_MODE


def ca_problems(certs_dir: Path) -> list[str]:
    """What is wrong with the CA files, one sentence each naming the fix; [] when they are in
    order, and also when none exists yet (the proxy's first start creates them).

    Checked: the private key file is there, readable, holds a key that belongs to its
    certificate and is private (0600); the certificate clients install
    (mitmproxy-ca-cert.pem) is that certificate; the client bundle holds it. What CA a running
    proxy loaded is not known here (its own watcher compares with that).
    """
    certs_dir = Path(certs_dir)
    key_path, cert_path, bundle_path = (
        certs_dir / CA_KEY_FILE,
        certs_dir / CA_CERT_FILE,
        certs_dir / BUNDLE_FILE,
    )
    redistribute = f"redistribute {cert_path} (or {bundle_path}) to every client"
    if not key_path.exists():
        if not cert_path.exists() and not bundle_path.exists():
            return []  # not created yet
        return [
            f"{key_path} (the CA's private key) is missing while clients were given its "
            "certificate: the proxy's next start creates a new CA, which every client will "
            f"refuse. Restore the file from a backup, or run `lmk ca init --force` and "
            f"{redistribute}."
        ]
    try:
        cert, _ = load_ca(certs_dir)
    except CAError as error:
        return [
            f"{error}. Restore the CA files from a backup, or run `lmk ca init --force` and "
            f"{redistribute}."
        ]
    problems: list[str] = []
    if not ca_private_key_mode_ok(certs_dir):
        problems.append(f"{key_path} can be read by others: `chmod 600 {key_path}`.")
    ours = cert.public_bytes(serialization.Encoding.PEM).strip()
    rewrite = "Run `lmk ca init` (it rewrites the file from the CA, which it keeps)"
    try:
        given = cert_path.read_bytes()
    except FileNotFoundError:
        problems.append(f"{cert_path} is missing, so `lmk env` cannot set up clients. {rewrite}.")
    except OSError as error:
        problems.append(f"cannot read {cert_path}: {error.strerror or error}.")
    else:
        if given.strip() != ours:
            problems.append(
                f"{cert_path} is not the CA in {key_path}: clients given it refuse the "
                f"proxy's certificates. {rewrite}, then {redistribute}; or restore both files."
            )
    try:
        bundle = bundle_path.read_bytes()
    except FileNotFoundError:
        problems.append(
            f"{bundle_path} is missing: clients whose SSL_CERT_FILE (or REQUESTS_CA_BUNDLE, ...) "
            f"names it fail every TLS connection. {rewrite}."
        )
    except OSError as error:
        problems.append(f"cannot read {bundle_path}: {error.strerror or error}.")
    else:
        if ours not in bundle:
            problems.append(
                f"{bundle_path} does not hold the CA in {key_path}: clients using it refuse "
                f"the proxy. {rewrite}."
            )
    return problems
