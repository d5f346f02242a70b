"""Handing the CA out: its certificate and its SHA-256 fingerprint.

The proxy's onboarding step serves the certificate and its fingerprint, `lmk ca fingerprint`
prints the fingerprint for the admin to give members, and `lmk env --proxy` checks what a proxy
served against the fingerprint a member was given (`normal_fingerprint` reads it as a person
types it). The proxy's CA watch compares `ca_fingerprint` with the CA it loaded.
"""

from __future__ import annotations

import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from llamakey.ca.errors import CAError
from llamakey.ca.files import load_ca_cert

__all__ = [
    "ca_certificate_pem",
    "ca_fingerprint",
    "fingerprint",
    "load_ca_certificate",
    "normal_fingerprint",
]


def ca_certificate_pem(certs_dir: Path) -> bytes:
    """The PEM of the CA certificate the proxy signs with (the one in mitmproxy-ca.pem)."""
    return load_ca_cert(Path(certs_dir)).public_bytes(serialization.Encoding.PEM)


def load_ca_certificate(pem: bytes) -> x509.Certificate:
    """The one CA certificate `pem` holds; CAError for anything else (no PEM, several
    certificates, a private key, a certificate that is not a CA)."""
    if b"PRIVATE KEY" in pem:
        raise CAError("a private key where a CA certificate was expected")
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CAError("not a PEM certificate") from None
    if len(certificates) != 1:
        raise CAError(f"{len(certificates)} certificates where one CA certificate was expected")
    try:
        is_ca = certificates[0].extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CAError("the certificate is not a CA certificate")
    return certificates[0]


def fingerprint(cert: x509.Certificate) -> str:
    """The SHA-256 fingerprint of `cert` as `openssl x509 -fingerprint -sha256` and browsers
    show it: upper-case hex pairs joined by colons."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def normal_fingerprint(text: str) -> str | None:
    """A SHA-256 fingerprint as given by a person, in `fingerprint`'s form; None if it is not one.

    Accepted: colons or spaces between pairs or none, any case, and a leading ``sha256:`` or
    openssl's ``sha256 Fingerprint=``.
    """
    value = text.strip()
    if "=" in value:
        label, _, value = value.partition("=")
        if label.strip().lower() not in ("sha256 fingerprint", "sha256"):
            return None
    value = re.sub(r"^sha-?256:", "", value.strip(), flags=re.IGNORECASE)
    digits = re.sub(r"[:\s]", "", value)
    if not re.fullmatch(r"[0-9A-Fa-f]{64}", digits):
        return None
    return bytes.fromhex(digits).hex(":").upper()


def ca_fingerprint(certs_dir: Path) -> str | None:
    """The `fingerprint` of the CA certificate in mitmproxy-ca.pem, the one mitmproxy signs
    with; None when there is no readable CA."""
    try:
        cert = load_ca_cert(Path(certs_dir))
    except CAError:
        return None
    return fingerprint(cert)
