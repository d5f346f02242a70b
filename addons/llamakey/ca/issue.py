"""Issuing the CA: an RSA key and a self-signed CA certificate constrained to the provider
hosts, written where mitmproxy looks for its CA (`init_ca`).

mitmproxy loads ``<confdir>/mitmproxy-ca.pem`` when it exists and only generates its own,
unconstrained CA when it is missing, so `init_ca` runs before mitmproxy loads the store (at
`lmk ca init` and at the proxy's first start). The certificate permits the DNS names
`constraints.permitted_names` makes of the hosts and excludes every IP address; an existing CA
is kept, whatever it covers (`checks.uncovered_hosts` says what it lacks).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from llamakey.ca.constraints import permitted_names
from llamakey.ca.errors import CAError
from llamakey.ca.files import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    MAGISK_FILE,
    ensure_dir,
    load_ca,
    tighten_secret_modes,
    write_client_bundle,
    write_public_files,
    write_secret_files,
)

__all__ = ["init_ca"]

_CA_VALIDITY = datetime.timedelta(days=10 * 365)
# Backdated like mitmproxy's own certificates, for clients whose clocks run slow.
_CA_BACKDATE = datetime.timedelta(days=2)
_RSA_KEY_SIZE = 2048


def _build_ca(
    names: list[str],
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """Generate an RSA key and a self-signed CA certificate constrained to DNS ``names``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_KEY_SIZE)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "LlaMaKey CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "LlaMaKey"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName(n) for n in names],
        # A DNS-only permitted list leaves IP names unconstrained (RFC 5280), so exclude them all.
        excluded_subtrees=[
            x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
            x509.IPAddress(ipaddress.ip_network("::/0")),
        ],
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CA_BACKDATE)
        .not_valid_after(now + _CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(constraints, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def init_ca(certs_dir: Path, hosts: Iterable[str], *, force: bool = False) -> Path:
    """Create the CA in ``certs_dir`` if absent (or replace it when ``force``).

    Writes mitmproxy-ca.pem (key + cert, mode 0600; the directory is created 0700 if new),
    mitmproxy-ca.p12 (0600), mitmproxy-ca-cert.pem/.cer/.p12 (cert only, 0644) and
    client-bundle.pem. Returns the path of mitmproxy-ca-cert.pem.

    Idempotent: an existing CA is kept, whatever hosts it covers (check with uncovered_hosts);
    its key files are set back to 0600 and the public files and the bundle are rewritten from it.
    Raises CAError for invalid hosts, an empty host list or an unreadable existing CA.
    """
    certs_dir = Path(certs_dir)
    names = permitted_names(hosts)
    if not names:
        raise CAError("no provider hosts: a CA permitting no names would be useless")
    ensure_dir(certs_dir)
    if force or not (certs_dir / CA_KEY_FILE).exists():
        cert, key = _build_ca(names)
        # The key file first: it is the source of truth, everything else is derived from it.
        write_secret_files(certs_dir, cert, key)
        with contextlib.suppress(FileNotFoundError):
            (certs_dir / MAGISK_FILE).unlink()
    else:
        cert, _ = load_ca(certs_dir)
        tighten_secret_modes(certs_dir)
    write_public_files(certs_dir, cert)
    write_client_bundle(certs_dir)
    return certs_dir / CA_CERT_FILE
